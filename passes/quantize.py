"""quantize: post-training quantization of a canonical float graph to integer ops.

    x (f32 input)            -> quantize(x) : !q<abits, s_x, z_x>       per tensor, calibrated
    dense(x, W, b) {relu}    -> requant(qmatmul(x_q, W_q, b_q)) {mult, shift, lo, hi}
    reshape(x)               -> reshape(x_q)
    conv, pooling, add, concat  -> see quantize_spatial.py
    y (f32 output)           -> dequantize(y_q)

After `partition`, only the nodes placed on the accelerator are quantized: the quantize
goes where the host prefix (or the input) hands over, the dequantize where the host suffix
(or the output) takes over, and host nodes stay float. Calibration runs the whole graph,
host ops included.

with the integer semantics of DESIGN.md:
    W_q[k,n] = clamp(round(W[k,n] / s_w[n]), ±(2^(wbits-1) - 1)),  s_w[n] = max_k |W[k,n]| / (2^(wbits-1) - 1)
    b_q[n]   = round(b[n] / (s_x·s_w[n])) - z_x·Σ_k W_q[k,n]       (input zero point folded into bias)
    acc      = x_q·W_q + b_q                                        (exact; type from its exact range)
    y_q      = clamp(z_y + ((acc·M[n] + 2^(s-1)) >> s), lo, hi),   M[n] = round(s_x·s_w[n]/s_y · 2^s)
where s is the largest shift with every M[n] < 2^bits: bits = 17 (one DSP port), or 21 where the
model brings its own quantization (requant_width); a fused ReLU clamps at lo = z_y.
`calib` picks the float ranges only (passes/quantize_calib.py): with calib=mse, s_w[n] is the
clipped max_k |W[k,n]| of least squared error; the activations' ranges are min/max, percentiles
or least squared error. The integer derivation above is the same for all three.
"""
from __future__ import annotations

import functools

import numpy as np

from nnfpga.errors import CalibrationError, PipelineError
from nnfpga.hardware import DSP_MULT_BITS, MULT_BITS
from nnfpga.ir import Graph, IntType, QuantType, TensorType, run_batch
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range
from nnfpga.limits import check_run_size
from nnfpga.passes.quantize_calib import CalibratedRanges, activation_range, check_options
from nnfpga.passes.quantize_spatial import (fusable, fused_activation, quantize_add, quantize_avgpool, quantize_concat,
                                            quantize_conv, requantize_image, unify_concat_ranges)
from nnfpga.passes.quantize_weights import (LayerWeights, carried_annotations, layer_weights, requested_bits,
                                            shared_requant)
from nnfpga.passes.registry import Option, PassContext, register
from nnfpga.sample_data import raw_pixel_note

SYNTHETIC_SAMPLES = 256
QUANTIZABLE = ("dense", "reshape", "transpose", "conv", "maxpool", "avgpool", "add", "concat")
"""Float ops quantize turns into accelerator ops (relu/clip too when fused into a conv or add)."""
ACCEL_OPS_TEXT = ("dense layers (Gemm, MatMul+Add, Relu), convolutions (with Relu/Clip after them), max and "
                  "average pooling, residual adds, concat, reshapes and transposes")


def activation_type(lo: float, hi: float, bits: int) -> QuantType:
    """Per-tensor type covering [lo, hi] (widened to include 0): unsigned when lo >= 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if lo >= 0:
        storage = IntType(bits, False)
        return QuantType(storage, (hi or 1.0) / storage.max, 0)
    storage = IntType(bits, True)
    scale = (hi - lo) / (storage.max - storage.min)
    zero_point = int(np.clip(np.rint(storage.min - lo / scale), storage.min, storage.max))
    return QuantType(storage, scale, zero_point)


def requant_params(ratio: np.ndarray, bits: int = DSP_MULT_BITS, acc_bound: int = 0) -> tuple[np.ndarray, int]:
    """Integer M[n] and one shift s with M[n]/2^s ≈ ratio[n], every M[n] < 2^bits, and fewer bits
    where |acc|·M could reach 2^53 (the reference ONNX computes acc·M exactly in float64)
    for an accumulator of magnitude up to `acc_bound`."""
    while bits > DSP_MULT_BITS and int(acc_bound) * 2**bits >= 2**53:
        bits -= 1
    top = float(ratio.max())
    shift = 1
    while shift < 62 and np.rint(top * 2.0 ** (shift + 1)) < 2**bits:
        shift += 1
    mult = np.rint(ratio * 2.0**shift).astype(np.int64)
    if mult.max() >= 2**bits:
        raise PipelineError(f"requant ratio {top:.4g} is too large for a {bits}-bit multiplier; "
                            "the layer's output range is far below its input range (check calibration)")
    return mult, shift


def requant_width(model_quantized: bool) -> int:
    """Bits of a requant multiplier: the DSP's for a calibrated layer; more, from fabric adders,
    for one whose output the model quantizes itself, to requantize as onnxruntime does with its
    float32 ratio (17 bits left 0.1-0.3% of output integers one step apart; 21 bits, under 0.07%)."""
    return MULT_BITS if model_quantized else DSP_MULT_BITS


PASS_THROUGH = ("reshape", "transpose", "maxpool")
"""Ops whose result takes their input's quantized type."""


