"""The const core's adder graph: a dense layer's products with its weights hard-wired.

    graph = adder_graph(weights [K, N], in_lo, in_hi)   y[n] = sum_k x[k] * W[k][n]

Each weight is written in canonical signed digits (CSD: digits in {-1, 0, 1}, no two
non-zero digits adjacent), so x·w is a sum of signed, shifted copies of x and a zero
digit costs nothing. Output n starts as the list of its terms (input k, shift, sign).
Common subexpressions are shared across the outputs of the layer with a greedy pairwise
search in the style of RAG-n/Hcub and da4ml: the pair of terms `a + ±(b << d)` found in
the most outputs becomes one adder, and each output holding it uses the new value
instead of the two terms; repeated while some pair occurs twice. What remains of each
output is summed by a tree that adds the two values of smallest magnitude first (on the
jet MLP's first layer 8% fewer adder bits than a tree by depth, at 11 levels instead of 6).

Each adder knows the exact interval of its value (interval arithmetic over the input
range), so its width is the fewest bits that hold it; a positive base operand passes its
low `d` bits through unchanged instead of adding zeros.

The graph is pipelined by depth: an adder at depth t (inputs at depth 0) sits in stage
(t - 1) // LEVELS_PER_STAGE, a register between stages (templates/verilog/
nnfpga_const_dense.sv.j2). Same weights, same graph: every choice breaks ties by value.
"""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nnfpga.hardware import dense_pipeline_stages, requant_stages

LEVELS_PER_STAGE = 3
"""Adder levels between two registers of the const core (a 7-series carry chain of ~20 bits
and its routing take ~2.5 ns per level; three levels fit 10 ns)."""


def csd_digits(w: int) -> list[tuple[int, int]]:
    """(shift, sign) of each non-zero canonical-signed-digit of w, lowest first:
    w == sum(sign << shift)."""
    digits = []
    shift = 0
    while w:
        if w & 1:
            d = 2 - (w & 3)          # w mod 4 == 1 -> +1, == 3 -> -1
            digits.append((shift, d))
            w -= d
        w >>= 1
        shift += 1
    return digits


@dataclass(frozen=True)
class Adder:
    """One adder: value = sign_a·a + sign_b·(b << shift), a and b node indices."""

    a: int
    """Node index of the operand that is not shifted."""
    b: int
    """Node index of the shifted operand."""
    shift: int
    """Left shift of b, >= 0."""
    sign_a: int
    """+1 or -1."""
    sign_b: int
    """+1 or -1."""


@dataclass(frozen=True)
class Output:
    """One output: y = sign·(node << shift), or 0 when node is None (an all-zero column)."""

    node: int | None
    shift: int
    sign: int


@dataclass
class AdderGraph:
    """Nodes 0..K-1 are the inputs; node K + i is adders[i]."""

    inputs: int
    """K."""
    adders: list[Adder]
    """In topological order."""
    outputs: list[Output]
    """One per output channel."""
    lo: list[int]
    """Smallest value of each node over every input."""
    hi: list[int]
    """Largest value of each node over every input."""
    depth: list[int]
    """Adder levels from the inputs to each node (inputs 0)."""

    def width(self, node: int) -> int:
        """Signed bits that hold node's every value."""
        return signed_bits(self.lo[node], self.hi[node])

    def stage(self, node: int) -> int:
        """Pipeline stage computing `node` (inputs: 0)."""
        return max(0, self.depth[node] - 1) // LEVELS_PER_STAGE

    @property
    def stages(self) -> int:
        """Register boundaries inside the graph: the last stage's index."""
        return max((self.stage(n) for n in range(len(self.lo))), default=0)

    @property
    def adder_bits(self) -> int:
        """Bits of adders (a 7-series LUT and carry bit each): what the core's LUTs scale with."""
        return sum(self.width(self.inputs + i) - a.shift * (a.sign_a > 0) for i, a in enumerate(self.adders))


def signed_bits(lo: int, hi: int) -> int:
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def _scaled(lo: int, hi: int, sign: int, shift: int) -> tuple[int, int]:
    return (lo << shift, hi << shift) if sign > 0 else (-(hi << shift), -(lo << shift))


