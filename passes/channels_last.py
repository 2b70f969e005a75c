"""channels_last: make the hardware's pixel order explicit where an image is flattened.

The IR is NCHW, but the accelerator streams images pixel by pixel, each pixel's channels
together (NHWC): that is the order a sliding window needs. The order matters in one place
only, where an image is flattened into a vector for a dense layer:

    reshape(x[1,C,H,W]) -> [1, C·H·W] -> qmatmul(., W)            (C > 1 and H·W > 1)
 => reshape(transpose(x) {perm = [0, 2, 3, 1]}) -> qmatmul(., W')   W'[(h·W + w)·C + c] = W[(c·H + h)·W + w]
    (a 1-D image [1, C, L] likewise, with perm = [0, 2, 1])

The result is the same tensor, so the interpreter gives identical integers before and after;
the hardware then reads the transposed tensor in row-major order, which is its stream order,
and moves no data. A flatten whose result is read by anything but one qmatmul is left alone
(the Verilog lowering explains why it cannot stream it).
"""
from __future__ import annotations

import numpy as np

from nnfpga.ir import Graph, TensorType
from nnfpga.passes.registry import PassContext, register

NHWC = [0, 2, 3, 1]
"""Permutation from NCHW to the stream order."""


def _needs_transpose(x) -> bool:
    shape = x.type.shape
    return len(shape) in (3, 4) and shape[0] == 1 and shape[1] > 1 and int(np.prod(shape[2:])) > 1


@register("channels_last")
def channels_last(g: Graph, ctx: PassContext) -> bool:
    """Flatten images in stream (NHWC) order, permuting the next dense layer's weight rows."""
    changed = False
    for node in list(g.nodes):
        if node.op != "reshape" or not _needs_transpose(node.inputs[0]) or node.output.type.rank != 2:
            continue
        users = [u for u, _ in node.output.uses]
        if len(users) != 1 or users[0].op != "qmatmul" or node.output in g.outputs:
            continue
        mm = users[0]
        x = node.inputs[0]
        c, spatial = x.type.shape[1], int(np.prod(x.type.shape[2:]))
        perm = NHWC if x.type.rank == 4 else [0, 2, 1]
        t = g.add_node("transpose", [x], [TensorType(tuple(x.type.shape[p] for p in perm), x.type.element)],
                       {"perm": list(perm)}, names=[x.name + "_nhwc"], before=node).output
        node.set_input(0, t)
        weights = g.const_data(mm.inputs[1])
        # Row (pixel, c) of the new matrix is row (c, pixel) of the old one.
        rows = np.arange(c * spatial).reshape(c, spatial).T.reshape(-1)
        wq = g.add_const(mm.inputs[1].name + "_nhwc", np.ascontiguousarray(weights[rows]), mm.inputs[1].type)
        mm.set_input(1, wq)
        changed = True
    if changed:
        g.remove_unused_constants()
    return changed
