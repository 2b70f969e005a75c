"""Golden IR files: a pipeline, its input IR and the expected output IR, side by side.

    // pipeline: canonicalize
    // input:
    graph @g(...) { ... }
    // expected:
    graph @g(...) { ... }

Constant data is not stored: every array the input names is drawn from a generator seeded
by the array's name, so goldens stay plain text. Set NNFPGA_REGEN_GOLDENS=1 to rewrite the
expected sections from the current passes.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnfpga.ir.parser import _Cursor, _type
from nnfpga.ir.types import FloatType, QuantType

GOLDEN_DIR = Path(__file__).parent / "golden"
_CONST = re.compile(r"const %\S+ : (tensor<.*>) = @(\S+)\s*$")


@dataclass
class Golden:
    path: Path
    pipeline: str
    input: str
    expected: str


def read_golden(path: Path) -> Golden:
    text = path.read_text()
    pipeline = re.search(r"^// pipeline: (.*)$", text, re.M).group(1).strip()
    _, _, rest = text.partition("// input:\n")
    input_text, _, expected = rest.partition("// expected:\n")
    return Golden(path, pipeline, input_text, expected)


def write_golden(g: Golden) -> None:
    g.path.write_text(f"// pipeline: {g.pipeline}\n// input:\n{g.input}// expected:\n{g.expected}")


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def arrays_for(text: str) -> dict[str, np.ndarray]:
    """Seeded data for every constant an IR text declares (goldens start from float graphs)."""
    arrays: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        m = _CONST.search(line.strip())
        if m:
            t = _type(_Cursor(m.group(1), 0))
            key = m.group(2)
            rng = _rng(key)
            if isinstance(t.element, FloatType):
                arrays[key] = rng.standard_normal(t.shape).astype(np.float32)
            else:
                lo = t.element.min if not isinstance(t.element, QuantType) else -t.element.max
                arrays[key] = rng.integers(lo, t.element.max + 1, t.shape).astype(np.int64)
    return arrays


def all_goldens() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.ir"))