class _Builder:
    def __init__(self, k: int, in_lo: int, in_hi: int):
        self.k = k
        self.adders: list[Adder] = []
        self.lo = [in_lo] * k
        self.hi = [in_hi] * k
        self.depth = [0] * k
        self.made: dict[Adder, int] = {}

    def add(self, a: int, sa: int, b: int, sb: int, shift: int) -> int:
        """Node index of sa·a + sb·(b << shift) (made once)."""
        key = Adder(a, b, shift, sa, sb)
        if key in self.made:
            return self.made[key]
        alo, ahi = _scaled(self.lo[a], self.hi[a], sa, 0)
        blo, bhi = _scaled(self.lo[b], self.hi[b], sb, shift)
        self.adders.append(key)
        self.lo.append(alo + blo)
        self.hi.append(ahi + bhi)
        self.depth.append(max(self.depth[a], self.depth[b]) + 1)
        node = self.k + len(self.adders) - 1
        self.made[key] = node
        return node


Term = tuple[int, int, int]  # (node, shift, sign)


def _pattern(t1: Term, t2: Term) -> tuple[tuple, int, int]:
    """The shared form of two terms: ((a, b, d, sign of b relative to a), shift, sign) with
    t1 + t2 == sign·((a + rel·(b << d)) << shift)."""
    if (t1[1], t1[0]) > (t2[1], t2[0]):
        t1, t2 = t2, t1
    return (t1[0], t2[0], t2[1] - t1[1], t1[2] * t2[2]), t1[1], t1[2]


class _Sharing:
    """Pattern counts kept up to date as terms are replaced: pairs[i][p] is how many pairs of
    output i's terms form pattern p; count[p] how many outputs hold p at least once; a
    heap of (-count, shift, p) finds the most shared pattern (stale entries are skipped)."""

    def __init__(self, outs: list[list[Term]]):
        self.terms = [set(t) for t in outs]
        self.pairs = [Counter() for _ in outs]
        self.count: Counter = Counter()
        self.heap: list = []
        for i, terms in enumerate(outs):
            for x in range(len(terms)):
                for y in range(x + 1, len(terms)):
                    self.pairs[i][_pattern(terms[x], terms[y])[0]] += 1
            self.count.update(self.pairs[i].keys())
        self.heap = [(-c, p[2], p) for p, c in self.count.items() if c >= 2]
        heapq.heapify(self.heap)

    def _change(self, i: int, pattern: tuple, delta: int) -> None:
        before = self.pairs[i][pattern]
        self.pairs[i][pattern] = before + delta
        if (before > 0) != (before + delta > 0):
            self.count[pattern] += 1 if delta > 0 else -1
            if self.count[pattern] >= 2:
                heapq.heappush(self.heap, (-self.count[pattern], pattern[2], pattern))

    def best(self) -> tuple | None:
        """The pattern held by the most outputs (at least two), or None."""
        while self.heap:
            c, _, p = self.heap[0]
            if -c == self.count[p]:
                return p
            heapq.heappop(self.heap)
        return None

    def occurrence(self, i: int, pattern: tuple) -> tuple[Term, Term] | None:
        a, b, d, rel = pattern
        for t in sorted(self.terms[i]):
            if t[0] == a and (b, t[1] + d, t[2] * rel) in self.terms[i] and (b, t[1] + d, t[2] * rel) != t:
                return t, (b, t[1] + d, t[2] * rel)
        return None

    def replace(self, i: int, t1: Term, t2: Term, new: Term) -> None:
        self.terms[i] -= {t1, t2}
        self._change(i, _pattern(t1, t2)[0], -1)
        for u in self.terms[i]:
            self._change(i, _pattern(t1, u)[0], -1)
            self._change(i, _pattern(t2, u)[0], -1)
        for u in self.terms[i]:
            self._change(i, _pattern(new, u)[0], +1)
        self.terms[i].add(new)


