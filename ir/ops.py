"""The op table: name -> arity, attribute schema, and a check of operand and result types.

Float ops come from the frontend; integer ops are made by `quantize` and run in hardware:

    op          operands            attributes                      result
    gemm        a, b[, c]           alpha, beta, trans_a, trans_b   alpha·op(a)·op(b) + beta·c
    matmul      a[M,K], b[K,N]                                      a·b
    add, mul    a, b (broadcast)                                    a+b, a·b
    relu        x                                                   max(x, 0)
    transpose   x                   perm                            x permuted
    reshape     x                   shape                           x reshaped (row-major)
    dense       x[1,K], w[K,N], b[N] relu                           x·w + b (then relu)
    quantize    x: f32                                              clamp(rint(x/s) + z)
    dequantize  q: !q                                               (q - z)·s
    qmatmul     x: !q, w: !q[K,N], b: i32[N]                        x·w + b (exact, acc type)
    requant     acc: int            mult, shift, lo, hi             clamp(z + ((acc·M + 2^(s-1)) >> s), lo, hi), M per channel (axis 1)
    host        any float/int       op_type, the ONNX attributes    one ONNX node, run on the host (ir/host.py)

Convolutional ops (conv, qconv, maxpool, avgpool, sumpool, concat, clip, pad, qadd) are
described in ir/spatial.py.

Every op also accepts the hardware annotations of ir/annotations.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nnfpga.errors import IRError
from nnfpga.hardware import ADD_MULT_BITS, MULT_BITS
from nnfpga.ir.graph import ArrayRef, Graph, Node
from nnfpga.ir.host import onnx_attrs, onnx_element
from nnfpga.ir.spatial import SpatialError, window_output
from nnfpga.ir.types import FloatType, IntType, QuantType, TensorType

MULT_LIMIT = 1 << MULT_BITS
"""Requant multipliers (requant `mult`) lie in [0, MULT_LIMIT): the widest multiplier the
hardware's requantizer takes (nnfpga.hardware.MULT_BITS)."""
ADD_MULT_LIMIT = 1 << ADD_MULT_BITS
"""qadd's operand multipliers `ma`, `mb` lie in [0, ADD_MULT_LIMIT) (nnfpga.hardware.ADD_MULT_BITS)."""
WEIGHT_BITS = (2, 8)
"""Weight storage widths the backends build: symmetric weights, |w| <= 2^(bits-1) - 1."""
ACTIVATION_BITS = (1, 32)
"""Storage widths of activations (layer inputs and requant results) the backends carry."""
ACC_BITS = (2, 64)
"""Accumulator widths the backends build (the HLS accumulator is at most 64 bits)."""


class OpCheckError(Exception):
    """Raised by an op's check with a sentence about the broken rule."""


@dataclass(frozen=True)
class OpDef:
    name: str
    """Op name as printed."""
    arity: tuple[int, int]
    """Minimum and maximum number of operands."""
    attrs: dict[str, tuple[type, bool]] = field(default_factory=dict)
    """Attribute name -> (Python type, required)."""
    check: Callable[[Graph, Node], None] | None = None
    """Raises OpCheckError if operand/result types or attributes break the op's rules."""
    results: int | None = 1
    """Number of results; None for any number (at least one)."""
    open_attrs: bool = False
    """Whether attributes outside the schema are allowed (the host op's ONNX attributes)."""


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise OpCheckError(message)


def _result_shape(node: Node, shape: tuple[int, ...]) -> None:
    got = node.output.type.shape
    _expect(got == tuple(shape), f"result shape {list(got)} should be {list(shape)}")


def _float_operands(node: Node) -> None:
    for idx, v in enumerate(node.inputs):
        _expect(v.type.is_float, f"operand {idx} (%{v.name}) must be float, is {v.type!r}")
    _expect(node.output.type.is_float, "result must be float")


