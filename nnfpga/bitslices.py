"""Facts about the bits of integer weights: sign-magnitude slices and the tiles they make.

A bit-serial core (BISMO style) multiplies by one s-bit slice of the weights at a time,
    W = sign(W) · Σ_j 2^(j·s) · W_j,    W_j = (|W| >> (j·s)) & (2^s - 1),
and skips a tile whose slice is zero in every weight it holds. nnfpga's weights are
symmetric, |W| <= 2^(wbits-1) - 1, so the magnitude has wbits - 1 bits and a layer has
ceil((wbits - 1) / s) slices, lowest first. In two's complement a negative weight sets its
high bits, so its slices are almost never zero; sign-magnitude is the only encoding in which
small weights leave high slices empty.

A tile is one (nf, sf, slice) of the weight ROM layout (nnfpga.hardware.weight_fields): the
PE output channels nf·PE .. nf·PE+PE-1 times the SIMD inputs sf·SIMD .. sf·SIMD+SIMD-1,
for one slice. Foundations layer: imports nothing of ours but nnfpga.errors.
"""
from __future__ import annotations

import numpy as np

from nnfpga.errors import NnfpgaError

SLICE_WIDTHS = (1, 2, 4)
"""Slice widths s the bit-serial core and the bitslice pass take."""


def magnitude_bits(wbits: int) -> int:
    """Bits of |W| for symmetric wbits-bit weights (|W| <= 2^(wbits-1) - 1)."""
    return wbits - 1


def slice_count(wbits: int, s: int) -> int:
    """Slices of s bits that hold the magnitude of a wbits-bit weight."""
    check_slice_width(s)
    return -(-magnitude_bits(wbits) // s)


def check_slice_width(s: int) -> None:
    if s not in SLICE_WIDTHS:
        raise NnfpgaError(f"slice width s must be one of {', '.join(map(str, SLICE_WIDTHS))}, got {s}")


def _magnitudes(w: np.ndarray, wbits: int) -> np.ndarray:
    if not 2 <= wbits <= 8:
        raise NnfpgaError(f"weight bits must be in 2..8, got {wbits}")
    mag = np.abs(np.asarray(w, np.int64))
    limit = (1 << (wbits - 1)) - 1
    if mag.size and int(mag.max()) > limit:
        raise NnfpgaError(f"a weight has magnitude {int(mag.max())}, beyond the symmetric {wbits}-bit "
                          f"range ±{limit}")
    return mag


def sign_magnitude_slices(w: np.ndarray, wbits: int, s: int) -> np.ndarray:
    """[..., n_slices] s-bit slices of |w| (int64), low slice first: Σ_j slices[..., j]·2^(j·s) = |w|."""
    n = slice_count(wbits, s)
    mag = _magnitudes(w, wbits)
    shifts = np.arange(n, dtype=np.int64) * s
    return (mag[..., None] >> shifts) & ((1 << s) - 1)


def plane_occupancy(w: np.ndarray, wbits: int) -> np.ndarray:
    """[wbits - 1] fraction of the weights whose magnitude has bit j set, low plane first."""
    planes = sign_magnitude_slices(w, wbits, 1)
    return planes.reshape(-1, planes.shape[-1]).mean(axis=0) if planes.size else np.zeros(planes.shape[-1])


def nonzero_tiles(weights: np.ndarray, wbits: int, s: int, pe: int, simd: int) -> np.ndarray:
    """[NF, SF, n_slices] bool: tile (nf, sf, j) of a [K, N] weight matrix folded by pe x simd
    holds a non-zero slice j (NF = N/pe, SF = K/simd)."""
    w = np.asarray(weights)
    if w.ndim != 2:
        raise NnfpgaError(f"weights must be a [K, N] matrix, got shape {w.shape}")
    k, n = w.shape
    if pe < 1 or simd < 1 or n % pe or k % simd:
        raise NnfpgaError(f"pe={pe} must divide N={n} and simd={simd} must divide K={k}")
    slices = sign_magnitude_slices(w, wbits, s)  # [K, N, J]
    tiles = slices.reshape(k // simd, simd, n // pe, pe, -1) != 0
    return tiles.any(axis=(1, 3)).transpose(1, 0, 2)


def zero_tile_fraction(weights: np.ndarray, wbits: int, s: int, pe: int, simd: int) -> float:
    """Fraction of the (nf, sf, slice) tiles that are zero: the slice steps a bit-serial core skips."""
    tiles = nonzero_tiles(weights, wbits, s, pe, simd)
    return float(1.0 - tiles.mean()) if tiles.size else 0.0
