"""quantize, convolutional part: the rules for conv, pooling, residual add and concat.

With the integer semantics of DESIGN.md (x: input, y: output, s/z their scale and zero point):

    conv(x, W, b) [-> relu|clip]  -> requant(qconv(x_q, W_q, b_q))     W_q per output channel (axis 0),
                                     b_q = round(b/(s_x·s_w)) − z_x·ΣW_q, padding holds z_x, so the
                                     accumulator is Σ (x−z_x)·W_q + round(b/(s_x·s_w)) exactly
    maxpool(x)                    -> maxpool(x_q)                       max commutes with the monotone
                                                                         quantizer: same type out
    avgpool(x) (P window cells)   -> requant(sumpool(x_q)) {M/2^s ≈ s_x/(s_y·P)}   Σ (x−z_x), one rounding
    add(a, b) [-> relu|clip]      -> qadd(a_q, b_q) {ma/2^s ≈ s_a/s_y, mb/2^s ≈ s_b/s_y}
    concat(x0, x1, ..)            -> concat(x0_q, x1_q, ..)             inputs calibrated to one type
    transpose(x)                  -> transpose(x_q)

A relu or clip(lo, hi) whose input is a conv or add with no other reader is fused: the
requant's clamp becomes [max(z_y, q(lo)), min(q(hi), max)] and the range is calibrated on
the activation's output.
"""
from __future__ import annotations

import numpy as np

from nnfpga.errors import PipelineError
from nnfpga.hardware import ADD_MULT_BITS
from nnfpga.ir import Graph, IntType, QuantType, TensorType
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range
from nnfpga.passes.quantize_weights import LayerWeights, carried_annotations, shared_requant


def fused_activation(g: Graph, node):
    """The relu/clip node reading `node`'s result alone, if the quantizer can fuse it."""
    users = [u for u, _ in node.output.uses]
    if len(users) != 1 or node.output in g.outputs or users[0].op not in ("relu", "clip"):
        return None
    act = users[0]
    if act.attrs.get("place", "accel") != "accel":
        return None
    return act


def fusable(g: Graph, act) -> bool:
    """Whether relu/clip node `act` is the one `fused_activation` folds into the conv or add before it."""
    src = act.inputs[0].producer
    return src is not None and src.op in ("conv", "add") and fused_activation(g, src) is act


def activation_clamp(act, y_t: QuantType) -> tuple[int, int]:
    """Integer clamp bounds of the requant for a fused activation (or none)."""
    lo, hi = y_t.min, y_t.max
    if act is None:
        return lo, hi
    if act.op == "relu":
        return y_t.zero_point, hi
    q = lambda v: int(np.clip(np.rint(v / y_t.scale) + y_t.zero_point, y_t.min, y_t.max))  # noqa: E731
    return max(lo, q(act.attrs["lo"])), min(hi, q(act.attrs["hi"]))


def shared_shift(ratios: list[float], bits: int, what: str) -> tuple[list[int], int]:
    """Integers m_i and one shift s with m_i/2^s ≈ ratio_i, every m_i < 2^bits."""
    top = max(ratios)
    shift = 1
    while shift < 62 and np.rint(top * 2.0 ** (shift + 1)) < 2**bits:
        shift += 1
    mults = [int(np.rint(r * 2.0**shift)) for r in ratios]
    if max(mults) >= 2**bits:
        raise PipelineError(f"quantize: {what}: scale ratio {top:.4g} needs a multiplier of more than {bits} bits; "
                            "the output range is far below the input range (check calibration)")
    return mults, shift