def _check_gemm(g: Graph, node: Node) -> None:
    _float_operands(node)
    a, b = node.inputs[0].type, node.inputs[1].type
    _expect(a.rank == 2 and b.rank == 2, "gemm operands a and b must be 2-D")
    m, k = a.shape[::-1] if node.attrs.get("trans_a") else a.shape
    k2, n = b.shape[::-1] if node.attrs.get("trans_b") else b.shape
    _expect(k == k2, f"inner dimensions differ: {k} vs {k2}")
    if len(node.inputs) == 3:
        c = node.inputs[2].type.shape
        _expect(_broadcasts(c, (m, n)), f"c of shape {list(c)} does not broadcast to {[m, n]}")
    _result_shape(node, (m, n))


def _check_matmul(g: Graph, node: Node) -> None:
    _float_operands(node)
    a, b = node.inputs[0].type, node.inputs[1].type
    _expect(a.rank == 2 and b.rank == 2, "matmul operands must be 2-D")
    _expect(a.shape[1] == b.shape[0], f"inner dimensions differ: {a.shape[1]} vs {b.shape[0]}")
    _result_shape(node, (a.shape[0], b.shape[1]))


def _broadcasts(shape, target) -> bool:
    try:
        return tuple(np.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except ValueError:
        return False


def _check_elementwise(g: Graph, node: Node) -> None:
    _float_operands(node)
    shapes = [v.type.shape for v in node.inputs]
    try:
        out = np.broadcast_shapes(*shapes)
    except ValueError:
        raise OpCheckError(f"operand shapes {[list(s) for s in shapes]} do not broadcast")
    _result_shape(node, out)


def _check_relu(g: Graph, node: Node) -> None:
    _float_operands(node)
    _result_shape(node, node.inputs[0].type.shape)


def _check_transpose(g: Graph, node: Node) -> None:
    x = node.inputs[0].type
    perm = node.attrs["perm"]
    _expect(sorted(perm) == list(range(x.rank)), f"perm {perm} is not a permutation of 0..{x.rank - 1}")
    _expect(node.output.type.element == x.element, "transpose keeps the element type")
    _result_shape(node, tuple(x.shape[p] for p in perm))


def _check_reshape(g: Graph, node: Node) -> None:
    x = node.inputs[0].type
    shape = tuple(node.attrs["shape"])
    _expect(node.output.type.element == x.element, "reshape keeps the element type")
    _result_shape(node, shape)
    _expect(node.output.type.size == x.size, f"reshape from {list(x.shape)} to {list(shape)} changes the element count")


def _check_dense(g: Graph, node: Node) -> None:
    _float_operands(node)
    x, w, b = (v.type for v in node.inputs)
    _expect(x.rank == 2 and x.shape[0] == 1, f"dense input must be [1, K], is {list(x.shape)}")
    _expect(w.rank == 2 and w.shape[0] == x.shape[1], f"dense weight must be [{x.shape[1]}, N], is {list(w.shape)}")
    _expect(b.shape == (w.shape[1],), f"dense bias must be [{w.shape[1]}], is {list(b.shape)}")
    _expect(node.inputs[1].is_const and node.inputs[2].is_const, "dense weight and bias must be constants")
    _result_shape(node, (1, w.shape[1]))


def _check_quantize(g: Graph, node: Node) -> None:
    x, y = node.inputs[0].type, node.output.type
    _expect(x.is_float, "quantize takes a float tensor")
    _expect(isinstance(y.element, QuantType) and y.element.axis is None,
            "quantize gives a per-tensor quantized tensor")
    _result_shape(node, x.shape)


def _check_dequantize(g: Graph, node: Node) -> None:
    x = node.inputs[0].type
    _expect(isinstance(x.element, QuantType) and x.element.axis is None,
            "dequantize takes a per-tensor quantized tensor")
    _expect(node.output.type.is_float, "dequantize gives a float tensor")
    _result_shape(node, x.shape)


def _activation_bits(t, what: str) -> None:
    lo, hi = ACTIVATION_BITS
    _expect(lo <= t.bits <= hi, f"{what} {t!r} has {t.bits} bits; the hardware carries activations of "
            f"{lo}..{hi} bits (request fewer with abits)")


def _symmetric_weights(w: QuantType, wdata: np.ndarray) -> None:
    """Storage range, then the symmetric range and the width the backends build."""
    _expect(wdata.min() >= w.min and wdata.max() <= w.max, f"weights exceed their storage type {w.storage!r}")
    lo, hi = WEIGHT_BITS
    _expect(lo <= w.bits <= hi, f"weights are {w.storage!r}; the hardware builds {lo}..{hi}-bit weights "
            f"(request fewer with wbits)")
    limit = (1 << (w.bits - 1)) - 1
    peak = int(np.abs(wdata.astype(np.int64)).max()) if wdata.size else 0
    _expect(peak <= limit, f"a weight of magnitude {peak} lies outside the symmetric range ±{limit} of "
            f"{w.bits}-bit weights; quantize symmetrically (clip the weights to ±{limit})")


def _accumulator(acc, lo: int, hi: int) -> None:
    _expect(acc.min <= lo and hi <= acc.max, f"accumulator {acc!r} cannot hold the exact range [{lo}, {hi}]; widen it")
    lo_bits, hi_bits = ACC_BITS
    _expect(lo_bits <= acc.bits <= hi_bits, f"accumulator {acc!r} has {acc.bits} bits; the hardware builds "
            f"{lo_bits}..{hi_bits}-bit accumulators (use fewer weight or activation bits)")


def accumulator_bounds(xq: QuantType | IntType, w: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Exact range of x·w + b over every input x in xq's storage range (per channel worst case)."""
    w = w.astype(np.int64)
    pos = np.where(w > 0, w, 0).sum(axis=0)
    neg = np.where(w < 0, w, 0).sum(axis=0)
    hi = pos * xq.max + neg * xq.min + b
    lo = pos * xq.min + neg * xq.max + b
    return int(lo.min()), int(hi.max())


def _check_qmatmul(g: Graph, node: Node) -> None:
    x, w, b = (v.type for v in node.inputs)
    _expect(isinstance(x.element, (QuantType, IntType)), "qmatmul input must be an integer tensor")
    _expect(x.rank == 2 and x.shape[0] == 1, f"qmatmul input must be [1, K], is {list(x.shape)}")
    _expect(isinstance(w.element, QuantType) and w.element.axis == 1,
            "qmatmul weight must be quantized per output channel (axis=1)")
    _expect(w.rank == 2 and w.shape[0] == x.shape[1], f"qmatmul weight must be [{x.shape[1]}, N], is {list(w.shape)}")
    _expect(isinstance(b.element, IntType) and b.shape == (w.shape[1],), f"qmatmul bias must be an integer [{w.shape[1]}]")
    _expect(node.inputs[1].is_const and node.inputs[2].is_const, "qmatmul weight and bias must be constants")
    acc = node.output.type.element
    _expect(isinstance(acc, IntType) and acc.signed, "qmatmul result must be a signed integer")
    _result_shape(node, (1, w.shape[1]))
    _activation_bits(x.element, "input")
    wdata, bdata = g.const_data(node.inputs[1]), g.const_data(node.inputs[2])
    _symmetric_weights(w.element, wdata)
    _accumulator(acc, *accumulator_bounds(x.element, wdata, bdata))


def _check_requant(g: Graph, node: Node) -> None:
    acc, y = node.inputs[0].type, node.output.type
    _expect(isinstance(acc.element, IntType), "requant takes a plain integer accumulator")
    _expect(isinstance(y.element, QuantType) and y.element.axis is None,
            "requant gives a per-tensor quantized tensor")
    _result_shape(node, acc.shape)
    mult = node.attrs["mult"]
    _expect(isinstance(mult, ArrayRef) and mult.name in g.arrays, f"mult {mult!r} is not in the array table")
    m = g.arrays[mult.name]
    channels = acc.shape[1] if acc.rank >= 2 else acc.shape[-1]  # axis 1: [1, N] and [1, C, H, W]
    _expect(m.shape == (channels,), f"mult must hold one multiplier per channel ({channels}), has shape {list(m.shape)}")
    _expect(np.issubdtype(m.dtype, np.integer) and m.min() >= 0, "mult must hold non-negative integers")
    _expect(int(m.max()) < MULT_LIMIT, f"mult @{mult.name} holds {int(m.max())}, beyond the hardware's "
            f"[0, 2^{MULT_BITS}); lower the shift so that every multiplier fits")
    _activation_bits(y.element, "result")
    shift = node.attrs["shift"]
    _expect(1 <= shift <= 62, f"shift {shift} must be in 1..62")
    lo, hi = node.attrs["lo"], node.attrs["hi"]
    _expect(y.element.min <= lo <= hi <= y.element.max,
            f"clamp [{lo}, {hi}] must lie within {y.element.storage!r}")
    # The reference ONNX computes acc·M in float64: exact only below 2^53.
    worst = max(abs(acc.element.min), acc.element.max) * int(m.max())
    _expect(worst < 2**53, f"|acc·M| can reach {worst}, beyond 2^53: float64 reference would round")


# ---- spatial ops (ir/spatial.py has their semantics and kernels) ----

def _image(v, what: str) -> tuple[int, int, int]:
    t = v.type
    _expect(t.rank == 4 and t.shape[0] == 1, f"{what} must be an image [1, C, H, W], is {list(t.shape)}")
    return t.shape[1], t.shape[2], t.shape[3]


def _window_attrs(node: Node, kernel) -> list:
    for key in ("strides", "dilations"):
        _expect(len(node.attrs.get(key, [1, 1])) == 2, f"{key} must have 2 entries (height, width)")
    _expect(len(node.attrs["pads"]) == 4, "pads must have 4 entries [top, left, bottom, right]")
    _expect(len(kernel) == 2, "kernel must have 2 entries (height, width)")
    return [list(kernel), node.attrs["strides"], node.attrs["pads"], node.attrs.get("dilations", [1, 1])]


def _window_result(node: Node, c: int, h: int, w: int, kernel) -> None:
    try:
        oh, ow = window_output(h, w, *_window_attrs(node, kernel))
    except SpatialError as e:
        raise OpCheckError(str(e)) from None
    _result_shape(node, (1, c, oh, ow))


def _check_conv_shapes(node: Node) -> tuple:
    c, h, w = _image(node.inputs[0], "the input")
    wt, bt = node.inputs[1].type, node.inputs[2].type
    _expect(node.inputs[1].is_const and node.inputs[2].is_const, "weight and bias must be constants")
    _expect(wt.rank == 4, f"weight must be [O, C/group, kh, kw], is {list(wt.shape)}")
    o, cg, kh, kw = wt.shape
    group = node.attrs["group"]
    _expect(group >= 1 and c % group == 0 and o % group == 0,
            f"group {group} must divide the {c} input and {o} output channels")
    _expect(cg == c // group, f"weight has {cg} input channels per group, the input gives {c // group}")
    _expect(bt.shape == (o,), f"bias must be [{o}], is {list(bt.shape)}")
    _window_result(node, o, h, w, [kh, kw])
    return o, cg, kh, kw


def _check_conv(g: Graph, node: Node) -> None:
    _float_operands(node)
    _check_conv_shapes(node)


def _check_qconv(g: Graph, node: Node) -> None:
    x, w, b = (v.type for v in node.inputs)
    _expect(isinstance(x.element, QuantType) and x.element.axis is None, "qconv input must be per-tensor quantized")
    _expect(isinstance(w.element, QuantType) and w.element.axis == 0,
            "qconv weight must be quantized per output channel (axis=0)")
    _expect(isinstance(b.element, IntType), "qconv bias must be an integer tensor")
    o = _check_conv_shapes(node)[0]
    acc = node.output.type.element
    _expect(isinstance(acc, IntType) and acc.signed, "qconv result must be a signed integer")
    _activation_bits(x.element, "input")
    wdata, bdata = g.const_data(node.inputs[1]), g.const_data(node.inputs[2])
    _symmetric_weights(w.element, wdata)
    _accumulator(acc, *accumulator_bounds(x.element, wdata.reshape(o, -1).T, bdata))


def _check_maxpool(g: Graph, node: Node) -> None:
    x = node.inputs[0].type
    _expect(x.is_float or (isinstance(x.element, QuantType) and x.element.axis is None),
            "maxpool takes a float or per-tensor quantized image")
    _expect(node.output.type.element == x.element, "maxpool keeps the element type")
    _window_result(node, *_image(node.inputs[0], "the input"), node.attrs["kernel"])


def _check_avgpool(g: Graph, node: Node) -> None:
    _float_operands(node)
    _window_result(node, *_image(node.inputs[0], "the input"), node.attrs["kernel"])


def _check_sumpool(g: Graph, node: Node) -> None:
    x = node.inputs[0].type.element
    _expect(isinstance(x, QuantType) and x.axis is None, "sumpool takes a per-tensor quantized image")
    _activation_bits(x, "input")
    _window_result(node, *_image(node.inputs[0], "the input"), node.attrs["kernel"])
    count = node.attrs["kernel"][0] * node.attrs["kernel"][1]
    acc = node.output.type.element
    lo, hi = count * min(0, x.min - x.zero_point), count * max(0, x.max - x.zero_point)
    _expect(isinstance(acc, IntType) and acc.signed and acc.min <= lo and hi <= acc.max,
            f"sumpool result must be a signed integer holding [{lo}, {hi}]")


def _check_concat(g: Graph, node: Node) -> None:
    first = node.inputs[0].type
    axis = node.attrs["axis"]
    _expect(0 <= axis < first.rank, f"axis {axis} is outside 0..{first.rank - 1}")
    for idx, v in enumerate(node.inputs):
        t = v.type
        _expect(t.element == first.element, f"operand {idx} (%{v.name}) is {t.element!r}, operand 0 is "
                f"{first.element!r}: concat joins tensors of one element type (requantize them first)")
        _expect(t.rank == first.rank and all(a == b for d, (a, b) in enumerate(zip(t.shape, first.shape)) if d != axis),
                f"operand {idx} has shape {list(t.shape)}, which differs from {list(first.shape)} off axis {axis}")
    _expect(node.output.type.element == first.element, "concat keeps the element type")
    shape = list(first.shape)
    shape[axis] = sum(v.type.shape[axis] for v in node.inputs)
    _result_shape(node, shape)


def _check_clip(g: Graph, node: Node) -> None:
    _float_operands(node)
    _expect(node.attrs["lo"] <= node.attrs["hi"], f"clip bounds [{node.attrs['lo']}, {node.attrs['hi']}] are reversed")
    _result_shape(node, node.inputs[0].type.shape)


def _check_pad(g: Graph, node: Node) -> None:
    _float_operands(node)
    x = node.inputs[0].type
    pads = node.attrs["pads"]
    _expect(len(pads) == 2 * x.rank and min(pads) >= 0,
            f"pads must hold {2 * x.rank} non-negative entries (begins, then ends), got {pads}")
    _result_shape(node, [d + pads[i] + pads[i + x.rank] for i, d in enumerate(x.shape)])


def _check_qadd(g: Graph, node: Node) -> None:
    a, b, y = node.inputs[0].type, node.inputs[1].type, node.output.type
    for name, t in (("a", a), ("b", b), ("result", y)):
        _expect(isinstance(t.element, QuantType) and t.element.axis is None, f"qadd {name} must be per-tensor quantized")
    _expect(a.shape == b.shape, f"qadd operands differ in shape: {list(a.shape)} vs {list(b.shape)}")
    _result_shape(node, a.shape)
    for name, t in (("operand a", a), ("operand b", b), ("result", y)):
        _activation_bits(t.element, name)
    for key in ("ma", "mb"):
        _expect(0 <= node.attrs[key] < ADD_MULT_LIMIT, f"{key} = {node.attrs[key]} must lie in [0, 2^{ADD_MULT_BITS})")
    _expect(1 <= node.attrs["shift"] <= 62, f"shift {node.attrs['shift']} must be in 1..62")
    lo, hi = node.attrs["lo"], node.attrs["hi"]
    _expect(y.element.min <= lo <= hi <= y.element.max, f"clamp [{lo}, {hi}] must lie within {y.element.storage!r}")


_WINDOW = {"kernel": (list, True), "strides": (list, True), "pads": (list, True)}
_CONV_ATTRS = {"strides": (list, True), "pads": (list, True), "dilations": (list, True), "group": (int, True)}

def check_host(g: Graph, node: Node) -> None:
    """The host op's type rule: plain float or integer tensors in and out (never quantized)."""
    op_type = node.attrs["op_type"]
    if not op_type or not op_type.isidentifier():
        raise OpCheckError(f"op_type {op_type!r} is not an ONNX op name")
    for kind, values in (("operand", node.inputs), ("result", node.outputs)):
        for idx, v in enumerate(values):
            if isinstance(v.type.element, QuantType):
                raise OpCheckError(f"{kind} {idx} (%{v.name}) is quantized; the host computes in float "
                                   "(dequantize first)")
            try:
                onnx_element(v.type)
            except IRError as e:
                raise OpCheckError(f"{kind} {idx} (%{v.name}): {e}") from None
    for key, value in onnx_attrs(node).items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(x, (int, float, str)) and not isinstance(x, bool) for x in items):
            raise OpCheckError(f"ONNX attribute '{key}' must be numbers or strings, got {value!r}")


OPS: dict[str, OpDef] = {d.name: d for d in [
    OpDef("gemm", (2, 3), {"alpha": (float, False), "beta": (float, False),
                           "trans_a": (bool, False), "trans_b": (bool, False)}, _check_gemm),
    OpDef("matmul", (2, 2), {}, _check_matmul),
    OpDef("add", (2, 2), {}, _check_elementwise),
    OpDef("mul", (2, 2), {}, _check_elementwise),
    OpDef("relu", (1, 1), {}, _check_relu),
    OpDef("transpose", (1, 1), {"perm": (list, True)}, _check_transpose),
    OpDef("reshape", (1, 1), {"shape": (list, True)}, _check_reshape),
    OpDef("dense", (3, 3), {"relu": (bool, False)}, _check_dense),
    OpDef("quantize", (1, 1), {}, _check_quantize),
    OpDef("dequantize", (1, 1), {}, _check_dequantize),
    OpDef("qmatmul", (3, 3), {}, _check_qmatmul),
    OpDef("requant", (1, 1), {"mult": (ArrayRef, True), "shift": (int, True),
                              "lo": (int, True), "hi": (int, True)}, _check_requant),
    OpDef("host", (0, 64), {"op_type": (str, True)}, check_host, results=None, open_attrs=True),
    OpDef("conv", (3, 3), _CONV_ATTRS, _check_conv),
    OpDef("qconv", (3, 3), _CONV_ATTRS, _check_qconv),
    OpDef("maxpool", (1, 1), {**_WINDOW, "dilations": (list, True)}, _check_maxpool),
    OpDef("avgpool", (1, 1), {**_WINDOW, "count_include_pad": (bool, False)}, _check_avgpool),
    OpDef("sumpool", (1, 1), _WINDOW, _check_sumpool),
    OpDef("concat", (1, 64), {"axis": (int, True)}, _check_concat),
    OpDef("clip", (1, 1), {"lo": (float, True), "hi": (float, True)}, _check_clip),
    OpDef("pad", (1, 1), {"pads": (list, True), "value": (float, False)}, _check_pad),
    OpDef("qadd", (2, 2), {"ma": (int, True), "mb": (int, True), "shift": (int, True),
                           "lo": (int, True), "hi": (int, True)}, _check_qadd),
]}
