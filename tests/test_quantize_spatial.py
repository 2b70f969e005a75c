"""Convolutional ops through quantize, channels_last and the reference ONNX: the integer IR
and onnxruntime agree bit for bit, and the quantized model stays close to the float one."""
from __future__ import annotations

import numpy as np
import pytest

from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.errors import PipelineError
from nnfpga.ir import parse, run_batch, verify
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline

BLOCK = """graph @g(%x: tensor<1x2x8x8xf32>) {
  const %w : tensor<4x2x3x3xf32> = @w
  const %b : tensor<4xf32> = @b
  const %wd : tensor<4x1x3x3xf32> = @wd
  const %w1 : tensor<4x4x1x1xf32> = @w1
  const %b1 : tensor<4xf32> = @b1
  const %w2 : tensor<128x10xf32> = @w2
  const %b2 : tensor<10xf32> = @b2
  %c = conv(%x, %w, %b) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x4x8x8xf32>
  %r = relu(%c) : tensor<1x4x8x8xf32>
  %d = conv(%x, %wd, %b) {dilations = [2, 2], group = 2, pads = [2, 1, 2, 2], strides = [1, 1]} : tensor<1x4x8x7xf32>
  %e = conv(%r, %w1, %b1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x4x8x8xf32>
  %s0 = add(%e, %r) : tensor<1x4x8x8xf32>
  %s = relu(%s0) : tensor<1x4x8x8xf32>
  %p = maxpool(%s) {dilations = [1, 1], kernel = [3, 3], pads = [1, 1, 0, 0], strides = [2, 2]} : tensor<1x4x4x4xf32>
  %a = avgpool(%s) {kernel = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x4x4x4xf32>
  %k = concat(%p, %a) {axis = 1} : tensor<1x8x4x4xf32>
  %g0 = avgpool(%k) {kernel = [4, 4], pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x8x1x1xf32>
  %f = reshape(%k) {shape = [1, 128]} : tensor<1x128xf32>
  %y = dense(%f, %w2, %b2) : tensor<1x10xf32>
  %f2 = reshape(%g0) {shape = [1, 8]} : tensor<1x8xf32>
  return %y, %f2, %d
}
"""


def _block(seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = {"w": (4, 2, 3, 3), "b": (4,), "wd": (4, 1, 3, 3), "w1": (4, 4, 1, 1), "b1": (4,),
              "w2": (128, 10), "b2": (10,)}
    g = parse(BLOCK, {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()})
    verify(g)
    return g, {"x": rng.standard_normal((48, 2, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("pipeline", ["quantize", "quantize{wbits=4,abits=6},channels_last",
                                      "quantize{wbits=3,abits=3,calib=mse},channels_last"])
def test_integer_ir_and_reference_onnx_agree_bit_for_bit(pipeline):
    g, calib = _block()
    q = run_pipeline(g.clone(), parse_pipeline(pipeline), PassContext(calib=calib))
    ops = {n.op for n in q.nodes}
    assert {"qconv", "maxpool", "sumpool", "qadd", "concat", "requant"} <= ops
    assert not ops & {"conv", "relu", "avgpool", "add"}  # relus fused into the conv/add clamps
    env = run_batch(q, calib, keep_all=True)
    golden = run_reference(to_reference_onnx(q), {"x_q": env["x_q"]})
    assert golden
    for name, value in golden.items():
        assert np.array_equal(value.astype(np.int64), env[name]), name


def test_quantized_block_tracks_the_float_block():
    g, calib = _block()
    want = run_batch(g, calib)
    q = run_pipeline(g.clone(), parse_pipeline("quantize,channels_last"), PassContext(calib=calib))
    got = run_batch(q, calib)
    for name, out in zip(("y", "f2", "d"), q.outputs):
        ref = want[name]
        err = np.abs(got[out.name] - ref).max()
        assert err < 0.05 * np.abs(ref).max(), (name, err)


def test_channels_last_flattens_in_stream_order_and_changes_no_result():
    g, calib = _block()
    q = run_pipeline(g.clone(), parse_pipeline("quantize"), PassContext(calib=calib))
    before = run_batch(q, calib)
    q = run_pipeline(q, parse_pipeline("channels_last"), PassContext())
    transposes = [n for n in q.nodes if n.op == "transpose"]
    assert [n.attrs["perm"] for n in transposes] == [[0, 2, 3, 1]]  # only the C>1, H·W>1 flatten
    assert transposes[0].inputs[0].type.shape == (1, 8, 4, 4)
    after = run_batch(q, calib)
    for name in before:
        assert np.array_equal(before[name], after[name])


def test_average_pool_without_counted_padding_is_explained():
    text = """graph @g(%x: tensor<1x2x4x4xf32>) {
  %a = avgpool(%x) {count_include_pad = false, kernel = [3, 3], pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x2x4x4xf32>
  return %a
}
"""
    g = parse(text, {})
    with pytest.raises(PipelineError, match="count_include_pad"):
        run_pipeline(g, parse_pipeline("quantize"), PassContext(calib={"x": np.ones((4, 2, 4, 4), np.float32)}))
