"""Models that arrive quantized (QDQ ONNX, onnxruntime's QOperator ops, QONNX): a float graph
plus the model's own quantization, which `quantize` takes instead of calibrating.

The design choice. The model is rewritten, at the ONNX level and before anything else reads
it, into the float model it stands for, and what its quantization says is kept aside in a
`FixedQuant`:

    DequantizeLinear(W_int, s_w, 0)  (constant)  -> W = W_int·s_w as a float initializer;
                                                    W_int's per-channel scale s_w is kept
    DequantizeLinear(b_int, s_b)     (constant)  -> b = b_int·s_b (int32 bias: s_b = s_x·s_w,
                                                    so quantize's round(b/(s_x·s_w)) gives b_int back)
    x -> QuantizeLinear(s, z) -> DequantizeLinear(s, z) -> readers
                                                 -> x -> readers; x's type !q<u8|i8|u4|i4, s, z> kept
    QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearGlobalAveragePool, QLinearConcat
                                                 -> DQ on each quantized input, the float op, Q on
                                                    the result (onnx_qoperator.py); then the above
    QONNX Quant/IntQuant, BipolarQuant           -> the same kept weights and types (onnx_qonnx.py)

`quantize` then quantizes the float graph as it would any other, except that a value with a
kept type takes that type instead of a calibrated one, and a layer whose float weights
equal kept `W_int·s_w` takes `s_w` (matched by value, which survives canonicalize's
transposes and renames; its integer weights are then exactly the model's). It makes the
same integer ops (qmatmul, qconv, requant, qadd, ...) as for a float model, so the
interpreter, the reference ONNX, the RTL and the HLS need nothing new, and the requant
multiplier and shift come from the model's scales (M/2^s ≈ s_x·s_w/s_y). Values without a
kept type (a model quantized in parts) are calibrated as usual, and quantize names them.

What our integer semantics take: weights symmetric (zero point 0; a non-zero one is refused)
with a per-output-channel or per-tensor scale in 2..8 bits; our b-bit weights are
±(2^(b−1)−1), so a b-bit tensor that uses −2^(b−1) (onnxruntime's int4 weights do) is held
exactly in b+1 bits, and refused at 8 bits. Activations per tensor, u8/i8/u4/i4, any zero
point. onnxruntime requantizes in float (acc·(s_x·s_w/s_y), a float32 ratio, round half to
even); ours is the integer (acc·M + 2^(s−1)) >> s (round half up), with M a 21-bit
approximation of the ratio for the layers the model quantizes (passes/quantize.py
requant_width), so a few output integers in ten thousand differ by one step;
tests/test_quantized_models.py measures it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from nnfpga.errors import ModelError
from nnfpga.frontend.onnx_qoperator import expand_qoperators
from nnfpga.frontend.onnx_qonnx import (float_initializer, is_qonnx, per_channel_scale, read_qonnx_node,
                                        symmetric_bits)
from nnfpga.ir import IntType, QuantType

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearGlobalAveragePool",
                 "QLinearConcat")
"""Quantized ONNX ops read here (QGemm, QLinearAdd, QLinearGlobalAveragePool and QLinearConcat
are in onnxruntime's com.microsoft domain, as its quantizer writes them)."""
DYNAMIC_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")
"""What onnxruntime's quantize_dynamic writes: activation scales computed at run time, which
fixed-point hardware cannot take (refused with that reason)."""

_STORAGE = {onnx.TensorProto.UINT8: IntType(8, False), onnx.TensorProto.INT8: IntType(8, True),
            onnx.TensorProto.UINT4: IntType(4, False), onnx.TensorProto.INT4: IntType(4, True)}
_LAYER_WEIGHT = {"Gemm": 1, "MatMul": 1, "Conv": 1}
"""Float ops whose input at this index is a weight (symmetric, per output channel)."""


@dataclass
class KeptWeight:
    """A weight tensor as the model quantized it."""

    values: np.ndarray
    """The float weight W_int·s_w the rewritten model holds (its layout in the model)."""
    scale: np.ndarray
    """s_w per output channel (a per-tensor scale repeated)."""
    bits: int
    """Storage bits of W_int."""
    node: str
    """The DequantizeLinear node it came from (for messages)."""


@dataclass
class FixedQuant:
    """What a quantized model says about its own quantization."""

    activations: dict[str, QuantType] = field(default_factory=dict)
    """Value name -> the quantized type the model gives it (IR names once imported)."""
    weights: list[KeptWeight] = field(default_factory=list)
    """Every weight tensor with its scales."""

    def weight_scale(self, w: np.ndarray, axis: int) -> tuple[np.ndarray, int] | None:
        """(s_w, bits) of the kept weight whose float values equal `w` (output channels on `axis`),
        or None. Matching by value survives canonicalize's transposes and renames."""
        for kept in self.weights:
            v = kept.values
            for candidate in (v, v.T) if v.ndim == 2 else (v,):
                if candidate.shape == w.shape and np.array_equal(candidate, w) and \
                        len(kept.scale) == w.shape[axis]:
                    return kept.scale, kept.bits
        return None


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS + QOPERATOR_OPS + DYNAMIC_OPS or is_qonnx(n) for n in model.graph.node)


