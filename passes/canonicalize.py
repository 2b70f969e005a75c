"""canonicalize: the float graph in the one form the quantizer reads.

Rewrite rules, applied to a fixed point (x activation, W/b/c constants; a, c per channel:
one value per channel of axis 1, [1,C,1,1], [C,1,1], [N], [1,N] or a scalar):

    gemm(a, b, c) {α, β, tA, tB}     -> add(matmul(tA(a), α·tB(b)), β·c)   Gemm normalisation
    op(const, ..., const)            -> const                               constant folding
    add(matmul(x, W), b), b: [N]/[1,N] -> dense(x, W, b)                     bias fusion
    matmul(x, W)                     -> dense(x, W, 0)
    relu(dense(x, W, b))             -> dense(x, W, b) {relu}                ReLU fusion
    reshape(x) to x's own shape      -> x
    reshape(reshape(x))              -> reshape(x)
    mul(conv(x, W, b), a)            -> conv(x, W·a, b·a)                   BatchNorm folding (also dense,
    add(conv(x, W, b), c)            -> conv(x, W, b + c)                    without relu; one user)
    mul(reshape(x), a)               -> reshape(mul(x, a))                  affine before a reshape that
    add(reshape(x), c)               -> reshape(add(x, c))                   keeps axes 0, 1 (x an image)
    relu|clip(reshape(x)), x = conv or add -> reshape(relu|clip(x))         so quantize fuses it (1-D convs)
    mul(x, a), x [1,C,H,W] or [1,C,L] -> conv(x, a as [C,1,1,1], 0) {group = C}   standalone BatchNorm
    add(x, c), x likewise            -> conv(x, 1, c) {group = C}              (a 1×1 depthwise conv)
    conv(pad(x, p, 0))               -> conv(x) {pads + p}                  padding into the window
    maxpool(pad(x, p, -max))         -> maxpool(x) {pads + p}                (max: padding never wins)
    avgpool(pad(x, p, 0))            -> avgpool(x) {pads + p, count_include_pad}  (its own padding counted, or none)
    clip(clip(x, a, b), c, d)        -> clip(x, clamp(a, c, d), clamp(b, c, d))   relu(x) is clip(x, 0, ∞)
    clip(x, 0, ∞)                    -> relu(x)                             (∞: the largest float32)
    clip(x, -∞, ∞)                   -> x
    unused node or constant          -> (removed)                            dead code

A clip(x, 0, hi) or relu after a conv or an add stays an op of its own: the quantizer fuses it.
"""
from __future__ import annotations

import numpy as np

from nnfpga.ir import F32, Graph, Node, TensorType
from nnfpga.ir.interpreter import KERNELS
from nnfpga.ir.spatial import SpatialError, window_output
from nnfpga.passes.registry import PassContext, register

FOLDABLE = {"gemm", "matmul", "add", "mul", "relu", "transpose", "reshape", "dense",
            "conv", "maxpool", "avgpool", "concat", "clip", "pad"}
FLOAT_MAX = float(np.finfo(np.float32).max)
"""Infinity as the IR writes it (its floats are finite): a clip bound or a pad value."""


def _const(g: Graph, hint: str, data: np.ndarray):
    data = np.ascontiguousarray(data, dtype=np.float32)
    return g.add_const(hint, data, TensorType(data.shape, F32))


def _replace(g: Graph, node: Node, new_value, inherit_name: bool = True) -> None:
    """Swap node's result for new_value; a freshly made value takes over the old name."""
    old_name = node.output.name
    g.replace_all_uses(node.output, new_value)
    g.remove_node(node)
    if inherit_name:
        g.rename(new_value, old_name)


def _normalise_gemm(g: Graph, node: Node) -> bool:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) == 3 else None
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    name = node.output.name
    if node.attrs.get("trans_a"):
        a = g.add_node("transpose", [a], [TensorType(a.type.shape[::-1], F32)],
                       {"perm": [1, 0]}, names=[f"{name}_at"], before=node).output
    if node.attrs.get("trans_b"):
        b = g.add_node("transpose", [b], [TensorType(b.type.shape[::-1], F32)],
                       {"perm": [1, 0]}, names=[f"{name}_bt"], before=node).output
    if alpha != 1.0:
        b = g.add_node("mul", [b, _const(g, f"{name}_alpha", np.float32(alpha))], [b.type],
                       names=[f"{name}_b"], before=node).output
    out_type = node.output.type
    y = g.add_node("matmul", [a, b], [out_type], before=node).output
    if c is not None:
        if beta != 1.0:
            c = g.add_node("mul", [c, _const(g, f"{name}_beta", np.float32(beta))], [c.type],
                           names=[f"{name}_c"], before=node).output
        y = g.add_node("add", [y, c], [out_type], before=node).output
    _replace(g, node, y)
    return True


