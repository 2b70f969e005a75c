"""The convolutional test-model builders in onnx_models.py make valid ONNX that onnxruntime
runs, with the layers and shapes their docstrings promise."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx_models import concat_block, conv1d_net, depthwise_separable, residual_block, strided_cnn

CASES = [
    (residual_block, {}, [1, 8, 8, 8], [1, 4],
     ["Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization", "Add", "Relu",
      "GlobalAveragePool", "Flatten", "Gemm"]),
    (residual_block, dict(c=4, h=5, w=7), [1, 4, 5, 7], [1, 4], None),
    (depthwise_separable, {}, [1, 8, 8, 8], [1, 4],
     ["Conv", "BatchNormalization", "Clip", "Conv", "BatchNormalization", "Relu", "AveragePool",
      "Flatten", "Gemm"]),
    (depthwise_separable, dict(c=3, h=6, w=4, out=5), [1, 3, 6, 4], [1, 4], None),
    (strided_cnn, {}, [1, 1, 12, 12], [1, 10],
     ["Conv", "Relu", "Conv", "Relu", "ReduceMean", "Flatten", "Gemm"]),
    (strided_cnn, dict(c=3, h=9, w=16), [1, 3, 9, 16], [1, 10], None),
    (strided_cnn, dict(opset=18), [1, 1, 12, 12], [1, 10], None),
    (concat_block, {}, [1, 4, 6, 6], [1, 3],
     ["Conv", "Relu", "Conv", "Relu", "Concat", "MaxPool", "Flatten", "Gemm"]),
    (concat_block, dict(c=2, h=8, w=4), [1, 2, 8, 4], [1, 3], None),
    (conv1d_net, {}, [1, 2, 16], [1, 3], ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"]),
    (conv1d_net, dict(c=3, l=10), [1, 3, 10], [1, 3], None),
]


def dims(v) -> list[int]:
    return [d.dim_value for d in v.type.tensor_type.shape.dim]


@pytest.mark.parametrize("build, kwargs, in_shape, out_shape, ops", CASES,
                         ids=[f"{c[0].__name__}-{c[1]}" for c in CASES])
def test_builder_checks_and_runs(build, kwargs, in_shape, out_shape, ops):
    model = build(seed=3, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [v.name for v in model.graph.input] == ["x"] and dims(model.graph.input[0]) == in_shape
    assert [v.name for v in model.graph.output] == ["y"] and dims(model.graph.output[0]) == out_shape
    if ops is not None:
        assert [n.op_type for n in model.graph.node] == ops
    # Weights are initializers, never graph inputs or Constant nodes.
    assert {n.op_type for n in model.graph.node}.isdisjoint({"Constant"})

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    outs = [sess.run(None, {"x": rng.standard_normal(in_shape).astype(np.float32)})[0] for _ in range(2)]
    for y in outs:
        assert y.shape == tuple(out_shape) and y.dtype == np.float32 and np.isfinite(y).all()
    assert not np.allclose(outs[0], outs[1])  # the input reaches the output (no dead network)


@pytest.mark.parametrize("build", [residual_block, depthwise_separable, strided_cnn, concat_block, conv1d_net])
def test_builders_are_seeded(build):
    assert build(seed=1).SerializeToString() == build(seed=1).SerializeToString()
    assert build(seed=1).SerializeToString() != build(seed=2).SerializeToString()


@pytest.mark.parametrize("build", [residual_block, depthwise_separable])
def test_batch_norms_are_not_identities(build):
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in build(seed=0).graph.initializer}
    for i in (0, 1):
        assert np.ptp(inits[f"bn{i}_scale"]) > 0.1 and np.abs(inits[f"bn{i}_bias"]).max() > 0.05
        assert np.abs(inits[f"bn{i}_mean"]).max() > 0.05 and np.abs(inits[f"bn{i}_var"] - 1).max() > 0.1


def test_residual_add_takes_the_block_input():
    add = next(n for n in residual_block().graph.node if n.op_type == "Add")
    assert "x" in add.input


def test_depthwise_conv_is_grouped_per_channel():
    model = depthwise_separable(c=6)
    dw = model.graph.node[0]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in dw.attribute}["group"] == 6
    w = next(t for t in model.graph.initializer if t.name == dw.input[1])
    assert list(w.dims) == [6, 1, 3, 3]
