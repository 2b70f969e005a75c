"""precision's prices: a layer's product cost per core and bits, and the design an assignment of bits reaches.

Cost of a layer: its MACs times the device share (LUTs + FFs + DSPs, as autofold prices a
folding) of one product on the cheapest core for its input and weight bits: the dsp core,
the dsp core packing `max_pack` products per multiplier when more than one fits, or the lut
core (nnfpga.cost.layer_cost at a small folding, divided by its products).

The design of an assignment: the fastest folding autofold's `plan` finds on the device for
the layers at those bits, each layer on its cheapest core, or on the dsp/packed core or the
lut core in every combination for up to MAX_COMBINED_LAYERS layers (autofold itself keeps
the cores it is given).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

from nnfpga.cost import LayerShape, device_budget, layer_cost
from nnfpga.devices import Device
from nnfpga.errors import PipelineError
from nnfpga.hardware import largest_divisor_at_most, max_pack
from nnfpga.ir import Node
from nnfpga.passes.autofold_plan import plan

MAX_COMBINED_LAYERS = 4
"""Up to this many layers every dsp/lut core combination is planned; beyond, three (each layer's
cheapest, all dsp, all lut)."""
INPUT_BITS = 8
"""Bits of a layer input no layer's request sets (the model input: quantize's default abits)."""


@dataclass
class Layer:
    """A dense or conv layer the pass assigns bits to."""

    node: Node
    """The float dense or conv node."""
    shape: LayerShape
    """Its matrix-vector unit for the cost model (bits filled in per assignment)."""
    source: int | None
    """Index of the layer whose output this layer reads, None for the model input."""
    out_signed: bool
    """Whether its output activation is signed (its calibrated range goes below 0)."""
    macs: int
    """Multiply-accumulates per inference."""
    weight_error: dict[int, float] = field(default_factory=dict)
    """Relative output error with weights at B bits, per B."""
    act_error: dict[int, float] = field(default_factory=dict)
    """Relative error of its output activation at A bits, per A."""

    @property
    def name(self) -> str:
        return self.node.output.name


def core_options(in_bits: int, in_signed: bool, wbits: int, dev: Device) -> list[tuple[str, int]]:
    """(core, pack) a layer may use at these bits: dsp, packed dsp where more than one fits, lut."""
    options = [("dsp", 1)]
    pack = max_pack(in_bits, in_signed, wbits, dev.dsp_shape)
    if pack > 1:
        options.append(("dsp", pack))
    return options + [("lut", 1)]


def product_share(shape: LayerShape, dev: Device) -> float:
    """Device share (LUTs + FFs + DSPs) of one product of this layer at its core and bits: the
    cost model's product and pipeline resources at a small folding, per product."""
    pe, simd = largest_divisor_at_most(shape.n, 12), largest_divisor_at_most(shape.k, 4)
    c = layer_cost(replace(shape, pe=pe, simd=simd, vectors=1, channels=0), simd, dev)
    budget = device_budget(dev)
    share = (c["dsps_breakdown"]["products"] / budget["dsps"] + c["luts_breakdown"]["products"] / budget["luts"]
             + c["ffs_breakdown"]["pipeline"] / budget["ffs"])
    return share / (pe * simd)


@dataclass
class Assignment:
    """Bits per layer, and what follows from them."""

    wbits: list[int]
    abits: list[int]

    def in_bits(self, layers: list[Layer], i: int) -> tuple[int, bool]:
        s = layers[i].source
        return (INPUT_BITS, False) if s is None else (self.abits[s], layers[s].out_signed)

    def shapes(self, layers: list[Layer], cores: list[tuple[str, int]]) -> list[LayerShape]:
        out = []
        for i, (l, (core, pack)) in enumerate(zip(layers, cores)):
            ib, _ = self.in_bits(layers, i)
            acc = ib + self.wbits[i] + math.ceil(math.log2(l.shape.k)) + 1
            out.append(replace(l.shape, in_bits=ib, wbits=self.wbits[i], acc_bits=acc, out_bits=self.abits[i],
                               core=core, pack=pack))
        return out

    def error(self, layers: list[Layer]) -> float:
        return sum(l.weight_error[w] + l.act_error[a] for l, w, a in zip(layers, self.wbits, self.abits))


class Pricer:
    """Layer costs and design intervals of assignments on one device, cached."""

    def __init__(self, layers: list[Layer], dev: Device, clock_mhz: float):
        self.layers, self.dev, self.clock_mhz = layers, dev, clock_mhz
        self._share: dict = {}

    def _options(self, a: Assignment, i: int) -> list[tuple[str, int]]:
        ib, signed = a.in_bits(self.layers, i)
        return core_options(ib, signed, a.wbits[i], self.dev)

    def share(self, a: Assignment, i: int, core: tuple[str, int]) -> float:
        ib, _ = a.in_bits(self.layers, i)
        key = (i, ib, a.wbits[i], core)
        if key not in self._share:
            shape = a.shapes(self.layers, [core] * len(self.layers))[i]
            self._share[key] = product_share(shape, self.dev)
        return self._share[key]

    def cheapest_cores(self, a: Assignment) -> list[tuple[str, int]]:
        return [min(self._options(a, i), key=lambda c: self.share(a, i, c)) for i in range(len(self.layers))]

    def cost(self, a: Assignment) -> float:
        """Sum over layers of MACs × the share of one product on its cheapest core."""
        return sum(l.macs * self.share(a, i, c) for i, (l, c) in enumerate(zip(self.layers, self.cheapest_cores(a))))

    def design(self, a: Assignment) -> tuple[float, list[tuple[str, int]], dict | None]:
        """(interval, cores, estimate) of the fastest design that fits over the core choices
        tried; interval inf when none fits."""
        cheapest = self.cheapest_cores(a)
        if len(self.layers) <= MAX_COMBINED_LAYERS:
            dsp = [max((c for c in self._options(a, i) if c[0] == "dsp"), key=lambda c: c[1])
                   for i in range(len(self.layers))]
            choices = [list(c) for c in itertools.product(*[(d, ("lut", 1)) for d in dsp])]
            choices.sort(key=lambda c: c != cheapest)  # the cheapest first: it wins ties
        else:
            choices = [cheapest, [("dsp", 1)] * len(self.layers), [("lut", 1)] * len(self.layers)]
        best = (math.inf, cheapest, None)
        for cores in choices:
            try:
                _, est = plan(a.shapes(self.layers, cores), self.dev, 0.0, self.clock_mhz)
            except PipelineError:
                continue
            if est["total"]["interval_cycles"] < best[0]:
                best = (est["total"]["interval_cycles"], cores, est)
        return best
