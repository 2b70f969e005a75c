"""Window taps per beat (a qconv's `window`): which counts a window can emit, the order of a
window's elements in the stream, how fold and autofold set it, and how the lowering and the
cost model follow it. Verilator runs are in hw_tests/test_rtl_window_pool.py (module alone)
and hw_tests/test_rtl_cnn.py (whole networks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.stream_model import WindowParams, window_element_order
from nnfpga.backends.verilog import predicted_timing
from nnfpga.cost_stream import module_cost
from nnfpga.devices import DEVICES
from nnfpga.errors import IRError, PipelineError
from nnfpga.frontend.onnx_import import load_onnx
from nnfpga.hardware import largest_taps_at_most, legal_taps, tap_block
from nnfpga.ir import parse, verify
from nnfpga.ir.spatial import conv_nchw
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline

MNIST_CNN = Path(__file__).resolve().parents[1] / "examples" / "mnist_cnn"

CONV = """graph @g(%x: tensor<1x4x7x6xf32>) {
  const %w : tensor<3x4x3x5xf32> = @w
  const %b : tensor<3xf32> = @b
  %c = conv(%x, %w, %b) {dilations = [2, 1], group = 1, pads = [2, 2, 1, 2], strides = [1, 2]} : tensor<1x3x6x3xf32>
  %y = relu(%c) : tensor<1x3x6x3xf32>
  return %y
}
"""


def _conv_graph(pipeline: str):
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((3, 4, 3, 5)).astype(np.float32),
              "b": rng.standard_normal(3).astype(np.float32)}
    g = parse(CONV, arrays)
    calib = {"x": rng.standard_normal((16, 1, 4, 7, 6)).astype(np.float32)}
    return run_pipeline(g, parse_pipeline(pipeline), PassContext(calib=calib))


def test_legal_taps_are_part_of_a_row_or_whole_rows():
    assert legal_taps(5, 5) == [1, 5, 25]
    assert legal_taps(3, 4) == [1, 2, 4, 12]
    assert legal_taps(4, 3) == [1, 3, 6, 12]
    assert tap_block(4, 3, 6) == (2, 3) and tap_block(3, 4, 2) == (1, 2) and tap_block(5, 5, 5) == (1, 5)
    assert largest_taps_at_most(5, 5, 24) == 5 and largest_taps_at_most(5, 5, 0) == 1
    with pytest.raises(ValueError, match="emits 1, 3, 6, 12 taps per beat, not 4"):
        tap_block(4, 3, 4)
    with pytest.raises(ValueError, match="taps"):
        WindowParams(C=1, H=5, W=5, KH=3, KW=4, SH=1, SW=1, DH=1, DW=1, PT=0, PL=0, OH=3, OW=2, PAR=1, BITS=8,
                     PAD=0, TH=2, TW=2)


@pytest.mark.parametrize("kh, kw, c, par, taps", [(3, 3, 4, 2, 9), (2, 4, 3, 1, 2), (4, 3, 2, 2, 6), (5, 5, 1, 1, 25)])
def test_element_order_is_a_permutation_and_follows_the_beats(kh, kw, c, par, taps):
    order = window_element_order(kh, kw, c, par, taps)
    assert sorted(order) == list(range(kh * kw * c))
    th, tw = tap_block(kh, kw, taps)
    beat = taps * par
    first = order[:beat]  # the first beat: the block's taps in raster order, `par` channels each
    want = [(t // tw * kw + t % tw) * c + e for t in range(taps) for e in range(par)]
    assert first == want
    if par == c:
        assert order == list(range(kh * kw * c))  # one beat per pixel: the (ky, kx, c) order itself
    assert window_element_order(kh, kw, c, par, 1) == list(range(kh * kw * c))


def test_fold_window_caps_the_taps_and_the_verifier_checks_them():
    g = _conv_graph("quantize,fold{pe=3,simd=6,window=4}")
    (conv,) = [n for n in g.nodes if n.op == "qconv"]
    assert "window" not in conv.attrs  # a 3x5 window emits 1, 5 or 15 taps: a cap of 4 leaves one, unsaid
    g = _conv_graph("quantize,fold{pe=3,simd=6,window=14}")
    (conv,) = [n for n in g.nodes if n.op == "qconv"]
    assert conv.attrs["window"] == 5
    conv.attrs["window"] = 3
    with pytest.raises(IRError, match=r"window=3 taps per beat; a 3x5 window emits 1, 5, 15"):
        verify(g)
    conv.attrs.pop("window")
    requant = next(n for n in g.nodes if n.op == "requant")
    requant.attrs["window"] = 5
    with pytest.raises(IRError, match="applies to qconv only"):
        verify(g)


def test_fold_window_per_layer():
    g = _conv_graph("quantize,fold{pe=3,simd=6,window=y_q:15}")
    assert next(n for n in g.nodes if n.op == "qconv").attrs["window"] == 15
    g = _conv_graph("quantize,fold{pe=3,simd=6,window=y_acc:7}")
    assert next(n for n in g.nodes if n.op == "qconv").attrs["window"] == 5
    with pytest.raises(PipelineError, match=r"names layer 'c', which is not a qconv of this model "
                                            r"\(layers: y, y_acc, y_q\)"):
        _conv_graph("quantize,fold{window=c:5}")
    with pytest.raises(PipelineError, match="window of layer y_q must be a whole number, got 'five'"):
        _conv_graph("quantize,fold{window=y_q:five}")
    with pytest.raises(PipelineError, match="window=0 must be at least 1"):
        _conv_graph("quantize,fold{window=0}")


def test_lowered_conv_with_taps_computes_the_convolution():
    """The window's stream order times the lowered (row-permuted) matrix is the convolution."""
    g = _conv_graph("quantize,fold{pe=3,simd=15,window=15}")
    design = lower_stream(g, region_input(g))
    (win,) = [i for i in design.instances if i.module == "nnfpga_window"]
    (dense,) = design.layers
    p = WindowParams(**win.params)
    assert (p.TH, p.TW) == (3, 5) and win.outputs["m_axis"].par == 15 * p.PAR
    conv = next(n for n in g.nodes if n.op == "qconv")
    w = g.const_data(conv.inputs[1]).astype(np.int64)
    rng = np.random.default_rng(2)
    x = rng.integers(-20, 20, (1, 4, 3, 5))  # one window: kernel rows 0..2 of the dilated window
    want = conv_nchw(x, w, np.zeros(3, np.int64), {"group": 1, "strides": [1, 1], "pads": [0, 0, 0, 0],
                                                    "dilations": [1, 1]}).reshape(3)
    stream = x[0].transpose(1, 2, 0).reshape(-1)[window_element_order(3, 5, 4, p.PAR, 15)]
    assert np.array_equal(stream @ dense.weights, want)


