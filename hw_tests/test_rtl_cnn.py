"""Convolutional and branching accelerators in Verilator, bit for bit against onnxruntime.

Each graph is written as float IR text with seeded weights, quantized, lowered to stream
modules (backends/stream_graph.py) and simulated with random input gaps and output
backpressure; the golden is onnxruntime on the reference ONNX. The measured interval and
latency equal the cycle model's (backends/stream_sim.py), and the skip FIFO's deadlock bound
is shown to be tight.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.lower import region_input, to_stream_order
from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.stream_latency import frame_latency
from nnfpga.backends.verilog import emit_stream_verilog, predicted_timing
from nnfpga.errors import BuildError
from nnfpga.hw_tests.sim import lint, simulate
from nnfpga.ir import parse, run_batch, verify
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline

# conv -> relu -> conv -> add(skip) -> relu: a residual block; then a strided depthwise conv,
# a pointwise conv and a global average pool, and a dense layer.
RESIDUAL = """graph @g(%x: tensor<1x4x6x6xf32>) {
  const %w : tensor<4x4x3x3xf32> = @w
  const %b : tensor<4xf32> = @b
  const %wb : tensor<4x4x3x3xf32> = @wb
  const %wd : tensor<4x1x3x3xf32> = @wd
  const %w1 : tensor<8x4x1x1xf32> = @w1
  const %b1 : tensor<8xf32> = @b1
  const %w2 : tensor<8x3xf32> = @w2
  const %b2 : tensor<3xf32> = @b2
  %c = conv(%x, %w, %b) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x4x6x6xf32>
  %r = relu(%c) : tensor<1x4x6x6xf32>
  %c2 = conv(%r, %wb, %b) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x4x6x6xf32>
  %s0 = add(%c2, %x) : tensor<1x4x6x6xf32>
  %s = relu(%s0) : tensor<1x4x6x6xf32>
  %d = conv(%s, %wd, %b) {dilations = [1, 1], group = 4, pads = [1, 1, 1, 1], strides = [2, 2]} : tensor<1x4x3x3xf32>
  %e = conv(%d, %w1, %b1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x8x3x3xf32>
  %a = avgpool(%e) {kernel = [3, 3], pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x8x1x1xf32>
  %f = reshape(%a) {shape = [1, 8]} : tensor<1x8xf32>
  %y = dense(%f, %w2, %b2) : tensor<1x3xf32>
  return %y
}
"""

# Two branches of different depth joined by a channel concat, a padded max pool with
# stride 1, an average pool with counted padding, and a flatten in NCHW order.
CONCAT = """graph @g(%x: tensor<1x2x5x5xf32>) {
  const %wa : tensor<2x2x1x1xf32> = @wa
  const %ba : tensor<2xf32> = @ba
  const %wb : tensor<4x2x3x3xf32> = @wb
  const %bb : tensor<4xf32> = @bb
  const %w2 : tensor<150x3xf32> = @w2
  const %b2 : tensor<3xf32> = @b2
  %a0 = conv(%x, %wa, %ba) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x5x5xf32>
  %a = relu(%a0) : tensor<1x2x5x5xf32>
  %b0 = conv(%x, %wb, %bb) {dilations = [2, 2], group = 1, pads = [2, 2, 2, 2], strides = [1, 1]} : tensor<1x4x5x5xf32>
  %b = relu(%b0) : tensor<1x4x5x5xf32>
  %k = concat(%a, %b) {axis = 1} : tensor<1x6x5x5xf32>
  %p = maxpool(%k) {dilations = [1, 1], kernel = [3, 3], pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x6x5x5xf32>
  %q = avgpool(%p) {count_include_pad = true, kernel = [2, 2], pads = [1, 1, 0, 0], strides = [1, 1]} : tensor<1x6x5x5xf32>
  %f = reshape(%q) {shape = [1, 150]} : tensor<1x150xf32>
  %y = dense(%f, %w2, %b2) : tensor<1x3xf32>
  return %y
}
"""

# A one-channel 5x5 first layer, then a conv with dh != dw and a horizontal stride, for
# windows that emit several taps per beat (fold's `window`).
FIRST_5X5 = """graph @g(%x: tensor<1x1x10x9xf32>) {
  const %w : tensor<4x1x5x5xf32> = @w
  const %b : tensor<4xf32> = @b
  const %w1 : tensor<6x4x2x3xf32> = @w1
  const %b1 : tensor<6xf32> = @b1
  const %w2 : tensor<48x3xf32> = @w2
  const %b2 : tensor<3xf32> = @b2
  %c = conv(%x, %w, %b) {dilations = [1, 1], group = 1, pads = [2, 2, 2, 2], strides = [1, 1]} : tensor<1x4x10x9xf32>
  %r = relu(%c) : tensor<1x4x10x9xf32>
  %c1 = conv(%r, %w1, %b1) {dilations = [2, 1], group = 1, pads = [1, 0, 0, 1], strides = [1, 2]} : tensor<1x6x9x4xf32>
  %r1 = relu(%c1) : tensor<1x6x9x4xf32>
  %p = maxpool(%r1) {dilations = [1, 1], kernel = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x6x4x2xf32>
  %f = reshape(%p) {shape = [1, 48]} : tensor<1x48xf32>
  %y = dense(%f, %w2, %b2) : tensor<1x3xf32>
  return %y
}
"""


def _graph(text: str, seed: int = 0):
    arrays = {}
    rng = np.random.default_rng(seed)
    for name, dims in re.findall(r"const %(\w+) : tensor<([0-9x]+)xf32>", text):
        arrays[name] = rng.standard_normal([int(d) for d in dims.split("x")]).astype(np.float32)
    g = parse(text, arrays)
    verify(g)
    x = g.inputs[0]
    calib = {x.name: rng.standard_normal((48,) + x.type.shape[1:]).astype(np.float32)}
    return g, calib


def _build(tmp: Path, text: str, pipeline: str):
    g, calib = _graph(text)
    q = run_pipeline(g, parse_pipeline(pipeline), PassContext(calib=calib))
    x = region_input(q)
    design = lower_stream(q, x)
    rtl = tmp / "rtl"
    emit_stream_verilog(design, rtl)
    env = run_batch(q, calib, keep_all=True)
    golden = next(iter(run_reference(to_reference_onnx(q), {x.name: env[x.name]}).values()))
    return design, rtl, to_stream_order(env[x.name], x.type.shape), golden.reshape(len(golden), -1)


@pytest.mark.parametrize("text, fold", [
    (RESIDUAL, "fold{pe=2,simd=4}"),
    (RESIDUAL, "fold{pe=4,simd=12}"),
    (CONCAT, "fold{pe=2,simd=2}"),
    (RESIDUAL, "fold{pe=2,simd=4,window=3}"),
    (CONCAT, "fold{pe=2,simd=2,window=9}"),
    (FIRST_5X5, "fold{pe=4,simd=25,window=25}"),
    (FIRST_5X5, "fold{pe=2,simd=5,window=5}"),
], ids=["residual-pe2", "residual-pe4", "concat", "residual-window3", "concat-window9", "first5x5-window25",
        "first5x5-window5"])
def test_cnn_is_bit_exact_at_the_predicted_rate(tmp_path, text, fold):
    design, rtl, x, golden = _build(tmp_path, text, f"quantize,channels_last,{fold}")
    assert "%Error" not in lint(rtl)
    modules = {i.module for i in design.instances}
    assert {"nnfpga_window", "nnfpga_dense"} <= modules
    assert text is FIRST_5X5 or {"nnfpga_fork", "nnfpga_fifo"} <= modules
    taps = [i.params["TH"] * i.params["TW"] for i in design.instances if i.module == "nnfpga_window"]
    assert ("window=" in fold) == (max(taps) > 1)
    result = simulate(rtl, x, golden, work_dir=tmp_path / "sim", seed=3)
    assert result.mismatches == 0
    assert np.array_equal(np.asarray(result.outputs, np.int64), golden)
    latency, interval = predicted_timing(design)
    print(f"interval measured {result.cycles_per_inference}, predicted {interval} (slowest module {design.interval}); "
          f"latency measured {result.latency_cycles}, predicted {latency} (recurrences {frame_latency(design)}); "
          f"fifos {[f['depth'] for f in design.fifos]}")
    assert result.cycles_per_inference == interval
    assert result.latency_cycles == latency


def test_skip_fifo_below_its_deadlock_bound_stalls(tmp_path):
    design, rtl, x, golden = _build(tmp_path, RESIDUAL, "quantize,channels_last,fold{pe=4,simd=12}")
    (fifo,) = design.fifos
    top = rtl / "nnfpga_top.sv"
    text = top.read_text()
    assert f".DEPTH({fifo['depth']})" in text
    top.write_text(text.replace(f".DEPTH({fifo['depth']})", f".DEPTH({fifo['deadlock_depth']})"))
    at_bound = simulate(rtl, x[:4], golden[:4], work_dir=tmp_path / "sim_bound", timing_samples=4)
    assert at_bound.mismatches == 0  # the bound itself runs (slower)
    top.write_text(text.replace(f".DEPTH({fifo['depth']})", f".DEPTH({fifo['deadlock_depth'] - 1})"))
    with pytest.raises(BuildError, match="stopped"):
        simulate(rtl, x[:4], golden[:4], work_dir=tmp_path / "sim_small", timing_samples=0)
    shutil.rmtree(tmp_path / "sim_small", ignore_errors=True)
