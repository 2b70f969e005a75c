"""QONNX's quantizers (as qonnx and Brevitas write them) read into the same form as QDQ.

    Quant / IntQuant(W, s, z, b) {signed, narrow, rounding_mode}, W constant
        -> W' = (clamp(round(W/s + z)) − z)·s as a float initializer, its scales kept
           (z must be 0; signed 2..8 bits; one using −2^(b−1) becomes b+1 bits: nnfpga's weights are
           symmetric; at 8 bits it is refused)
    Quant / IntQuant(b, s_x·s_w, 0, 32), b constant (a bias) -> its float value
    Quant / IntQuant(x, s, z, b) on an activation, rounding_mode ROUND (half to even, as
        QuantizeLinear), not narrow
        -> x, with the type !q<u|i b, s, z> kept (2..8 bits)
    BipolarQuant(W, s), W constant -> W' = ±s (+s for 0), kept as 2-bit weights ±1
    BipolarQuant on an activation, Trunc, FloatQuant -> refused with the reason

(qonnx's `quant` reference: y = (round(clamp(x/s + z, lo, hi)) − z)·s.)
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nnfpga.ir import IntType, QuantType

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
QONNX_OPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc", "FloatQuant")
_ROUNDING = {"ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
             "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)), "DOWN": np.trunc,
             "HALF_UP": lambda v: np.floor(v + 0.5), "HALF_DOWN": lambda v: np.ceil(v - 0.5)}


def is_qonnx(node: onnx.NodeProto) -> bool:
    return node.domain in QONNX_DOMAINS and node.op_type in QONNX_OPS


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def read_qonnx_node(rw, node, weight_axis, fail) -> tuple[str, np.ndarray | None, QuantType | None]:
    """What one QONNX node says: ('weight', float values, None) for a constant input (its scales
    recorded in rw.fixed), or ('activation', None, type) for an activation."""
    if node.op_type in ("Trunc", "FloatQuant"):
        fail(node, f"QONNX {node.op_type} is not taken: nnfpga's requantization rounds half up "
                   "onto 2..8-bit integers (Quant/IntQuant, BipolarQuant on weights)")
    x_name = node.input[0]
    constant = x_name in rw.consts
    if node.op_type == "BipolarQuant":
        if not constant:
            fail(node, "bipolar (±1) activations have no integer zero point in nnfpga's semantics; "
                       "only bipolar weights are taken")
        scale = np.asarray(rw.const(node, node.input[1], "scale"), np.float64)
        if np.any(scale <= 0):
            fail(node, "its scale has a zero or negative value; a scale must be positive")
        w_int = np.where(rw.consts[x_name] >= 0, 1, -1)
        return "weight", (w_int, np.broadcast_to(scale, w_int.shape), 2), None
    scale = np.asarray(rw.const(node, node.input[1], "scale"), np.float64)
    zeropt = np.asarray(rw.const(node, node.input[2], "zero point"), np.float64)
    bits_value = np.asarray(rw.const(node, node.input[3], "bit width"), np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        fail(node, f"its scale has a zero, negative or non-finite value ({scale.ravel()[:4].tolist()}); "
                   "a scale must be positive")
    widest = 32 if constant else 8  # a constant may be a 32-bit bias (Brevitas' Int32Bias)
    if bits_value.size != 1 or bits_value.ravel()[0] != int(bits_value.ravel()[0]) or \
            not 2 <= int(bits_value.ravel()[0]) <= widest:
        fail(node, f"bit width {bits_value.ravel().tolist()} is outside 2..{widest} (nnfpga's integers)")
    if np.any(zeropt != np.rint(zeropt)):
        fail(node, "its zero point is not an integer")
    bits = int(bits_value.ravel()[0])
    signed, narrow = bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0))
    mode = str(_attr(node, "rounding_mode", "ROUND")).upper()
    if mode not in _ROUNDING:
        fail(node, f"rounding mode {mode} is unknown (qonnx: {', '.join(_ROUNDING)})")
    # QONNX's narrow range drops the most negative value of a signed type, the largest of an unsigned one.
    t = IntType(bits, signed)
    lo, hi = t.min + (narrow and signed), t.max - (narrow and not signed)
    if constant:
        w = rw.consts[x_name].astype(np.float64)
        w_int = _ROUNDING[mode](np.clip(w / scale + zeropt, lo, hi))
        if np.any(zeropt != 0):
            fail(node, "the weights have a non-zero zero point; nnfpga's weights are symmetric (zero point 0)")
        if not signed:
            fail(node, "the weights are unsigned; nnfpga's weights are signed and symmetric")
        bits = symmetric_bits(int(np.abs(w_int).max(initial=0)), bits, node, fail)
        return "weight", (w_int.astype(np.int64), np.broadcast_to(scale, w.shape), bits), None
    if mode not in ("ROUND", "HALF_EVEN"):
        fail(node, f"activations rounded {mode} are not taken: nnfpga quantizes activations to nearest "
                   "(rounding_mode ROUND)")
    if narrow:
        fail(node, "narrow-range activations are not taken (nnfpga's activations use the whole integer range)")
    if scale.size != 1 or zeropt.size != 1:
        fail(node, "quantizes an activation per channel; nnfpga quantizes activations per tensor")
    return "activation", None, QuantType(IntType(bits, signed), float(scale.ravel()[0]), int(zeropt.ravel()[0]))


def symmetric_bits(largest: int, bits: int, node, fail) -> int:
    """Bits of nnfpga's symmetric weights (±(2^(b−1)−1)) that hold a b-bit weight tensor exactly:
    b, or b+1 when it uses −2^(b−1) (refused at 8 bits: nnfpga's weights have at most 8)."""
    if largest <= (1 << (bits - 1)) - 1:
        return bits
    if bits < 8:
        return bits + 1
    fail(node, f"a weight is −{1 << (bits - 1)}; nnfpga's 8-bit weights are symmetric (±127): quantize them "
               "with a symmetric range (onnxruntime's int8 default; QONNX narrow=1)")


def per_channel_scale(scale: np.ndarray, out_axis: int, node, fail) -> np.ndarray:
    """The scale per output channel of a weight quantized with a broadcast `scale` tensor."""
    channels = scale.shape[out_axis]
    flat = np.moveaxis(scale, out_axis, 0).reshape(channels, -1)
    if not np.all(flat == flat[:, :1]):
        fail(node, "the weights are scaled along another axis than their output channels; "
                   "nnfpga scales weights per output channel")
    return flat[:, 0].copy()


def float_initializer(rw, name: str, data: np.ndarray) -> None:
    rw.graph.initializer.append(numpy_helper.from_array(data.astype(np.float32), name))
    rw.consts[name] = data.astype(np.float32)
