"""The accelerator's side of a quantized graph: where its region starts, the stream order
of its tensors, and the layer record of a qmatmul or qconv with its requant.

    region_input(g)                  the quantized value the accelerator's input stream carries
    to_stream_order / from_stream_order   [B, *shape] <-> the order the streams carry (images channels-last)
    dense_layer(g, mm, rq, name)     the DenseLayer record backends/stream_graph.py builds a module of

After `partition`, the region starts at whatever the host prefix hands over (the one quantize node).
"""
from __future__ import annotations

import numpy as np

from nnfpga.errors import NnfpgaError
from nnfpga.ir import Graph, Value
from nnfpga.ir.types import QuantType

from nnfpga.backends.rtl_layers import DenseLayer


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
        core=mm.attrs.get("core", "dsp"), pack=mm.attrs.get("pack", 1),
        slice_bits=mm.attrs.get("slice", 0), skip_zero=bool(mm.attrs.get("skip", 1)),
    )
