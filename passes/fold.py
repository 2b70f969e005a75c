"""fold: choose each layer's parallelism, `pe` output channels × `simd` inputs per cycle.

    qmatmul(x[1,K], W[K,N]) -> qmatmul {pe = P, simd = S},  P | N, S | K
    qconv(x[1,C,H,W], W[O,C/g,kh,kw]) -> qconv {pe = P, simd = S},  K = kh·kw·C, N = O
    cycles per vector = (N / P) · (K / S)   (a convolution computes one vector per output pixel)

P and S are the largest divisors of N and K not above the requested caps, so any cap is
accepted and the folding stays legal for every layer.
"""
from __future__ import annotations

from nnfpga.errors import PipelineError
from nnfpga.hardware import largest_divisor_at_most
from nnfpga.ir import Graph
from nnfpga.passes.registry import Option, PassContext, register


def matrix_shape(node) -> tuple[int, int]:
    """(K, N) of the matrix-vector unit a qmatmul or qconv runs on (a grouped conv as one block-diagonal matrix)."""
    if node.op == "qconv":
        o, _, kh, kw = node.inputs[1].type.shape
        return kh * kw * node.inputs[0].type.shape[1], o
    k, n = node.inputs[1].type.shape
    return k, n


@register("fold",
          pe=Option(int, 4, "output channels computed per cycle (capped to a divisor of N)"),
          simd=Option(int, 8, "inputs consumed per cycle (capped to a divisor of K)"))
def fold(g: Graph, ctx: PassContext, pe: int, simd: int) -> bool:
    """Set pe/simd on every qmatmul and qconv: the largest divisors of N and K within the caps."""
    if pe < 1 or simd < 1:
        raise PipelineError(f"fold: pe={pe} and simd={simd} must be at least 1")
    changed = False
    for node in g.nodes:
        if node.op not in ("qmatmul", "qconv"):
            continue
        k, n = matrix_shape(node)
        want = {"pe": largest_divisor_at_most(n, pe), "simd": largest_divisor_at_most(k, simd)}
        if any(node.attrs.get(key) != value for key, value in want.items()):
            node.attrs.update(want)
            changed = True
    return changed