def _fold_constant(g: Graph, node: Node) -> bool:
    if node.op not in FOLDABLE or not all(v.is_const for v in node.inputs):
        return False
    arrays = [g.const_data(v).astype(np.float32) for v in node.inputs]
    (result,) = KERNELS[node.op](g, node, *arrays)
    _replace(g, node, _const(g, "folded", result))
    return True


def _single_user(g: Graph, value) -> bool:
    return len(value.uses) == 1 and value not in g.outputs


def _fuse_bias(g: Graph, node: Node) -> bool:
    if node.op != "add":
        return False
    for mm_side in (0, 1):
        mm, bias = node.inputs[mm_side], node.inputs[1 - mm_side]
        if not (mm.producer and mm.producer.op == "matmul" and _single_user(g, mm)):
            continue
        x, w = mm.producer.inputs
        if not (w.is_const and bias.is_const) or x.type.shape[0] != 1:
            continue
        n = w.type.shape[1]
        if bias.type.shape not in ((n,), (1, n)) or node.output.type.shape != (1, n):
            continue
        b = _const(g, bias.name, g.const_data(bias).reshape(n))
        dense = g.add_node("dense", [x, w, b], [node.output.type], before=node)
        _replace(g, node, dense.output)
        g.remove_node(mm.producer)
        return True
    return False


def _constant(v) -> bool:
    """Whether v is a constant or computed from constants only (folding will make it one)."""
    return v.is_const or (v.producer is not None and bool(v.producer.inputs)
                          and all(_constant(x) for x in v.producer.inputs))


def _matmul_to_dense(g: Graph, node: Node) -> bool:
    # Only once no add can take the bias: a matmul read by an add of a constant waits for _fuse_bias.
    if node.op != "matmul" or not node.inputs[1].is_const or node.inputs[0].type.shape[0] != 1:
        return False
    if any(user.op == "add" and any(_constant(v) for v in user.inputs) for user, _ in node.output.uses):
        return False
    n = node.inputs[1].type.shape[1]
    b = _const(g, f"{node.output.name}_b", np.zeros(n, np.float32))
    dense = g.add_node("dense", [node.inputs[0], node.inputs[1], b], [node.output.type], before=node)
    _replace(g, node, dense.output)
    return True


def _fuse_relu(g: Graph, node: Node) -> bool:
    src = node.inputs[0].producer
    if node.op != "relu" or src is None or src.op != "dense" or src.attrs.get("relu"):
        return False
    if not _single_user(g, src.output):
        return False
    src.attrs["relu"] = True
    _replace(g, node, src.output)  # the fused layer is known by the ReLU's name
    return True


def _simplify_reshape(g: Graph, node: Node) -> bool:
    if node.op != "reshape":
        return False
    x = node.inputs[0]
    if x.type.shape == node.output.type.shape and node.output not in g.outputs:
        _replace(g, node, x, inherit_name=False)
        return True
    if x.producer is not None and x.producer.op == "reshape":
        node.set_input(0, x.producer.inputs[0])
        return True
    return False


def _affine(g: Graph, node: Node):
    """(x, per-channel values as float64 [C]) of mul/add(x, k) with k constant and one value per
    channel (axis 1) of x, the result shaped like x; else None."""
    if node.op not in ("mul", "add") or sum(v.is_const for v in node.inputs) != 1:
        return None
    x, k = node.inputs if node.inputs[1].is_const else node.inputs[::-1]
    shape = x.type.shape
    if len(shape) < 2 or node.output.type.shape != shape:
        return None
    data = g.const_data(k)
    if data.ndim > len(shape):
        return None
    full = (1,) * (len(shape) - data.ndim) + data.shape
    if any(d != 1 for axis, d in enumerate(full) if axis != 1) or full[1] not in (1, shape[1]):
        return None
    return x, np.broadcast_to(data.astype(np.float64).reshape(full[1]), (shape[1],))