def _ranges(g: Graph, ctx: PassContext, accel, kept: dict) -> dict[str, np.ndarray]:
    """Calibrated ranges of the values quantize needs, or none when the model fixes them all."""
    if ctx.fixed_quant is None:
        return _calibrated(g, ctx)
    made = set()
    for node in accel:
        made |= {v.name for v in node.outputs}
    needed = [v.name for n in accel for v in n.inputs if not v.is_const and v.name not in made]
    for node in accel:
        if node.op in PASS_THROUGH or (node.op in ("relu", "clip") and fusable(g, node)):
            continue
        act = fused_activation(g, node) if node.op in ("conv", "add") else None
        needed.append((act or node).output.name)
    missing = list(dict.fromkeys(n for n in needed if n not in kept))
    if not missing:
        if ctx.calib is not None:
            ctx.warn("the model carries its own quantization: the calibration data is not used")
        return {}
    ctx.warn("the model is quantized in parts: calibrating the values it leaves float: "
             + ", ".join(f"%{n}" for n in missing))
    return _calibrated(g, ctx)


def _calibrated(g: Graph, ctx: PassContext) -> dict[str, np.ndarray]:
    # Calibration runs the whole float graph, host ops included (the interpreter runs them).
    given = [np.asarray(x) for x in (ctx.calib or {}).values()]
    samples = max((len(x) for x in given if x.ndim), default=0) if ctx.calib is not None else SYNTHETIC_SAMPLES
    # Every value of every sample is kept, then stacked (a second copy), as float32.
    held = 2 * 4 * samples * sum(int(np.prod(v.type.shape)) for v in g.values() if not v.is_const)
    check_run_size(held, f"calibration on {samples} samples (every intermediate tensor kept)",
                   "give fewer calibration samples (--calib) or a smaller model", CalibrationError)
    env = run_batch(g, calibration_inputs(g, ctx), keep_all=True,
                    progress=lambda done, total: ctx.progress("calibration", done, total))
    for name, values in env.items():  # finite data can still overflow float32 inside the model
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise CalibrationError(f"calibration: %{name} takes NaN or infinite values on the calibration data "
                                   "(float32 overflows); the data is far larger than the model expects")
    return env


def calibration_inputs(g: Graph, ctx: PassContext) -> dict[str, np.ndarray]:
    """The calibration samples per graph input: --calib, else seeded standard-normal ones (with a warning)."""
    if ctx.calib is not None:
        missing = [v.name for v in g.inputs if v.name not in ctx.calib]
        if missing:
            raise CalibrationError(f"calibration data has no array for input(s) {', '.join(missing)} "
                                   f"(it has: {', '.join(sorted(ctx.calib)) or 'nothing'})")
        for v in g.inputs:
            note = raw_pixel_note(np.asarray(ctx.calib[v.name]))
            if note:
                ctx.warn(f"calibration data for input %{v.name}: {note}")
        return {v.name: ctx.calib[v.name] for v in g.inputs}
    ctx.warn(f"no calibration data (--calib): calibrating on {SYNTHETIC_SAMPLES} seeded standard-normal "
             "samples; accuracy on real data may suffer")
    rng = np.random.default_rng(ctx.seed)
    return {v.name: rng.standard_normal((SYNTHETIC_SAMPLES,) + v.type.shape[1:]).astype(np.float32)
            for v in g.inputs}


@register("quantize",
          wbits=Option(int, 8, "weight bits (2..8), symmetric per output channel"),
          abits=Option(int, 8, "activation bits (2..8), per tensor with zero point"),
          calib=Option(str, "minmax", "activation ranges: minmax, percentile (clip at pct) or mse "
                       "(least squared error; weights too)"),
          pct=Option(float, 0.01, "calib=percentile: percent clipped at each end (0 < pct < 50)"))
