"""The search behind autofold (passes/autofold.py): every layer's pe/simd (and core and pack)
from the device's budget and a target rate.

    qmatmul(x[1,K], W[K,N]) -> qmatmul {pe = P, simd = S},  P | N, S | K
    qconv: the same on its window's matrix (K = kh·kw·C), one vector per output pixel;
           its window emits as many taps per beat as its simd lanes take beside one
           beat of input channels (cost.simd_taps), so a one-channel 5×5 layer at
           simd 25 reads a whole window per beat instead of one element

The slowest layer sets the rate, so a balanced pipeline gives every layer the same target
interval T and spends no more than T needs:

    for a target interval T (cycles per inference):
        each layer: the cheapest (P, S) with (N/P)·(K/S) <= T        (nnfpga.cost)
        the chain's interval is then <= T: a layer's input fill K/in_par never exceeds
        the previous layer's folds, and the first layer's fill K/S never exceeds its own
    target_fps = 0   the smallest T whose design fits the device (as fast as fits)
    target_fps > 0   T <= clock / fps; of the designs that fit, the smallest

"Cheapest" and "fits" are the cost model's: a layer's cost is the sum of its shares of
the device's LUTs, FFs, DSPs and block RAMs; a design fits when every total is within
the budget. When nothing fits, the error names the largest rate that does, or the
smallest device in the table that would.

Cores (`cores=` any `+` of dsp, lut, bitserial, const; `pack=1|N|auto`; `slice=1|2|4`):
each layer's products may also be built by any core named, and on the dsp core `pack` products may share one multiplier (up to
nnfpga.hardware.max_pack for the layer's widths on the device's multiplier). A layer that
already names its core or pack (split's parts, fold{core=,pack=}) keeps them. A (core,
pack) is one more dimension of a layer's foldings, and resources are priced so that DSPs
and LUTs both fill:

    cost of a folding = λ·dsps/DSP budget + luts/LUT budget + ffs/FF budget + brams/BRAM budget
    at each interval T: first every layer that may be on the dsp core (packed where that is
    cheaper), at λ = 1; if that is over, every core at λ = 1; then, while the design does not
    fit, bisect log2 λ in [-16, 16]:
        DSPs over, fabric (LUTs, FFs) within    λ up:   products move to LUTs (or pack)
        fabric over, DSPs within                λ down: products move to DSPs
        both over, or block RAM                 no mix fits at T: try a slower T

    layer's option        DSPs                  LUTs (nnfpga.cost)
    dsp, pack 1           P·S (+ requant)       adder tree, control
    dsp, pack p           ⌈P/p⌉·S (+ requant)   + the lanes' corrections
    lut                   requant only          + P·S shift-add products (~170 LUT4 at 8x8, ECP5)
    bitserial, slice s    requant only          + P·S shift-adds of (s+1)-bit slices; folds = the
                                                listed tiles of its weights at this P, S (exact)
    const                 requant only          + the weights' shift-add graph; only P = N, S = K

The bitserial and const cores are offered to dense layers (qmatmul) only: a convolution's
matrix rows follow its window's stream order, which the tile count here does not model.

so layers stay on DSPs while the DSPs last, the fastest designs move to the lut core the
layers that save the most DSPs per LUT spent, and with one (core, pack) per layer
(cores=dsp, pack=1: no choice) the design is the one from before cores existed.

The whole design also has its ROMs' contents (synthesis drops constant bit columns) and, in
a convolutional graph, windows, pools, skip FIFOs and joins (nnfpga.cost_stream), sized by
the folding around them. Each interval's layers are chosen and screened on the
matrix-vector units alone; the survivors (fastest first, or smallest first) are then
lowered to the module graph and costed whole, and the first whole design that fits (with
its own predicted interval within the target) is taken. Lowering costs up to seconds on
big graphs, so after the first survivor the search bisects: a slower folding narrows
every beat, so a design that fits whole is followed by designs that fit.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from nnfpga.cost import (RESOURCES, LayerShape, device_budget, devices_by_size, estimate, first_in_par, fps,
                         layer_cost, simd_taps)
from nnfpga.devices import DEVICES, Device
from nnfpga.errors import PipelineError


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _foldings(l: LayerShape, core: str) -> list[tuple[int, int]]:
    """The (pe, simd) a layer may take on `core`: every divisor pair, the const core's only
    pe = N, simd = K (its weights are wired into one graph computing a vector per cycle)."""
    if core == "const":
        return [(l.n, l.k)]
    return [(pe, simd) for pe in _divisors(l.n) for simd in _divisors(l.k)]


PRICE_RANGE = 16.0
"""log2 of the largest DSP price factor λ the core mix search tries (and of the smallest, negated)."""
PRICE_STEPS = 12
"""Bisection steps of the core mix search at one interval (λ to within 2^(32/2^11))."""

Choice = tuple[str, int]
"""(core, pack) of one layer's products."""
Choices = Callable[[Device], list[list[Choice]]]
"""Each layer's allowed (core, pack) on a device (packing depends on its multiplier)."""
TileCount = Callable[[int, int], int]
"""A dense layer's bitserial tiles per vector at (pe, simd): its schedule's length."""


