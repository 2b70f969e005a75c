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
    requant     acc: int            mult, shift, lo, hi             clamp(z + ((acc·M + 2^(s-1)) >> s), lo, hi)
    host        any float/int       op_type, the ONNX attributes    one ONNX node, run on the host (ir/host.py)

Every op also accepts the hardware annotations in ANNOTATIONS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nnfpga.ir.graph import ArrayRef, Graph, Node
from nnfpga.ir.host import check_host
from nnfpga.ir.types import FloatType, IntType, QuantType, TensorType

ANNOTATIONS = {"pe": int, "simd": int, "core": str, "wbits": int, "abits": int, "place": str}
"""Hardware attributes a pass may put on any node (`place` = accel|host, set by partition)."""
PLACES = ("accel", "host")
"""Values of the `place` annotation."""


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
    wdata, bdata = g.const_data(node.inputs[1]), g.const_data(node.inputs[2])
    _expect(wdata.min() >= w.element.min and wdata.max() <= w.element.max,
            f"weights exceed their storage type {w.element.storage!r}")
    lo, hi = accumulator_bounds(x.element, wdata, bdata)
    _expect(acc.min <= lo and hi <= acc.max,
            f"accumulator {acc!r} cannot hold the exact range [{lo}, {hi}]; widen it")


def _check_requant(g: Graph, node: Node) -> None:
    acc, y = node.inputs[0].type, node.output.type
    _expect(isinstance(acc.element, IntType), "requant takes a plain integer accumulator")
    _expect(isinstance(y.element, QuantType) and y.element.axis is None,
            "requant gives a per-tensor quantized tensor")
    _result_shape(node, acc.shape)
    mult = node.attrs["mult"]
    _expect(isinstance(mult, ArrayRef) and mult.name in g.arrays, f"mult {mult!r} is not in the array table")
    m = g.arrays[mult.name]
    channels = acc.shape[-1]
    _expect(m.shape == (channels,), f"mult must hold one multiplier per channel ({channels}), has shape {list(m.shape)}")
    _expect(np.issubdtype(m.dtype, np.integer) and m.min() >= 0, "mult must hold non-negative integers")
    shift = node.attrs["shift"]
    _expect(1 <= shift <= 62, f"shift {shift} must be in 1..62")
    lo, hi = node.attrs["lo"], node.attrs["hi"]
    _expect(y.element.min <= lo <= hi <= y.element.max,
            f"clamp [{lo}, {hi}] must lie within {y.element.storage!r}")
    # The reference ONNX computes acc·M in float64: exact only below 2^53.
    worst = max(abs(acc.element.min), acc.element.max) * int(m.max())
    _expect(worst < 2**53, f"|acc·M| can reach {worst}, beyond 2^53: float64 reference would round")


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
]}
