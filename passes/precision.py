"""precision: choose each layer's weight and activation bits (2..8) for a target rate or error.

    dense(x, W, b) {relu}   ->   dense(x, W, b) {abits = A, core = C, relu, wbits = B [, pack = P]}

Runs on the float IR after `canonicalize`, before `quantize`, which honours the `wbits`/`abits`
requests and hands `core`/`pack` on to the qmatmul/qconv, where `autofold` folds with them.

Error, measured on the calibration data at the layer's own output, relative to its signal:
    weights at B bits       sum_n E[(x·(w_n − Q_B(w_n)))²] / sum_n E[y_n²]      (split.channel_errors)
    output activation at A  E[(y − Q_A(y))²] / E[y²]       Q_A per tensor, minmax, as quantize
The assignment's error is the sum of these over layers (independent noise adds).

Cost of a layer: its MACs times the device share of one product on the cheapest core for its
bits (dsp, packed dsp, lut), from the cost model (passes/precision_cost.py).

Greedy search: from every layer at max_bits, repeatedly take the request change (one layer's
weights or output activation to a lower width) that adds the least error per cost saved,
    target_fps   until the design reaches the rate: the fastest folding autofold's `plan`
                 finds on the device for the layers at those bits over the core choices
                 (precision_cost.Pricer.design); then, while a request can go back up with
                 the rate still met, the one that removes the most error (raise_back)
    max_err      while the error stays within max_err (the cheapest assignment found under it)
`budget=F` plans on F of the device's LUTs, FFs, DSPs and block RAM (nnfpga.devices.pass_device):
the rate must then be reached within that share, so lower bits are taken sooner.
The last layer's output bits lower no cost (no layer reads them), so they stay at max_bits.
"""
from __future__ import annotations

import math

import numpy as np

from nnfpga.cost import LayerShape, fps
from nnfpga.devices import DEFAULT_DEVICE, pass_device
from nnfpga.errors import PipelineError
from nnfpga.ir import Graph, Node, run_batch
from nnfpga.passes.precision_cost import Assignment, Layer, Pricer
from nnfpga.passes.quantize import activation_type, calibration_inputs
from nnfpga.passes.registry import Option, PassContext, register
from nnfpga.passes.split import channel_errors

LAYER_OPS = ("dense", "conv")
PASS_THROUGH = ("relu", "clip", "reshape", "maxpool", "avgpool", "pad", "transpose")
"""Float ops between two layers that keep the producer's activation type (quantize types them alike)."""


def _output_value(node: Node):
    """The value quantize gives the layer's output type: a conv's lone relu/clip result, else its own."""
    users = [u for u, _ in node.output.uses]
    if node.op == "conv" and len(users) == 1 and users[0].op in ("relu", "clip"):
        return users[0].output
    return node.output


def _source(node: Node, index: dict[int, int]) -> int | None:
    v = node.inputs[0]
    while v.producer is not None and id(v.producer) not in index and v.producer.op in PASS_THROUGH:
        v = v.producer.inputs[0]
    return index.get(id(v.producer)) if v.producer is not None else None


def _matrix_shape(node: Node) -> LayerShape:
    if node.op == "dense":
        k, n = node.inputs[1].type.shape
        return LayerShape(node.output.name, int(k), int(n), 1, 1)
    o, c, kh, kw = node.inputs[1].type.shape
    pixels = node.output.type.shape[2] * node.output.type.shape[3]
    return LayerShape(node.output.name, int(kh * kw * c), int(o), 1, 1, vectors=int(pixels),
                      channels=int(node.inputs[0].type.shape[1]), kernel=(int(kh), int(kw)))


def _act_error(y: np.ndarray, bits: int) -> float:
    t = activation_type(y.min(), y.max(), bits)
    q = np.clip(np.rint(y / t.scale) + t.zero_point, t.storage.min, t.storage.max)
    energy = float(np.mean(y.astype(np.float64) ** 2)) or 1.0
    return float(np.mean(((q - t.zero_point) * t.scale - y) ** 2)) / energy