def _fail(node: onnx.NodeProto, message: str):
    name = node.name or (node.output[0] if node.output else "?")
    raise ModelError(f"the {node.op_type} node '{name}': {message}")


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.fixed = FixedQuant()
        self.counter = 0

    def const(self, node, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            _fail(node, f"its {what} '{name}' is not a constant; nnfpga takes quantization parameters "
                        "fixed in the model (initializers or Constant nodes)")
        return self.consts[name]

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}__nnfpga_{self.counter}"

    def add_const(self, hint: str, data: np.ndarray) -> str:
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(data), name))
        self.consts[name] = data
        return name

    # -- the quantization parameters -----------------------------------------------------------
    def params(self, node, scale_name: str, zp_name: str | None, dtype: int | None = None, bias: bool = False):
        """(scale, zero point, storage) of a Q/DQ-style operand triple, checked (`bias`: a constant
        int32 bias is allowed too)."""
        scale = np.asarray(self.const(node, scale_name, "scale"), dtype=np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            _fail(node, f"scale '{scale_name}' has a zero, negative or non-finite value "
                        f"({scale.ravel()[:4].tolist()}); a scale must be positive")
        if zp_name:
            zp_proto = self.const(node, zp_name, "zero point")
            zp_type = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(zp_proto).dtype)
            zp = np.asarray(zp_proto).astype(np.int64)
            dtype = self.zero_point_type(zp_name, zp_type)
        else:
            zp = np.zeros_like(scale, dtype=np.int64)
            dtype = dtype if dtype is not None else onnx.TensorProto.UINT8
        if bias and dtype == onnx.TensorProto.INT32:
            return scale, zp, IntType(32, True)
        if dtype not in _STORAGE:
            _fail(node, f"its quantized type is {onnx.TensorProto.DataType.Name(dtype).lower()}; nnfpga takes "
                        "uint8, int8, uint4 and int4 (2..8-bit integers), not float8 or 16-bit types")
        return scale, zp, _STORAGE[dtype]

    def zero_point_type(self, name: str, fallback: int) -> int:
        for t in self.graph.initializer:
            if t.name == name:
                return t.data_type
        for n in self.graph.node:
            if n.op_type == "Constant" and n.output[0] == name:
                return n.attribute[0].t.data_type
        return fallback

    def activation_type(self, node, scale, zp, storage) -> QuantType:
        if scale.size != 1 or zp.size != 1:
            _fail(node, "quantizes an activation per channel; nnfpga quantizes activations per tensor")
        return QuantType(storage, float(scale.ravel()[0]), int(zp.ravel()[0]))


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


# -- QDQ -> float graph + kept types ---------------------------------------------------------

