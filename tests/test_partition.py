"""partition: one accelerator chain, host prefix and suffix; quantize across host ops;
the pipeline gets a partition step only when the model needs one."""
import numpy as np
import pytest

from goldens import arrays_for
from onnx_models import mlp
from nnfpga.errors import PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.ir import parse, print_graph, run_batch
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.partition import pipeline_text, with_partition

SOFTMAX_MLP = """graph @mlp(%x: tensor<1x8xf32>) {
  const %w0 : tensor<8x6xf32> = @w0
  const %b0 : tensor<6xf32> = @b0
  const %w1 : tensor<6x4xf32> = @w1
  const %b1 : tensor<4xf32> = @b1
  %mm0 = matmul(%x, %w0) : tensor<1x6xf32>
  %a0 = add(%mm0, %b0) : tensor<1x6xf32>
  %h0 = relu(%a0) : tensor<1x6xf32>
  %mm1 = matmul(%h0, %w1) : tensor<1x4xf32>
  %logits = add(%mm1, %b1) : tensor<1x4xf32>
  %y = host(%logits) {axis = -1, op_type = "Softmax"} : tensor<1x4xf32>
  return %y
}
"""


def graph(text=SOFTMAX_MLP):
    return parse(text, arrays_for(text))


def places(g):
    return {n.outputs[0].name: n.attrs.get("place") for n in g.nodes}


def run(g, pipeline, **ctx):
    return run_pipeline(g, pipeline, PassContext(seed=0, **ctx))


def test_softmax_goes_to_the_host_and_the_layers_to_the_accelerator():
    g = run(graph(), "canonicalize,partition")
    assert places(g) == {"h0": "accel", "logits": "accel", "y": "host"}


def test_partition_twice_changes_nothing():
    from nnfpga.passes.partition import partition

    g = run(graph(), "canonicalize,partition")
    assert partition(g, PassContext(), host_ops="") is False


def test_quantize_calibrates_across_the_host_op_and_puts_the_boundary_around_the_chain():
    before = graph()
    after = run(before, "canonicalize,partition,quantize")
    ops = [(n.op, n.attrs["place"]) for n in after.nodes]
    assert ops == [("quantize", "accel"), ("qmatmul", "accel"), ("requant", "accel"),
                   ("qmatmul", "accel"), ("requant", "accel"), ("dequantize", "accel"), ("host", "host")]
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    ref, got = run_batch(before, {"x": x})["y"], run_batch(after, {"x": x})["y"]
    assert np.abs(ref - got).max() < 0.1  # probabilities; the logits step is 0.17 here
    assert np.mean(ref.argmax(-1) == got.argmax(-1)) >= 0.95


def test_a_host_op_in_the_middle_keeps_the_larger_chain_and_warns():
    text = SOFTMAX_MLP.replace('%h0 = relu(%a0)', '%h0 = host(%a0) {op_type = "Sigmoid"}')
    warnings = []
    g = run(graph(text), "canonicalize,partition", warn=warnings.append)
    # 8x6 = 48 multiply-accumulates before the Sigmoid, 6x4 = 24 after it.
    assert places(g) == {"a0": "accel", "h0": "host", "logits": "host", "y": "host"}
    assert len(warnings) == 1
    assert "split this model into 2" in warnings[0] and "%a0 .. %a0" in warnings[0]
    assert "%logits run on the host in float" in warnings[0]
    q = run(g, "quantize")
    x = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    assert np.abs(run_batch(graph(text), {"x": x})["y"] - run_batch(q, {"x": x})["y"]).max() < 0.02


