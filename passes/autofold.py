"""autofold: choose every layer's pe/simd (and core, pack) from the device's budget and a target rate.

    qmatmul(x[1,K], W[K,N]) -> qmatmul {pe = P, simd = S},  P | N, S | K
    qconv: the same on its window's matrix (K = kh·kw·C), its window's taps per beat too

The pass reads the layers (`nnfpga.cost.layer_shapes`), offers each layer without a core of
its own the (core, pack) choices its `cores` and `pack` options allow, asks the search
(passes/autofold_plan.py: balanced intervals, the cost model's prices, the DSP price λ that
lets DSPs and LUTs both fill) for the fastest design that fits or the smallest that meets
`target_fps`, and writes it back: pe, simd, a qconv's window, and the core, pack and slice
of the layers it chose them for.
"""
from __future__ import annotations

from types import SimpleNamespace

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.bitslices import SLICE_WIDTHS
from nnfpga.cost import LayerShape, estimate, layer_shapes, stream_inputs
from nnfpga.devices import DEFAULT_DEVICE, Device, pass_device
from nnfpga.errors import PipelineError
from nnfpga.hardware import CORES, bitserial_schedule, max_pack
from nnfpga.ir import Graph
from nnfpga.passes.autofold_plan import Choice, TileCount, WholeDesign, plan
from nnfpga.passes.fold import set_window_taps
from nnfpga.passes.pipeline import Step
from nnfpga.passes.registry import Option, PassContext, register


CORE_NAMES = CORES
"""Names autofold's `cores` option joins with `+`: the cores a layer without a core of its own may take."""
DEFAULT_SLICE = 2
"""Slice width autofold gives a layer it puts on the bitserial core (its `slice` option)."""


@register("autofold",
          target_fps=Option(float, 0.0, "inferences per second to reach (0 = as fast as the device allows)"),
          clock_mhz=Option(float, 100.0, "clock frequency the rate is computed at"),
          device=Option(str, "", f"device whose budget the design must fit (default: the build's --target, "
                                 f"else {DEFAULT_DEVICE})"),
          budget=Option(float, 1.0, "share (0, 1] of the device's LUTs, FFs, DSPs and block RAM the design "
                                    "may take"),
          cores=Option(str, "dsp", f"cores a layer's products may use: any of {', '.join(CORE_NAMES)} joined "
                                   "with + (a layer that names its core keeps it; bitserial and const: dense "
                                   "layers only)"),
          slice=Option(int, DEFAULT_SLICE, "weight slice width 1|2|4 of a layer autofold puts on the bitserial core"),
          pack=Option(str, "1", "products per DSP multiplier: 1, N (at most N, as many as fit), or auto "
                                "(any that fits, priced like the cores)"))
def autofold(g: Graph, ctx: PassContext, target_fps: float, clock_mhz: float, device: str, budget: float,
             cores: str, pack: str, slice: int) -> bool:
    """Set pe/simd (and a qconv's window taps, and a layer's core and pack) on every qmatmul
    and qconv: the fastest balanced pipeline that fits, or the smallest meeting target_fps."""
    dev = pass_device("autofold", device or ctx.device or DEFAULT_DEVICE, budget)
    allowed = _core_set(cores)
    if slice not in SLICE_WIDTHS:
        raise PipelineError(f"autofold: slice={slice} must be one of {', '.join(map(str, SLICE_WIDTHS))} "
                            "(magnitude bits per weight slice on the bitserial core)")
    pack_cap = _pack_cap(pack)
    shapes = layer_shapes(g)
    if not shapes:
        raise PipelineError("autofold: the graph has no qmatmul layer; run quantize before autofold")
    nodes = [n for n in g.nodes if n.op in ("qmatmul", "qconv")]
    free = {id(n) for n in nodes if "core" not in n.attrs and "pack" not in n.attrs}
    before = [(n.attrs.get("pe"), n.attrs.get("simd"), n.attrs.get("window", 1), n.attrs.get("core", "dsp"),
               n.attrs.get("pack", 1), n.attrs.get("slice", 0)) for n in nodes]

    def choices(dev: Device) -> list[list[Choice]]:
        return [_layer_choices(n, allowed, pack_cap, dev) if id(n) in free
                else [(n.attrs.get("core", "dsp"), n.attrs.get("pack", 1))] for n in nodes]
    serial = [_serial_tiles(g, n, slice) if id(n) in free and "bitserial" in allowed
              else _serial_tiles(g, n, n.attrs["slice"]) if n.attrs.get("core") == "bitserial" else None
              for n in nodes]
    chosen, _ = plan(shapes, dev, target_fps, clock_mhz, _whole_design(g, free), choices, serial)
    _apply(g, chosen, free)
    return [(l.pe, l.simd, l.window, l.core, l.pack, l.slice_bits) for l in chosen] != before


