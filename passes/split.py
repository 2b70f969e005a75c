"""split: divide a layer's output channels between a LUT core at low bits and a DSP core at 8 (N3H-Core).

    dense(x, W[K,N], b) {relu}          -> concat(dense(x, W[:,L], b[L]) {core = "lut", wbits = lut_bits, part_of},
                                                  dense(x, W[:,D], b[D]) {core = "dsp", wbits = 8, part_of})
    conv(x, W, b) [-> relu|clip]        -> concat(conv(x, W[L], b[L]) [-> relu|clip], conv(x, W[D], b[D]) [-> relu|clip])
    consumer(y, V)                      -> consumer(y', V[perm])      the channel order L ++ D folded into
                                                                      the next dense's rows / conv's input channels

Runs on the float IR after `canonicalize`, before `quantize`, which honours the `wbits`
requests and keeps `core` and `part_of` on the qmatmul/qconv it makes. Each part is an
ordinary layer, so every check, kernel and lowering applies; the two parts read the same
input and run in parallel, and the concat joins their channels.

Which channels go to the LUT core: those that lose least at `lut_bits`, measured as the mean
squared error of the channel's pre-activation output on the calibration data,
E[(x·(w_n − Q(w_n)))²], Q symmetric per channel at lut_bits (quantize's minmax weights).
How many: `ratio` of the channels (rounded); ratio=auto takes the ratio at which both cores
finish together when the device is filled: P_l LUT products per cycle (half the device's
LUTs at the cost model's fitted LUT product of 8-bit inputs and lut_bits weights each) against P_d DSP products (one multiplier
each, one per layer kept for its requantizer), r = P_l/(P_l+P_d). Every layer split at r
with products shared in proportion to MACs gives both parts of every layer the same interval.
A ratio that rounds to no channel (or all) leaves the layer whole, annotated with the one core
(no channel order changes, so this holds for the output layer too).

The permutation is folded through relu, clip, max/average pool, pad (not on the channel axis)
and an NCHW flatten into every consumer: a dense layer's weight rows, or a group-1 conv's
input channels. Where it cannot be (a model output, an add, a concat, a grouped conv), a
layer named in `layers=` is refused with the reason; by default such layers are left whole.
With lut_bits=8 quantize gives the parts the unsplit layer's integers (quantize_weights.py
shares the scale floor and requant shift between parts), so the split is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnfpga.devices import DEFAULT_DEVICE, device as lookup_device
from nnfpga.errors import PipelineError
from nnfpga.cost import lut_product_luts
from nnfpga.ir import F32, Graph, Node, TensorType, run_batch
from nnfpga.ir.spatial import conv_kernel
from nnfpga.passes.quantize import calibration_inputs
from nnfpga.passes.quantize_calib import weight_scale
from nnfpga.passes.quantize_weights import weight_rows
from nnfpga.passes.registry import Option, PassContext, register

DSP_BITS = 8
LUT_SHARE = 0.5
"""Fraction of the device's LUTs ratio=auto gives to LUT products (the DSP-only MNIST MLP
already takes half of an ecp5-85k's LUTs for buffers, adder trees and control)."""
CHANNEL_WISE = ("relu", "clip", "maxpool", "avgpool", "pad")
"""Float ops that treat every channel alike: a channel permutation passes through them."""


class CannotFold(Exception):
    """Why a layer's channel permutation cannot be folded into its consumers."""


@dataclass
class Candidate:
    """A dense or conv layer that split may divide."""

    node: Node
    """The float dense or conv node."""
    act: Node | None
    """The relu/clip that alone reads a conv's result (each part gets a copy)."""
    error: np.ndarray
    """Per output channel: mean squared error of its output with weights at lut_bits."""

    @property
    def name(self) -> str:
        return self.node.output.name

    @property
    def channels(self) -> int:
        return len(self.error)


def _act(g: Graph, node: Node) -> Node | None:
    if node.op != "conv":
        return None
    users = [u for u, _ in node.output.uses]
    if len(users) == 1 and users[0].op in ("relu", "clip") and node.output not in g.outputs:
        return users[0]
    return None


def _quantized_rows(rows: np.ndarray, bits: int) -> np.ndarray:
    """Each row (output channel) quantized and back, as quantize's minmax weights."""
    scale = weight_scale(rows, bits, "minmax")[:, None]
    scale = np.where(scale > 0, scale, 1.0)
    wmax = (1 << (bits - 1)) - 1
    return np.clip(np.rint(rows / scale), -wmax, wmax) * scale