def test_branches_that_rejoin_stay_on_the_accelerator():
    # %h0 feeds two layers whose results are added: one region, one value in, one out (a fork).
    text = """graph @g(%x: tensor<1x8xf32>) {
  const %w0 : tensor<8x6xf32> = @w0
  const %w1 : tensor<6x4xf32> = @w1
  const %w2 : tensor<6x4xf32> = @w2
  %h0 = matmul(%x, %w0) : tensor<1x6xf32>
  %y1 = matmul(%h0, %w1) : tensor<1x4xf32>
  %y2 = matmul(%h0, %w2) : tensor<1x4xf32>
  %y = add(%y1, %y2) : tensor<1x4xf32>
  return %y
}
"""
    g = run(graph(text), "canonicalize,partition")
    assert places(g) == {"h0": "accel", "y1": "accel", "y2": "accel", "y": "accel"}


def test_a_branch_leaving_the_region_ends_the_chain():
    # %h0 is read by a layer and by a host op: two ways out, so the layers fall back to chains.
    text = """graph @g(%x: tensor<1x8xf32>) {
  const %w0 : tensor<8x6xf32> = @w0
  const %w1 : tensor<6x4xf32> = @w1
  %h0 = matmul(%x, %w0) : tensor<1x6xf32>
  %y1 = matmul(%h0, %w1) : tensor<1x4xf32>
  %s = host(%h0) {op_type = "Sigmoid"} : tensor<1x6xf32>
  return %y1, %s
}
"""
    g = run(graph(text), "canonicalize,partition")
    assert places(g) == {"h0": "accel", "y1": "host", "s": "host"}


def test_host_ops_forces_nodes_onto_the_host():
    g = run(graph(), "canonicalize,partition{host_ops=%logits}")
    assert places(g) == {"h0": "accel", "logits": "host", "y": "host"}
    for names in ("Gemm", "dense", "MatMul+Softmax"):
        with pytest.raises(PipelineError, match="no dense or convolution layer is left for the accelerator"):
            run(graph(), f"canonicalize,partition{{host_ops={names}}}")
    with pytest.raises(PipelineError, match="'LSTM', which is not an op the accelerator runs"):
        run(graph(), "canonicalize,partition{host_ops=LSTM}")
    with pytest.raises(PipelineError, match="%nope, which no node defines"):
        run(graph(), "canonicalize,partition{host_ops=%nope}")


def test_partition_refuses_a_quantized_graph():
    with pytest.raises(PipelineError, match="run partition before quantize"):
        run(graph(SOFTMAX_MLP.replace('%y = host(%logits) {axis = -1, op_type = "Softmax"} : tensor<1x4xf32>',
                                      "%y = relu(%logits) : tensor<1x4xf32>")), "canonicalize,quantize,partition")


def test_quantize_without_partition_says_what_to_do():
    with pytest.raises(PipelineError, match="partition to place other ops on the host"):
        run(graph(), "canonicalize,quantize")


def test_with_partition_only_when_needed():
    plain = load_onnx(mlp())
    steps = parse_pipeline(DEFAULT_PIPELINE)
    assert with_partition(steps, plain) == steps  # pure MLPs: the pipeline is untouched
    soft = load_onnx(mlp(extra_op="Softmax"))
    names = [s.name for s in with_partition(steps, soft)]
    assert names == ["canonicalize", "partition", "quantize", "channels_last", "autofold"]
    assert pipeline_text(with_partition(steps, soft)) == "canonicalize,partition,quantize,channels_last,autofold"
    forced = with_partition(steps, plain, "Reshape,%y")
    assert [s.options for s in forced if s.name == "partition"] == [{"host_ops": "Reshape+%y"}]
    assert pipeline_text(forced) == "canonicalize,partition{host_ops=Reshape+%y},quantize,channels_last,autofold"
    mine = parse_pipeline("canonicalize,partition,quantize{wbits=4}")
    assert with_partition(mine, soft) == mine
    assert with_partition(mine, soft, "dense")[1].options == {"host_ops": "dense"}
    assert [s.name for s in with_partition(parse_pipeline("canonicalize"), soft)] == ["canonicalize", "partition"]


def test_ir_dump_shows_the_partition():
    text = print_graph(run(graph(), "canonicalize,partition"))
    assert 'place = "host"' in text and 'place = "accel"' in text
