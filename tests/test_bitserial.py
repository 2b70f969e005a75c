"""The bit-serial core's facts (nnfpga.hardware, "bit-serial core"): sign-magnitude weight
slices, the schedule of non-zero tiles and its ROMs, the `slice`/`skip` annotations set by
fold and checked by the verifier, and its exact cycle count in the cycle model, the latency
model and the cost model."""
from dataclasses import replace

import numpy as np
import pytest

from nnfpga.backends.lower import dense_layer
from nnfpga.backends.rtl_layers import DenseLayer, LayerConfigError, check
from nnfpga.backends.stream_graph import chain_design
from nnfpga.backends.stream_latency import frame_latency
from nnfpga.backends.stream_sim import simulate
from nnfpga.cost import LayerShape, layer_cost, layer_shapes
from nnfpga.devices import DEVICES
from nnfpga.errors import IRError, PipelineError
from nnfpga.bitslices import nonzero_tiles
from nnfpga.hardware import (bitserial_fold_tiles, bitserial_schedule, folding_cycles, schedule_field_bits,
                             schedule_fields, slice_weight_fields)
from nnfpga.ir import parse, verify
from nnfpga.passes import run_pipeline

LAYER = """graph @q(%x: tensor<1x4x!q<u8, 0.05>>) {{
  const %w : tensor<4x4x!q<i8, @w.scale, axis=1>> = @w
  const %b : tensor<4xi32> = @b
  %acc = qmatmul(%x, %w, %b){attrs} : tensor<1x4xi20>
  %y = requant(%acc) {{hi = 127, lo = -128, mult = @m, shift = 8}} : tensor<1x4x!q<i8, 0.1>>
  return %y
}}
"""


def graph(attrs: str):
    arrays = {"w": np.array([[3, -3, 1, 0]] * 4, np.int64), "w.scale": np.full(4, 0.1),
              "b": np.zeros(4, np.int32), "m": np.full(4, 300, np.int64)}
    return parse(LAYER.format(attrs=f" {{{attrs}}}" if attrs else ""), arrays)


def layer(weights, wbits=8, s=2, pe=2, simd=2, skip=True) -> DenseLayer:
    w = np.asarray(weights, np.int64)
    n = w.shape[1]
    return DenseLayer("l", w, np.arange(n, dtype=np.int64), wbits, 8, False, 24, np.full(n, 300, np.int64), 8,
                      0, -128, 127, 8, True, pe, simd, core="bitserial", slice_bits=s, skip_zero=skip)


def test_the_schedule_lists_the_nonzero_tiles_and_one_for_an_empty_fold():
    w = np.zeros((4, 4), np.int64)
    w[0, 0] = 5      # |5| = 0b101: slices 0 and 2 at s = 1; fold 0, input fold 0
    w[3, 1] = -64    # slice 6 at s = 1; fold 0, input fold 1
    l = layer(w, wbits=8, s=1)  # output channels 2, 3 (fold 1) are all zero
    nz = nonzero_tiles(w, 8, 1, 2, 2)
    assert nz.shape == (2, 2, 7) and nz.sum() == 3
    assert bitserial_schedule(l).tolist() == [[0, 0, 0, 1, 0], [0, 0, 2, 0, 0], [0, 1, 6, 0, 1],
                                              [1, 0, 0, 1, 1]]
    assert folding_cycles(l) == 4 and bitserial_fold_tiles(l).tolist() == [3, 1]
    assert folding_cycles(replace(l, skip_zero=False)) == 2 * 2 * 7
    assert folding_cycles(replace(l, slice_bits=4)) == 3  # 5 in slice 0, 64 in slice 1, the empty fold


@pytest.mark.parametrize("s, skip", [(1, True), (2, True), (4, False), (2, False)])
def test_the_weight_and_schedule_roms_rebuild_the_matrix(s, skip):
    rng = np.random.default_rng(s)
    w = rng.integers(-31, 32, (8, 6)) * (rng.random((8, 6)) < 0.3)
    l = layer(w, wbits=6, s=s, pe=3, simd=4, skip=skip)
    fields, sched = slice_weight_fields(l), bitserial_schedule(l)
    sfw, kw = schedule_field_bits(l)
    words = schedule_fields(l)[:, 0]
    rebuilt = np.zeros_like(w)
    for word, row, (nf, sf, k, first, last) in zip(words, fields, sched):
        assert [word & ((1 << sfw) - 1), (word >> sfw) & ((1 << kw) - 1), (word >> (sfw + kw)) & 1,
                word >> (sfw + kw + 1)] == [sf, k, first, last]
        assert np.all((-(1 << s) < row) & (row < 1 << s))
        block = row.reshape(3, 4).T << (k * s)  # lane p*SIMD + s
        rebuilt[sf * 4:(sf + 1) * 4, nf * 3:(nf + 1) * 3] += block
    assert np.array_equal(rebuilt, w)


