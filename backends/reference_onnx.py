"""Reference ONNX: the integer region of a quantized graph as a standard ONNX model.

onnxruntime runs it bit-exactly with `nnfpga.ir.interpreter`; its outputs are the golden
values the RTL and HLS are held to. The model covers exactly what the hardware does:

    inputs   the quantized integer tensors entering the region: the result of each `quantize`
             node, and every integer graph input (named after those IR values)
    outputs  the integer tensors feeding a `dequantize`, and every integer graph output

Every tensor carries a leading symbolic batch dimension `N` before its IR shape (an IR value
`tensor<1x16x...>` is `[N, 1, 16]`), so one session call runs a whole batch. Inputs and
outputs have the storage dtype of their IR type (int8/uint8 up to 8 bits, then int16/uint16,
int32/uint32); each one's doc string is its IR type.

Op sequences (opset 13; `name/...` tensors are internal, `/` never occurs in IR names):

    qmatmul(x, w, b)  matmul="double" (default):
                        Cast(x, DOUBLE) -> MatMul(., w as DOUBLE) -> Add(., b as DOUBLE)
                      matmul="integer":
                        MatMulInteger(x, w)   (no zero points: the input's is in the bias)
                        -> Add(., b as INT32)
    requant(acc)      [Cast(acc, DOUBLE)] -> Mul(., M·2^-s) -> Add(., 0.5) -> Floor
                        -> [Add(., zp)] -> Clip(., lo, hi) -> Cast(., storage)
    reshape           Reshape(x, [0, *shape])          (0 copies the batch dimension)
    windows of x      Cast(x, DOUBLE) -> Pad(fill) -> Reshape [N, C, Hp·Wp] -> Gather(window indices)
                        -> [N, C, OH·OW, kh·kw]          (im2col with a constant index table)
    qconv(x, w, b)    windows(fill z_x) -> per group MatMul(., w as DOUBLE) -> Add(., b)
    maxpool(x)        windows(fill storage min) -> ReduceMax -> Cast(., storage)
    sumpool(x)        windows(fill z_x) -> Sub(z_x) -> ReduceSum
    qadd(a, b)        (a − z_a)·ma + (b − z_b)·mb in DOUBLE, then requant's Mul(2^-s) .. Cast tail
    concat            Concat(axis + 1)
    transpose         Transpose(x, perm=[0, *(p + 1)])

Why each step is exact (IEEE double, round to nearest even):
  * double matmul: every product and partial sum is an integer of magnitude at most
    Σ_k max|x|·|w[k,n]| + |b[n]|, checked below 2^53, so no addition rounds, whatever order
    or fused multiply-add the kernel uses.
  * integer matmul: exact in int32 only when onnxruntime's kernel is. Its x86 u8·s8 kernels
    on AVX2/AVX-512 CPUs *without* VNNI use VPMADDUBSW, which saturates pairs of products at
    16 bits (onnxruntime PR #12088, option "session.x64quantprecision"), so u8 inputs near 255
    times weights near ±127 can come out wrong there (s8 inputs may take the same path).
    That is why "double" is the default; "integer" passed every test on x86 with AVX512-VNNI
    and AMX, failed the extreme u8 cases on an AVX2 EPYC (the tests skip those there), and is
    kept for users who want the MatMulInteger op.
  * Mul by M·2^-s: M < 2^53 is an integer and 2^-s a power of two, so the constant is exact,
    and |acc·M| < 2^53 (the IR verifier's rule, re-checked here) makes the product exact.
  * Add 0.5: the exact sum is (acc·M + 2^(s-1))/2^s. Whenever acc·M + 2^(s-1) ≤ 2^53 it is
    representable, so the addition is exact. Above, rounding can only change the floor if the
    numerator is one below a multiple of 2^s, rounding up to it; with |acc·M| < 2^53 that
    needs s = 54 and acc·M = 2^53 - 1, which the verifier's bound on the accumulator *type*
    (max(|acc.min|, acc.max)·M < 2^53) excludes for every width, as long as acc lies in its
    type (qmatmul results do; run_reference checks inputs). So Floor gives exactly
    floor((acc·M + 2^(s-1)) / 2^s), the arithmetic shift of the spec.
  * Add zp, Clip and Cast act on integers far below 2^53.
  * qconv is the same double MatMul over gathered windows (bound checked below 2^53);
    sumpool adds at most kh·kw integers of 9 bits; qadd's sum is below 2^26. Pad, Gather,
    Reshape, Transpose and ReduceMax move or compare values without rounding.
onnxruntime's CPU provider implements Floor, Clip, Mul, Add, MatMul and Cast on double.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnfpga.errors import CalibrationError, NnfpgaError
from nnfpga.ir import Graph, Value, verify
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import FloatType, IntType, QuantType
from nnfpga.version import __version__

OPSET = 13
"""ONNX default-domain opset of the reference model."""
IR_VERSION = 8
"""ONNX IR version written: onnxruntime refuses versions newer than it knows; 8 (the version
of opset 13/14 times) is accepted by every onnxruntime that runs opset 13."""
BATCH = "N"
"""Name of the symbolic batch dimension prepended to every tensor."""
SUPPORTED_OPS = ("qmatmul", "requant", "reshape", "transpose", "qconv", "maxpool", "sumpool", "qadd", "concat")
"""IR ops the reference model can hold (besides the quantize/dequantize boundary)."""
MATMUL_MODES = ("double", "integer")

_EXACT = 2**53

_ONNX_INT = {(8, True): TensorProto.INT8, (8, False): TensorProto.UINT8,
             (16, True): TensorProto.INT16, (16, False): TensorProto.UINT16,
             (32, True): TensorProto.INT32, (32, False): TensorProto.UINT32,
             (64, True): TensorProto.INT64, (64, False): TensorProto.UINT64}


def storage_dtype(v: Value) -> int:
    """The ONNX element type that stores an integer IR value (the narrowest of 8/16/32/64 bits)."""
    elem = v.type.element
    if isinstance(elem, FloatType):
        raise NnfpgaError(f"%{v.name} is a float tensor ({v.type!r}); the reference model holds "
                          "only integers")
    width = next(w for w in (8, 16, 32, 64) if elem.bits <= w)
    return _ONNX_INT[(width, elem.signed)]


def _dtype_name(dtype: int) -> str:
    return TensorProto.DataType.Name(dtype).lower()


@dataclass
class _Region:
    inputs: list[Value]
    outputs: list[Value]
    nodes: list


def _where(node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    return f"{node.op} node defining {outs}"


def reference_region(g: Graph) -> _Region:
    """The hardware's part of `g`: integer ops from the quantized inputs to the dequantized outputs."""
    region: set[int] = set()
    inputs: list[Value] = []
    nodes = []
    dequantized: list[Value] = []
    host: dict[int, list[str]] = {}
    """Float values computed from the region's dequantized results -> the ops on the way."""
    for v in g.inputs:
        if v.type.is_int:
            region.add(id(v))
            inputs.append(v)
    for node in g.nodes:
        data = [v for v in node.inputs if not v.is_const]
        inside = [v for v in data if id(v) in region]
        if node.op == "quantize":
            if id(node.inputs[0]) in host:
                path = "; ".join(host[id(node.inputs[0])]) or "nothing"
                raise NnfpgaError(
                    f"a float op sits inside the integer region: %{node.output.name} is quantized from "
                    f"values computed in float after a dequantize ({path}); the reference ONNX, like the "
                    f"accelerator, covers one integer region, with only {', '.join(SUPPORTED_OPS)} inside")
            region.add(id(node.output))
            inputs.append(node.output)
            continue
        if node.op == "dequantize":
            if inside:
                dequantized.append(node.inputs[0])
                host[id(node.output)] = [f"dequantize of %{node.inputs[0].name}"]
            continue
        if not inside:
            if node.op in ("qmatmul", "requant"):
                raise NnfpgaError(f"{_where(node)} is an integer op outside the integer region: its "
                                  "operands do not come from a quantize node or an integer graph input")
            # Float code before the quantize or after the dequantize: the host's part.
            paths = [host[id(v)] for v in node.inputs if id(v) in host]
            if paths:
                for v in node.outputs:
                    host[id(v)] = sorted({p for path in paths for p in path} | {_where(node)})
            continue
        if node.op not in SUPPORTED_OPS:
            kind = "a float op" if any(v.type.is_float for v in node.outputs) else "an op"
            raise NnfpgaError(
                f"{_where(node)} is {kind} inside the integer region (it reads "
                f"{', '.join('%' + v.name for v in inside)}); the reference ONNX model supports only "
                f"{', '.join(SUPPORTED_OPS)} between quantize and dequantize")
        if len(inside) != len(data):
            outside = [v for v in data if id(v) not in region]
            raise NnfpgaError(f"{_where(node)} mixes integer-region operands with "
                              f"{', '.join('%' + v.name for v in outside)}, which is not in the region")
        region.update(id(v) for v in node.outputs)
        nodes.append(node)

    outputs: list[Value] = []

    def add_output(v: Value) -> None:
        if all(v is not o for o in outputs):
            outputs.append(v)

    for v in g.outputs:
        if id(v) in region:
            add_output(v)
        elif v.producer is not None and v.producer.op == "dequantize" and id(v.producer.inputs[0]) in region:
            add_output(v.producer.inputs[0])
    for v in dequantized:
        add_output(v)
    if not outputs:
        raise NnfpgaError(f"graph @{g.name} has no integer region (no quantize node or integer input "
                          "reaching a dequantize or an output): run the quantize pass first")

    # Keep only what the outputs need.
    needed: set[int] = {id(v) for v in outputs}
    kept = []
    for node in reversed(nodes):
        if any(id(v) in needed for v in node.outputs):
            kept.append(node)
            needed.update(id(v) for v in node.inputs)
    kept.reverse()
    used_inputs = [v for v in inputs if id(v) in needed]
    for v in outputs:
        if any(v is x for x in used_inputs):
            raise NnfpgaError(f"%{v.name} enters and leaves the integer region unchanged: there are no "
                              "integer ops for a reference model to run")
    return _Region(used_inputs, outputs, kept)


