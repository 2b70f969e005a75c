"""bitslice: nearest weights with at most `keep` non-zero sign-magnitude slices, the bias that
keeps the input zero point folded, the reported errors, the target option and bad options."""
import itertools
from pathlib import Path

import numpy as np
import pytest

from nnfpga.bitslices import sign_magnitude_slices
from nnfpga.errors import PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.ir import parse, run_batch, verify
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.bitslice import representable_magnitudes, round_to_slices

from ir_graphs import QUANTIZED_LAYER

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"w": rng.integers(-127, 128, (8, 6)).astype(np.int8), "b": rng.integers(-999, 999, 6).astype(np.int32),
              "m": np.full(6, 9000, np.int64), "w.scale": np.full(6, 0.01)}
    g = parse(QUANTIZED_LAYER, arrays)
    verify(g)
    return g


def _nonzero_slices(w, wbits, s):
    return (sign_magnitude_slices(w, wbits, s) != 0).sum(axis=-1)


@pytest.mark.parametrize("wbits, s, keep", list(itertools.product((4, 8), (1, 2, 4), (1, 2))))
def test_rounding_picks_the_nearest_value_with_few_slices(wbits, s, keep):
    top = (1 << (wbits - 1)) - 1
    w = np.arange(-top, top + 1)
    r = round_to_slices(w, wbits, s, keep)
    assert (_nonzero_slices(r, wbits, s) <= keep).all()
    assert (np.sign(r) * np.sign(w) >= 0).all() and (np.abs(r) <= top).all()
    # brute force: no allowed value is nearer
    allowed = representable_magnitudes(wbits, s, keep)
    best = np.abs(np.abs(w)[:, None] - allowed[None, :]).min(axis=1)
    assert (np.abs(np.abs(w) - np.abs(r)) == best).all()


def test_known_roundings():
    # 6 = 0b01_10 has two non-zero 2-bit slices: 4 and 8 are as near, the smaller wins
    assert round_to_slices(np.array([127, -127, 5, 6, 7]), 8, 2, 1).tolist() == [64, -64, 4, 4, 8]
    assert round_to_slices(np.array([127, 11]), 8, 2, 2).tolist() == [112, 11]  # 0b01_11_00_00
    assert round_to_slices(np.array([-23]), 8, 4, 1).tolist() == [-16]  # 16 is nearer than 15


def test_layer_is_rounded_and_its_bias_keeps_the_zero_point_folded():
    before = _layer()
    ctx = PassContext()
    after = run_pipeline(before, "bitslice{s=2,keep=1}", ctx)
    w0, w1 = before.arrays["w"].astype(np.int64), after.arrays["w"].astype(np.int64)
    assert (_nonzero_slices(w1, 8, 2) <= 1).all() and (w1 != w0).any()
    # b' - b = z_x·(Σw - Σw'): the accumulator of x - z_x changes only by the weights
    assert (after.arrays["b"] - before.arrays["b"] == 3 * (w0.sum(axis=0) - w1.sum(axis=0))).all()
    x = np.random.default_rng(2).integers(-128, 128, (5, 8))
    acc0 = (x - 3) @ w0 + (before.arrays["b"] + 3 * w0.sum(axis=0))
    acc1 = (x - 3) @ w1 + (after.arrays["b"] + 3 * w1.sum(axis=0))
    assert ((acc1 - acc0) == (x - 3) @ (w1 - w0)).all()
    record = ctx.report[0]
    expected = np.linalg.norm(w1 - w0) / np.linalg.norm(w0)
    assert record["rel_weight_error"] == pytest.approx(expected, abs=1e-6)
    assert record["zero_slice_fraction_after"] > record["zero_slice_fraction_before"]
    assert record["keep"] == 1 and record["tile"] == "pe=1 x simd=8"


def test_a_keep_that_holds_every_slice_changes_nothing():
    before = _layer()
    ctx = PassContext()
    after = run_pipeline(before, "bitslice{s=4,keep=2}", ctx)
    assert (after.arrays["w"] == before.arrays["w"]).all()
    assert ctx.report[0]["rel_weight_error"] == 0


def test_target_takes_the_largest_keep_that_reaches_it():
    ctx = PassContext()
    run_pipeline(_layer(), "bitslice{s=1,target=0.6}", ctx)
    record = ctx.report[0]
    assert record["target_reached"] and record["zero_slice_fraction_after"] >= 0.6
    ctx_more = PassContext()
    run_pipeline(_layer(), f"bitslice{{s=1,keep={record['keep'] + 1}}}", ctx_more)
    assert ctx_more.report[0]["zero_slice_fraction_after"] < 0.6


def test_mnist_mlp_reports_output_error_on_calibration_data():
    calib = dict(np.load(EXAMPLES / "mnist_mlp" / "calib.npz"))
    ctx = PassContext(calib={k: v[:32] for k, v in calib.items()})
    g = run_pipeline(load_onnx(str(EXAMPLES / "mnist_mlp" / "model.onnx")),
                     "canonicalize,quantize,bitslice{s=2,keep=2},bitplane", ctx)
    verify(g)
    records = [r for r in ctx.report if r["pass"] == "bitslice"]
    model = records[-1]
    assert model["layer"] is None and model["samples"] == 32
    assert 0 < model["output_rel_max_err"] < 0.5 and 0.5 < model["top1_agreement"] <= 1
    for r in records[:-1]:
        assert 0 < r["rel_weight_error"] < 0.1
        assert r["zero_slice_fraction_after"] >= r["zero_slice_fraction_before"]


@pytest.mark.parametrize("options, message", [
    ("s=3,keep=1", "one of 1, 2, 4"),
    ("s=2,keep=0", "at least 1"),
    ("s=2,keep=-1", "at least 1"),
    ("s=2,keep=1,target=0.5", "not both"),
    ("s=2,target=1.5", r"\(0, 1\)"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(PipelineError, match=message):
        run_pipeline(_layer(), f"bitslice{{{options}}}", PassContext())


def test_a_float_graph_is_refused():
    g = parse("graph @g(%x: tensor<1x4xf32>) {\n  %y = relu(%x) : tensor<1x4xf32>\n  return %y\n}\n", {})
    with pytest.raises(PipelineError, match="after quantize"):
        run_pipeline(g, "bitslice{s=2,keep=1}", PassContext())


def test_bitslice_then_bitplane_keeps_the_integers():
    sliced = run_pipeline(_layer(), "bitslice{s=4,keep=1}", PassContext())
    planed = run_pipeline(sliced, "bitplane", PassContext())
    feeds = {"x": np.random.default_rng(3).standard_normal((100, 8)).astype(np.float32) * 3}
    assert (run_batch(sliced, feeds)["y_dq"] == run_batch(planed, feeds)["y_dq"]).all()
