"""bitplane: zero low planes fold into the requant, zero high planes narrow wbits, and every
requant result is the same integer before and after."""
from pathlib import Path

import numpy as np
import pytest

from nnfpga.errors import PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.ir import parse, run_batch, verify
from nnfpga.passes import PassContext, run_pipeline

from ir_graphs import QUANTIZED_LAYER

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _layer(planes, mult, seed=0):
    """The QUANTIZED_LAYER graph whose channel n has weights and bias multiples of 2^planes[n], |w| <= 31."""
    rng = np.random.default_rng(seed)
    step = np.array([1 << p for p in planes])
    top = np.minimum(31, 127 // step)  # |w| <= 127
    w = rng.integers(-top, top + 1, (8, 6)) * step
    b = rng.integers(-200, 200, 6) * step
    arrays = {"w": w.astype(np.int8), "b": b.astype(np.int32), "m": np.array(mult, np.int64),
              "w.scale": np.full(6, 0.01)}
    g = parse(QUANTIZED_LAYER, arrays)
    verify(g)
    return g


def _bitplane(g):
    ctx = PassContext()
    return run_pipeline(g, "bitplane", ctx), ctx.report


def _assert_same_integers(before, after, samples=200):
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal((samples,) + v.type.shape[1:]).astype(np.float32) * 4 for v in before.inputs}
    ref, got = run_batch(before, feeds, keep_all=True), run_batch(after, feeds, keep_all=True)
    rq = [n.output.name for n in before.nodes if n.op == "requant"]
    assert rq
    for name in rq:
        assert (ref[name] == got[name]).all(), name
    for v in before.outputs:
        assert (ref[v.name] == got[v.name]).all()


def test_planes_shared_by_every_channel_lower_the_shift():
    before = _layer([3, 3, 4, 3, 5, 3], [9000, 12000, 30000, 50000, 70000, 100000])
    after, report = _bitplane(before)
    rq = next(n for n in after.nodes if n.op == "requant")
    assert rq.attrs["shift"] == 17
    w = after.arrays[next(n for n in after.nodes if n.op == "qmatmul").inputs[1].array]
    assert w.dtype == np.int8
    # channels 2 and 4 keep their further planes in M where M·2^k stays below 2^17
    m = after.arrays[rq.attrs["mult"].name]
    assert m.tolist() == [9000, 12000, 60000, 50000, 70000 * 1, 100000]
    assert report[0]["low_planes_dropped_min"] == 3 and report[0]["shift_after"] == 17
    # |w| <= 15·8 in the 3-plane channels, 3·32 in channel 4 (two planes kept): |w'| <= 15
    assert report[0]["wbits_after"] == 5
    _assert_same_integers(before, after)


def test_channel_planes_fold_into_m_within_its_width():
    before = _layer([2, 0, 1, 2, 0, 0], [9000, 40000, 20000, 60000, 500, 70000])
    after, report = _bitplane(before)
    rq = next(n for n in after.nodes if n.op == "requant")
    assert rq.attrs["shift"] == 20
    # 9000·4 and 20000·2 fit 17 bits; 60000·4 does not, 60000·2 does
    assert after.arrays[rq.attrs["mult"].name].tolist() == [36000, 40000, 40000, 120000, 500, 70000]
    assert report[0]["low_planes_dropped_max"] == 2
    _assert_same_integers(before, after)


def test_high_planes_narrow_the_weight_bits_and_the_accumulator():
    before = _layer([0] * 6, [9000] * 6)
    after, report = _bitplane(before)
    mm = next(n for n in after.nodes if n.op == "qmatmul")
    assert mm.inputs[1].type.element.bits == 6  # every |w| <= 31
    assert mm.output.type.element.bits <= 20
    assert report[0]["wbits_before"] == 8 and report[0]["wbits_after"] == 6
    _assert_same_integers(before, after)


def test_an_odd_bias_keeps_the_planes():
    before = _layer([2] * 6, [9000] * 6)
    before.arrays["b"] = before.arrays["b"] + 1
    after, report = _bitplane(before)
    assert next(n for n in after.nodes if n.op == "requant").attrs["shift"] == 20
    assert report[0]["low_planes_dropped_max"] == 0
    assert report[0]["wbits_after"] == 8  # 31·4 still needs 8 bits
    _assert_same_integers(before, after)


def test_mnist_mlp_integers_are_unchanged_and_statistics_reported():
    calib = dict(np.load(EXAMPLES / "mnist_mlp" / "calib.npz"))
    g = run_pipeline(load_onnx(str(EXAMPLES / "mnist_mlp" / "model.onnx")), "canonicalize,quantize",
                     PassContext(calib=calib))
    after, report = _bitplane(g)
    verify(after)
    assert [r["layer"] for r in report] == [n.output.name for n in g.nodes if n.op == "requant"]
    for r in report:
        assert len(r["plane_occupancy"]) == 7
        assert set(r["zero_slice_fraction"]) == {"1", "2", "4"}
        # a wider slice is zero less often than a narrower one
        assert r["zero_slice_fraction"]["1"] >= r["zero_slice_fraction"]["2"] >= r["zero_slice_fraction"]["4"]
    _assert_same_integers(g, after, samples=32)


def test_folded_layer_reports_rom_tiles():
    before = _layer([0] * 6, [9000] * 6)
    folded = run_pipeline(before, "fold{pe=3,simd=4}", PassContext())
    _, report = _bitplane(folded)
    assert report[0]["tile"] == "pe=3 x simd=4"


def test_bitplane_takes_no_options():
    with pytest.raises(PipelineError, match="no option"):
        run_pipeline(_layer([0] * 6, [9000] * 6), "bitplane{s=2}", PassContext())


def test_a_float_graph_is_refused():
    g = load_onnx(str(EXAMPLES / "digits_mlp" / "model.onnx"))
    with pytest.raises(PipelineError, match="after quantize"):
        run_pipeline(g, "canonicalize,bitplane", PassContext())


def test_cnn_convolutions_keep_their_integers():
    calib = dict(np.load(EXAMPLES / "digits_cnn" / "calib.npz"))
    g = load_onnx(str(EXAMPLES / "digits_cnn" / "model.onnx"))
    sliced = run_pipeline(g, "canonicalize,quantize,bitslice{s=4,keep=1}",
                          PassContext(calib={g.inputs[0].name: calib["input"][:32]}))
    after, report = _bitplane(sliced)
    assert [r["op"] for r in report] == ["qconv", "qconv", "qmatmul"]
    _assert_same_integers(sliced, after, samples=16)