class _Builder:
    def __init__(self, g: Graph, matmul: str):
        self.g = g
        self.matmul = matmul
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.tensor: dict[int, tuple[str, int]] = {}
        """IR value -> (ONNX tensor name, ONNX dtype) of its canonical tensor."""
        self.double: dict[int, str] = {}
        """IR value -> name of its DOUBLE copy, once made."""

    # -- helpers -----------------------------------------------------------------
    def init(self, name: str, array: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output + "/" + op, **attrs))
        return output

    def define(self, v: Value, dtype: int) -> str:
        """Name for the tensor computing `v` in `dtype`: the IR name when that is its storage dtype."""
        name = v.name if dtype == storage_dtype(v) else f"{v.name}/{_dtype_name(dtype)}"
        self.tensor[id(v)] = (name, dtype)
        if dtype == TensorProto.DOUBLE:
            self.double[id(v)] = name
        return name

    def as_double(self, v: Value) -> str:
        if id(v) not in self.double:
            name, _ = self.tensor[id(v)]
            self.double[id(v)] = self.node("Cast", [name], f"{v.name}/double", to=TensorProto.DOUBLE)
        return self.double[id(v)]

    def const(self, v: Value) -> np.ndarray:
        return np.asarray(self.g.const_data(v)).astype(np.int64)

    # -- ops ---------------------------------------------------------------------
    def qmatmul(self, node) -> None:
        x, w, b = node.inputs
        acc = node.output
        where = _where(node)
        acc_t = acc.type.element
        if not isinstance(acc_t, IntType) or acc_t.bits > 32:
            raise NnfpgaError(f"{where}: accumulator {acc_t!r} is wider than 32 bits; the reference "
                              "model (and the hardware) keep accumulators in int32")
        wdata, bdata = self.const(w), self.const(b)
        if np.abs(bdata).max(initial=0) > 2**31 - 1:
            raise NnfpgaError(f"{where}: bias %{b.name} does not fit int32")
        xq = x.type.element
        if self.matmul == "double":
            worst = (np.abs(wdata).sum(axis=0) * max(abs(xq.min), abs(xq.max)) + np.abs(bdata)).max(initial=0)
            if worst >= _EXACT:
                raise NnfpgaError(f"{where}: partial sums can reach {int(worst)}, beyond 2^53")
            xd = self.as_double(x)
            mm = self.node("MatMul", [xd, self.init(f"{w.name}/double", wdata.astype(np.float64))],
                           f"{acc.name}/matmul")
            self.node("Add", [mm, self.init(f"{b.name}/double", bdata.astype(np.float64))],
                      self.define(acc, TensorProto.DOUBLE))
            return
        # matmul == "integer": MatMulInteger takes 8-bit operands only.
        if xq.bits > 8:
            raise NnfpgaError(f"{where}: input %{x.name} is {xq!r}; MatMulInteger takes 8-bit inputs "
                              "(use matmul='double')")
        if w.type.element.bits > 8:
            raise NnfpgaError(f"{where}: weights %{w.name} are {w.type.element.storage!r}; MatMulInteger "
                              "takes 8-bit weights (use matmul='double')")
        lo, hi = accumulator_bounds(xq, wdata, np.zeros(wdata.shape[1], np.int64))
        if lo < -(2**31) or hi > 2**31 - 1:
            raise NnfpgaError(f"{where}: x·w before the bias can reach [{lo}, {hi}], beyond int32")
        wdtype = np.int8 if w.type.element.signed else np.uint8
        xname, _ = self.tensor[id(x)]
        mm = self.node("MatMulInteger", [xname, self.init(f"{w.name}/{np.dtype(wdtype).name}",
                                                          wdata.astype(wdtype))], f"{acc.name}/matmul")
        self.node("Add", [mm, self.init(f"{b.name}/int32", bdata.astype(np.int32))],
                  self.define(acc, TensorProto.INT32))

    def requant(self, node) -> None:
        acc, y = node.inputs[0], node.output
        where = _where(node)
        mult = np.asarray(self.g.arrays[node.attrs["mult"].name]).astype(np.int64)
        shift, lo, hi = node.attrs["shift"], node.attrs["lo"], node.attrs["hi"]
        acc_t = acc.type.element
        worst = max(abs(acc_t.min), abs(acc_t.max)) * int(mult.max(initial=0))
        if worst >= _EXACT:
            raise NnfpgaError(f"{where}: |acc·M| can reach {worst}, beyond 2^53: the double "
                              "requantization would round")
        if not 1 <= shift <= 62:
            raise NnfpgaError(f"{where}: shift {shift} is outside 1..62")
        scale = mult.astype(np.float64) * 2.0 ** -shift  # exact: integer below 2^53 times 2^-s
        assert np.array_equal(np.ldexp(scale, shift).astype(np.int64), mult)
        if acc.type.rank > 2:  # per channel on axis 1 of [1, C, H, W]
            scale = scale.reshape((-1,) + (1,) * (acc.type.rank - 2))
        t = self.node("Mul", [self.as_double(acc), self.init(f"{y.name}/mult", scale)], f"{y.name}/scaled")
        self.requant_tail(t, y, lo, hi)

    def reshape(self, node) -> None:
        x, y = node.inputs[0], node.output
        name, dtype = self.tensor[id(x)]
        shape = self.init(f"{y.name}/shape", np.array([0] + list(node.attrs["shape"]), np.int64))
        self.node("Reshape", [name, shape], self.define(y, dtype))

    def transpose(self, node) -> None:
        x, y = node.inputs[0], node.output
        name, dtype = self.tensor[id(x)]
        perm = [0] + [int(p) + 1 for p in node.attrs["perm"]]
        self.node("Transpose", [name], self.define(y, dtype), perm=perm)


    def requant_tail(self, t: str, y: Value, lo: int, hi: int) -> None:
        """Round half up, shift, zero point, clamp and cast, from t = acc·M·2^-s in double."""
        q: QuantType = y.type.element
        t = self.node("Add", [t, self.init(f"{y.name}/half", np.array(0.5))], f"{y.name}/rounded")
        t = self.node("Floor", [t], f"{y.name}/floor")
        if q.zero_point:
            t = self.node("Add", [t, self.init(f"{y.name}/zero_point", np.array(float(q.zero_point)))],
                          f"{y.name}/shifted")
        t = self.node("Clip", [t, self.init(f"{y.name}/lo", np.array(float(lo))),
                               self.init(f"{y.name}/hi", np.array(float(hi)))], f"{y.name}/clip")
        dtype = storage_dtype(y)
        self.node("Cast", [t], self.define(y, dtype), to=dtype)

    def windows(self, node, kernel, fill: float) -> tuple[str, int, int, int]:
        """[N, C, OH·OW, kh·kw] double tensor of node's input windows; returns (name, C, OH, OW)."""
        x, y = node.inputs[0], node.output
        _, c, h, w = x.type.shape
        _, _, oh, ow = y.type.shape
        kh, kw = kernel
        (sh, sw), (dh, dw) = node.attrs["strides"], node.attrs.get("dilations", [1, 1])
        top, left, bottom, right = node.attrs["pads"]
        hp, wp = h + top + bottom, w + left + right
        t = self.as_double(x)
        if any(node.attrs["pads"]):
            pads = [0, 0, 0, top, left, 0, 0, 0, bottom, right]
            t = self.node("Pad", [t, self.init(f"{y.name}/pads", np.array(pads, np.int64)),
                                  self.init(f"{y.name}/fill", np.array(float(fill)))], f"{y.name}/padded")
        t = self.node("Reshape", [t, self.init(f"{y.name}/flat_shape", np.array([0, c, hp * wp], np.int64))],
                      f"{y.name}/flat")
        iy = (np.arange(oh) * sh)[:, None, None, None] + (np.arange(kh) * dh)[None, None, :, None]
        ix = (np.arange(ow) * sw)[None, :, None, None] + (np.arange(kw) * dw)[None, None, None, :]
        index = (iy * wp + ix).reshape(oh * ow, kh * kw).astype(np.int64)
        t = self.node("Gather", [t, self.init(f"{y.name}/window_index", index)], f"{y.name}/windows", axis=2)
        return t, c, oh, ow

    def qconv(self, node) -> None:
        x, w, b = node.inputs
        acc = node.output
        where = _where(node)
        wdata, bdata = self.const(w), self.const(b)
        o, cg, kh, kw = wdata.shape
        group = node.attrs["group"]
        xq = x.type.element
        worst = (np.abs(wdata.reshape(o, -1)).sum(axis=1) * max(abs(xq.min), abs(xq.max)) + np.abs(bdata)).max(initial=0)
        if worst >= _EXACT:
            raise NnfpgaError(f"{where}: partial sums can reach {int(worst)}, beyond 2^53")
        t, c, oh, ow = self.windows(node, [kh, kw], xq.zero_point)
        p = oh * ow
        t = self.node("Reshape", [t, self.init(f"{acc.name}/groups_shape", np.array([0, group, cg, p, kh * kw], np.int64))],
                      f"{acc.name}/groups")
        t = self.node("Transpose", [t], f"{acc.name}/cols5", perm=[0, 1, 3, 2, 4])
        t = self.node("Reshape", [t, self.init(f"{acc.name}/cols_shape", np.array([0, group, p, cg * kh * kw], np.int64))],
                      f"{acc.name}/cols")
        wm = wdata.reshape(group, o // group, cg * kh * kw).transpose(0, 2, 1).astype(np.float64)
        t = self.node("MatMul", [t, self.init(f"{w.name}/double", np.ascontiguousarray(wm))], f"{acc.name}/matmul")
        t = self.node("Transpose", [t], f"{acc.name}/channels", perm=[0, 1, 3, 2])
        t = self.node("Reshape", [t, self.init(f"{acc.name}/image_shape", np.array([0, 1, o, oh, ow], np.int64))],
                      f"{acc.name}/image")
        self.node("Add", [t, self.init(f"{b.name}/double", bdata.reshape(o, 1, 1).astype(np.float64))],
                  self.define(acc, TensorProto.DOUBLE))

    def maxpool(self, node) -> None:
        y = node.output
        t, c, oh, ow = self.windows(node, node.attrs["kernel"], node.inputs[0].type.element.min)
        t = self.node("ReduceMax", [t], f"{y.name}/max", axes=[3], keepdims=0)
        t = self.node("Reshape", [t, self.init(f"{y.name}/image_shape", np.array([0, 1, c, oh, ow], np.int64))],
                      f"{y.name}/image")
        dtype = storage_dtype(y)
        self.node("Cast", [t], self.define(y, dtype), to=dtype)

    def sumpool(self, node) -> None:
        y = node.output
        z = node.inputs[0].type.element.zero_point
        t, c, oh, ow = self.windows(node, node.attrs["kernel"], z)
        t = self.node("Sub", [t, self.init(f"{y.name}/zero_point", np.array(float(z)))], f"{y.name}/centred")
        t = self.node("ReduceSum", [t, self.init(f"{y.name}/axes", np.array([3], np.int64))], f"{y.name}/sum",
                      keepdims=0)
        self.node("Reshape", [t, self.init(f"{y.name}/image_shape", np.array([0, 1, c, oh, ow], np.int64))],
                  self.define(y, TensorProto.DOUBLE))

    def qadd(self, node) -> None:
        y = node.output
        terms = []
        for v, key in zip(node.inputs, ("ma", "mb")):
            t = self.node("Sub", [self.as_double(v), self.init(f"{y.name}/{key}_zero", np.array(float(v.type.element.zero_point)))],
                          f"{y.name}/{key}_centred")
            terms.append(self.node("Mul", [t, self.init(f"{y.name}/{key}", np.array(float(node.attrs[key])))],
                                   f"{y.name}/{key}_scaled"))
        t = self.node("Add", terms, f"{y.name}/sum")
        t = self.node("Mul", [t, self.init(f"{y.name}/shift", np.array(2.0 ** -node.attrs["shift"]))], f"{y.name}/scaled")
        self.requant_tail(t, y, node.attrs["lo"], node.attrs["hi"])

    def concat(self, node) -> None:
        y = node.output
        names = [self.tensor[id(v)][0] for v in node.inputs]
        dtype = storage_dtype(y)
        self.node("Concat", names, self.define(y, dtype), axis=node.attrs["axis"] + 1)

def _value_info(v: Value) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, storage_dtype(v), [BATCH, *v.type.shape],
                                         doc_string=repr(v.type))


