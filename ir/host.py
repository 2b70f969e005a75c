"""The `host` op: one ONNX node the accelerator does not run, kept as it was in the model.

    %y = host(%x) {axis = -1, op_type = "Softmax"} : tensor<1x10xf32>
    %v, %i = host(%x, %k) {axis = -1, op_type = "TopK"} : tensor<1x3xf32>, tensor<1x3xi64>

`op_type` names the ONNX op (default domain, opset HOST_OPSET, the opset the frontend
converts every model to); every other attribute that is not an nnfpga annotation is the
ONNX node's own attribute, printed as an IR attribute. Operands are the ONNX node's inputs
in order (constant inputs, such as TopK's `k`, are IR constants); results are its outputs.

The interpreter runs a host node through onnxruntime on a one-node ONNX model (float
semantics, exactly what the host backend compiles with TVM), so calibration and the
golden chain see the same numbers as the deployed host code, up to float rounding.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnfpga.errors import IRError
from nnfpga.ir.annotations import ANNOTATIONS
from nnfpga.ir.graph import Graph, Node
from nnfpga.ir.types import F32, FloatType, IntType, TensorType

HOST_OPSET = 21
"""ONNX opset of every host node (the frontend's TARGET_OPSET)."""
ONNX_IR_VERSION = 10
"""IR version written for opset 21 models: the oldest that allows it, read by onnxruntime."""
OWN_ATTRS = ("op_type", "place")
"""Attributes of a host node that are nnfpga's, not the ONNX node's."""

_ONNX_ELEMENT = {TensorProto.FLOAT: F32, TensorProto.INT64: IntType(64, True), TensorProto.INT32: IntType(32, True)}
"""ONNX element types a host node may take or give, and their IR element types."""


def ir_element(onnx_type: int):
    """IR element type for an ONNX tensor element type, or None when nnfpga cannot hold it."""
    return _ONNX_ELEMENT.get(onnx_type)


def onnx_element(t: TensorType) -> int:
    e = t.element
    if isinstance(e, FloatType):
        return TensorProto.FLOAT
    if isinstance(e, IntType) and e.signed and e.bits in (32, 64):
        return TensorProto.INT64 if e.bits == 64 else TensorProto.INT32
    raise IRError(f"{t!r} has no ONNX counterpart on the host (float32, int32 or int64 only)")


def numpy_dtype(t: TensorType) -> np.dtype:
    return helper.tensor_dtype_to_np_dtype(onnx_element(t))


# -- attributes --------------------------------------------------------------------------------

def attrs_from_onnx(node: onnx.NodeProto) -> dict:
    """The ONNX node's attributes as IR attribute values; ValueError says why one cannot be."""
    out = {}
    for a in node.attribute:
        if a.name in OWN_ATTRS or not a.name.isidentifier() or a.name != a.name.lower():
            raise ValueError(f"its attribute name '{a.name}' cannot be written in the IR")
        if a.ref_attr_name:
            raise ValueError(f"its attribute '{a.name}' refers to a function attribute")
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
            if not all(isinstance(v, (int, float, str)) for v in value):
                raise ValueError(f"its attribute '{a.name}' is a list of tensors or graphs")
        elif not isinstance(value, (int, float)):
            raise ValueError(f"its attribute '{a.name}' is a tensor or graph; only numbers and strings are kept")
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ValueError(f"its attribute '{a.name}' is not finite")
        out[a.name] = value
    return out


def onnx_attrs(node: Node) -> dict:
    """The ONNX attributes of host node `node` (its attributes less nnfpga's own)."""
    return {k: v for k, v in node.attrs.items() if k not in OWN_ATTRS and k not in ANNOTATIONS}


def make_onnx_node(node: Node, inputs: list[str], outputs: list[str], name: str = "") -> onnx.NodeProto:
    """The ONNX node a host node stands for, reading `inputs` and writing `outputs`.

    Attribute types come from the op's schema, so an integral float (1.0) or an empty list
    is written with the type ONNX expects."""
    op_type = node.attrs["op_type"]
    try:
        schema = onnx.defs.get_schema(op_type, HOST_OPSET)
    except Exception:
        raise IRError(f"host node defining %{node.outputs[0].name}: '{op_type}' is not an ONNX op "
                      f"of opset {HOST_OPSET}") from None
    proto = helper.make_node(op_type, inputs, outputs, name=name)
    for key, value in sorted(onnx_attrs(node).items()):
        if key not in schema.attributes:
            raise IRError(f"host node defining %{node.outputs[0].name}: ONNX {op_type} has no attribute "
                          f"'{key}' (its attributes: {', '.join(sorted(schema.attributes)) or 'none'})")
        kind = schema.attributes[key].type
        if kind == onnx.AttributeProto.FLOAT:
            value = float(value)
        elif kind == onnx.AttributeProto.FLOATS:
            value = [float(v) for v in value]
        proto.attribute.append(helper.make_attribute(key, value, attr_type=kind))
    return proto


# -- one-node models and their sessions --------------------------------------------------------

def one_node_model(g: Graph, node: Node) -> onnx.ModelProto:
    """`node` alone as an ONNX model: data operands become inputs i0.., constants initializers."""
    inputs, inits, names = [], [], []
    for idx, v in enumerate(node.inputs):
        name = f"i{idx}"
        names.append(name)
        if v.is_const:
            data = np.asarray(g.const_data(v)).astype(numpy_dtype(v.type))
            inits.append(numpy_helper.from_array(data, name))
        else:
            inputs.append(helper.make_tensor_value_info(name, onnx_element(v.type), list(v.type.shape)))
    outputs = [helper.make_tensor_value_info(f"o{idx}", onnx_element(v.type), list(v.type.shape))
               for idx, v in enumerate(node.outputs)]
    proto = make_onnx_node(node, names, [o.name for o in outputs], name="host")
    graph = helper.make_graph([proto], "host", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", HOST_OPSET)])
    model.ir_version = ONNX_IR_VERSION
    return model


_SESSIONS: "weakref.WeakKeyDictionary[Node, object]" = weakref.WeakKeyDictionary()
"""Host node -> its onnxruntime session (a node is run once per calibration sample)."""


def _session(g: Graph, node: Node):
    session = _SESSIONS.get(node)
    if session is None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(one_node_model(g, node).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:
            if isinstance(e, IRError):
                raise
            raise IRError(f"onnxruntime cannot run host node {node.attrs['op_type']} defining "
                          f"%{node.outputs[0].name}: {str(e).strip().splitlines()[0]}") from None
        _SESSIONS[node] = session
    return session


def run_host_node(g: Graph, node: Node, operands: list[np.ndarray]) -> list[np.ndarray]:
    """Run one host node on one sample through onnxruntime."""
    session = _session(g, node)
    feeds = {f"i{idx}": np.asarray(x).astype(numpy_dtype(v.type))
             for idx, (v, x) in enumerate(zip(node.inputs, operands)) if not v.is_const}
    results = session.run(None, feeds)
    return [np.asarray(r).astype(np.float32) if v.type.is_float else np.asarray(r).astype(np.int64)
            for v, r in zip(node.outputs, results)]


def evaluate_onnx_node(node: onnx.NodeProto, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Run an ONNX node whose inputs are all constants (the frontend folds it)."""
    import onnxruntime as ort

    names = [f"i{idx}" for idx in range(len(arrays))]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in zip(names, arrays)]
    proto = onnx.NodeProto()
    proto.CopyFrom(node)
    del proto.input[:]
    proto.input.extend(names)
    outs = [f"o{idx}" for idx, o in enumerate(node.output)]
    del proto.output[:]
    proto.output.extend(outs)
    graph = helper.make_graph([proto], "fold", [], [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", HOST_OPSET)])
    model.ir_version = ONNX_IR_VERSION
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(r) for r in session.run(None, {})]


__all__ = ["HOST_OPSET", "ONNX_IR_VERSION", "attrs_from_onnx", "make_onnx_node", "one_node_model",
           "run_host_node", "evaluate_onnx_node", "ir_element", "onnx_element", "numpy_dtype", "onnx_attrs"]
