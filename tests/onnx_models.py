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