def quantize_conv(g: Graph, node, xq, y_t: QuantType, act, weights: LayerWeights, requant_params):
    """conv [+ act] -> qconv + requant, with the layer's quantized weights (quantize_weights.py)."""
    name = (act or node).output.name
    w = g.const_data(node.inputs[1]).astype(np.float64)  # [O, C/g, kh, kw]
    b = g.const_data(node.inputs[2]).astype(np.float64)
    x_t: QuantType = xq.type.element
    o = w.shape[0]
    w_scale, wbits, w_int = weights.scale, weights.bits, weights.ints
    scaled_bias = np.rint(b / (x_t.scale * w_scale))
    fits = np.all(np.abs(scaled_bias) < 2**31)  # in float first: a vanishing scale overflows int64
    bias = np.where(fits, scaled_bias, 0).astype(np.int64) - x_t.zero_point * w_int.reshape(o, -1).sum(axis=1)
    if not fits or np.abs(bias).max(initial=0) >= 2**31:
        raise PipelineError(f"quantize: the bias of %{name} does not fit 32 bits at this input scale")

    w_type = TensorType(w.shape, QuantType(IntType(wbits, True), g.add_array(name + "_w.scale", w_scale).name, 0, 0))
    wq = g.add_const(name + "_w", w_int.astype(np.int8), w_type)
    bq = g.add_const(name + "_b", bias.astype(np.int32), TensorType(bias.shape, IntType(32, True)))
    lo, hi = accumulator_bounds(x_t, w_int.reshape(o, -1).T, bias)
    attrs = {k: node.attrs[k] for k in ("strides", "pads", "dilations", "group")}
    attrs.update(carried_annotations(node))
    acc = g.add_node("qconv", [xq, wq, bq], [node.output.type.with_element(int_type_for_range(lo, hi))],
                     attrs, names=[name + "_acc"], before=node).output
    mult, shift = shared_requant(requant_params, x_t.scale * w_scale / y_t.scale,
                                 x_t.scale * weights.peer_scales / y_t.scale, acc_bound=max(-lo, hi))
    clamp_lo, clamp_hi = activation_clamp(act, y_t)
    return g.add_node("requant", [acc], [node.output.type.with_element(y_t)],
                      {"mult": g.add_array(name + "_m", mult), "shift": shift, "lo": clamp_lo, "hi": clamp_hi},
                      names=[name + "_q"], before=node).output


def quantize_avgpool(g: Graph, node, xq, y_t: QuantType, requant_params):
    """avgpool -> sumpool + requant by s_x/(s_y·P)."""
    a = node.attrs
    name = node.output.name
    count = a["kernel"][0] * a["kernel"][1]
    if any(a["pads"]) and not a.get("count_include_pad"):
        raise PipelineError(f"quantize: the average pool defining %{name} pads without counting the padding "
                            "(count_include_pad=0), so its divisor changes at the border; the accelerator "
                            "divides by one constant. Export with count_include_pad=1 or without padding")
    x_t: QuantType = xq.type.element
    lo, hi = count * min(0, x_t.min - x_t.zero_point), count * max(0, x_t.max - x_t.zero_point)
    acc = g.add_node("sumpool", [xq], [node.output.type.with_element(int_type_for_range(lo, hi))],
                     {"kernel": list(a["kernel"]), "strides": list(a["strides"]), "pads": list(a["pads"])},
                     names=[name + "_sum"], before=node).output
    channels = node.output.type.shape[1]
    mult, shift = requant_params(np.full(channels, x_t.scale / (y_t.scale * count)))
    return g.add_node("requant", [acc], [node.output.type.with_element(y_t)],
                      {"mult": g.add_array(name + "_m", mult), "shift": shift, "lo": y_t.min, "hi": y_t.max},
                      names=[name + "_q"], before=node).output


def quantize_add(g: Graph, node, aq, bq, y_t: QuantType, act):
    """add(a, b) [+ act] -> qadd."""
    name = (act or node).output.name
    if aq.type.shape != bq.type.shape:
        raise PipelineError(f"quantize: the add defining %{node.output.name} broadcasts {list(aq.type.shape)} "
                            f"with {list(bq.type.shape)}; the accelerator adds tensors of one shape")
    ta, tb = aq.type.element, bq.type.element
    # The add's multipliers (templates/verilog/nnfpga_add.sv.j2).
    (ma, mb), shift = shared_shift([ta.scale / y_t.scale, tb.scale / y_t.scale], ADD_MULT_BITS, f"the add %{name}")
    lo, hi = activation_clamp(act, y_t)
    return g.add_node("qadd", [aq, bq], [node.output.type.with_element(y_t)],
                      {"ma": ma, "mb": mb, "shift": shift, "lo": lo, "hi": hi}, names=[name + "_q"], before=node).output


