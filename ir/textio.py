"""IR files on disk: `NAME.ir` (text) beside `NAME.npz` (the array table), byte-reproducible."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from nnfpga.errors import IRError
from nnfpga.ir.graph import Graph
from nnfpga.ir.parser import parse
from nnfpga.ir.printer import print_graph


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but with fixed zip timestamps so the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())


def save_ir(g: Graph, stem: Path) -> tuple[Path, Path]:
    text_path, npz_path = stem.with_suffix(".ir"), stem.with_suffix(".npz")
    text_path.write_text(print_graph(g))
    write_npz(npz_path, {k: g.arrays[k] for k in g.referenced_arrays()})
    return text_path, npz_path


def load_ir(stem: Path) -> Graph:
    text_path, npz_path = stem.with_suffix(".ir"), stem.with_suffix(".npz")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return parse(text_path.read_text(), arrays)
    except OSError as e:
        raise IRError(f"cannot read IR {text_path}: {e}") from None
