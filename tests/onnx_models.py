"""Small ONNX models for tests, built with onnx.helper (IR version 8 so onnxruntime reads them)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp(sizes=(16, 12, 5), seed=0, batch=1, node_name=None, extra_op=None, opset=13) -> onnx.ModelProto:
    """Gemm/ReLU MLP; `extra_op` appends a node of that type (e.g. 'Softmax') at the end."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        b = (0.1 * rng.standard_normal(n)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out], transB=1,
                                      name=node_name if (node_name and i == 0) else f"gemm{i}"))
        cur = out
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [cur], [cur + "_r"], name=f"relu{i}"))
            cur = cur + "_r"
    if extra_op:
        nodes.append(helper.make_node(extra_op, [cur], ["y_extra"], name=f"the_{extra_op.lower()}"))
        cur = "y_extra"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [batch, sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


# Convolutional models: seeded random weights (He-scaled, so activations stay about unit size),
# conv weights `w{i}`/`b{i}` in layer order, batch norms `bn{i}_scale/_bias/_mean/_var`.
# A conv followed by a BatchNormalization has no bias input, as exporters write it.

def _conv_params(rng, inits, i, c_out, c_in_per_group, kernel, bias=True) -> list[str]:
    fan_in = c_in_per_group * int(np.prod(kernel))
    w = (rng.standard_normal((c_out, c_in_per_group, *kernel)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, f"w{i}"))
    if not bias:
        return [f"w{i}"]
    inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c_out)).astype(np.float32), f"b{i}"))
    return [f"w{i}", f"b{i}"]


def _bn_params(rng, inits, i, c) -> list[str]:
    """Scale, bias, running mean and variance far enough from identity that folding them matters."""
    params = {"scale": rng.uniform(0.5, 1.5, c), "bias": 0.2 * rng.standard_normal(c),
              "mean": 0.3 * rng.standard_normal(c), "var": rng.uniform(0.5, 2.0, c)}
    for k, v in params.items():
        inits.append(numpy_helper.from_array(v.astype(np.float32), f"bn{i}_{k}"))
    return [f"bn{i}_{k}" for k in params]


def _gemm_params(rng, inits, i, n, k) -> list[str]:
    inits += [numpy_helper.from_array((rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32), f"w{i}"),
              numpy_helper.from_array((0.1 * rng.standard_normal(n)).astype(np.float32), f"b{i}")]
    return [f"w{i}", f"b{i}"]


