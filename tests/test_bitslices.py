"""nnfpga.bitslices: sign-magnitude slices of integer weights and the (nf, sf, slice) tiles."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from nnfpga.bitslices import (nonzero_tiles, plane_occupancy, sign_magnitude_slices, slice_count,
                              zero_tile_fraction)
from nnfpga.errors import NnfpgaError
from nnfpga.hardware import weight_fields


def test_slices_rebuild_the_magnitude_low_slice_first():
    w = np.array([[-127, 0, 5], [64, -3, 127]])
    for s in (1, 2, 4):
        sl = sign_magnitude_slices(w, 8, s)
        assert sl.shape == w.shape + (slice_count(8, s),)
        assert slice_count(8, s) == {1: 7, 2: 4, 4: 2}[s]
        rebuilt = (sl << (np.arange(sl.shape[-1]) * s)).sum(axis=-1)
        assert (rebuilt == np.abs(w)).all()
    assert sign_magnitude_slices(np.array([-6]), 8, 2).tolist() == [[2, 1, 0, 0]]


def test_plane_occupancy_counts_set_magnitude_bits():
    occ = plane_occupancy(np.array([1, -1, 2, 0]), 4)  # magnitude planes 0, 1, 2
    assert occ.tolist() == [0.5, 0.25, 0.0]


def test_nonzero_tiles_follow_the_weight_rom_layout():
    rng = np.random.default_rng(0)
    k, n, pe, simd = 8, 6, 3, 4
    w = rng.integers(-7, 8, (k, n)) * (rng.random((k, n)) < 0.3)
    tiles = nonzero_tiles(w, 4, 1, pe, simd)
    assert tiles.shape == (n // pe, k // simd, 3)

    layer = SimpleNamespace(weights=w, k=k, n=n, pe=pe, simd=simd)  # what weight_fields reads
    words = weight_fields(layer)  # word nf*SF + sf holds the tile's pe*simd weights
    sf_count = k // simd
    for nf in range(n // pe):
        for sf in range(sf_count):
            word = words[nf * sf_count + sf]
            for j in range(3):
                assert tiles[nf, sf, j] == bool(((np.abs(word) >> j) & 1).any())


def test_zero_tile_fraction_of_a_layer_with_empty_high_planes():
    w = np.array([[1, -2], [3, 0]])  # 8-bit weights using only magnitude bits 0 and 1
    assert zero_tile_fraction(w, 8, 1, 1, 1) == pytest.approx(1 - 4 / 28)
    assert zero_tile_fraction(w, 8, 2, 2, 2) == pytest.approx(3 / 4)


@pytest.mark.parametrize("call, message", [
    (lambda: sign_magnitude_slices(np.array([1]), 8, 3), "slice width"),
    (lambda: sign_magnitude_slices(np.array([-128]), 8, 2), "symmetric"),
    (lambda: sign_magnitude_slices(np.array([1]), 9, 2), "2..8"),
    (lambda: nonzero_tiles(np.zeros((4, 6), int), 8, 2, 4, 2), "divide"),
    (lambda: nonzero_tiles(np.zeros(4, int), 8, 2, 1, 1), "matrix"),
])
def test_bad_input_is_refused(call, message):
    with pytest.raises(NnfpgaError, match=message):
        call()
