"""fold: choose each layer's parallelism, `pe` output channels × `simd` inputs per cycle,
and optionally the core that builds its products.

    qmatmul(x[1,K], W[K,N]) -> qmatmul {pe = P, simd = S},  P | N, S | K
    qconv(x[1,C,H,W], W[O,C/g,kh,kw]) -> qconv {pe = P, simd = S},  K = kh·kw·C, N = O
    cycles per vector = (N / P) · (K / S)   (a convolution computes one vector per output pixel)

P and S are the largest divisors of N and K not above the requested caps, so any cap is
accepted and the folding stays legal for every layer.

`core=dsp|lut` and `pack=1|2|...` set the `core` and `pack` annotations (nnfpga.hardware,
"cores"): one value for every layer, or one per layer in graph order separated by ':'
(`fold{core=lut:dsp:dsp,pack=1:2:2}`); left out, a layer keeps what it has. Whether the
packed products fit the target's multiplier is the verifier's check.
"""
from __future__ import annotations

from nnfpga.errors import PipelineError
from nnfpga.hardware import CORES, largest_divisor_at_most
from nnfpga.ir import Graph
from nnfpga.passes.registry import Option, PassContext, register


def matrix_shape(node) -> tuple[int, int]:
    """(K, N) of the matrix-vector unit a qmatmul or qconv runs on (a grouped conv as one block-diagonal matrix)."""
    if node.op == "qconv":
        o, _, kh, kw = node.inputs[1].type.shape
        return kh * kw * node.inputs[0].type.shape[1], o
    k, n = node.inputs[1].type.shape
    return k, n


def per_layer(option: str, text: str, layers: int) -> list[str] | None:
    """One value per layer from `text`: a single value for all, or `layers` values joined
    by ':'; None when the option is left out (empty)."""
    if not text:
        return None
    values = [v.strip() for v in text.split(":")]
    if len(values) == 1:
        return values * layers
    if len(values) != layers:
        raise PipelineError(f"fold: {option}={text} gives {len(values)} values for {layers} layers "
                            f"(give one value for all, or one per layer separated by ':')")
    return values


def _cores(text: str, layers: int) -> list[str] | None:
    cores = per_layer("core", text, layers)
    for c in cores or ():
        if c not in CORES:
            raise PipelineError(f"fold: unknown core '{c}' (accepted: {', '.join(CORES)})")
    return cores


def _packs(text: str, layers: int) -> list[int] | None:
    values = per_layer("pack", text, layers)
    if values is None:
        return None
    if not all(v.isdigit() and int(v) >= 1 for v in values):
        raise PipelineError(f"fold: pack={text} must be whole numbers of at least 1 (products per multiplier)")
    return [int(v) for v in values]


@register("fold",
          pe=Option(int, 4, "output channels computed per cycle (capped to a divisor of N)"),
          simd=Option(int, 8, "inputs consumed per cycle (capped to a divisor of K)"),
          core=Option(str, "", "core building the products, dsp|lut, or one per layer joined by ':' "
                               "(default: unchanged)"),
          pack=Option(str, "", "products per DSP multiplier, or one per layer joined by ':' "
                               "(default: unchanged)"))
def fold(g: Graph, ctx: PassContext, pe: int, simd: int, core: str, pack: str) -> bool:
    """Set pe/simd on every qmatmul and qconv: the largest divisors of N and K within the caps."""
    if pe < 1 or simd < 1:
        raise PipelineError(f"fold: pe={pe} and simd={simd} must be at least 1")
    layers = [node for node in g.nodes if node.op in ("qmatmul", "qconv")]
    cores, packs = _cores(core, len(layers)), _packs(pack, len(layers))
    changed = False
    for i, node in enumerate(layers):
        k, n = matrix_shape(node)
        want = {"pe": largest_divisor_at_most(n, pe), "simd": largest_divisor_at_most(k, simd)}
        if cores is not None:
            want["core"] = cores[i]
        if packs is not None:
            want["pack"] = packs[i]
        if any(node.attrs.get(key) != value for key, value in want.items()):
            node.attrs.update(want)
            changed = True
    return changed