def _core_set(text: str) -> tuple[str, ...]:
    """autofold's `cores`: names from CORE_NAMES joined with `+`, each at most once."""
    names = text.split("+")
    unknown = [c for c in names if c not in CORE_NAMES]
    if unknown or len(set(names)) != len(names):
        raise PipelineError(f"autofold: cores={text} must name each of {', '.join(CORE_NAMES)} at most once, "
                            f"joined with + (e.g. dsp+lut+bitserial)"
                            + (f"; unknown: {', '.join(repr(c) for c in unknown)}" if unknown else ""))
    return tuple(names)


def _serial_tiles(g: Graph, node, slice_bits: int) -> tuple[int, TileCount] | None:
    """A dense layer's slice width and its bitserial tile count per (pe, simd), computed from
    its weights once per folding (the schedule with all-zero tiles skipped, skip's default);
    None for a convolution (its matrix rows follow the window's stream order)."""
    if node.op != "qmatmul":
        return None
    weights, w = g.const_data(node.inputs[1]), node.inputs[1].type
    k, n = (int(d) for d in w.shape)
    skip = bool(node.attrs.get("skip", 1))
    counts: dict[tuple[int, int], int] = {}

    def count(pe: int, simd: int) -> int:
        if (pe, simd) not in counts:
            counts[pe, simd] = len(bitserial_schedule(SimpleNamespace(
                weights=weights, wbits=w.element.bits, k=k, n=n, slice_bits=slice_bits, skip_zero=skip,
                pe=pe, simd=simd)))
        return counts[pe, simd]
    return slice_bits, count


def _pack_cap(text: str) -> int | None:
    """autofold's `pack`: the most products per multiplier (None: auto, as many as fit)."""
    if text == "auto":
        return None
    try:
        cap = int(text)
    except ValueError:
        raise PipelineError(f"autofold: pack={text} must be a whole number or auto") from None
    if cap < 1:
        raise PipelineError(f"autofold: pack={cap} must be at least 1 (products per multiplier)")
    return cap


def _layer_choices(node, cores: tuple[str, ...], pack_cap: int | None, dev: Device) -> list[Choice]:
    """A free layer's (core, pack) options among `cores`: the dsp core at pack 1 up to what
    fits the multiplier (auto) or at the largest fitting pack within the cap, the lut core, and
    on a dense layer the bitserial and const cores."""
    x, w = node.inputs[0].type.element, node.inputs[1].type.element
    fits = max_pack(x.bits, x.signed, w.bits, dev.dsp_shape)
    out: list[Choice] = []
    if "dsp" in cores:
        packs = range(1, fits + 1) if pack_cap is None else [min(pack_cap, fits)]
        out += [("dsp", p) for p in packs]
    if "lut" in cores:
        out.append(("lut", 1))
    out += [(core, 1) for core in ("bitserial", "const") if core in cores and node.op == "qmatmul"]
    return out


def _apply(g: Graph, layers: list[LayerShape], free: set[int] = frozenset()) -> None:
    """Set each qmatmul's and qconv's pe/simd (and a qconv's window) from `layers` (graph order),
    and the core and pack of the `free` ones (node ids; dsp and 1 are left unsaid), with the
    slice width of one put on the bitserial core (skip left at its default, 1)."""
    for node, l in zip((n for n in g.nodes if n.op in ("qmatmul", "qconv")), layers, strict=True):
        node.attrs.update(pe=l.pe, simd=l.simd)
        if node.op == "qconv":
            set_window_taps(node, l.window)
        if id(node) in free:
            slice_bits = l.slice_bits if l.core == "bitserial" else None
            for key, value, default in (("core", l.core, "dsp"), ("pack", l.pack, 1), ("slice", slice_bits, None)):
                if value == default:
                    node.attrs.pop(key, None)
                else:
                    node.attrs[key] = value


def _whole_design(g: Graph, free: set[int] = frozenset()) -> WholeDesign:
    """The estimate of the whole design the graph lowers to with a folding (for an MLP its
    matrix-vector units with their ROMs known; a CNN's windows, pools and joins besides)."""
    x = region_input(g)

    def whole(layers: list[LayerShape], dev: Device) -> dict:
        _apply(g, layers, free)  # the pass sets the chosen ones last
        design = lower_stream(g, x)
        est = estimate(device=dev, **stream_inputs(design))
        est["total"]["interval_cycles"] = design.interval  # windows and joins run at their own rates
        return est
    return whole


def with_target_fps(steps: list, target_fps: float, clock_mhz: float) -> list:
    """`steps` with autofold's target_fps and clock_mhz set (compile's --target-fps, --freq)."""
    if target_fps < 0 or clock_mhz <= 0:
        raise PipelineError(f"--target-fps {target_fps:g} must be 0 or more and --freq {clock_mhz:g} above 0")
    if not any(s.name == "autofold" for s in steps):
        raise PipelineError("--target-fps sets autofold's target rate, but the pipeline has no autofold pass "
                            "(fold sets pe/simd by hand; drop --target-fps or use autofold)")
    return [Step(s.name, {**s.options, "target_fps": target_fps, "clock_mhz": clock_mhz})
            if s.name == "autofold" else s for s in steps]