def channel_errors(g: Graph, node: Node, x: np.ndarray, bits: int) -> np.ndarray:
    """E[(x·(w_n − Q(w_n)))²] per output channel n over the calibration inputs x [B, *input shape]."""
    rows = weight_rows(g, node)
    diff = rows - _quantized_rows(rows, bits)  # [N, fan-in]
    if node.op == "dense":
        out = x.reshape(x.shape[0], -1).astype(np.float64) @ diff.T  # [B, N]
        return np.mean(out ** 2, axis=0)
    w = diff.reshape(g.const_data(node.inputs[1]).shape)
    zero = np.zeros(len(rows))
    total = np.zeros(len(rows))
    for sample in x:
        out = conv_kernel(g, node, sample, w, zero)[0].astype(np.float64)  # [1, N, OH, OW]
        total += np.mean(out.reshape(len(rows), -1) ** 2, axis=1)  # over the output pixels
    return total / len(x)


def fold_targets(g: Graph, v, perm: np.ndarray) -> list[tuple[Node, np.ndarray]]:
    """(consumer, permutation of its input channels) for every layer the permuted value reaches;
    raises CannotFold naming the first place the order would be lost."""
    if v in g.outputs:
        raise CannotFold(f"%{v.name} is a model output, whose channel order must stay")
    targets = []
    for node, index in v.uses:
        where = f"the {node.op} defining %{node.outputs[0].name}"
        if node.op in CHANNEL_WISE:
            pads = node.attrs.get("pads", [])
            if node.op == "pad" and (pads[1] or pads[1 + v.type.rank]):
                raise CannotFold(f"{where} pads the channel axis")
            targets += fold_targets(g, node.output, perm)
        elif node.op == "reshape" and v.type.rank == 4 and node.output.type.shape == (1, v.type.size):
            pixels = v.type.shape[2] * v.type.shape[3]  # an NCHW flatten: channel c is rows c·HW .. c·HW+HW-1
            targets += fold_targets(g, node.output, (perm[:, None] * pixels + np.arange(pixels)).ravel())
        elif node.op == "dense" and index == 0:
            targets.append((node, perm))
        elif node.op == "conv" and index == 0 and node.attrs["group"] == 1:
            targets.append((node, perm))
        elif node.op == "conv" and index == 0:
            raise CannotFold(f"{where} is a grouped convolution (group = {node.attrs['group']}), whose groups "
                             "fix its input channels' order")
        else:
            raise CannotFold(f"{where} reads %{v.name} and does not treat its channels alike (only relu, clip, "
                             "pooling, pad and a flatten pass a channel order on to a dense or conv layer)")
    return targets


def auto_ratio(g: Graph, lut_bits: int, device_name: str | None) -> float:
    """The LUT core's share of products per cycle when LUTs and DSPs both fill the device."""
    dev = lookup_device(device_name or DEFAULT_DEVICE)
    layers = sum(1 for n in g.nodes if n.op in ("dense", "conv"))
    lut_products = dev.luts * LUT_SHARE / lut_product_luts(dev, 8, lut_bits)
    dsp_products = max(dev.dsps - layers, 1)
    return lut_products / (lut_products + dsp_products)


def _parse_ratio(text: str) -> float | None:
    if text.strip() == "auto":
        return None
    try:
        ratio = float(text)
    except ValueError:
        raise PipelineError(f"split: ratio={text} must be auto or a number in [0, 1]") from None
    if not 0.0 <= ratio <= 1.0:
        raise PipelineError(f"split: ratio={text} is outside [0, 1] (the fraction of channels on the LUT core)")
    return ratio


# ---- rewriting -------------------------------------------------------------------------------

def _const(g: Graph, hint: str, data: np.ndarray):
    data = np.ascontiguousarray(data, dtype=np.float32)
    return g.add_const(hint, data, TensorType(data.shape, F32))


def _part(g: Graph, c: Candidate, channels: np.ndarray, core: str, bits: int):
    """One part: the layer restricted to `channels` (and its activation), annotated."""
    node, name = c.node, c.name
    x, w, b = node.inputs
    wdata, bdata = g.const_data(w), g.const_data(b)
    wpart = wdata[:, channels] if node.op == "dense" else wdata[channels]
    shape = list(node.output.type.shape)
    shape[1] = len(channels)
    attrs = dict(node.attrs)
    attrs.update({"core": core, "wbits": bits, "part_of": name})
    layer = g.add_node(node.op, [x, _const(g, f"{name}_{core}_w", wpart), _const(g, f"{name}_{core}_b", bdata[channels])],
                       [TensorType(tuple(shape), F32)], attrs, names=[f"{name}_{core}"], before=node)
    if c.act is None:
        return layer.output
    return g.add_node(c.act.op, [layer.output], [TensorType(tuple(shape), F32)], dict(c.act.attrs),
                      names=[f"{c.act.output.name}_{core}"], before=node).output


def _fold(g: Graph, consumer: Node, perm: np.ndarray) -> None:
    w = consumer.inputs[1]
    data = g.const_data(w)
    permuted = data[perm] if consumer.op == "dense" else data[:, perm]
    consumer.set_input(1, _const(g, f"{consumer.output.name}_w", permuted))


