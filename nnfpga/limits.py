"""How much memory one model or data file may ask for, checked before anything is allocated.

A 200-byte ONNX file can declare a 6 GiB tensor (a huge input shape, ConstantOfShape, Expand)
and a small .npz can announce a huge array in its header. Counting elements from declared
shapes and refusing what would not fit turns an out-of-memory kill into an error message.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnfpga.errors import NnfpgaError

MEMORY_FRACTION = 0.25
"""Share of the machine's physical memory one tensor may take: compiling holds a tensor
several times over (float64 calibration copies, the interpreter's results of every node)."""
RUN_FRACTION = 0.5
"""Share of physical memory one step holding many tensors at once (calibration) may take."""
FALLBACK_MEMORY = 8 << 30
"""Physical memory assumed where the system does not report it."""


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
"""Where a container's memory limit is read (cgroup v2, v1); 'max' or a huge number: none."""


def physical_memory() -> int:
    """The machine's physical memory, or the container's limit when that is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = FALLBACK_MEMORY
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def tensor_budget() -> int:
    """Bytes one tensor may take."""
    return int(physical_memory() * MEMORY_FRACTION)


def check_tensor_size(elements: int, bytes_per_element: int, what: str, error: type[NnfpgaError]) -> None:
    """Raise `error` naming `what` when `elements` of that size would not fit the budget."""
    needed = int(elements) * int(bytes_per_element)
    budget = tensor_budget()
    if needed > budget:
        raise error(f"{what} would need {_gib(needed)} of memory; this machine allows {_gib(budget)} per tensor "
                    f"({MEMORY_FRACTION:.0%} of its {_gib(physical_memory())}), so it is refused before allocating")


def check_run_size(needed: int, what: str, advice: str, error: type[NnfpgaError]) -> None:
    """Raise `error` when a step holding `needed` bytes at once would not fit (RUN_FRACTION)."""
    budget = int(physical_memory() * RUN_FRACTION)
    if needed > budget:
        raise error(f"{what} would need {_gib(needed)} of memory; this machine allows {_gib(budget)} "
                    f"({RUN_FRACTION:.0%} of its {_gib(physical_memory())}): {advice}")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.3g} MiB"