def _share(b: _Builder, outs: list[list[Term]]) -> None:
    """Greedy common-subexpression elimination over pairs of terms: the pattern in the most
    outputs becomes an adder, once per output that holds it, until none is in two."""
    sharing = _Sharing(outs)
    while (pattern := sharing.best()) is not None:
        a, bb, d, rel = pattern
        node = b.add(a, 1, bb, rel, d)
        for i in range(len(outs)):
            if sharing.pairs[i][pattern] <= 0:
                continue
            t1, t2 = sharing.occurrence(i, pattern)
            _, shift, sign = _pattern(t1, t2)
            sharing.replace(i, t1, t2, (node, shift, sign))
    for i in range(len(outs)):
        outs[i] = sorted(sharing.terms[i])


def _sum_tree(b: _Builder, terms: list[Term]) -> Output:
    """Sum the terms, the two of smallest magnitude first (Huffman's order: the narrow values
    meet in narrow adders, and only the last adders are as wide as the output); the result
    as one signed, shifted term."""
    if not terms:
        return Output(None, 0, 1)

    def magnitude(t: Term) -> tuple:
        return ((b.hi[t[0]] - b.lo[t[0]]) << t[1], t)

    heap = [(magnitude(t), t) for t in terms]
    heapq.heapify(heap)
    while len(heap) > 1:
        t1, t2 = heapq.heappop(heap)[1], heapq.heappop(heap)[1]
        if (t1[1], t1[0]) > (t2[1], t2[0]):
            t1, t2 = t2, t1
        sign = t1[2] if t1[2] == t2[2] or t1[2] > 0 else t2[2]  # a positive operand leads when there is one
        node = b.add(t1[0], t1[2] * sign, t2[0], t2[2] * sign, t2[1] - t1[1])
        new = (node, t1[1], sign)
        heapq.heappush(heap, (magnitude(new), new))
    return Output(*heap[0][1])


@lru_cache(maxsize=64)
def _cached(weights_bytes: bytes, shape: tuple[int, int], in_lo: int, in_hi: int) -> AdderGraph:
    w = np.frombuffer(weights_bytes, np.int64).reshape(shape)
    k, n = shape
    b = _Builder(k, in_lo, in_hi)
    outs = [[(row, shift, sign) for row in range(k) for shift, sign in csd_digits(int(w[row, col]))]
            for col in range(n)]
    _share(b, outs)
    outputs = [_sum_tree(b, terms) for terms in outs]
    return AdderGraph(k, b.adders, outputs, b.lo, b.hi, b.depth)


def adder_graph(weights: np.ndarray, in_lo: int, in_hi: int) -> AdderGraph:
    """The shared shift-add graph of y = x·W for integer inputs in [in_lo, in_hi]."""
    w = np.ascontiguousarray(weights, dtype=np.int64)
    return _cached(w.tobytes(), tuple(w.shape), int(in_lo), int(in_hi))


def evaluate(graph: AdderGraph, x: np.ndarray) -> np.ndarray:
    """y [batch, N] of the graph on integer inputs x [batch, K] (exact, Python ints)."""
    x = np.asarray(x, dtype=object)
    values = [x[:, k] for k in range(graph.inputs)]
    for a in graph.adders:
        values.append(a.sign_a * values[a.a] + a.sign_b * (values[a.b] * (1 << a.shift)))
    zero = np.zeros(len(x), dtype=object)
    return np.stack([o.sign * values[o.node] * (1 << o.shift) if o.node is not None else zero
                     for o in graph.outputs], axis=1)


def const_graph(layer) -> AdderGraph:
    """The adder graph of a const-core DenseLayer (backends/rtl_layers.py), its inputs
    ranging over the input type."""
    lo, hi = ((-(1 << (layer.in_bits - 1)), (1 << (layer.in_bits - 1)) - 1) if layer.in_signed
              else (0, (1 << layer.in_bits) - 1))
    return adder_graph(layer.weights, lo, hi)


def const_pipeline_stages(layer) -> int:
    """The const core (templates/verilog/nnfpga_const_dense.sv.j2): input vector register (1),
    the graph's register boundaries, accumulator (1), requant, output FIFO write (1)."""
    return 1 + const_graph(layer).stages + 1 + requant_stages(layer.acc_bits, True, layer.mult_bits) + 1


def layer_pipeline_stages(layer) -> int:
    """Register stages from a dense layer's issue to its output FIFO write, for every core."""
    if layer.core == "const":
        return const_pipeline_stages(layer)
    return dense_pipeline_stages(layer.simd, layer.acc_bits, layer.mult_bits)
