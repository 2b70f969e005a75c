"""Lower the integer region of a quantized graph to the hardware's layer records.

    quantize(x) -> [reshape] -> qmatmul -> requant -> [reshape] -> ... -> dequantize

After `partition`, x is whatever the host prefix hands over (the one quantize node).

Reshapes vanish: streams carry elements in row-major order, so a reshape moves no data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from nnfpga.errors import NnfpgaError
from nnfpga.ir import Graph, Value
from nnfpga.ir.types import QuantType

from nnfpga.backends.rtl_layers import DenseLayer


@dataclass(frozen=True)
class IntegerRegion:
    """The part of the graph the accelerator runs, and its boundary types."""

    input: Value
    """The quantized tensor entering the accelerator."""
    output: Value
    """The quantized tensor leaving it."""
    layers: list[DenseLayer]
    """Layer records in stream order."""


def _hw_name(index: int, value_name: str) -> str:
    return f"l{index}_" + (re.sub(r"[^a-z0-9_]", "_", value_name.lower()).strip("_")[:24] or "layer")


def region_input(g: Graph) -> Value:
    """The quantized value the accelerator's stream carries in; explain when there is none."""
    if any(n.attrs.get("place") == "host" for n in g.nodes):
        # Partitioned: the chain starts at the one quantize, wherever the host prefix hands over.
        quantizes = [n for n in g.nodes if n.op == "quantize"]
        if len(quantizes) != 1:
            raise NnfpgaError(f"the accelerator takes one input; graph @{g.name} quantizes "
                              f"{len(quantizes)} values")
        x = quantizes[0].output
    elif len(g.inputs) != 1 or len(g.outputs) != 1:
        raise NnfpgaError(f"the accelerator takes one input and one output; graph @{g.name} has "
                          f"{len(g.inputs)} inputs and {len(g.outputs)} outputs")
    else:
        x = g.inputs[0]
    if x.type.is_float:
        users = [n for n, _ in x.uses]
        if len(users) != 1 or users[0].op != "quantize":
            raise NnfpgaError("the graph is not quantized: run the quantize pass before lowering")
        x = users[0].output
    return x


def is_dense_chain(g: Graph) -> bool:
    """Whether the integer region is a plain chain of dense layers (the HLS backend's scope)."""
    spatial = {"qconv", "maxpool", "sumpool", "qadd", "concat"}
    return not any(n.op in spatial for n in g.nodes)


def to_stream_order(x: np.ndarray, shape) -> np.ndarray:
    """[B, *shape] integers in the order the accelerator streams them: images channels-last."""
    x = np.asarray(x).reshape((len(x),) + tuple(shape))
    if len(shape) == 4:  # [B, 1, C, H, W] -> [B, 1, H, W, C]
        x = x.transpose(0, 1, 3, 4, 2)
    elif len(shape) == 3:  # [B, 1, C, L] -> [B, 1, L, C]
        x = x.transpose(0, 1, 3, 2)
    return x.reshape(len(x), -1)


def from_stream_order(x: np.ndarray, shape) -> np.ndarray:
    """The inverse of `to_stream_order`: stream-ordered rows back to [B, *shape] in IR (NCHW) order."""
    x = np.asarray(x)
    b = len(x)
    if len(shape) == 4:  # [B, 1, H, W, C] -> [B, 1, C, H, W]
        _, c, h, w = shape
        return x.reshape(b, 1, h, w, c).transpose(0, 1, 4, 2, 3).reshape((b,) + tuple(shape))
    if len(shape) == 3:  # [B, 1, L, C] -> [B, 1, C, L]
        _, c, length = shape
        return x.reshape(b, 1, length, c).transpose(0, 1, 3, 2).reshape((b,) + tuple(shape))
    return x.reshape((b,) + tuple(shape))


def integer_region(g: Graph) -> IntegerRegion:
    """Find the accelerator's chain; explain what is wrong when the graph is not one."""
    x = region_input(g)
    start, value, layers = x, x, []
    while True:
        users = [n for n, _ in value.uses]
        if value in g.outputs or not users:
            break
        if len(users) != 1:
            raise NnfpgaError(f"%{value.name} feeds {len(users)} nodes; branches are not supported yet")
        node = users[0]
        if node.op == "dequantize":
            break
        if node.op == "reshape":
            value = node.output
            continue
        if node.op != "qmatmul":
            raise NnfpgaError(f"the hardware backend has no module for op '{node.op}' "
                              f"(node defining %{node.output.name})")
        acc = node.output
        rq = [n for n, _ in acc.uses]
        if len(rq) != 1 or rq[0].op != "requant" or acc in g.outputs:
            raise NnfpgaError(f"qmatmul %{acc.name} must feed exactly one requant")
        layers.append(dense_layer(g, node, rq[0], _hw_name(len(layers), rq[0].output.name)))
        value = rq[0].output
    if not layers:
        raise NnfpgaError("the graph has no layer for the accelerator")
    return IntegerRegion(start, value, layers)


def dense_layer(g: Graph, mm, rq, name: str, weights: np.ndarray | None = None) -> DenseLayer:
    """The layer record of a qmatmul (or qconv, with its [K, N] matrix as `weights`) and its requant."""
    x_t: QuantType = mm.inputs[0].type.element
    y_t: QuantType = rq.output.type.element
    return DenseLayer(
        name=name,
        weights=(g.const_data(mm.inputs[1]) if weights is None else weights).astype(np.int64),
        bias=g.const_data(mm.inputs[2]).astype(np.int64),
        wbits=mm.inputs[1].type.element.bits,
        in_bits=x_t.bits, in_signed=x_t.signed,
        acc_bits=mm.output.type.element.bits,
        mult=g.arrays[rq.attrs["mult"].name].astype(np.int64),
        shift=rq.attrs["shift"],
        out_zp=y_t.zero_point, lo=rq.attrs["lo"], hi=rq.attrs["hi"],
        out_bits=y_t.bits, out_signed=y_t.signed,
        pe=mm.attrs.get("pe", 1), simd=mm.attrs.get("simd", 1),
    )