def test_window_cost_counts_a_line_buffer_per_tap():
    base = dict(C=8, H=12, W=12, KH=3, KW=3, SH=1, SW=1, DH=1, DW=1, PT=0, PL=0, OH=10, OW=10, PAR=2, BITS=8, PAD=0)
    dev = DEVICES["ecp5-85k"]
    one = module_cost("nnfpga_window", WindowParams(**base).verilog_params(), dev)
    nine = module_cost("nnfpga_window", WindowParams(**base, TH=3, TW=3).verilog_params(), dev)
    assert nine["ram"]["copies"] == 9 and nine["brams"] == 9 * one["brams"]
    assert nine["ffs"] - one["ffs"] >= 8 * (2 * 8 + 1)  # each extra tap's output register and pad flag
    assert nine["luts"] > one["luts"]


def test_autofold_reads_the_mnist_cnn_first_layer_a_window_per_beat():
    """The goal of window taps: the 1-channel 5x5 first layer stops costing 25 cycles per pixel,
    so the MNIST CNN's interval falls well below a third of 19,600 cycles."""
    g = load_onnx(MNIST_CNN / "model.onnx")
    calib = dict(np.load(MNIST_CNN / "calib.npz"))
    q = run_pipeline(g, parse_pipeline("canonicalize,quantize,channels_last,autofold"),
                     PassContext(calib=calib, device="ecp5-85k"))
    convs = [n for n in q.nodes if n.op == "qconv"]
    assert convs[0].attrs.get("window", 1) > 1
    design = lower_stream(q, region_input(q))
    _, interval = predicted_timing(design)
    assert interval <= 19_600 // 3