def _weight_axis(reader: onnx.NodeProto) -> int:
    """The output-channel axis of the weight `reader` (a Gemm, MatMul or Conv) reads at input 1."""
    if reader.op_type == "Gemm":
        trans_b = next((a.i for a in reader.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1 if reader.op_type == "MatMul" else 0


def _fold_constant_dequantize(rw: _Rewriter, node, readers) -> None:
    """DequantizeLinear of a constant -> its float value; a layer's weight keeps its scales."""
    x = rw.const(node, node.input[0], "input")
    scale, zp, storage = rw.params(node, node.input[1], node.input[2] if len(node.input) > 2 else None,
                                   onnx.helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype), bias=True)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    axis = axis % max(x.ndim, 1)
    shape = [1] * x.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    else:
        shape = [1] * x.ndim
    real = (x.astype(np.int64) - zp.reshape(shape)) * scale.reshape(shape)
    out = node.output[0]
    weight_readers = [r for r in readers.get(out, []) if r.op_type in _LAYER_WEIGHT and list(r.input).index(out) == 1]
    if weight_readers and x.dtype != np.int32:
        if np.any(zp != 0):
            _fail(node, "the weights have a non-zero zero point; nnfpga's weights are symmetric "
                        "(zero point 0): quantize the weights symmetrically (onnxruntime: "
                        "extra_options={'WeightSymmetric': True}, the default for int8)")
        if not storage.signed:
            _fail(node, "the weights are unsigned; nnfpga's weights are signed and symmetric (int8 or int4)")
        bits = symmetric_bits(int(np.abs(x.astype(np.int64)).max(initial=0)), storage.bits, node, _fail)
        out_axis = _weight_axis(weight_readers[0])
        if scale.size > 1 and (axis != out_axis or x.ndim < 2):
            _fail(node, f"the weights are quantized per channel along axis {axis}, not their output "
                        f"channels (axis {out_axis}); nnfpga scales weights per output channel")
        channels = x.shape[out_axis]
        per_channel = scale.ravel() if scale.size > 1 else np.full(channels, float(scale.ravel()[0]))
        rw.fixed.weights.append(KeptWeight(real.astype(np.float32), per_channel, bits, node.name or out))
    rw.graph.initializer.append(numpy_helper.from_array(real.astype(np.float32), out))
    rw.consts[out] = real.astype(np.float32)


def _fold_pair(rw: _Rewriter, qnode, readers, graph_inputs: set[str], graph_outputs: set[str]) -> list:
    """x -> Q -> DQ -> readers  becomes  x -> readers, x's type kept. Returns the nodes to drop."""
    scale, zp, storage = rw.params(qnode, qnode.input[1], qnode.input[2] if len(qnode.input) > 2 else None)
    t = rw.activation_type(qnode, scale, zp, storage)
    x, qout = qnode.input[0], qnode.output[0]
    if qout in graph_outputs:
        _fail(qnode, "the model outputs quantized integers; nnfpga's models output floats "
                     "(end the model with DequantizeLinear)")
    drop = [qnode]
    for dq in readers.get(qout, []):
        if dq.op_type != "DequantizeLinear":
            _fail(dq, f"reads the quantized integers of '{qout}' directly; nnfpga takes quantized values "
                      "through DequantizeLinear or onnxruntime's QLinear ops")
        s2, z2, st2 = rw.params(dq, dq.input[1], dq.input[2] if len(dq.input) > 2 else None)
        if rw.activation_type(dq, s2, z2, st2) != t:
            _fail(dq, f"dequantizes '{qout}' with other parameters than the QuantizeLinear that made it")
        drop.append(dq)
        x = _bypass(rw.graph, x, dq.output[0], graph_inputs, graph_outputs)
    rw.fixed.activations[x] = t
    return drop


def _bypass(graph, x: str, out: str, graph_inputs: set[str], graph_outputs: set[str]) -> str:
    """Drop a node x -> out from the value's path: the readers of `out` read x instead, or, where
    `out` is a graph output and x is not a graph input, x takes the output's name. Returns the
    name that now carries the value."""
    if out in graph_outputs and x not in graph_inputs:
        _rename(graph, x, out)
        return out
    _rename_uses(graph, out, x)
    return x


def _rename(graph, old: str, new: str) -> None:
    for n in graph.node:
        for seq in (n.input, n.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new


def _rename_uses(graph, old: str, new: str) -> None:
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
    for o in graph.output:
        if o.name == old:
            o.name = new


def _read_qonnx(rw: _Rewriter, node, graph_inputs: set[str], graph_outputs: set[str]) -> None:
    """A QONNX quantizer: a weight becomes its float values (scales kept), an activation keeps its type."""
    kind, weight, t = read_qonnx_node(rw, node, _weight_axis, _fail)
    out = node.output[0]
    if kind == "weight":
        w_int, scale, bits = weight
        real = w_int * scale
        readers = [r for r in _consumers(rw.graph).get(out, [])
                   if r.op_type in _LAYER_WEIGHT and list(r.input).index(out) == 1]
        if readers:
            if bits > 8:
                _fail(node, f"the weights have {bits} bits; nnfpga's weights have 2..8")
            channels = per_channel_scale(np.asarray(scale), _weight_axis(readers[0]), node, _fail)
            rw.fixed.weights.append(KeptWeight(real.astype(np.float32), channels, bits, node.name or out))
        float_initializer(rw, out, real)
        return
    x = _bypass(rw.graph, node.input[0], out, graph_inputs, graph_outputs)
    rw.fixed.activations[x] = t


def _key(node) -> tuple[str, str]:
    """Names a node across protobuf accesses (a Q or DQ result name is unique among Q/DQ nodes)."""
    return node.op_type, node.output[0]


def unquantize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FixedQuant]:
    """The float model a quantized model stands for, and its kept quantization (see the docstring)."""
    rw = _Rewriter(model)
    for node in model.graph.node:
        if node.op_type in DYNAMIC_OPS:
            _fail(node, "the model is quantized dynamically (onnxruntime's quantize_dynamic): its activation "
                        "scales are computed at run time, and the hardware needs them fixed; quantize it with "
                        "quantize_static (QDQ or QOperator) instead")
    expand_qoperators(rw, _fail)
    graph = rw.graph
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    drop: list[tuple[str, str]] = []
    for node in list(graph.node):
        if is_qonnx(node):
            _read_qonnx(rw, node, graph_inputs, graph_outputs)
            drop.append(_key(node))
    for node in list(graph.node):
        if node.op_type == "DequantizeLinear" and node.input[0] in rw.consts:
            _fold_constant_dequantize(rw, node, _consumers(graph))
            drop.append(_key(node))
    for node in list(graph.node):
        if node.op_type == "QuantizeLinear":
            if node.input[0] in rw.consts:
                _fail(node, "quantizes a constant; store the weights quantized (DequantizeLinear of an integer "
                            "initializer) or in float")
            drop += [_key(n) for n in _fold_pair(rw, node, _consumers(graph), graph_inputs, graph_outputs)]
    for node in graph.node:
        if _key(node) not in drop and node.op_type == "DequantizeLinear":
            _fail(node, f"dequantizes '{node.input[0]}', which no QuantizeLinear in the model made and which is "
                        "not a constant; nnfpga's models take float inputs")
    kept = [n for n in graph.node if _key(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    domains = {n.domain for n in graph.node}
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in domains]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model, rw.fixed
