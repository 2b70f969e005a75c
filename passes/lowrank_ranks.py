"""The rank arithmetic of `lowrank` (passes/lowrank.py) and `lowrank{hw=1}` (lowrank_hw.py):
each dense or conv layer as its [K, N] matrix and singular values, the MACs a rank costs, and
the choice of ranks under a MACs budget.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from nnfpga.errors import PipelineError
from nnfpga.ir import Graph, Node

DEFAULT_ENERGY = 0.95


@dataclass
class Layer:
    """A dense or conv node seen as the matrix-vector product it runs per output vector."""

    node: Node
    """The float dense or conv node."""
    matrix: np.ndarray
    """Its weights as a float64 [K, N] matrix (conv: rows ordered c, kh, kw)."""
    vectors: int
    """Output vectors per inference: 1 for dense, output pixels for a conv."""
    sigma: np.ndarray
    """Singular values of `matrix`, descending."""
    skip_reason: str = ""
    """Why the layer cannot be factored at any rank (grouped conv); empty if it can."""

    @property
    def name(self) -> str:
        return self.node.output.name

    @property
    def k(self) -> int:
        return self.matrix.shape[0]

    @property
    def n(self) -> int:
        return self.matrix.shape[1]

    @property
    def max_rank(self) -> int:
        return min(self.k, self.n)

    def saves(self, r: int) -> bool:
        return r * (self.k + self.n) < self.k * self.n

    def macs(self, r: int | None) -> int:
        """MACs per inference unfactored (r None) or at rank r."""
        per_vector = self.k * self.n if r is None else r * (self.k + self.n)
        return per_vector * self.vectors


def factorable_layers(g: Graph) -> list[Layer]:
    layers = []
    for node in g.nodes:
        if node.op == "dense":
            w = g.const_data(node.inputs[1]).astype(np.float64)
            vectors = 1
        elif node.op == "conv":
            o = node.inputs[1].type.shape[0]
            w = g.const_data(node.inputs[1]).astype(np.float64).reshape(o, -1).T
            vectors = node.output.type.shape[2] * node.output.type.shape[3]
        else:
            continue
        reason = ""
        if node.op == "conv" and node.attrs["group"] != 1:
            reason = f"grouped convolution (group = {node.attrs['group']}): only group = 1 is factored"
        sigma = np.linalg.svd(w, compute_uv=False) if not reason else np.zeros(0)
        layers.append(Layer(node, w, vectors, sigma, reason))
    return layers


# ---- choosing ranks ----------------------------------------------------------------------

def energy_rank(sigma: np.ndarray, energy: float) -> int:
    """The fewest singular values whose squares hold `energy` of the total."""
    squares = sigma ** 2
    total = squares.sum()
    if total == 0.0:
        return 1
    kept = np.cumsum(squares) / total
    return int(np.searchsorted(kept, energy - 1e-12) + 1)


def kept_energy(layer: Layer, r: int | None) -> float:
    """Fraction of Σσ² the layer keeps at rank r (1 whole)."""
    if r is None:
        return 1.0
    squares = layer.sigma ** 2
    total = float(squares.sum())
    return float(squares[:r].sum()) / total if total else 1.0


def log_cost(layer: Layer, r: int | None) -> float:
    """-log of the kept energy fraction: what the budget's greedy adds up over layers."""
    return -np.log(max(kept_energy(layer, r), 1e-300))


def budget_ranks(layers: list[Layer], fraction: float) -> dict[str, int]:
    """The ranks with the least total cost that keep at most `fraction` of the model's MACs.

    The cost of a layer is -log of the fraction of Σσ² it keeps: the layers run in series, so
    what reaches the output is about the product of the fractions they keep, and dropping a σ
    from a layer already cut thin costs a larger share of what it passes on. The optimum is
    exact (`cheapest_within`). (A greedy on the sum of dropped σ²/||W||², one σ at a time, took
    the MNIST CNN's conv2 to rank 1 at half the MACs: 30% accuracy before fine-tuning, 90% after.)"""
    total = sum(l.macs(None) for l in layers)
    options = []  # per layer: (MACs, cost, rank or None) of every choice
    for layer in layers:
        whole = [(layer.macs(None), 0.0, None)]
        if layer.skip_reason or layer.sigma.size == 0:
            options.append(whole)
            continue
        options.append(whole + [(layer.macs(r), log_cost(layer, r), r) for r in range(1, first_rank(layer) + 1)])
    chosen = cheapest_within(options, fraction * total)
    if chosen is None:
        floor = sum(min(m for m, _, _ in opts) for opts in options) / total
        raise PipelineError(f"lowrank: macs={fraction} is out of reach: every factorable layer at rank 1 "
                            f"still keeps {floor:.3f} of the MACs (allowed: [{floor:.3f}, 1])")
    return {l.name: r for l, r in zip(layers, chosen) if r is not None}


def cheapest_within(options: list[list[tuple[int, float, int | None]]], budget: float) -> list | None:
    """One choice per layer with the least summed cost whose MACs sum to at most `budget`
    (None if none does)."""
    front = pareto_front(options, budget)
    return list(front[-1][2]) if front else None


def pareto_front(options: list[list[tuple[int, float, int | None]]], budget: float) -> list[tuple]:
    """Every (MACs, cost, choices) combination of one choice per layer within `budget` that no
    other beats in both MACs and cost, by ascending MACs (so descending cost): the layers'
    fronts merged one layer at a time, each merge keeping only such combinations."""
    front = [(0, 0.0, ())]
    for opts in options:
        merged = sorted((m + om, c + oc, picks + (r,)) for m, c, picks in front for om, oc, r in opts
                        if m + om <= budget)
        front, best = [], np.inf
        for item in merged:  # ascending MACs: keep each strictly cheaper one
            if item[1] < best - 1e-15:
                front.append(item)
                best = item[1]
        if not front:
            return []
    return front


def first_rank(layer: Layer) -> int:
    """The largest rank that saves MACs, r < K·N/(K+N) (0 if none does)."""
    return (layer.k * layer.n - 1) // (layer.k + layer.n)