WholeDesign = Callable[[list[LayerShape], Device], dict]
"""The estimate of the whole stream design built with these layers' foldings (its
total interval_cycles the module graph's), for a graph with more than matrix-vector units."""


class Planner:
    """Designs for one chain of layers on one device, with the per-layer costs cached.

    `choices`: each layer's allowed (core, pack); default its own. `serial`: per layer, its
    slice width and tile count on the bitserial core (None where it has no weights known)."""

    def __init__(self, shapes: list[LayerShape], dev: Device, whole: WholeDesign | None = None,
                 choices: list[list[Choice]] | None = None,
                 serial: list[tuple[int, TileCount] | None] | None = None):
        self.shapes, self.dev, self.whole = shapes, dev, whole
        self.serial = serial or [None] * len(shapes)
        choices = choices or [[(l.core, l.pack)] for l in shapes]
        self.has_choice = any(len(c) > 1 for c in choices)
        budget = device_budget(dev)
        # per layer: (folds, share of each resource (RESOURCES order), pe, simd, core, pack)
        self.options: list[list[tuple]] = []
        for i, (l, allowed) in enumerate(zip(shapes, choices)):
            opts = []
            for core, pack in allowed:
                for pe, simd in _foldings(l, core):
                    trial = self.shape(i, pe, simd, core, pack)
                    c = layer_cost(trial, first_in_par(trial) * trial.window if l.channels else simd, dev)
                    shares = tuple(c[r] / budget[r] if budget[r] else math.inf for r in RESOURCES)
                    cycles = c["stage_cycles"] if l.channels else c["folds"]
                    if core == "bitserial":
                        # Fewer tiles than N/pe output beats or (first layer) K/simd input beats:
                        # the stream, not the tiles, sets the pace (other cores' folds cover both).
                        cycles = max(cycles, l.n // pe, c["stage_cycles"] if i == 0 else 0)
                    opts.append((cycles, shares, pe, simd, core, pack))
            self.options.append(sorted(opts, key=lambda o: (sum(o[1]), o[2] * o[3], o[2])))

    def intervals(self) -> list[int]:
        """Every interval some layer can hit exactly, from fastest to slowest."""
        floor = max(min(o[0] for o in opts) for opts in self.options)  # a convolution needs a cycle per pixel
        return sorted({o[0] for opts in self.options for o in opts if o[0] >= floor})

    def design(self, interval: int, dsp_price: float = 1.0, dsp_first: bool = False) -> list[LayerShape]:
        """Each layer at its cheapest folding within `interval` cycles, DSPs priced `dsp_price`
        times their share of the budget; `dsp_first`: on the dsp core where the layer may be."""
        dsp = RESOURCES.index("dsps")

        def price(o):
            return sum(share * (dsp_price if i == dsp else 1.0) for i, share in enumerate(o[1]))
        chosen = []
        for l, opts in zip(self.shapes, self.options):
            fast = [o for o in opts if o[0] <= interval]  # pe=N, simd=K has 1 fold
            if dsp_first:
                fast = [o for o in fast if o[4] == "dsp"] or fast
            best = fast[0] if dsp_price == 1.0 else min(fast, key=lambda o: (price(o), o[2] * o[3], o[2]))
            _, _, pe, simd, core, pack = best
            if chosen and l.channels:
                # A convolution's window streams at the previous layer's pe: vectors·K/pe beats must fit too.
                prev = chosen[-1]
                taps = simd_taps(replace(l, simd=simd))
                wide = [d for d in _divisors(prev.n) if d >= prev.pe and l.channels % d == 0
                        and l.vectors * l.k // (d * taps) <= interval]
                if wide:
                    chosen[-1] = self.shape(len(chosen) - 1, wide[0], prev.simd, prev.core, prev.pack)
            chosen.append(self.shape(len(chosen), pe, simd, core, pack))
        return chosen

    def shape(self, i: int, pe: int, simd: int, core: str, pack: int) -> LayerShape:
        """Layer i at one folding and (core, pack); on the bitserial core with its slice width
        and the exact tile count of its weights at this folding (when known)."""
        l = self.shapes[i]
        slice_bits, tiles = 0, 0
        if core == "bitserial":
            slice_bits = l.slice_bits
            if self.serial[i] is not None:
                slice_bits, count = self.serial[i]
                tiles = count(pe, simd)
        trial = replace(l, pe=pe, simd=simd, rom_widths=None, core=core, pack=pack, slice_bits=slice_bits,
                        tiles=tiles, const_adder_bits=0)
        return replace(trial, window=simd_taps(trial))

    def mixed_design(self, interval: int) -> tuple[list[LayerShape], dict]:
        """The design at `interval` whose core mix fits, if one does (the price search of the
        module docstring); else the one at λ = 1 (its estimate says it does not fit)."""
        layers = self.design(interval, dsp_first=True)
        est = estimate(layers, None, self.dev)
        if est["fits"] or not self.has_choice:
            return layers, est
        layers = self.design(interval)
        est = estimate(layers, None, self.dev)
        if est["fits"]:
            return layers, est
        first, lo, hi = (layers, est), -PRICE_RANGE, PRICE_RANGE
        log_price = 0.0
        for _ in range(PRICE_STEPS):
            over = set(est["over"])
            fabric_over = bool(over & {"luts", "ffs"})
            if "brams" in over or ("dsps" in over) == fabric_over:
                break  # both kinds short (or block RAM): no price moves products to a free resource
            if "dsps" in over:
                lo = log_price
            else:
                hi = log_price
            log_price = (lo + hi) / 2
            layers = self.design(interval, 2.0 ** log_price)
            est = estimate(layers, None, self.dev)
            if est["fits"]:
                return layers, est
        return first

    def fitting(self, max_interval: int | None):
        """Designs whose matrix-vector units fit, fastest first: (interval, layers, estimate)."""
        for t in self.intervals():
            if max_interval is not None and t > max_interval:
                return
            layers, est = self.mixed_design(t)
            if est["fits"]:
                yield t, layers, est

    def candidates(self, max_interval: int | None):
        """Designs whose matrix-vector units fit: fastest first (max_interval None, lazily),
        else those within max_interval, smallest first."""
        found = self.fitting(max_interval)
        if max_interval is not None:
            found = sorted(found, key=lambda c: (sum(c[2]["utilization"].values()), c[0]))
        return ((layers, est) for _, layers, est in found)

    def whole_fits(self, layers: list[LayerShape], max_interval: int | None) -> dict | None:
        est = self.whole(layers, self.dev)
        within = max_interval is None or est["total"]["interval_cycles"] <= max_interval
        return est if est["fits"] and within else None

    def best(self, max_interval: int | None) -> tuple[list[LayerShape], dict] | None:
        """Fastest design that fits (max_interval None), else the smallest within max_interval."""
        if self.whole is None:
            return next(self.candidates(max_interval), None)
        found = list(self.candidates(max_interval))
        if not found:
            return None
        est = self.whole_fits(found[0][0], max_interval)
        if est is not None:
            return found[0][0], est
        best, lo, hi = None, 1, len(found)  # the first whole fit, assuming fits stay fits down the list
        while lo < hi:
            mid = (lo + hi) // 2
            est = self.whole_fits(found[mid][0], max_interval)
            if est is None:
                lo = mid + 1
            else:
                best, hi = (found[mid][0], est), mid
        return best


def _smallest_device(shapes: list[LayerShape], max_interval: int | None, whole: WholeDesign | None,
                     choices: Choices | None, serial=None) -> str | None:
    for dev in devices_by_size():
        if Planner(shapes, dev, whole, choices and choices(dev), serial).best(max_interval) is not None:
            return dev.name
    return None


def _describe_over(est: dict) -> str:
    return ", ".join(f"{est['total'][r]} {r} of {est['budget'][r]}" for r in est["over"])


def plan(shapes: list[LayerShape], dev: Device, target_fps: float = 0.0,
         clock_mhz: float = 100.0, whole: WholeDesign | None = None,
         choices: Choices | None = None,
         serial: list[tuple[int, TileCount] | None] | None = None) -> tuple[list[LayerShape], dict]:
    """The folding autofold applies, with its cost estimate; PipelineError if none fits.

    `whole`: for a graph with windows, pools or joins, the estimate of the whole design.
    `choices`: each layer's allowed (core, pack) on a device; default each layer's own.
    `serial`: each layer's slice width and tile count on the bitserial core (None: unknown)."""
    if target_fps < 0 or clock_mhz <= 0:
        raise PipelineError(f"autofold: target_fps={target_fps} must be >= 0 and clock_mhz={clock_mhz} > 0")
    max_interval = None
    if target_fps > 0:
        max_interval = math.floor(clock_mhz * 1e6 / target_fps)
        if max_interval < 1:
            raise PipelineError(f"autofold: {target_fps:g} inferences/s at {clock_mhz:g} MHz needs less than one "
                                f"cycle per inference; this architecture does at most {clock_mhz * 1e6:g}/s "
                                f"at that clock (one inference per cycle)")
    planner = Planner(shapes, dev, whole, choices and choices(dev), serial)
    result = planner.best(max_interval)
    if result is not None:
        return result
    fastest = planner.best(None)
    if fastest is None:
        slowest = planner.design(planner.intervals()[-1])
        est = estimate(slowest, None, dev)
        if est["fits"] and whole is not None:  # over only with its windows, pools and FIFOs
            est = whole(slowest, dev)
        where = _smallest_device(shapes, None, whole, choices, serial)
        raise PipelineError(
            f"autofold: no folding fits {dev.name}: even the smallest design (interval "
            f"{est['total']['interval_cycles']} cycles) needs {_describe_over(est)}; "
            + (f"the smallest device that fits it is {where} "
               f"(--target {where}, or autofold{{device={where}}})" if where
               else f"no device in the table fits it ({', '.join(DEVICES)})"))
    _, est = fastest
    t_best = est["total"]["interval_cycles"]
    where = _smallest_device(shapes, max_interval, whole, choices, serial)
    raise PipelineError(
        f"autofold: {target_fps:g} inferences/s at {clock_mhz:g} MHz needs an interval of at most "
        f"{max_interval} cycles; the fastest design that fits {dev.name} has an interval of {t_best} cycles "
        f"({fps(t_best, clock_mhz):.0f} inferences/s at {clock_mhz:g} MHz), the largest feasible rate; "
        + (f"the smallest device that meets the target is {where} "
           f"(--target {where}, or autofold{{device={where}}})" if where
           else "no device in the table meets the target"))