def split_layer(g: Graph, c: Candidate, lut: np.ndarray, lut_bits: int) -> None:
    """Replace the layer by its LUT part (channels `lut`) and DSP part (the rest) joined by a concat,
    and fold the channel order into its consumers (checked beforehand with fold_targets)."""
    dsp = np.setdiff1d(np.arange(c.channels), lut)
    perm = np.concatenate([lut, dsp])
    last = c.act or c.node
    targets = fold_targets(g, last.output, perm)
    parts = [_part(g, c, lut, "lut", lut_bits), _part(g, c, dsp, "dsp", DSP_BITS)]
    joined = g.add_node("concat", parts, [last.output.type], {"axis": 1}, before=c.node).output
    for consumer, consumer_perm in targets:
        _fold(g, consumer, consumer_perm)
    g.replace_all_uses(last.output, joined)
    if c.act is not None:
        g.remove_node(c.act)
    g.remove_node(c.node)
    g.rename(joined, last.output.name)  # the join is known by the layer's name
    g.remove_unused_constants()


def _record(c: Candidate, lut: int, lut_bits: int, ratio: float, note: str) -> dict:
    return {"pass": "split", "layer": c.name, "op": c.node.op, "channels": c.channels, "lut_channels": lut,
            "dsp_channels": c.channels - lut, "lut_bits": lut_bits, "ratio": ratio,
            "measure": "output MSE at lut_bits", "lut_error": float(np.sort(c.error)[:lut].sum()),
            "split": note == "", "note": note}


@register("split",
          ratio=Option(str, "auto", "fraction of each layer's channels on the LUT core, in [0, 1], or auto "
                       "(both cores finish together when LUTs and DSPs fill the device)"),
          lut_bits=Option(int, 4, "weight bits of the LUT part (2..8); the DSP part has 8"),
          layers=Option(str, "", "layers to split, layer+layer (IR names); default: every layer that can be"))
def split(g: Graph, ctx: PassContext, ratio: str, lut_bits: int, layers: str) -> bool:
    """Split dense/conv layers' output channels into a low-bit LUT part and an 8-bit DSP part."""
    if not 2 <= lut_bits <= 8:
        raise PipelineError(f"split: lut_bits={lut_bits} is outside 2..8")
    fraction = _parse_ratio(ratio)
    if any(n.op in ("qmatmul", "qconv") for n in g.nodes):
        raise PipelineError("split runs on the float IR, before quantize (it needs the float weights)")
    found = [n for n in g.nodes if n.op in ("dense", "conv") and n.attrs.get("place", "accel") == "accel"]
    by_name = {n.output.name: n for n in found}
    named = [s.strip() for s in layers.split("+") if s.strip()]
    for name in named:
        if name not in by_name:
            raise PipelineError(f"split: layers names '{name}', which is not a dense or conv layer of this model "
                                f"(layers: {', '.join(by_name) or 'none'})")
    chosen = [by_name[name] for name in named] if named else found
    if not chosen:
        return False
    if fraction is None:
        fraction = auto_ratio(g, lut_bits, ctx.device)
    values = run_batch(g, calibration_inputs(g, ctx), keep_all=True,
                       progress=lambda done, total: ctx.progress("split calibration", done, total))
    plans, records = [], {}
    for node in chosen:  # decide everything on the graph as it came, then rewrite
        c = Candidate(node, _act(g, node), np.zeros(node.output.type.shape[1]))
        count = int(round(fraction * c.channels))
        reason = ""
        if c.channels >= 2 and count in (0, c.channels):
            pass  # one core takes the whole layer: no channel order to restore
        elif c.channels < 2:
            reason = f"it has {c.channels} output channel; a split needs at least 2"
        elif node.op == "conv" and node.attrs["group"] != 1:
            reason = f"it is a grouped convolution (group = {node.attrs['group']})"
        else:
            try:
                fold_targets(g, (c.act or node).output, np.arange(c.channels))
            except CannotFold as e:
                reason = f"its channel order cannot be restored after it: {e}"
        if reason and named:
            raise PipelineError(f"split: cannot split layer {c.name}: {reason}")
        if reason:
            records[c.name] = _record(c, 0, lut_bits, fraction, "kept whole: " + reason)
            continue
        c.error = channel_errors(g, node, values[node.inputs[0].name], lut_bits)
        plans.append(c)
    changed = False
    for c in plans:
        count = int(round(fraction * c.channels))
        if count in (0, c.channels):  # one core takes the whole layer
            core = "lut" if count else "dsp"
            c.node.attrs.update({"core": core, "wbits": lut_bits if count else DSP_BITS})
            records[c.name] = _record(c, count, lut_bits, fraction, f"kept whole on the {core} core")
        else:
            lut = np.sort(np.argsort(c.error, kind="stable")[:count])
            split_layer(g, c, lut, lut_bits)
            records[c.name] = _record(c, count, lut_bits, fraction, "")
        changed = True
    ctx.report.extend(records[n.output.name] for n in chosen)  # in the model's (or layers=) order
    return changed
