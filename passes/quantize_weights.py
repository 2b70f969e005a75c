"""quantize, weights: the one rule that turns a dense or conv layer's float weights into integers.

    rows[n, :] = output channel n's weights        dense W[K, N]: W[:, n]; conv W[O, C/g, kh, kw]: W[n].ravel()
    s_w[n]     = weight_scale(rows, wbits, calib)  symmetric, per output channel (quantize_calib.py)
    s_w[n]     = max(s_w[n], max_m s_w[m] / 2^SCALE_FLOOR_BITS)
    W_q        = clamp(round(W / s_w), ±(2^(wbits-1) - 1))

Each layer has its own bit width: the `wbits` request an earlier pass (split, precision, bits)
left on the node, else the pass-wide wbits. The floor keeps a channel with (nearly) dead
weights from a vanishing scale, a bias of b/(s_x·s_w) beyond 32 bits and a requant multiplier
that rounds to 0; its outputs stay within about one output step anyway.

The parts of a split layer (nodes annotated `part_of` the same layer) are quantized as the
layer would be: the floor's largest scale is taken over all parts (rescaled to the part's bits
where they differ), and the requant shift over all parts' channels (`peer_scales`),
so that at equal bits the parts' integers are exactly the unsplit layer's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnfpga.errors import PipelineError
from nnfpga.passes.quantize_calib import weight_scale

SCALE_FLOOR_BITS = 8
"""Per-channel weight scales stay within 2^8 of the layer's largest."""
LAYER_OPS = ("dense", "conv")


@dataclass
class LayerWeights:
    """One layer's quantized weights."""

    scale: np.ndarray
    """s_w per output channel (float64)."""
    bits: int
    """Weight bits: the node's request, the pass-wide wbits, or a quantized model's own."""
    ints: np.ndarray
    """W_q (int64) in the node's own layout (dense [K, N], conv [O, C/g, kh, kw])."""
    peer_scales: np.ndarray
    """s_w of the other parts of the same split layer (empty for an ordinary layer): the requant
    shift is chosen over these channels too."""


CARRIED = ("core", "pack", "part_of")
"""Annotations a float layer hands on to its qmatmul/qconv (its bit requests become types)."""


def carried_annotations(node) -> dict:
    return {k: node.attrs[k] for k in CARRIED if k in node.attrs}


def weight_rows(g, node) -> np.ndarray:
    """The float weights of a dense or conv node as [output channels, fan-in] (float64)."""
    w = g.const_data(node.inputs[1]).astype(np.float64)
    return w.T if node.op == "dense" else w.reshape(w.shape[0], -1)


def requested_bits(node, key: str, default: int) -> int:
    """A node's `wbits`/`abits` request, else the pass-wide value; 2..8 either way."""
    bits = node.attrs.get(key, default)
    if not 2 <= bits <= 8:
        raise PipelineError(f"quantize: the {node.op} defining %{node.output.name} requests {key}={bits}, "
                            "outside 2..8")
    return bits


def wmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def layer_weights(g, nodes, wbits: int, calib: str, fixed=None) -> dict[int, LayerWeights]:
    """LayerWeights of every dense/conv node in `nodes`, keyed by id(node)."""
    layers = [n for n in nodes if n.op in LAYER_OPS]
    scales: dict[int, tuple[np.ndarray, int]] = {}
    model_given: set[int] = set()
    for node in layers:
        axis = 1 if node.op == "dense" else 0
        model_scale = fixed.weight_scale(g.const_data(node.inputs[1]), axis) if fixed is not None else None
        if model_scale is not None:  # the model's own weights: W / s_w gives its integers back
            scales[id(node)] = model_scale
            model_given.add(id(node))
        else:
            bits = requested_bits(node, "wbits", wbits)
            scales[id(node)] = (weight_scale(weight_rows(g, node), bits, calib), bits)
    groups: dict[str, list] = {}
    for node in layers:
        groups.setdefault(node.attrs.get("part_of", "%" + node.output.name), []).append(node)
    result, floored = {}, {}
    for members in groups.values():
        own = [scales[id(n)] for n in members if id(n) not in model_given]
        for node in members:
            scale, bits = scales[id(node)]
            if id(node) not in model_given:
                # The largest scale over the parts, in this part's units (exact when bits agree).
                top = max(float(s.max()) if b == bits else float(s.max()) * wmax(b) / wmax(bits) for s, b in own)
                scale = np.maximum(scale, top / 2**SCALE_FLOOR_BITS)
                scale = np.where(scale > 0, scale, 1.0)
                floored[id(node)] = (scale, bits)
        scales.update(floored)
        for node in members:
            scale, bits = scales[id(node)]
            peers = [scales[id(p)][0] for p in members if p is not node]
            result[id(node)] = LayerWeights(scale, bits, _integers(g, node, scale, bits),
                                            np.concatenate(peers) if peers else np.zeros(0))
    return result


def _integers(g, node, scale: np.ndarray, bits: int) -> np.ndarray:
    w = g.const_data(node.inputs[1]).astype(np.float64)
    per_channel = scale if node.op == "dense" else scale.reshape(-1, 1, 1, 1)
    return np.clip(np.rint(w / per_channel), -wmax(bits), wmax(bits)).astype(np.int64)


def shared_requant(requant_params, ratio: np.ndarray, peer_ratio: np.ndarray, acc_bound: int = 0):
    """M and shift for `ratio`, the shift chosen over the peers' channels too (a split layer)."""
    mult, shift = requant_params(np.concatenate([ratio, peer_ratio]), acc_bound=acc_bound)
    return mult[:len(ratio)], shift