def quantize(g: Graph, ctx: PassContext, wbits: int, abits: int, calib: str = "minmax", pct: float = 0.01) -> bool:
    """Post-training quantization: dense layers to qmatmul + requant, calibrated activations."""
    for key, bits in (("wbits", wbits), ("abits", abits)):
        if not 2 <= bits <= 8:
            raise PipelineError(f"quantize: {key}={bits} is outside 2..8")
    check_options(calib, pct)
    # After partition, nodes placed on the host stay float; quantize takes the accelerator's.
    partitioned = any("place" in n.attrs for n in g.nodes)
    accel = [n for n in g.nodes if n.attrs.get("place", "accel") == "accel"]
    for node in accel:
        if node.op not in QUANTIZABLE and not (node.op in ("relu", "clip") and fusable(g, node)):
            hint = (f"it is placed on the accelerator, which takes {ACCEL_OPS_TEXT}" if partitioned
                    else f"the accelerator takes {ACCEL_OPS_TEXT} — run canonicalize first, and partition "
                    "to place other ops on the host")
            raise PipelineError(f"quantize: cannot quantize the {node.op} node defining %{node.outputs[0].name}; "
                                f"{hint}")
    if not accel or any(not v.type.is_float for v in g.inputs):
        return False
    accel_ids = {id(n) for n in accel}

    fixed = ctx.fixed_quant
    kept = fixed.activations if fixed is not None else {}
    # Per-layer requests (`wbits`/`abits` left by split, precision or bits) override the pass-wide bits.
    weights = layer_weights(g, accel, wbits, calib, fixed)
    output_bits = _output_bits(g, accel, abits)
    ranges = _ranges(g, ctx, accel, kept)
    if calib != "minmax":
        ranges = CalibratedRanges(ranges, lambda name, v: activation_range(v, calib, pct, output_bits.get(name, abits),
                                                                            activation_type))
    qvalue = {}  # float value name -> its quantized replacement
    # Region entries: float values the accelerator reads but does not compute.
    entries = []
    for node in accel:
        for x in node.inputs:
            if not x.is_const and (x.producer is None or id(x.producer) not in accel_ids) and all(x is not e for e in entries):
                entries.append(x)
    for x in entries:
        first = next(n for n in g.nodes if id(n) in accel_ids and x in n.inputs) if partitioned else g.nodes[0]
        t = kept.get(x.name) or activation_type(ranges[x.name].min(), ranges[x.name].max(), abits)
        qvalue[x.name] = g.add_node("quantize", [x], [x.type.with_element(t)], names=[x.name + "_q"],
                                    before=first).output
    if ranges:
        unify_concat_ranges(g, accel, ranges)
    fused: set[int] = set()  # activations folded into their producer's clamp
    for node in accel:
        if id(node) in fused:
            continue
        act = fused_activation(g, node) if node.op in ("conv", "add") else None
        out = (act or node).output
        if act is not None:
            fused.add(id(act))
        y_t = kept.get(out.name)
        rq_params = functools.partial(requant_params, bits=requant_width(out.name in kept))
        if y_t is None and node.op not in PASS_THROUGH:  # a relu's range starts at 0
            y_t = activation_type(ranges[out.name].min(), ranges[out.name].max(), output_bits.get(out.name, abits))
        if node.op in PASS_THROUGH:  # the quantized type passes through
            src = qvalue[node.inputs[0].name]
            if y_t is not None and y_t != src.type.element:
                raise PipelineError(f"quantize: the {node.op} defining %{out.name} passes its input's type "
                                    f"{src.type.element!r} on, but the model quantizes its result as {y_t!r}; "
                                    "the accelerator cannot requantize there")
            qvalue[out.name] = g.add_node(node.op, [src], [node.output.type.with_element(src.type.element)],
                                          dict(node.attrs), names=[node.output.name + "_q"], before=node).output
        elif node.op == "dense":
            qvalue[out.name] = _quantize_dense(g, node, qvalue[node.inputs[0].name], y_t, weights[id(node)],
                                               rq_params)
        elif node.op == "conv":
            qvalue[out.name] = quantize_conv(g, node, qvalue[node.inputs[0].name], y_t, act, weights[id(node)],
                                             rq_params)
        elif node.op == "avgpool":
            qvalue[out.name] = quantize_avgpool(g, node, qvalue[node.inputs[0].name], y_t, rq_params)
        elif node.op == "add":
            a, b = (qvalue.get(v.name) for v in node.inputs)
            if a is None or b is None:
                raise PipelineError(f"quantize: the add defining %{node.output.name} adds a constant that "
                                    "canonicalize could not fold into a layer's bias")
            qvalue[out.name] = quantize_add(g, node, a, b, y_t, act)
        elif node.op == "concat":
            xqs = [qvalue[v.name] for v in node.inputs]
            if out.name in kept:  # the model's own types: requantize images that differ, as it does
                xqs = [x if x.type.element == y_t or x.type.rank < 3 else
                       requantize_image(g, x, y_t, node, rq_params) for x in xqs]
            qvalue[out.name] = quantize_concat(g, node, xqs)
    # Region exits: accelerator results that host nodes or the graph outputs read.
    exits = []
    for node in g.nodes:
        if id(node) not in accel_ids:
            exits += [v for v in node.inputs if v.producer is not None and id(v.producer) in accel_ids]
    exits += [v for v in g.outputs if v.producer is not None and id(v.producer) in accel_ids]
    done: set[int] = set()
    for y in exits:
        if id(y) in done:
            continue
        done.add(id(y))
        readers = [n for n, _ in y.uses if id(n) not in accel_ids]
        before = next((n for n in g.nodes if any(n is r for r in readers)), None)
        dq = g.add_node("dequantize", [qvalue[y.name]], [y.type], names=[y.name + "_dq"], before=before).output
        for reader, index in list(y.uses):
            if id(reader) not in accel_ids:
                reader.set_input(index, dq)
        g.outputs = [dq if v is y else v for v in g.outputs]
    for node in reversed(accel):
        g.remove_node(node)
    g.remove_unused_constants()
    if partitioned:
        for node in g.nodes:
            node.attrs.setdefault("place", "accel")  # the nodes made here: quantize .. dequantize
    return True