def _fold_affine_into_layer(g: Graph, node: Node) -> bool:
    # mul(conv(x, W, b), a) -> conv(x, W·a, b·a); add(conv(x, W, b), c) -> conv(x, W, b + c); dense likewise
    split = _affine(g, node)
    if split is None:
        return False
    x, k = split
    layer = x.producer
    if layer is None or layer.op not in ("conv", "dense") or layer.attrs.get("relu") or not _single_user(g, x):
        return False
    w, b = layer.inputs[1], layer.inputs[2]
    wdata, bdata = g.const_data(w).astype(np.float64), g.const_data(b).astype(np.float64)
    if node.op == "mul":
        # per output channel: conv W is [O, C/g, kh, kw], dense W is [K, N]
        scale = k.reshape(-1, 1, 1, 1) if layer.op == "conv" else k.reshape(1, -1)
        w = _const(g, f"{w.name}_scaled", wdata * scale)
        b = _const(g, f"{b.name}_scaled", bdata * k)
    else:
        b = _const(g, f"{b.name}_shifted", bdata + k)
    folded = g.add_node(layer.op, [layer.inputs[0], w, b], [node.output.type], dict(layer.attrs), before=node)
    _replace(g, node, folded.output)
    g.remove_node(layer)
    return True


def _apply_before_reshape(g: Graph, node: Node, reshape: Node, inputs: list, hint: str) -> bool:
    """node(reshape(x), ..) -> reshape(node(x, ..)): `inputs` are the new node's, x first."""
    inner = g.add_node(node.op, inputs, [inputs[0].type], dict(node.attrs), names=[hint], before=node).output
    moved = g.add_node("reshape", [inner], [node.output.type], dict(reshape.attrs), before=node)
    _replace(g, node, moved.output)
    g.remove_node(reshape)
    return True


def _affine_through_reshape(g: Graph, node: Node) -> bool:
    # mul(reshape(x), a) -> reshape(mul(x, a)) when the reshape keeps axes 0 and 1 and x is an image
    split = _affine(g, node)
    if split is None:
        return False
    y, k = split
    reshape = y.producer
    if reshape is None or reshape.op != "reshape" or not _single_user(g, y):
        return False
    x = reshape.inputs[0]
    if x.type.rank != 4 or x.type.shape[:2] != y.type.shape[:2]:
        return False
    c = _const(g, f"{node.output.name}_c", k.reshape(1, -1, 1, 1))
    return _apply_before_reshape(g, node, reshape, [x, c], f"{node.output.name}_2d")


def _activation_through_reshape(g: Graph, node: Node) -> bool:
    # relu(reshape(x)) -> reshape(relu(x)) when x is a conv or add result: the quantizer fuses it there
    if node.op not in ("relu", "clip"):
        return False
    reshape = node.inputs[0].producer
    if reshape is None or reshape.op != "reshape" or not _single_user(g, node.inputs[0]):
        return False
    x = reshape.inputs[0]
    if x.producer is None or x.producer.op not in ("conv", "add") or not _single_user(g, x):
        return False
    return _apply_before_reshape(g, node, reshape, [x], f"{node.output.name}_inner")


def _affine_to_depthwise(g: Graph, node: Node) -> bool:
    # mul(x, a) -> conv(x, a as [C,1,1,1], 0) {group = C}; add(x, c) -> conv(x, 1, c) {group = C}
    split = _affine(g, node)
    if split is None:
        return False
    x, k = split
    shape = x.type.shape
    if len(shape) not in (3, 4) or shape[0] != 1:
        return False
    channels, name = shape[1], node.output.name
    if node.op == "mul":
        w, b = k, np.zeros(channels)
    else:
        w, b = np.ones(channels), k
    image = x
    if len(shape) == 3:  # [1, C, L] -> [1, C, 1, L], as the frontend does for 1-D convolutions
        flat = TensorType((1, channels, 1, shape[2]), F32)
        image = g.add_node("reshape", [x], [flat], {"shape": list(flat.shape)}, names=[f"{name}_in"],
                           before=node).output
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": channels}
    conv = g.add_node("conv", [image, _const(g, f"{name}_w", w.reshape(channels, 1, 1, 1)), _const(g, f"{name}_b", b)],
                      [image.type], attrs, names=[f"{name}_2d" if len(shape) == 3 else name], before=node).output
    if len(shape) == 3:
        conv = g.add_node("reshape", [conv], [node.output.type], {"shape": list(shape)}, before=node).output
    _replace(g, node, conv)
    return True


