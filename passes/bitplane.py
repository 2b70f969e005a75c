"""bitplane: drop weight bit planes that are zero over a whole output channel or layer (exact).

Runs on the integer IR after `quantize`. Every requant result is the same integer before and
after; only where the bits sit changes.

    low planes   channel n's weights and bias all multiples of 2^k:  W = 2^k·W', b = 2^k·b',
                 so acc = 2^k·acc' and
                     (acc·M + 2^(s-1)) >> s  ==  (acc'·M + 2^(s-k-1)) >> (s-k)   (s - k >= 1)
                                             ==  (acc'·(M·2^k) + 2^(s-1)) >> s
                 the planes the whole layer shares lower the shift (free); a channel's further
                 planes multiply its M where M·2^k keeps the requantizer's multiplier width
                 (nnfpga.hardware.mult_bits of the layer's multipliers); otherwise they stay.
                 The weight scale grows by 2^k, so W'·s_w' is still the float weight.
    high planes  every |W'| < 2^(b-1): the weight type narrows to b bits (at least 2).

The accumulator type is re-derived from its exact bound. The bias takes part: a channel
whose bias is odd keeps its low planes (a float bias rarely divides; a bias-free layer's
-z_x·ΣW does), since qmatmul's acc = x·W + b has no shift of its own.

Every layer's planes dropped, weight bits before and after, plane occupancy and zero-slice
fractions (integer_layers.slice_statistics) go to `ctx.report`.
"""
from __future__ import annotations

import numpy as np

from nnfpga.bitslices import magnitude_bits
from nnfpga.errors import PipelineError
from nnfpga.hardware import mult_bits
from nnfpga.ir import Graph, IntType, QuantType, TensorType
from nnfpga.ir.ops import MULT_LIMIT
from nnfpga.passes.integer_layers import IntegerLayer, integer_layers, slice_statistics
from nnfpga.passes.registry import PassContext, register

FLOAT64_EXACT = 2**53
"""The reference ONNX computes acc·M in float64: exact only below this."""


def trailing_zero_planes(rows: np.ndarray, bias: np.ndarray, cap: int) -> np.ndarray:
    """Per channel, the low bit planes zero in all its weights and its bias (at most `cap`)."""
    planes = np.zeros(len(rows), np.int64)
    for k in range(1, cap + 1):
        step = 1 << k
        divides = ((rows % step) == 0).all(axis=1) & ((bias % step) == 0)
        planes[divides] = k
    return planes


def folded_planes(planes: np.ndarray, mult: np.ndarray, shift: int) -> tuple[np.ndarray, int]:
    """Planes each channel can drop and the new shift: the shared part into the shift, the
    rest of a channel's into its M while M keeps the layer's multiplier width."""
    common = int(min(planes.min(), shift - 1)) if len(planes) else 0
    limit = min(1 << mult_bits(mult), MULT_LIMIT)
    dropped = np.full(len(planes), common, np.int64)
    for n, (k, m) in enumerate(zip(planes.tolist(), mult.tolist())):
        extra = k - common
        while extra > 0 and (m << extra) >= limit:
            extra -= 1
        dropped[n] += extra
    return dropped, shift - common


def rewrite_layer(g: Graph, layer: IntegerLayer) -> dict:
    """Drop the layer's zero planes in place; a record of what changed."""
    node, rq = layer.node, layer.requant
    w_value, b_value = node.inputs[1], node.inputs[2]
    w_type: QuantType = w_value.type.element
    weights, bias = layer.weights(g), g.const_data(b_value).astype(np.int64)
    mult, shift = g.arrays[rq.attrs["mult"].name].astype(np.int64), rq.attrs["shift"]
    wbits = w_type.bits

    planes = trailing_zero_planes(layer.rows(g), bias, magnitude_bits(wbits))
    dropped, new_shift = folded_planes(planes, mult, shift)
    new_mult = mult << (dropped - (shift - new_shift))
    axis_shape = [1] * weights.ndim
    axis_shape[layer.channel_axis] = -1
    new_weights = weights >> dropped.reshape(axis_shape)  # exact: those planes are zero
    new_bias = bias >> dropped
    acc_t = layer.accumulator_type(new_weights, new_bias)
    if max(abs(acc_t.min), acc_t.max) * int(new_mult.max(initial=0)) >= FLOAT64_EXACT:
        # A wider M on a barely narrower accumulator would leave the reference's exact range.
        dropped, new_shift, new_mult, new_weights, new_bias = np.zeros_like(dropped), shift, mult, weights, bias
        acc_t = layer.accumulator_type(weights, bias)
    peak = int(np.abs(new_weights).max(initial=0))
    new_bits = min(wbits, max(2, peak.bit_length() + 1))

    scale = w_type.scale
    if dropped.any():
        scale = g.add_array(w_value.name + ".scale", g.arrays[w_type.scale] * (2.0 ** dropped)).name
        rq.attrs["mult"] = g.add_array(rq.attrs["mult"].name, new_mult)
        rq.attrs["shift"] = new_shift
    w_value.type = TensorType(w_value.type.shape, QuantType(IntType(new_bits, True), scale, 0, w_type.axis))
    g.arrays[w_value.array] = new_weights.astype(g.arrays[w_value.array].dtype)
    g.arrays[b_value.array] = new_bias.astype(g.arrays[b_value.array].dtype)
    node.output.type = node.output.type.with_element(acc_t)
    return {"pass": "bitplane", "layer": layer.name, "op": node.op,
            "wbits_before": wbits, "wbits_after": new_bits,
            "low_planes_dropped_min": int(dropped.min()) if dropped.size else 0,
            "low_planes_dropped_max": int(dropped.max(initial=0)),
            "low_planes_zero_max": int(planes.max(initial=0)),
            "shift_before": shift, "shift_after": new_shift}


@register("bitplane")
def bitplane(g: Graph, ctx: PassContext) -> bool:
    """Drop all-zero weight bit planes exactly: low ones into the requant, high ones from wbits."""
    layers = integer_layers(g)
    if not layers:
        raise PipelineError("bitplane: no quantized dense or conv layer; run it after quantize")
    changed = False
    for layer in layers:
        before = slice_statistics(g, layer)
        record = rewrite_layer(g, layer)
        changed |= record["wbits_after"] != record["wbits_before"] or record["low_planes_dropped_max"] > 0
        ctx.report.append({**record, **before})
    if changed:
        g.drop_unreferenced_arrays()
    return changed
