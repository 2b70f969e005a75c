"""fold: choose each layer's parallelism, `pe` output channels × `simd` inputs per cycle,
a convolution's window taps per beat, and optionally the core that builds its products.

    qmatmul(x[1,K], W[K,N]) -> qmatmul {pe = P, simd = S},  P | N, S | K
    qconv(x[1,C,H,W], W[O,C/g,kh,kw]) -> qconv {pe = P, simd = S},  K = kh·kw·C, N = O
    cycles per vector = (N / P) · (K / S)   (a convolution computes one vector per output pixel)
    qconv -> qconv {window = T}   T window taps per beat (T = 1, the default, is left unsaid)

P and S are the largest divisors of N and K not above the requested caps, and T the most
taps the layer's window can emit per beat (part of one kernel row or whole rows) not above
the `window` cap, so any cap is accepted and the folding stays legal for every layer. A
window of T taps feeds its dense unit T times the input channels of a beat, so a
one-channel 5×5 layer needs 25/T beats per pixel instead of 25.

`core=dsp|lut|bitserial|const` and `pack=1|2|...` set the `core` and `pack` annotations
(nnfpga.hardware, "cores"); left out, a layer keeps what it has. Whether the packed products
fit the target's multiplier is the verifier's check. A bitserial layer takes `slice=1|2|4`,
its weight slice width (default 1, or what it has), and `skip=0|1`, whether its schedule
leaves out all-zero tiles (default 1); a layer leaving the bitserial core drops both. A const
layer (weights hard-wired as a shift-add graph, backends/const_graph.py) computes a whole
vector per cycle: pe = N, simd = K.

`window`, `core`, `pack` and `slice` each take one value for every layer, or `layer:V+layer:V` for the
named layers only (a layer is named by its float name, as `nnfpga ir --after canonicalize`
prints it, or by its qmatmul's/qconv's or its requant's result); the others keep what they
have (one window tap, their core, their pack).
"""
from __future__ import annotations

from nnfpga.errors import PipelineError
from nnfpga.bitslices import SLICE_WIDTHS
from nnfpga.hardware import CORES, largest_divisor_at_most, largest_taps_at_most
from nnfpga.ir import Graph
from nnfpga.passes.registry import Option, PassContext, register

LAYER_OPS = ("qmatmul", "qconv")


def matrix_shape(node) -> tuple[int, int]:
    """(K, N) of the matrix-vector unit a qmatmul or qconv runs on (a grouped conv as one block-diagonal matrix)."""
    if node.op == "qconv":
        o, _, kh, kw = node.inputs[1].type.shape
        return kh * kw * node.inputs[0].type.shape[1], o
    k, n = node.inputs[1].type.shape
    return k, n


def layer_names(g: Graph, ops=LAYER_OPS) -> dict[str, object]:
    """Each layer node of `ops` by the names a user may give it: its result, its requant's, and
    the float layer's name it came from (`relu0` for `relu0_acc`, as `bits` and `lowrank` take it)."""
    names = {}
    for n in g.nodes:
        if n.op not in ops:
            continue
        names[n.output.name] = n
        if n.output.name.endswith("_acc"):
            names[n.output.name.removesuffix("_acc")] = n
        readers = [u for u, _ in n.output.uses]
        if len(readers) == 1 and readers[0].op == "requant":
            names[readers[0].output.name] = n
    return names


def per_layer(g: Graph, option: str, text: str, parse, ops=LAYER_OPS) -> dict[int, object]:
    """`option`'s value per layer node (by id) of `ops`: `V` for all, or `layer:V+layer:V` for
    the named ones only; empty text gives {}. `parse(text, what)` checks and converts a value."""
    text = str(text).strip()
    if not text:
        return {}
    names = layer_names(g, ops)
    if ":" not in text:
        value = parse(text, option)
        return {id(n): value for n in names.values()}
    values = {}
    for item in text.split("+"):
        name, colon, value = item.strip().rpartition(":")
        if not colon or not name:
            raise PipelineError(f"fold: {option} entry '{item}' must look like layer:value")
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise PipelineError(f"fold: {option} names layer '{name}', which is not a "
                                f"{' or '.join(ops)} of this model (layers: {known})")
        values[id(names[name])] = parse(value, f"{option} of layer {name}")
    return values


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise PipelineError(f"fold: {what} must be a whole number, got '{text}'") from None
    if value < 1:
        raise PipelineError(f"fold: {what}={value} must be at least 1")
    return value


