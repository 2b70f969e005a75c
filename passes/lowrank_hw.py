"""lowrank{hw=1}: ranks the folding uses fully, chosen with autofold's cost model.

A factored layer runs as two pipeline stages, K→r and r→N. A stage uses its pe·simd lanes
fully at an interval T when some folding (pe | its N, simd | its K) takes exactly T cycles
per inference with every lane busy every cycle: vectors·(N/pe)·(K/simd) = T and its input
keeps up (the cost model's stage cycles are the folds, not the input fill). A rank r is
full at T when both of its stages are; at any other rank the stages either idle for part of
T or need a faster, larger folding for the same MACs (HALOC's hardware-aware ranks: ranks
the hardware computes without waste).

The speeds tried are the unfactored design's interval T0 divided by a whole s = 1, 2, ...:

    for each T = T0 / s (an integer):
        each layer: whole, or a rank full at T; the choice with the largest product of kept
        energy fractions within the MACs budget (lowrank's macs= rule on these ranks)
        its predicted interval: autofold's plan of the factored layers on the device
    macs=F     of the choices within F of the MACs, the most cycles saved per unit of cost
               (-log of the kept energy product); ties: the lower cost
    cycles=F   of the choices whose predicted interval is at most F·T0, the lowest cost

The prediction is the plan on the matrix-vector units alone (8-bit weights and activations,
ROMs with all bits), what autofold screens its candidates with before the whole design.
"""
from __future__ import annotations

import math
from functools import lru_cache

from nnfpga.cost import LayerShape
from nnfpga.devices import DEVICES, Device
from nnfpga.errors import PipelineError
from nnfpga.passes.autofold_plan import Planner, plan
from nnfpga.passes.lowrank_ranks import Layer, first_rank, log_cost, pareto_front

MAX_SPEEDUP = 16
"""Largest s in T0 / s tried: beyond it every layer's rank sinks to a few singular values."""


def _shape(name: str, k: int, n: int, vectors: int, channels: int = 0, kernel=(1, 1)) -> LayerShape:
    return LayerShape(name=name, k=k, n=n, pe=1, simd=1, vectors=vectors, channels=channels, kernel=kernel)


def _whole_shape(layer: Layer) -> LayerShape:
    if layer.node.op == "dense":
        return _shape(layer.name, layer.k, layer.n, 1)
    _, c, kh, kw = layer.node.inputs[1].type.shape
    return _shape(layer.name, layer.k, layer.n, layer.vectors, c, (kh, kw))


def stage_shapes(layer: Layer, r: int | None) -> list[LayerShape]:
    """The matrix-vector units of the layer whole (r None) or factored at rank r."""
    whole = _whole_shape(layer)
    if r is None:
        return [whole]
    first = LayerShape(**{**whole.__dict__, "name": f"{layer.name}_proj", "n": r})
    if layer.node.op == "dense":
        return [first, _shape(layer.name, r, layer.n, 1)]
    return [first, _shape(layer.name, r, layer.n, layer.vectors, r, (1, 1))]


def predicted_cycles(layers: list[Layer], ranks: dict[str, int], dev: Device) -> int:
    """Cycles per inference of autofold's fastest folding of the layers at these ranks."""
    shapes = [s for l in layers for s in stage_shapes(l, ranks.get(l.name))]
    return plan(shapes, dev)[1]["total"]["interval_cycles"]


def _full_cycles(shape: LayerShape, dev: Device) -> frozenset[int]:
    """Intervals at which some folding of the stage keeps all its lanes busy."""
    return _full_cycles_cached(shape, dev.name)


@lru_cache(maxsize=4096)
def _full_cycles_cached(shape: LayerShape, device: str) -> frozenset[int]:
    (opts,) = Planner([shape], DEVICES[device]).options
    return frozenset(c for c, _, pe, simd, *_core in opts
                     if c == shape.vectors * (shape.n // pe) * (shape.k // simd))


def full_at(layer: Layer, r: int, interval: int, dev: Device) -> bool:
    """Whether both stages of the layer at rank r use all their lanes at `interval`."""
    return all(interval in _full_cycles(s, dev) for s in stage_shapes(layer, r))


def hw_ranks(layers: list[Layer], dev: Device, macs: float = 0.0, cycles: float = 0.0) -> tuple[dict[str, int], dict]:
    """Ranks by the rule in the module docstring, and what was decided (for the report)."""
    total = sum(l.macs(None) for l in layers)
    t0 = predicted_cycles(layers, {}, dev)
    tried = []
    for s in range(1, MAX_SPEEDUP + 1):
        if t0 % s:
            continue
        interval = t0 // s
        options = []
        for layer in layers:
            choices = [(layer.macs(None), 0.0, None)]
            if not layer.skip_reason and layer.sigma.size:
                choices += [(layer.macs(r), log_cost(layer, r), r) for r in range(1, first_rank(layer) + 1)
                            if full_at(layer, r, interval, dev)]
            options.append(choices)
        front = pareto_front(options, (macs or 1.0) * total)
        if not front:
            continue
        if macs:
            found = _tried(layers, front[-1][2], interval, dev)  # the least cost within the budget
        else:
            found = _least_cost_within_cycles(layers, front, interval, cycles * t0, dev)
        if found is not None:
            tried.append(found)
    if cycles:
        if not tried:
            raise PipelineError(f"lowrank: cycles={cycles} is out of reach on {dev.name}: no full-lane ranks "
                                f"bring the unfactored design's {t0} predicted cycles per inference down to "
                                f"{math.floor(cycles * t0)} (intervals T0/s for s up to {MAX_SPEEDUP})")
        best = min(tried, key=lambda t: (t["cost"], t["cycles"]))
    else:
        if not tried:
            raise PipelineError(f"lowrank: macs={macs} with hw=1 is out of reach on {dev.name}: no ranks the "
                                f"folding uses fully keep that few MACs (intervals T0/s for s up to {MAX_SPEEDUP})")
        best = min(tried, key=lambda t: (-_saved_per_cost(t, t0), t["cost"]))
    return best["ranks"], {"device": dev.name, "unfactored_cycles": t0, "interval": best["interval"],
                           "predicted_cycles": best["cycles"]}


def _tried(layers: list[Layer], choices: tuple, interval: int, dev: Device) -> dict:
    ranks = {l.name: r for l, r in zip(layers, choices) if r is not None}
    return {"interval": interval, "ranks": ranks, "cost": sum(log_cost(l, ranks.get(l.name)) for l in layers),
            "macs": sum(l.macs(ranks.get(l.name)) for l in layers), "cycles": predicted_cycles(layers, ranks, dev)}


def _least_cost_within_cycles(layers: list[Layer], front: list[tuple], interval: int, limit: float,
                              dev: Device) -> dict | None:
    """The front's least-cost point whose predicted cycles are within `limit`, by bisection:
    the front ascends in MACs, and fewer MACs fold into no more cycles (taken as so)."""
    lo, hi, found = 0, len(front), None  # front[lo:hi] undecided; fewer MACs (lower index) are faster
    while lo < hi:
        mid = (lo + hi) // 2
        trial = _tried(layers, front[mid][2], interval, dev)
        if trial["cycles"] <= limit:
            found, lo = trial, mid + 1
        else:
            hi = mid
    return found


def _saved_per_cost(t: dict, t0: int) -> float:
    saved = t0 - t["cycles"]
    if saved <= 0:
        return -math.inf if saved < 0 else 0.0
    return saved / t["cost"] if t["cost"] > 0 else math.inf