def measure(g: Graph, ctx: PassContext, widths: range) -> list[Layer]:
    """Every accelerated dense/conv layer with its errors at each width, on the calibration data."""
    nodes = [n for n in g.nodes if n.op in LAYER_OPS and n.attrs.get("place", "accel") == "accel"]
    index = {id(n): i for i, n in enumerate(nodes)}
    values = run_batch(g, calibration_inputs(g, ctx), keep_all=True,
                       progress=lambda done, total: ctx.progress("precision calibration", done, total))
    layers = []
    for node in nodes:
        y = values[_output_value(node).name]
        shape = _matrix_shape(node)
        layer = Layer(node, shape, _source(node, index), bool(y.min() < 0), shape.k * shape.n * shape.vectors)
        out = values[node.output.name].astype(np.float64)
        per_channel = np.moveaxis(out, 1, -1).reshape(-1, out.shape[1])
        energy = float(np.mean(per_channel ** 2, axis=0).sum()) or 1.0
        for b in widths:
            layer.weight_error[b] = float(channel_errors(g, node, values[node.inputs[0].name], b).sum()) / energy
            layer.act_error[b] = _act_error(y, b)
        layers.append(layer)
    return layers


def request_moves(a: Assignment, layers: list[Layer], widths: range, higher: bool = False):
    """Every assignment one request away from `a`: a layer's weights, or a read output, to any
    lower width (or any higher one, with `higher`)."""
    def beyond(b: int, current: int) -> bool:
        return b > current if higher else b < current

    read = {l.source for l in layers if l.source is not None}
    for i in range(len(layers)):
        for b in widths:
            if beyond(b, a.wbits[i]):
                yield Assignment(a.wbits[:i] + [b] + a.wbits[i + 1:], list(a.abits))
            if beyond(b, a.abits[i]) and i in read:
                yield Assignment(list(a.wbits), a.abits[:i] + [b] + a.abits[i + 1:])


def greedy_step(a: Assignment, layers: list[Layer], pricer: Pricer, widths: range,
                max_err: float = math.inf) -> Assignment | None:
    """The lower assignment adding the least error per cost saved (and within max_err), if any saves cost."""
    base_cost, base_err = pricer.cost(a), a.error(layers)
    best, best_score = None, math.inf
    for b in request_moves(a, layers, widths):
        saved = base_cost - pricer.cost(b)
        err = b.error(layers)
        if saved <= 0 or err > max_err:
            continue
        score = max(err - base_err, 0.0) / saved
        if score < best_score:
            best, best_score = b, score
    return best


def raise_back(a: Assignment, design: tuple, layers: list[Layer], pricer: Pricer, widths: range,
               max_interval: int) -> tuple[Assignment, tuple]:
    """Undo what the lowering overshot: while some request can go higher with the design still
    within max_interval, take the one that removes the most error. The lowering steps are
    whole requests ranked by a per-product price, so the last one can pass the rate by far."""
    while True:
        base_err = a.error(layers)
        better = sorted((b for b in request_moves(a, layers, widths, higher=True) if b.error(layers) < base_err),
                        key=lambda b: b.error(layers))
        for b in better:
            trial = pricer.design(b)
            if trial[0] <= max_interval:
                a, design = b, trial
                break
        else:
            return a, design


def _record(l: Layer, a: Assignment, i: int, core: tuple[str, int], pricer: Pricer, design: dict) -> dict:
    ib, _ = a.in_bits(pricer.layers, i)
    return {"pass": "precision", "layer": l.name, "op": l.node.op, "macs": l.macs, "in_bits": ib,
            "wbits": a.wbits[i], "abits": a.abits[i], "core": core[0], "pack": core[1],
            "error": l.weight_error[a.wbits[i]] + l.act_error[a.abits[i]],
            "cost": l.macs * pricer.share(a, i, core),
            "weight_errors": {str(b): e for b, e in l.weight_error.items()},
            "act_errors": {str(b): e for b, e in l.act_error.items()}, **design}


def _check_options(min_bits: int, max_bits: int, target_fps: float, max_err: float, clock_mhz: float) -> None:
    for key, bits in (("min_bits", min_bits), ("max_bits", max_bits)):
        if not 2 <= bits <= 8:
            raise PipelineError(f"precision: {key}={bits} is outside 2..8")
    if min_bits > max_bits:
        raise PipelineError(f"precision: min_bits={min_bits} is above max_bits={max_bits}")
    if not (target_fps >= 0 and max_err >= 0 and 0 < clock_mhz < math.inf and target_fps < math.inf):
        raise PipelineError(f"precision: target_fps={target_fps:g} and max_err={max_err:g} must be finite and >= 0 "
                            f"(max_err may be inf), clock_mhz={clock_mhz:g} finite and above 0")
    if (target_fps > 0) == (max_err > 0):
        raise PipelineError("precision: give exactly one objective, target_fps= (the most accurate assignment "
                            "reaching that rate) or max_err= (the cheapest whose error stays within it)")


