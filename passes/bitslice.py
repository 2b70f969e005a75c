"""bitslice: round integer weights to at most `keep` non-zero sign-magnitude s-bit slices (lossy).

Runs on the integer IR after `quantize` (before `bitplane`, which then drops the planes the
rounding emptied). A weight's magnitude |w| = Σ_j 2^(j·s)·W_j; a bit-serial core skips the
zero slices W_j, so fewer non-zero slices mean fewer cycles (nnfpga.bitslices):

    w' = sign(w) · the magnitude nearest |w| among those <= 2^(wbits-1) - 1 with at most
         `keep` non-zero s-bit slices (a tie goes to the smaller magnitude)
    b' = b + z_x·(Σ_k w - Σ_k w')      the input zero point stays folded into the bias

    bitslice{s=2, keep=1}        every layer keeps one non-zero 2-bit slice per weight
    bitslice{s=2, target=0.7}    per layer, the largest keep whose weights' slices are at least
                                 70% zero (keep=1 if none reaches it; the record says so)

The weight scale, the requant and the types stay; the accumulator type is re-derived from its
exact bound. Reported per layer (`ctx.report`): keep, relative weight error
||W' - W||_F / ||W||_F, the fraction of zero slices over all weights and of zero tiles
(integer_layers.slice_statistics; tile = the fold's pe x simd block, or a whole row when
unfolded) before and after. With calibration data, one more record gives the output error:
the largest |y' - y| over the model's outputs relative to the largest |y|, and for
score-vector outputs how often the argmax agrees, on up to CALIB_SAMPLES samples.
"""
from __future__ import annotations

import numpy as np

from nnfpga.bitslices import SLICE_WIDTHS, sign_magnitude_slices, slice_count
from nnfpga.errors import PipelineError
from nnfpga.ir import Graph, run_batch
from nnfpga.passes.integer_layers import IntegerLayer, integer_layers, slice_statistics
from nnfpga.passes.registry import Option, PassContext, register

CALIB_SAMPLES = 256
"""Calibration samples the output error is measured on (the interpreter runs one at a time)."""


def representable_magnitudes(wbits: int, s: int, keep: int) -> np.ndarray:
    """Sorted magnitudes 0 .. 2^(wbits-1) - 1 with at most `keep` non-zero s-bit slices."""
    mags = np.arange(1 << (wbits - 1), dtype=np.int64)
    nonzero = (sign_magnitude_slices(mags, wbits, s) != 0).sum(axis=-1)
    return mags[nonzero <= keep]


def round_to_slices(w: np.ndarray, wbits: int, s: int, keep: int) -> np.ndarray:
    """Each weight rounded to the nearest value with at most `keep` non-zero s-bit slices."""
    allowed = representable_magnitudes(wbits, s, keep)
    mag = np.abs(np.asarray(w, np.int64))
    above = np.clip(np.searchsorted(allowed, mag), 0, len(allowed) - 1)  # first allowed >= mag
    below = np.clip(above - 1, 0, len(allowed) - 1)
    hi, lo = allowed[above], allowed[below]
    lo = np.where(hi == mag, hi, lo)
    nearest = np.where(mag - lo <= hi - mag, lo, hi)
    return np.sign(w) * nearest


def zero_slice_fraction(w: np.ndarray, wbits: int, s: int) -> float:
    slices = sign_magnitude_slices(w, wbits, s)
    return float((slices == 0).mean()) if slices.size else 0.0


def choose_keep(w: np.ndarray, wbits: int, s: int, target: float) -> int:
    """The largest keep whose rounded weights have at least `target` of their slices zero (else 1)."""
    for keep in range(slice_count(wbits, s), 0, -1):
        if zero_slice_fraction(round_to_slices(w, wbits, s, keep), wbits, s) >= target:
            return keep
    return 1


