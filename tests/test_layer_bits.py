"""Per-layer bit requests: `wbits`/`abits` annotations (left by bits, split or precision)
override quantize's pass-wide bits for that layer only, for dense and conv alike."""

import numpy as np
import pytest

from nnfpga.errors import IRError, PipelineError
from nnfpga.ir import print_graph, run_batch
from nnfpga.passes import PassContext, run_pipeline

from ir_graphs import seeded_calib, seeded_graph

MLP = """graph @mlp(%x: tensor<1x12xf32>) {
  const %w0 : tensor<12x10xf32> = @w0
  const %b0 : tensor<10xf32> = @b0
  const %w1 : tensor<10x6xf32> = @w1
  const %b1 : tensor<6xf32> = @b1
  %h = dense(%x, %w0, %b0) {relu = true} : tensor<1x10xf32>
  %y = dense(%h, %w1, %b1) : tensor<1x6xf32>
  return %y
}
"""

CNN = """graph @cnn(%x: tensor<1x2x6x6xf32>) {
  const %w0 : tensor<5x2x3x3xf32> = @w0
  const %b0 : tensor<5xf32> = @b0
  const %w1 : tensor<4x5x3x3xf32> = @w1
  const %b1 : tensor<4xf32> = @b1
  %c0 = conv(%x, %w0, %b0) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x5x6x6xf32>
  %r0 = relu(%c0) : tensor<1x5x6x6xf32>
  %c1 = conv(%r0, %w1, %b1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x4x4x4xf32>
  return %c1
}
"""


def _quantized(text, pipeline):
    g = seeded_graph(text)
    calib = seeded_calib(g)
    return run_pipeline(g, pipeline, PassContext(calib=calib)), calib


def _weight_bits(q):
    return {n.outputs[0].name: n.inputs[1].type.element.storage.bits for n in q.nodes if n.op in ("qmatmul", "qconv")}


def _requant_bits(q):
    return {n.outputs[0].name: n.output.type.element.storage.bits for n in q.nodes if n.op == "requant"}


def test_bits_requests_override_the_pass_wide_bits_of_one_dense_layer():
    q, _ = _quantized(MLP, "bits{wbits=h:4,abits=h:5},quantize{wbits=8,abits=8}")
    assert _weight_bits(q) == {"h_acc": 4, "y_acc": 8}
    assert _requant_bits(q) == {"h_q": 5, "y_q": 8}
    w = q.const_data(next(n.inputs[1] for n in q.nodes if n.op == "qmatmul"))
    assert np.abs(w).max() == 7  # 4-bit symmetric weights: each channel's largest is ±7


def test_bits_requests_reach_a_convolution_through_its_fused_relu():
    q, _ = _quantized(CNN, "bits{wbits=c0:3+c1:6,abits=c0:4},quantize")
    assert _weight_bits(q) == {"r0_acc": 3, "c1_acc": 6}
    assert _requant_bits(q) == {"r0_q": 4, "c1_q": 8}


def test_a_request_equal_to_the_pass_wide_bits_changes_nothing():
    plain, _ = _quantized(MLP, "quantize{wbits=6,abits=8}")
    requested, _ = _quantized(MLP, "bits{wbits=h:6+y:6,abits=h:8},quantize{wbits=6,abits=8}")
    assert print_graph(plain) == print_graph(requested)


def test_lower_requested_bits_cost_accuracy_on_that_layer_only():
    q8, calib = _quantized(MLP, "quantize")
    q3, _ = _quantized(MLP, "bits{wbits=h:3},quantize")
    ref = next(iter(run_batch(seeded_graph(MLP), calib).values()))
    err8 = np.abs(next(iter(run_batch(q8, calib).values())) - ref).mean()
    err3 = np.abs(next(iter(run_batch(q3, calib).values())) - ref).mean()
    assert err3 > err8


@pytest.mark.parametrize("options, words", [
    ("wbits=h:9", ["wbits of layer h is 9", "2..8"]),
    ("abits=y:1", ["abits of layer y is 1", "2..8"]),
    ("wbits=fc9:4", ["'fc9'", "layers: h, y"]),
    ("wbits=h", ["'h'", "layer:B"]),
    ("wbits=h:x", ["wbits of layer h", "integer"]),
])
def test_bad_requests_name_the_problem(options, words):
    with pytest.raises(PipelineError) as e:
        run_pipeline(seeded_graph(MLP), f"bits{{{options}}}", PassContext())
    for word in words:
        assert word in str(e.value)


def test_quantize_refuses_an_annotation_outside_2_to_8():
    text = MLP.replace("{relu = true}", "{relu = true, wbits = 12}")
    with pytest.raises(PipelineError, match=r"%h requests wbits=12, outside 2\.\.8"):
        run_pipeline(seeded_graph(text), "quantize", PassContext())


def test_the_verifier_checks_the_part_of_annotation_type():
    with pytest.raises(IRError, match="part_of"):
        seeded_graph(MLP.replace("{relu = true}", "{part_of = 3, relu = true}"))
