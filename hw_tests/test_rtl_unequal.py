"""Windows whose two spatial axes differ: dilations dh != dw, strides sh != sw, kernels
kh != kw and pads that differ per axis, in Verilator against the integer interpreter (==)
and onnxruntime on the reference.

A window generator that used dh where dw belongs (or sh for sw) gives the same results on
every square-parameter layer, so only such layers can show it.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnfpga.backends.lower import region_input, to_stream_order
from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import emit_stream_verilog, predicted_timing
from nnfpga.hw_tests.fastsim import simulate_fast
from nnfpga.hw_tests.test_rtl_cnn import _graph
from nnfpga.ir import run_batch
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline

# conv dil (1,2) pads (1,2) -> conv dil (2,1) stride (2,1) -> conv kernel 2x3 stride (1,3)
# -> max pool kernel 1x2 stride (1,2) dil (1, 1) -> dense.
UNEQUAL = """graph @g(%x: tensor<1x3x9x11xf32>) {
  const %w0 : tensor<4x3x3x3xf32> = @w0
  const %b0 : tensor<4xf32> = @b0
  const %w1 : tensor<4x4x3x3xf32> = @w1
  const %b1 : tensor<4xf32> = @b1
  const %w2 : tensor<6x4x2x3xf32> = @w2
  const %b2 : tensor<6xf32> = @b2
  const %w3 : tensor<24x5xf32> = @w3
  const %b3 : tensor<5xf32> = @b3
  %c0 = conv(%x, %w0, %b0) {dilations = [1, 2], group = 1, pads = [1, 2, 1, 2], strides = [1, 1]} : tensor<1x4x9x11xf32>
  %r0 = relu(%c0) : tensor<1x4x9x11xf32>
  %c1 = conv(%r0, %w1, %b1) {dilations = [2, 1], group = 1, pads = [0, 0, 0, 0], strides = [2, 1]} : tensor<1x4x3x9xf32>
  %r1 = relu(%c1) : tensor<1x4x3x9xf32>
  %c2 = conv(%r1, %w2, %b2) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 3]} : tensor<1x6x2x3xf32>
  %p = maxpool(%c2) {dilations = [1, 1], kernel = [1, 2], pads = [0, 0, 0, 1], strides = [1, 2]} : tensor<1x6x2x2xf32>
  %f = reshape(%p) {shape = [1, 24]} : tensor<1x24xf32>
  %y = dense(%f, %w3, %b3) : tensor<1x5xf32>
  return %y
}
"""


@pytest.mark.parametrize("fold", ["fold{pe=2,simd=4}", "fold{pe=4,simd=12}"])
def test_unequal_dilations_strides_and_kernels_are_bit_exact(tmp_path, fold):
    g, calib = _graph(UNEQUAL, seed=4)
    q = run_pipeline(g, parse_pipeline(f"quantize,channels_last,{fold}"), PassContext(calib=calib))
    x = region_input(q)
    design = lower_stream(q, x)
    rtl = tmp_path / "rtl"
    emit_stream_verilog(design, rtl)
    env = run_batch(q, calib, keep_all=True)
    count = len(calib[g.inputs[0].name])
    interpreter = to_stream_order(env[design.output_value.name], design.output_value.type.shape).reshape(count, -1)
    interpreter = interpreter.astype(np.int64)
    golden = next(iter(run_reference(to_reference_onnx(q), {x.name: env[x.name]}).values()))
    assert np.array_equal(to_stream_order(golden, design.output_value.type.shape).reshape(count, -1), interpreter)
    # The interpreter must not be trivially constant, or equality would show nothing.
    assert len(np.unique(interpreter, axis=0)) > len(interpreter) // 2

    result = simulate_fast(rtl, to_stream_order(env[x.name], x.type.shape), interpreter,
                           work_dir=tmp_path / "sim", seed=5)
    assert result.mismatches == 0
    assert np.array_equal(result.outputs, interpreter)
    latency, interval = predicted_timing(design)
    assert result.cycles_per_inference == interval
    assert result.latency_cycles == latency


@pytest.mark.parametrize("bug", [("XW'(TW * DW * CB)", "XW'(TW * DH * CB)"), ("XW'(SW * CB)", "XW'(SH * CB)")],
                         ids=["dh-for-dw", "sh-for-sw"])
def test_a_window_mixing_up_the_axes_is_caught(tmp_path, bug):
    """The test above would fail on the bug it is there for: the window stepping along x by
    the y axis' dilation or stride."""
    g, calib = _graph(UNEQUAL, seed=4)
    q = run_pipeline(g, parse_pipeline("quantize,channels_last,fold{pe=2,simd=4}"), PassContext(calib=calib))
    x = region_input(q)
    design = lower_stream(q, x)
    rtl = tmp_path / "rtl"
    emit_stream_verilog(design, rtl)
    window = rtl / "nnfpga_window.sv"
    text = window.read_text()
    assert text.count(bug[0]) == 1, "the window module changed; update this mutation"
    window.write_text(text.replace(*bug))
    env = run_batch(q, calib, keep_all=True)
    count = len(calib[g.inputs[0].name])
    expected = to_stream_order(env[design.output_value.name], design.output_value.type.shape).reshape(count, -1)
    result = simulate_fast(rtl, to_stream_order(env[x.name], x.type.shape)[:16], expected[:16].astype(np.int64),
                           work_dir=tmp_path / "sim", seed=5, timing_samples=0)
    assert result.mismatches > 8