def _core(text: str, what: str) -> str:
    if text not in CORES:
        raise PipelineError(f"fold: unknown core '{text}' (accepted: {', '.join(CORES)}) in {what}")
    return text


def _slice(text: str, what: str) -> int:
    if text not in [str(s) for s in SLICE_WIDTHS]:
        raise PipelineError(f"fold: {what} must be one of {', '.join(map(str, SLICE_WIDTHS))}, got '{text}'")
    return int(text)


def _slice_annotations(node, slice_bits: int | None, skip: str) -> dict:
    """The `slice` and `skip` a layer should carry: none off the bitserial core."""
    if node.attrs.get("core", "dsp") != "bitserial":
        return {}
    want = {"slice": slice_bits or node.attrs.get("slice", 1)}
    skip_value = int(skip) if skip else node.attrs.get("skip", 1)
    if skip_value == 0:
        want["skip"] = 0
    return want


def set_window_taps(node, taps: int) -> bool:
    """Set a qconv's `window` to `taps` (leaving it out for 1); whether it changed."""
    before = node.attrs.pop("window", 1)
    if taps > 1:
        node.attrs["window"] = taps
    return before != taps


@register("fold",
          pe=Option(int, 4, "output channels computed per cycle (capped to a divisor of N)"),
          simd=Option(int, 8, "inputs consumed per cycle (capped to a divisor of K)"),
          window=Option(str, "1", "a convolution's window taps per beat (capped to what its window can emit): "
                                  "T for every convolution, or layer:T+layer:T"),
          core=Option(str, "", "core building the products, dsp|lut|bitserial|const (const: pe=N, simd=K), or layer:core+layer:core "
                               "(default: unchanged)"),
          pack=Option(str, "", "products per DSP multiplier, or layer:P+layer:P (default: unchanged)"),
          slice=Option(str, "", "bitserial core: weight slice width 1|2|4, or layer:S+layer:S "
                                "(default: unchanged, else 1)"),
          skip=Option(str, "", "bitserial core: 1 leaves out all-zero tiles, 0 lists every tile "
                               "(default: unchanged, else 1)"))
def fold(g: Graph, ctx: PassContext, pe: int, simd: int, window: str, core: str, pack: str,
         slice: str, skip: str) -> bool:
    """Set pe/simd on every qmatmul and qconv (the largest divisors of N and K within the
    caps), window on every qconv (the most taps per beat within the cap), and the requested
    core and pack."""
    if pe < 1 or simd < 1:
        raise PipelineError(f"fold: pe={pe} and simd={simd} must be at least 1")
    caps = per_layer(g, "window", window, _count, ops=("qconv",))
    cores = per_layer(g, "core", core, _core)
    packs = per_layer(g, "pack", pack, _count)
    slices = per_layer(g, "slice", slice, _slice)
    if str(skip).strip() not in ("", "0", "1"):
        raise PipelineError(f"fold: skip must be 0 or 1, got '{skip}'")
    changed = False
    for node in g.nodes:
        if node.op not in LAYER_OPS:
            continue
        k, n = matrix_shape(node)
        want = {"pe": largest_divisor_at_most(n, pe), "simd": largest_divisor_at_most(k, simd)}
        if id(node) in cores:
            want["core"] = cores[id(node)]
        if want.get("core", node.attrs.get("core")) == "const":  # hard-wired weights: one vector per cycle
            want.update(pe=n, simd=k)
        if id(node) in packs:
            want["pack"] = packs[id(node)]
        if any(node.attrs.get(key) != value for key, value in want.items()):
            node.attrs.update(want)
            changed = True
        slicing = _slice_annotations(node, slices.get(id(node)), str(skip).strip())
        for key in ("slice", "skip"):
            if node.attrs.get(key) != slicing.get(key):
                changed = True
                if key in slicing:
                    node.attrs[key] = slicing[key]
                else:
                    node.attrs.pop(key, None)
        if node.op == "qconv":
            kh, kw = node.inputs[1].type.shape[2:]
            changed |= set_window_taps(node, largest_taps_at_most(kh, kw, caps.get(id(node), 1)))
    return changed