def test_fold_sets_slice_and_skip_and_the_verifier_checks_them():
    out = run_pipeline(graph(""), "fold{pe=2,simd=2,core=bitserial}")
    assert {k: out.nodes[0].attrs.get(k) for k in ("core", "slice", "skip")} == \
        {"core": "bitserial", "slice": 1, "skip": None}
    out = run_pipeline(out, "fold{slice=4,skip=0}")
    assert (out.nodes[0].attrs["slice"], out.nodes[0].attrs["skip"]) == (4, 0)
    rec = dense_layer(out, *out.nodes, "l")
    assert (rec.core, rec.slice_bits, rec.skip_zero) == ("bitserial", 4, False)
    check([rec])
    out = run_pipeline(out, "fold{core=lut}")  # off the bitserial core: both go
    assert "slice" not in out.nodes[0].attrs and "skip" not in out.nodes[0].attrs
    with pytest.raises(PipelineError, match="fold: slice must be one of 1, 2, 4, got '3'"):
        run_pipeline(graph(""), "fold{core=bitserial,slice=3}")
    with pytest.raises(PipelineError, match="fold: skip must be 0 or 1"):
        run_pipeline(graph(""), "fold{core=bitserial,skip=2}")


@pytest.mark.parametrize("attrs, message", [
    ('core = "bitserial"', "the bitserial core needs slice = 1 or 2 or 4"),
    ('core = "bitserial", slice = 3', "got 3"),
    ('core = "lut", slice = 2', "slice describes the bitserial core's weight slices; this layer's core is 'lut'"),
    ('slice = 2', "this layer's core is 'dsp'"),
    ('core = "bitserial", slice = 2, skip = 2', "skip = 2 must be 0"),
])
def test_the_verifier_names_bad_slices(attrs, message):
    with pytest.raises(IRError, match=message):
        verify(graph(attrs))


def test_the_layer_check_needs_a_slice_width_on_the_bitserial_core():
    l = layer(np.eye(4, dtype=np.int64))
    check([l])
    with pytest.raises(LayerConfigError, match="needs a slice width of 1, 2, 4 bits, got 3"):
        check([replace(l, slice_bits=3)])
    with pytest.raises(LayerConfigError, match="for the bitserial core only"):
        check([replace(l, core="lut")])


def test_cycle_latency_and_cost_models_count_the_listed_tiles():
    rng = np.random.default_rng(0)
    w1 = rng.integers(-7, 8, (8, 8)) * (rng.random((8, 8)) < 0.4)
    w1[:, 2:4] = 0  # an all-zero output fold of pe = 2
    w2 = rng.integers(-7, 8, (8, 4))
    l1 = replace(layer(w1, wbits=4, s=1, pe=2, simd=4), acc_bits=18)
    l2 = replace(layer(w2, wbits=4, s=2, pe=2, simd=2), in_bits=8, in_signed=True, acc_bits=20)
    for skip in (True, False):
        a, b = replace(l1, skip_zero=skip), replace(l2, skip_zero=skip)
        design = chain_design([a, b])
        latency, interval = simulate(design)
        tiles = [folding_cycles(a), folding_cycles(b)]
        assert interval == max(tiles[0], 8 // 4, tiles[1], 8 // 2)
        assert latency == frame_latency(design)
        assert layer_cost(a, 4, DEVICES["ecp5-85k"], first=True)["folds"] == tiles[0]
    assert folding_cycles(l1) < folding_cycles(replace(l1, skip_zero=False)) == 4 * 2 * 3
    assert bitserial_fold_tiles(l1)[1] == 1


def test_the_graph_cost_model_counts_tiles_from_the_weights():
    g = run_pipeline(graph(""), "fold{pe=2,simd=2,core=bitserial,slice=2}")
    shape = layer_shapes(g)[0]
    rec = dense_layer(g, *g.nodes, "l")
    assert shape.tiles == folding_cycles(rec) == LayerShape.of(rec).tiles
    # 3 = 0b11 (slice 0), 1 (slice 0): slices 1 and 2 of every tile are zero
    assert folding_cycles(rec) == 2 * 2 * 1
    assert folding_cycles(replace(rec, skip_zero=False)) == 2 * 2 * 4 - 4 + 4
