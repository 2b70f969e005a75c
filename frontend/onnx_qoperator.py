"""onnxruntime's QOperator ops written as the QDQ form of the same model (frontend/onnx_quantized.py
then reads that form):

    QLinearConv(x, s_x, z_x, W, s_w, z_w, s_y, z_y, B)  -> Q(Conv(DQ(x), DQ(W), B·s_x·s_w), s_y, z_y)
    QLinearMatMul, QGemm (com.microsoft)                -> the same around MatMul, Gemm
    QLinearAdd, QLinearGlobalAveragePool, QLinearConcat -> the same around Add, GlobalAveragePool, Concat
    MaxPool, Flatten, ... on a QOperator result         -> Q(op(DQ(x))) with x's parameters
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

PASSTHROUGH_OPS = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity")
"""Ops onnxruntime's QOperator output applies to quantized integers directly (they commute
with the quantizer); here they run on the dequantized float value between Q and DQ."""


def expand_qoperators(rw, fail) -> None:
    """Rewrite every QOperator node as DQ -> float op -> Q (the QDQ form of the same model), and an
    op onnxruntime applies to quantized integers (MaxPool, Flatten, ...) as DQ -> op -> Q."""
    graph = rw.graph
    quantized: dict[str, tuple[str, str]] = {}  # integer tensor -> (scale name, zero point name)
    nodes: list[onnx.NodeProto] = []
    taken = {name for n in graph.node for name in list(n.input) + list(n.output)} | set(rw.consts)

    def float_name(qname: str) -> str:
        """The float result of a QOperator node: its name without onnxruntime's '_quantized'."""
        base = qname[:-len("_quantized")] if qname.endswith("_quantized") else qname + "_float"
        if base in taken:
            base = rw.fresh(base)
        taken.add(base)
        return base

    def dq(name: str, scale: str, zp: str, axis: int | None = None) -> str:
        out = rw.fresh(name + "_dq")
        attrs = {} if axis is None else {"axis": axis}
        nodes.append(helper.make_node("DequantizeLinear", [name, scale, zp], [out], **attrs))
        return out

    def q(float_name: str, out: str, scale: str, zp: str) -> None:
        nodes.append(helper.make_node("QuantizeLinear", [float_name, scale, zp], [out]))
        quantized[out] = (scale, zp)

    def bias(node, b: str, x_scale: str, w_scale: str) -> str:
        if not b:
            return ""
        b_int = rw.const(node, b, "bias").astype(np.float64)
        s = np.asarray(rw.const(node, x_scale, "scale"), np.float64) * np.asarray(rw.const(node, w_scale, "scale"),
                                                                                  np.float64)
        return rw.add_const(b + "_float", (b_int * s).astype(np.float32))

    for node in graph.node:
        ins = list(node.input) + [""] * 10
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "QLinearConv":
            xf, wf = dq(ins[0], ins[1], ins[2]), dq(ins[3], ins[4], ins[5], axis=0)
            yf = float_name(node.output[0])
            nodes.append(helper.make_node("Conv", [xf, wf] + ([bias(node, ins[8], ins[1], ins[4])] if ins[8] else []),
                                          [yf], name=node.name, **attrs))
            q(yf, node.output[0], ins[6], ins[7])
        elif node.op_type in ("QLinearMatMul", "QLinearAdd"):
            # Both take (a, s_a, z_a, b, s_b, z_b, s_y, z_y); MatMul's b is a weight [K, N], scaled per column.
            b_axis = 1 if node.op_type == "QLinearMatMul" else None
            af, bf = dq(ins[0], ins[1], ins[2]), dq(ins[3], ins[4], ins[5], axis=b_axis)
            yf = float_name(node.output[0])
            nodes.append(helper.make_node(node.op_type[len("QLinear"):], [af, bf], [yf], name=node.name))
            q(yf, node.output[0], ins[6], ins[7])
        elif node.op_type == "QGemm":
            if attrs.get("transA", 0):
                fail(node, "transA=1 is not taken; export the Gemm with its input untransposed")
            trans_b = int(attrs.get("transB", 0))
            af, bf = dq(ins[0], ins[1], ins[2]), dq(ins[3], ins[4], ins[5], axis=0 if trans_b else 1)
            c = bias(node, ins[6], ins[1], ins[4])
            yf = float_name(node.output[0]) if ins[7] else node.output[0]
            nodes.append(helper.make_node("Gemm", [af, bf] + ([c] if c else []), [yf], name=node.name,
                                          transB=trans_b, alpha=float(attrs.get("alpha", 1.0))))
            if ins[7]:
                q(yf, node.output[0], ins[7], ins[8])
        elif node.op_type == "QLinearGlobalAveragePool":
            if attrs.get("channels_last", 0):
                fail(node, "channels_last=1 is not taken (the model's images are NCHW)")
            yf = float_name(node.output[0])
            nodes.append(helper.make_node("GlobalAveragePool", [dq(ins[0], ins[1], ins[2])], [yf], name=node.name))
            q(yf, node.output[0], ins[3], ins[4])
        elif node.op_type == "QLinearConcat":
            triples = list(node.input)[2:]
            xs = [dq(triples[i], triples[i + 1], triples[i + 2]) for i in range(0, len(triples), 3)]
            yf = float_name(node.output[0])
            nodes.append(helper.make_node("Concat", xs, [yf], name=node.name, axis=int(attrs["axis"])))
            q(yf, node.output[0], node.input[0], node.input[1])
        elif node.op_type in PASSTHROUGH_OPS and node.input and node.input[0] in quantized:
            scale, zp = quantized[node.input[0]]
            yf = float_name(node.output[0])
            nodes.append(helper.make_node(node.op_type, [dq(node.input[0], scale, zp)] + list(node.input[1:]), [yf],
                                          name=node.name, **attrs))
            q(yf, node.output[0], scale, zp)
        else:
            if node.op_type == "QuantizeLinear":
                quantized[node.output[0]] = (node.input[1], node.input[2] if len(node.input) > 2 else "")
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