def rewrite_layer(g: Graph, layer: IntegerLayer, s: int, keep: int) -> float:
    """Round the layer's weights in place and fix its bias and accumulator; the relative error."""
    node = layer.node
    w_value, b_value = node.inputs[1], node.inputs[2]
    weights, bias = layer.weights(g), g.const_data(b_value).astype(np.int64)
    rounded = round_to_slices(weights, layer.wbits, s, keep)
    x_t = node.inputs[0].type.element
    new_bias = bias + x_t.zero_point * (layer.channel_sums(weights) - layer.channel_sums(rounded))
    if np.abs(new_bias).max(initial=0) >= 2**31:
        raise PipelineError(f"bitslice: the bias of %{layer.name} no longer fits 32 bits")
    g.arrays[w_value.array] = rounded.astype(g.arrays[w_value.array].dtype)
    g.arrays[b_value.array] = new_bias.astype(g.arrays[b_value.array].dtype)
    node.output.type = node.output.type.with_element(layer.accumulator_type(rounded, new_bias))
    norm = float(np.linalg.norm(weights))
    return float(np.linalg.norm(rounded - weights)) / norm if norm else 0.0


def output_error(before: Graph, after: Graph, calib: dict[str, np.ndarray]) -> dict:
    """How far the model's outputs moved on the first CALIB_SAMPLES calibration samples."""
    feeds = {v.name: np.asarray(calib[v.name])[:CALIB_SAMPLES] for v in before.inputs}
    ref, got = run_batch(before, feeds), run_batch(after, feeds)
    record: dict = {"pass": "bitslice", "layer": None, "samples": len(next(iter(feeds.values())))}
    worst = 0.0
    agree = []
    for name, a in ref.items():
        a, b = np.asarray(a, np.float64), np.asarray(got[name], np.float64)
        scale = float(np.abs(a).max()) or 1.0
        worst = max(worst, float(np.abs(a - b).max()) / scale)
        if sum(d > 1 for d in a.shape[1:]) == 1:  # one score vector per sample
            a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
            agree.append(float((a.argmax(axis=1) == b.argmax(axis=1)).mean()))
    record["output_rel_max_err"] = round(worst, 6)
    if agree:
        record["top1_agreement"] = round(min(agree), 6)
    return record


def _check_options(s: int, keep: int, target: float) -> None:
    if s not in SLICE_WIDTHS:
        raise PipelineError(f"bitslice: s={s} must be one of {', '.join(map(str, SLICE_WIDTHS))} (bits per slice)")
    if keep and target:
        raise PipelineError("bitslice: give keep or target, not both")
    if not target and keep < 1:
        raise PipelineError(f"bitslice: keep={keep} must be at least 1 (non-zero slices per weight), "
                            "or give target")
    if target and not 0 < target < 1:
        raise PipelineError(f"bitslice: target={target} must lie in (0, 1) (fraction of zero slices)")


@register("bitslice",
          s=Option(int, 2, "bits per slice: 1, 2 or 4"),
          keep=Option(int, 0, "non-zero slices each weight keeps, at least 1 (or give target)"),
          target=Option(float, 0.0, "per layer, reach this fraction of zero slices with the largest keep, in (0, 1)"))
def bitslice(g: Graph, ctx: PassContext, s: int, keep: int, target: float) -> bool:
    """Round integer weights to at most `keep` non-zero sign-magnitude s-bit slices (lossy)."""
    _check_options(s, keep, target)
    layers = integer_layers(g)
    if not layers:
        raise PipelineError("bitslice: no quantized dense or conv layer; run it after quantize")
    before = g.clone() if ctx.calib is not None else None
    changed = False
    for layer in layers:
        stats_before = slice_statistics(g, layer)
        weights = layer.weights(g)
        layer_keep = keep or choose_keep(weights, layer.wbits, s, target)
        error = rewrite_layer(g, layer, s, layer_keep)
        changed |= error > 0
        stats_after = slice_statistics(g, layer)
        record = {"pass": "bitslice", "layer": layer.name, "op": layer.node.op, "s": s, "keep": layer_keep,
                  "rel_weight_error": round(error, 6), "tile": stats_after["tile"],
                  "zero_slice_fraction_before": stats_before["zero_slice_fraction"][str(s)],
                  "zero_slice_fraction_after": stats_after["zero_slice_fraction"][str(s)],
                  "zero_tile_fraction_before": stats_before["zero_tile_fraction"][str(s)],
                  "zero_tile_fraction_after": stats_after["zero_tile_fraction"][str(s)]}
        if target:
            record["target_reached"] = record["zero_slice_fraction_after"] >= target
        ctx.report.append(record)
    if before is not None and changed:
        ctx.report.append(output_error(before, g, ctx.calib))
    return changed