def _output_bits(g: Graph, accel, abits: int) -> dict[str, int]:
    """Activation bits of the values a node's `abits` request types (a fused relu's result for a
    conv or add); every other value takes the pass-wide abits."""
    bits: dict[str, int] = {}
    for node in accel:
        if "abits" in node.attrs:
            act = fused_activation(g, node) if node.op in ("conv", "add") else None
            bits[(act or node).output.name] = requested_bits(node, "abits", abits)
    return bits


def _quantize_dense(g: Graph, node, xq, y_t: QuantType, weights: LayerWeights, rq_params=requant_params):
    """dense -> qmatmul + requant into y_t (a fused relu: y_t's range starts at 0, clamp at z_y)."""
    name = node.output.name
    w = g.const_data(node.inputs[1]).astype(np.float64)
    b = g.const_data(node.inputs[2]).astype(np.float64)
    x_t: QuantType = xq.type.element
    w_scale, wbits, w_int = weights.scale, weights.bits, weights.ints
    scaled_bias = np.rint(b / (x_t.scale * w_scale))
    fits = np.all(np.abs(scaled_bias) < 2**31)  # in float first: a vanishing scale overflows int64
    bias = np.where(fits, scaled_bias, 0).astype(np.int64) - x_t.zero_point * w_int.sum(axis=0)
    if not fits or np.abs(bias).max(initial=0) >= 2**31:
        raise PipelineError(f"quantize: the bias of %{name} does not fit 32 bits at this input scale")

    w_type = TensorType(w.shape, QuantType(IntType(wbits, True), g.add_array(name + "_w.scale", w_scale).name, 0, 1))
    wq = g.add_const(name + "_w", w_int.astype(np.int8), w_type)
    bq = g.add_const(name + "_b", bias.astype(np.int32), TensorType(bias.shape, IntType(32, True)))
    lo, hi = accumulator_bounds(x_t, w_int, bias)
    acc = g.add_node("qmatmul", [xq, wq, bq], [node.output.type.with_element(int_type_for_range(lo, hi))],
                     carried_annotations(node), names=[name + "_acc"], before=node).output

    relu = bool(node.attrs.get("relu"))
    mult, shift = shared_requant(rq_params, x_t.scale * w_scale / y_t.scale,
                                 x_t.scale * weights.peer_scales / y_t.scale, acc_bound=max(-lo, hi))
    attrs = {"mult": g.add_array(name + "_m", mult), "shift": shift,
             "lo": y_t.zero_point if relu else y_t.min, "hi": y_t.max}
    return g.add_node("requant", [acc], [node.output.type.with_element(y_t)], attrs,
                      names=[name + "_q"], before=node).output
