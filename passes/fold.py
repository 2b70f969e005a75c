"""fold: choose each layer's parallelism, `pe` output channels × `simd` inputs per cycle.

    qmatmul(x[1,K], W[K,N]) -> qmatmul {pe = P, simd = S},  P | N, S | K
    qconv(x[1,C,H,W], W[O,C/g,kh,kw]) -> qconv {pe = P, simd = S},  K = kh·kw·C, N = O
    cycles per vector = (N / P) · (K / S)   (a convolution computes one vector per output pixel)
    qconv -> qconv {window = T}   T window taps per beat (T = 1, the default, is left unsaid)

P and S are the largest divisors of N and K not above the requested caps, and T the most
taps the layer's window can emit per beat (part of one kernel row or whole rows) not above
the `window` cap, so any cap is accepted and the folding stays legal for every layer. A
window of T taps feeds its dense unit T times the input channels of a beat, so a
one-channel 5×5 layer needs 25/T beats per pixel instead of 25. `window` is one cap for
every convolution, or `layer:T+layer:T` for the named ones only (a layer is named by its
qconv's or its requant's result, as the report lists it; the others keep one tap).
"""
from __future__ import annotations

from nnfpga.errors import PipelineError
from nnfpga.hardware import largest_divisor_at_most, largest_taps_at_most
from nnfpga.ir import Graph
from nnfpga.passes.registry import Option, PassContext, register


def matrix_shape(node) -> tuple[int, int]:
    """(K, N) of the matrix-vector unit a qmatmul or qconv runs on (a grouped conv as one block-diagonal matrix)."""
    if node.op == "qconv":
        o, _, kh, kw = node.inputs[1].type.shape
        return kh * kw * node.inputs[0].type.shape[1], o
    k, n = node.inputs[1].type.shape
    return k, n


def window_caps(g: Graph, text: str) -> dict[int, int]:
    """The taps cap per qconv (by id) from fold's `window`: `T` for all, or `layer:T+layer:T`."""
    convs = [n for n in g.nodes if n.op == "qconv"]
    names = {}
    for n in convs:
        names[n.output.name] = n
        readers = [u for u, _ in n.output.uses]
        if len(readers) == 1 and readers[0].op == "requant":
            names[readers[0].output.name] = n
    text = text.strip()
    if ":" not in text:
        return {id(n): _cap(text, "window") for n in convs}
    caps = {id(n): 1 for n in convs}
    for item in text.split("+"):
        name, colon, value = item.strip().rpartition(":")
        if not colon or not name:
            raise PipelineError(f"fold: window entry '{item}' must look like layer:T")
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise PipelineError(f"fold: window names layer '{name}', which is not a convolution of this model "
                                f"(convolutions: {known})")
        caps[id(names[name])] = _cap(value, f"window of layer {name}")
    return caps


def _cap(text: str, what: str) -> int:
    try:
        cap = int(text)
    except ValueError:
        raise PipelineError(f"fold: {what} must be an integer number of taps, got '{text}'") from None
    if cap < 1:
        raise PipelineError(f"fold: {what}={cap} must be at least 1")
    return cap


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
                                  "T for every convolution, or layer:T+layer:T"))
def fold(g: Graph, ctx: PassContext, pe: int, simd: int, window: str) -> bool:
    """Set pe/simd on every qmatmul and qconv (the largest divisors of N and K within the
    caps) and window on every qconv (the most taps per beat within the cap)."""
    if pe < 1 or simd < 1:
        raise PipelineError(f"fold: pe={pe} and simd={simd} must be at least 1")
    caps = window_caps(g, str(window))
    changed = False
    for node in g.nodes:
        if node.op not in ("qmatmul", "qconv"):
            continue
        k, n = matrix_shape(node)
        want = {"pe": largest_divisor_at_most(n, pe), "simd": largest_divisor_at_most(k, simd)}
        if any(node.attrs.get(key) != value for key, value in want.items()):
            node.attrs.update(want)
            changed = True
        if node.op == "qconv":
            kh, kw = node.inputs[1].type.shape[2:]
            changed |= set_window_taps(node, largest_taps_at_most(kh, kw, caps[id(node)]))
    return changed