def _model(name, nodes, inits, in_shape, out_shape, opset) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def residual_block(c=8, h=8, w=8, seed=0, opset=13) -> onnx.ModelProto:
    """x[1,c,h,w] -> Conv3x3 -> BN -> Relu -> Conv3x3 -> BN -> Add(x) -> Relu -> GlobalAveragePool
    -> Flatten -> Gemm -> y[1,4] (a ResNet basic block with a classifier)."""
    rng = np.random.default_rng(seed)
    inits = []
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", *_conv_params(rng, inits, 0, c, c, (3, 3), bias=False)], ["c0"], name="conv0", **conv),
        helper.make_node("BatchNormalization", ["c0", *_bn_params(rng, inits, 0, c)], ["n0"], name="bn0", epsilon=1e-5),
        helper.make_node("Relu", ["n0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", *_conv_params(rng, inits, 1, c, c, (3, 3), bias=False)], ["c1"], name="conv1", **conv),
        helper.make_node("BatchNormalization", ["c1", *_bn_params(rng, inits, 1, c)], ["n1"], name="bn1", epsilon=1e-5),
        helper.make_node("Add", ["n1", "x"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", *_gemm_params(rng, inits, 2, 4, c)], ["y"], name="gemm", transB=1),
    ]
    return _model("residual_block", nodes, inits, [1, c, h, w], [1, 4], opset)


def depthwise_separable(c=8, h=8, w=8, out=16, seed=0, opset=13) -> onnx.ModelProto:
    """x[1,c,h,w] -> depthwise Conv3x3 (group=c) -> BN -> Clip(0, 6) -> pointwise Conv1x1 c->out
    -> BN -> Relu -> AveragePool 2x2/2 -> Flatten -> Gemm -> y[1,4] (a MobileNet block)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
             numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max")]
    nodes = [
        helper.make_node("Conv", ["x", *_conv_params(rng, inits, 0, c, 1, (3, 3), bias=False)], ["c0"], name="conv_dw",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c),
        helper.make_node("BatchNormalization", ["c0", *_bn_params(rng, inits, 0, c)], ["n0"], name="bn0", epsilon=1e-5),
        helper.make_node("Clip", ["n0", "relu6_min", "relu6_max"], ["r0"], name="relu6"),
        helper.make_node("Conv", ["r0", *_conv_params(rng, inits, 1, out, c, (1, 1), bias=False)], ["c1"], name="conv_pw",
                         kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", *_bn_params(rng, inits, 1, out)], ["n1"], name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("AveragePool", ["r1"], ["p"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", *_gemm_params(rng, inits, 2, 4, out * (h // 2) * (w // 2))], ["y"], name="gemm",
                         transB=1),
    ]
    return _model("depthwise_separable", nodes, inits, [1, c, h, w], [1, 4], opset)


def strided_cnn(c=1, h=12, w=12, seed=0, opset=13) -> onnx.ModelProto:
    """x[1,c,h,w] -> Conv3x3 stride 2 pad 1 (c->8) -> Relu -> Conv3x3 stride 2 no pad (8->16) -> Relu
    -> ReduceMean over H, W (keepdims) -> Flatten -> Gemm -> y[1,10]. ReduceMean takes its axes
    as an attribute before opset 18 and as an input from 18 on."""
    rng = np.random.default_rng(seed)
    inits = []
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
        reduce = helper.make_node("ReduceMean", ["r1", "axes"], ["m"], name="reducemean", keepdims=1)
    else:
        reduce = helper.make_node("ReduceMean", ["r1"], ["m"], name="reducemean", axes=[2, 3], keepdims=1)
    nodes = [
        helper.make_node("Conv", ["x", *_conv_params(rng, inits, 0, 8, c, (3, 3))], ["c0"], name="conv0",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", *_conv_params(rng, inits, 1, 16, 8, (3, 3))], ["c1"], name="conv1",
                         kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        reduce,
        helper.make_node("Flatten", ["m"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", *_gemm_params(rng, inits, 2, 10, 16)], ["y"], name="gemm", transB=1),
    ]
    return _model("strided_cnn", nodes, inits, [1, c, h, w], [1, 10], opset)


def concat_block(c=4, h=6, w=6, seed=0, opset=13) -> onnx.ModelProto:
    """x[1,c,h,w] -> {Conv1x1 (c->4) -> Relu ; Conv3x3 pad 1 (c->6) -> Relu} -> Concat(axis=1)
    -> MaxPool 2x2/2 -> Flatten -> Gemm -> y[1,3] (two branches, as in an Inception block)."""
    rng = np.random.default_rng(seed)
    inits = []
    nodes = [
        helper.make_node("Conv", ["x", *_conv_params(rng, inits, 0, 4, c, (1, 1))], ["c0"], name="conv1x1",
                         kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["x", *_conv_params(rng, inits, 1, 6, c, (3, 3))], ["c1"], name="conv3x3",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Concat", ["r0", "r1"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["p"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", *_gemm_params(rng, inits, 2, 3, 10 * (h // 2) * (w // 2))], ["y"], name="gemm",
                         transB=1),
    ]
    return _model("concat_block", nodes, inits, [1, c, h, w], [1, 3], opset)


def conv1d_net(c=2, l=16, seed=0, opset=13) -> onnx.ModelProto:  # noqa: E741
    """x[1,c,l] -> Conv k=3 pad 1 (c->4) -> Relu -> MaxPool 2/2 -> Flatten -> Gemm -> y[1,3]."""
    rng = np.random.default_rng(seed)
    inits = []
    nodes = [
        helper.make_node("Conv", ["x", *_conv_params(rng, inits, 0, 4, c, (3,))], ["c0"], name="conv0",
                         kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("MaxPool", ["r0"], ["p"], name="maxpool", kernel_shape=[2], strides=[2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", *_gemm_params(rng, inits, 1, 3, 4 * (l // 2))], ["y"], name="gemm", transB=1),
    ]
    return _model("conv1d_net", nodes, inits, [1, c, l], [1, 3], opset)
