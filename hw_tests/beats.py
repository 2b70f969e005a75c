"""Stream beats: a row of integers packed `par` elements to a beat word, and back. Shared by
the cocotb testbench (axis_tb.py) and the fast path (fastsim.py), which must not need cocotb
or cocotbext-axi to run a build."""
from __future__ import annotations

import numpy as np


def pack_beats(x: np.ndarray, bits: int, par: int) -> list[list[int]]:
    """[B, K] integers -> per row, K/par beat words; element j of a beat at bits [j*bits +: bits]."""
    mask = (1 << bits) - 1
    rows, k = x.shape
    fields = (x.astype(np.int64) & mask).reshape(rows, k // par, par)
    if par * bits <= 62:
        shifts = np.arange(par, dtype=np.int64) * bits
        return (fields << shifts).sum(axis=2).tolist()
    return [[sum(int(v) << (j * bits) for j, v in enumerate(beat)) for beat in row] for row in fields.tolist()]


def unpack_beats(words: list[int], bits: int, par: int, signed: bool) -> list[int]:
    """Beat words of one inference -> its elements (two's complement when signed)."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    values = [(w >> (j * bits)) & mask for w in words for j in range(par)]
    if signed:
        values = [v - (1 << bits) if v & sign else v for v in values]
    return values