def requantize_image(g: Graph, xq, y_t: QuantType, before, requant_params):
    """x_q [1,C,H,W] requantized to y_t: a 1×1 depthwise qconv with weights 1 (acc = x − z_x) and a
    requant by s_x/s_y: the model's second rounding where a quantized model (onnxruntime's
    QLinearConcat) requantizes a concat's input to the concat's type."""
    x_t: QuantType = xq.type.element
    channels = xq.type.shape[1]
    name = g.fresh_name(xq.name + "_to_concat")
    w_type = TensorType((channels, 1, 1, 1),
                        QuantType(IntType(2, True), g.add_array(name + "_w.scale", np.ones(channels)).name, 0, 0))
    wq = g.add_const(name + "_w", np.ones((channels, 1, 1, 1), np.int8), w_type)
    bias = np.full(channels, -x_t.zero_point, np.int64)
    bq = g.add_const(name + "_b", bias.astype(np.int32), TensorType((channels,), IntType(32, True)))
    lo, hi = x_t.min - x_t.zero_point, x_t.max - x_t.zero_point
    acc = g.add_node("qconv", [xq, wq, bq], [xq.type.with_element(int_type_for_range(lo, hi))],
                     {"strides": [1] * (xq.type.rank - 2), "pads": [0] * (2 * (xq.type.rank - 2)),
                      "dilations": [1] * (xq.type.rank - 2), "group": channels},
                     names=[name + "_acc"], before=before).output
    mult, shift = requant_params(np.full(channels, x_t.scale / y_t.scale))
    return g.add_node("requant", [acc], [xq.type.with_element(y_t)],
                      {"mult": g.add_array(name + "_m", mult), "shift": shift, "lo": y_t.min, "hi": y_t.max},
                      names=[name + "_q"], before=before).output


def quantize_concat(g: Graph, node, xqs):
    """concat of tensors the calibration gave one type; anything else is explained."""
    first = xqs[0].type.element
    for v in xqs[1:]:
        if v.type.element != first:
            raise PipelineError(
                f"quantize: the concat defining %{node.output.name} joins %{xqs[0].name} ({first!r}) and "
                f"%{v.name} ({v.type.element!r}); the accelerator concatenates tensors of one quantized type "
                "(a concat does not requantize), and calibration or the model's own quantization gave them "
                "different ones; a quantized model must give a concat's inputs one scale and zero point")
    return g.add_node("concat", xqs, [node.output.type.with_element(first)], dict(node.attrs),
                      names=[node.output.name + "_q"], before=node).output


def unify_concat_ranges(g: Graph, accel, ranges: dict[str, np.ndarray]) -> None:
    """Give every value that meets at a concat one range, so all get one quantized type.

    A max pool, reshape or transpose passes its input's type on, so the values joined through
    them (a DenseNet block concatenates pooled and convolved maps) form one group with the
    concat's inputs and output; each group takes the union of its members' ranges."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    def join(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    for node in accel:
        if node.op == "concat":
            for v in node.inputs:
                join(v.name, node.output.name)
        elif node.op in ("maxpool", "reshape", "transpose"):
            join(node.inputs[0].name, node.output.name)
    groups: dict[str, list[str]] = {}
    for name in parent:
        groups.setdefault(root(name), []).append(name)
    for names in groups.values():
        if len(names) < 2 or not any(n.op == "concat" and n.output.name in names for n in accel):
            continue
        lo = min(float(ranges[n].min()) for n in names)
        hi = max(float(ranges[n].max()) for n in names)
        for n in names:
            ranges[n] = np.array([lo, hi])