def _pad_into_window(g: Graph, node: Node) -> bool:
    # conv(pad(x, p, 0)) -> conv(x) {pads + p}; maxpool(pad(x, p, -max)) -> maxpool(x) {pads + p};
    # avgpool(pad(x, p, 0)) -> avgpool(x) {pads + p, count_include_pad} when it counts its own padding or has none
    src = node.inputs[0].producer
    if node.op not in ("conv", "maxpool", "avgpool") or src is None or src.op != "pad":
        return False
    p, value, own = src.attrs["pads"], float(src.attrs.get("value", 0.0)), node.attrs["pads"]
    if len(p) != 8 or any(p[i] for i in (0, 1, 4, 5)):  # only the height and width may be padded
        return False
    if node.op == "maxpool" and value > -FLOAT_MAX:
        return False
    if node.op != "maxpool" and value != 0.0:
        return False
    if node.op == "avgpool" and any(own) and not node.attrs.get("count_include_pad"):
        return False
    pads = [own[0] + p[2], own[1] + p[3], own[2] + p[6], own[3] + p[7]]
    x = src.inputs[0]
    kernel = list(node.inputs[1].type.shape[2:]) if node.op == "conv" else node.attrs["kernel"]
    try:
        window_output(*x.type.shape[2:], kernel, node.attrs["strides"], pads, node.attrs.get("dilations", [1, 1]))
    except SpatialError:
        return False  # padding as wide as the window: the pad stays
    node.set_input(0, x)
    node.attrs["pads"] = pads
    if node.op == "avgpool":
        node.attrs["count_include_pad"] = True
    return True


def _bounds(node: Node) -> tuple[float, float]:
    return (0.0, FLOAT_MAX) if node.op == "relu" else (node.attrs["lo"], node.attrs["hi"])


def _merge_clips(g: Graph, node: Node) -> bool:
    # clip(clip(x, a, b), c, d) -> clip(x, clamp(a, c, d), clamp(b, c, d)), relu(x) = clip(x, 0, ∞)
    src = node.inputs[0].producer
    if node.op not in ("clip", "relu") or src is None or src.op not in ("clip", "relu"):
        return False
    if not _single_user(g, src.output):
        return False
    (a, b), (c, d) = _bounds(src), _bounds(node)
    lo, hi = min(max(a, c), d), min(max(b, c), d)
    merged = g.add_node("clip", [src.inputs[0]], [node.output.type], {"lo": lo, "hi": hi}, before=node)
    _replace(g, node, merged.output)
    g.remove_node(src)
    return True


def _simplify_clip(g: Graph, node: Node) -> bool:
    # clip(x, 0, ∞) -> relu(x); clip(x, -∞, ∞) -> x
    if node.op != "clip" or node.attrs["hi"] < FLOAT_MAX:
        return False
    if node.attrs["lo"] <= -FLOAT_MAX and node.output not in g.outputs:
        _replace(g, node, node.inputs[0], inherit_name=False)
        return True
    if node.attrs["lo"] == 0.0:
        relu = g.add_node("relu", [node.inputs[0]], [node.output.type], before=node)
        _replace(g, node, relu.output)
        return True
    return False


RULES = [_normalise_gemm, _fold_constant, _fuse_bias, _matmul_to_dense, _fuse_relu, _simplify_reshape,
         _fold_affine_into_layer, _affine_through_reshape, _activation_through_reshape, _affine_to_depthwise,
         _pad_into_window,
         _merge_clips, _simplify_clip]


def _remove_dead(g: Graph) -> bool:
    changed = False
    for node in reversed(list(g.nodes)):
        if all(not v.uses and v not in g.outputs for v in node.outputs):
            g.remove_node(node)
            changed = True
    return g.remove_unused_constants() or changed


@register("canonicalize")
def canonicalize(g: Graph, ctx: PassContext) -> bool:
    """Normalise Gemm, fold constants, fuse bias and ReLU into dense layers, fold BatchNorm into
    conv/dense layers, padding into windows, merge clips, drop dead code."""
    changed_any = False
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):
            if node not in g.nodes:
                continue
            rule_applies = {"gemm": [_normalise_gemm]}.get(node.op, RULES[1:])
            for rule in rule_applies:
                if rule(g, node):
                    changed = True
                    break
        changed = _remove_dead(g) or changed
        changed_any = changed_any or changed
    return changed_any