def to_reference_onnx(g: Graph, *, matmul: str = "double") -> onnx.ModelProto:
    """The integer region of quantized graph `g` as an ONNX model, bit-exact with the interpreter.

    `matmul` chooses how qmatmul is written: "double" (default, exact on every CPU) or
    "integer" (MatMulInteger; see the module docstring for the x86 caveat). The same graph
    always gives the same bytes. Raises NnfpgaError when the region holds a float op or an op
    the reference cannot express, or when a value would not be exact.
    """
    if matmul not in MATMUL_MODES:
        raise NnfpgaError(f"matmul must be one of {', '.join(MATMUL_MODES)}, got {matmul!r}")
    verify(g)
    region = reference_region(g)
    b = _Builder(g, matmul)
    for v in region.inputs:
        b.define(v, storage_dtype(v))
    for node in region.nodes:
        getattr(b, node.op)(node)
    for v in region.outputs:
        name, dtype = b.tensor[id(v)]
        if name != v.name:  # computed in another dtype (an accumulator in double or int32)
            b.node("Cast", [name], v.name, to=storage_dtype(v))

    graph = helper.make_graph(
        b.nodes, g.name,
        inputs=[_value_info(v) for v in region.inputs],
        outputs=[_value_info(v) for v in region.outputs],
        initializer=list(b.inits.values()),
        doc_string=f"Integer region of nnfpga graph @{g.name}: the bit-exact golden model of its hardware.")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nnfpga", producer_version=__version__)
    model.ir_version = IR_VERSION
    props = {"nnfpga.matmul": matmul, "nnfpga.batch_dim": BATCH}
    for v in region.inputs:  # the IR type's range, which run_reference enforces
        props[f"nnfpga.range.{v.name}"] = f"{v.type.element.min},{v.type.element.max}"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def make_session(model: onnx.ModelProto, optimize: bool = False):
    """An onnxruntime CPU session for `model`; graph optimisations off unless `optimize`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_reference(model, inputs: dict[str, np.ndarray], *, optimize: bool = False) -> dict[str, np.ndarray]:
    """Run a reference model on a batch; returns every output as int64 [B, *IR shape].

    `model` is a ModelProto from `to_reference_onnx` (or a session from `make_session`, to run
    many batches without rebuilding it). Each input is [B, *IR shape], or [B, *IR shape[1:]]
    when the IR shape starts with 1 (the batch-of-one axis dropped), as for `ir.run_batch`.
    Values must lie in the input's IR type range (recorded in the model's metadata).
    """
    session = make_session(model, optimize) if isinstance(model, onnx.ModelProto) else model
    props = session.get_modelmeta().custom_metadata_map
    feeds = {}
    count = None
    for info in session.get_inputs():
        if info.name not in inputs:
            raise CalibrationError(f"no data for reference input {info.name} "
                                   f"(got: {', '.join(sorted(inputs)) or 'nothing'})")
        x = np.asarray(inputs[info.name])
        shape = tuple(info.shape[1:])
        if x.shape[1:] != shape:
            if shape and shape[0] == 1 and x.ndim >= 1 and x.shape[1:] == shape[1:]:
                x = x.reshape((x.shape[0],) + shape)
            else:
                raise CalibrationError(f"data for input {info.name} has shape {list(x.shape)}; expected "
                                       f"[B, {', '.join(map(str, shape))}]")
        dtype = np.dtype(info.type[len("tensor("):-1])  # e.g. "tensor(int8)"
        if not np.issubdtype(x.dtype, np.integer):
            if x.size and not np.array_equal(x, np.round(x)):
                raise CalibrationError(f"data for input {info.name} is not integer")
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        what = f"its storage type {dtype.name}"
        if f"nnfpga.range.{info.name}" in props:
            lo, hi = map(int, props[f"nnfpga.range.{info.name}"].split(","))
            what = f"its IR type's range [{lo}, {hi}]"
        if x.size and (x.min() < lo or x.max() > hi):
            raise CalibrationError(f"data for input {info.name} spans [{x.min()}, {x.max()}], outside {what}")
        feeds[info.name] = x.astype(dtype)
        if count is not None and x.shape[0] != count:
            raise CalibrationError(f"inputs have different sample counts: {count} and {x.shape[0]}")
        count = x.shape[0]
    results = session.run(None, feeds)
    return {info.name: np.asarray(r).astype(np.int64) for info, r in zip(session.get_outputs(), results)}


__all__ = ["to_reference_onnx", "run_reference", "make_session", "reference_region", "storage_dtype",
           "SUPPORTED_OPS", "OPSET", "IR_VERSION"]