@register("precision",
          target_fps=Option(float, 0.0, "inferences per second to reach: the most accurate bits that reach it"),
          max_err=Option(float, 0.0, "largest error (sum over layers of relative output MSE): the cheapest bits "
                                     "within it"),
          clock_mhz=Option(float, 100.0, "clock frequency the rate is computed at"),
          device=Option(str, "", f"device the design must fit (default: the build's --target, else {DEFAULT_DEVICE})"),
          budget=Option(float, 1.0, "share (0, 1] of the device's LUTs, FFs, DSPs and block RAM the design at "
                                    "target_fps may take"),
          min_bits=Option(int, 2, "lowest weight/activation bits a layer may get (2..8)"),
          max_bits=Option(int, 8, "highest bits, where the search starts (2..8)"))
def precision(g: Graph, ctx: PassContext, target_fps: float, max_err: float, clock_mhz: float, device: str,
              budget: float, min_bits: int, max_bits: int) -> bool:
    """Choose per-layer wbits/abits (and core/pack) requests for target_fps or max_err, greedily."""
    _check_options(min_bits, max_bits, target_fps, max_err, clock_mhz)
    name = device or ctx.device or DEFAULT_DEVICE
    dev = pass_device("precision", name, budget)
    if any(n.op in ("qmatmul", "qconv") for n in g.nodes):
        raise PipelineError("precision runs on the float IR, before quantize (it needs the float weights)")
    widths = range(min_bits, max_bits + 1)
    layers = measure(g, ctx, widths)
    if not layers:
        return False
    pricer = Pricer(layers, dev, clock_mhz)
    a = Assignment([max_bits] * len(layers), [max_bits] * len(layers))
    if target_fps > 0:
        a, design = _search_rate(a, layers, pricer, widths, target_fps)
    else:
        a, design = _search_error(a, layers, pricer, widths, max_err)
    interval, cores, _ = design
    summary = {"interval_cycles": interval, "total_error": a.error(layers), "device": name, "budget": budget}
    for i, (l, core) in enumerate(zip(layers, cores)):
        l.node.attrs.update(wbits=a.wbits[i], abits=a.abits[i], core=core[0])
        if core[1] > 1:
            l.node.attrs["pack"] = core[1]
        else:
            l.node.attrs.pop("pack", None)
        ctx.report.append(_record(l, a, i, core, pricer, summary))
    return True


def _search_rate(a: Assignment, layers: list[Layer], pricer: Pricer, widths: range, target_fps: float):
    max_interval = math.floor(pricer.clock_mhz * 1e6 / target_fps)
    design = pricer.design(a)
    while design[0] > max_interval:
        lower = greedy_step(a, layers, pricer, widths)
        if lower is None:
            break
        a, design = lower, pricer.design(lower)
    if design[0] <= max_interval:
        return raise_back(a, design, layers, pricer, widths, max_interval)
    floor = Assignment([widths[0]] * len(layers), [widths[0]] * len(layers))
    fastest = min(design[0], pricer.design(floor)[0])
    if math.isinf(fastest):
        raise PipelineError(f"precision: no assignment of {widths[0]}..{widths[-1]} bits fits {pricer.dev.name}")
    rate = fps(fastest, pricer.clock_mhz)
    raise PipelineError(
        f"precision: {target_fps:g} inferences/s at {pricer.clock_mhz:g} MHz needs an interval of at most "
        f"{max_interval} cycles; the fastest assignment found ({widths[0]}..{widths[-1]} bits) reaches "
        f"{fastest:g} cycles on {pricer.dev.name}, {rate:.0f} inferences/s: the closest feasible target is "
        f"precision{{target_fps={math.floor(rate)}}}")


def _search_error(a: Assignment, layers: list[Layer], pricer: Pricer, widths: range, max_err: float):
    if a.error(layers) > max_err:
        raise PipelineError(f"precision: max_err={max_err:g} is below the error of the most accurate assignment "
                            f"(every layer at {widths[-1]} bits): {a.error(layers):.3g}; the closest feasible is "
                            f"precision{{max_err={a.error(layers):.3g}}}")
    while (lower := greedy_step(a, layers, pricer, widths, max_err)) is not None:
        a = lower
    return a, pricer.design(a)
