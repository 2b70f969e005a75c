"""The quantized layers the bit passes (bitplane, bitslice) rewrite, and their slice statistics.

An integer layer is a qmatmul or qconv whose result feeds exactly one requant, with weights
and bias constants no other node reads. Its weights are seen two ways:
    per channel    rows[n] = output channel n's weights (qmatmul W[:, n], qconv W[n].ravel())
    as the matrix  [K, N] of the matrix-vector unit (qconv: rows in the window's (ky, kx, c)
                   order, backends.stream_graph.conv_matrix), folded into pe x simd tiles

Tiles: a layer folded by `fold`/`autofold` (pe, simd annotations) has the (nf, sf, slice)
tiles of its weight ROM (nnfpga.bitslices.nonzero_tiles). An unfolded layer has one tile per
output channel and slice: the channel's whole row of K weights (pe = 1, simd = K).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnfpga.backends.stream_graph import conv_matrix
from nnfpga.bitslices import SLICE_WIDTHS, plane_occupancy, sign_magnitude_slices, zero_tile_fraction
from nnfpga.ir import Graph, IntType, Node
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range

LAYER_OPS = ("qmatmul", "qconv")


@dataclass
class IntegerLayer:
    """A qmatmul/qconv and the requant it feeds."""

    node: Node
    """The qmatmul or qconv."""
    requant: Node
    """The requant reading its accumulator."""

    @property
    def name(self) -> str:
        return self.requant.output.name

    @property
    def channel_axis(self) -> int:
        """Output-channel axis of the weight tensor (qmatmul [K, N]: 1; qconv [O, C/g, kh, kw]: 0)."""
        return 1 if self.node.op == "qmatmul" else 0

    @property
    def wbits(self) -> int:
        return self.node.inputs[1].type.element.bits

    def weights(self, g: Graph) -> np.ndarray:
        return g.const_data(self.node.inputs[1]).astype(np.int64)

    def rows(self, g: Graph) -> np.ndarray:
        """[N, fan-in] weights of each output channel."""
        w = self.weights(g)
        return w.T if self.channel_axis == 1 else w.reshape(w.shape[0], -1)

    def matrix(self, g: Graph) -> np.ndarray:
        """[K, N] matrix of the matrix-vector unit."""
        w = self.weights(g)
        if self.node.op == "qmatmul":
            return w
        return conv_matrix(w, self.node.inputs[0].type.shape[1], self.node.attrs["group"])

    def accumulator_type(self, weights: np.ndarray, bias: np.ndarray) -> IntType:
        """The narrowest type holding the exact accumulator range with these weights and bias."""
        matrix = weights if self.node.op == "qmatmul" else weights.reshape(len(bias), -1).T
        return int_type_for_range(*accumulator_bounds(self.node.inputs[0].type.element, matrix, bias))

    def channel_sums(self, weights: np.ndarray) -> np.ndarray:
        """Σ of each output channel's weights."""
        return weights.sum(axis=0) if self.node.op == "qmatmul" else weights.reshape(len(weights), -1).sum(axis=1)

    def fold(self, g: Graph) -> tuple[int, int]:
        """(pe, simd) of the layer's tiles: its fold, else one whole row (1, K)."""
        if "pe" in self.node.attrs or "simd" in self.node.attrs:
            return self.node.attrs.get("pe", 1), self.node.attrs.get("simd", 1)
        return 1, self.matrix(g).shape[0]


def integer_layers(g: Graph) -> list[IntegerLayer]:
    """Every qmatmul/qconv feeding one requant, with weights and bias read by it alone."""
    layers = []
    for node in g.nodes:
        if node.op not in LAYER_OPS or node.output in g.outputs:
            continue
        users = [u for u, _ in node.output.uses]
        if len(users) != 1 or users[0].op != "requant":
            continue
        if any(len(v.uses) != 1 for v in node.inputs[1:3]):
            continue
        layers.append(IntegerLayer(node, users[0]))
    return layers


def slice_statistics(g: Graph, layer: IntegerLayer) -> dict:
    """Per magnitude plane the fraction of weights that set it (low plane first); per slice
    width s the fraction of zero slices over all weights, and of zero (nf, sf, slice) tiles."""
    matrix, wbits = layer.matrix(g), layer.wbits
    pe, simd = layer.fold(g)
    return {
        "plane_occupancy": [round(float(f), 6) for f in plane_occupancy(matrix, wbits)],
        "zero_slice_fraction": {str(s): round(float((sign_magnitude_slices(matrix, wbits, s) == 0).mean()), 6)
                                for s in SLICE_WIDTHS},
        "zero_tile_fraction": {str(s): round(zero_tile_fraction(matrix, wbits, s, pe, simd), 6)
                               for s in SLICE_WIDTHS},
        "tile": f"pe={pe} x simd={simd}",
    }
