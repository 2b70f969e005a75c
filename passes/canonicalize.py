"""canonicalize: the float graph in the one form the quantizer reads.

Rewrite rules, applied to a fixed point (x activation, W/b/c constants):

    gemm(a, b, c) {α, β, tA, tB}     -> add(matmul(tA(a), α·tB(b)), β·c)   Gemm normalisation
    op(const, ..., const)            -> const                               constant folding
    add(matmul(x, W), b), b: [N]/[1,N] -> dense(x, W, b)                     bias fusion
    matmul(x, W)                     -> dense(x, W, 0)
    relu(dense(x, W, b))             -> dense(x, W, b) {relu}                ReLU fusion
    reshape(x) to x's own shape      -> x
    reshape(reshape(x))              -> reshape(x)
    unused node or constant          -> (removed)                            dead code
"""
from __future__ import annotations

import numpy as np

from nnfpga.ir import F32, Graph, Node, TensorType
from nnfpga.ir.interpreter import KERNELS
from nnfpga.passes.registry import PassContext, register

FOLDABLE = {"gemm", "matmul", "add", "mul", "relu", "transpose", "reshape", "dense"}


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


def _matmul_to_dense(g: Graph, node: Node) -> bool:
    # Only once no add can take the bias: a matmul whose single user is an add waits for _fuse_bias.
    if node.op != "matmul" or not node.inputs[1].is_const or node.inputs[0].type.shape[0] != 1:
        return False
    if any(user.op == "add" for user, _ in node.output.uses):
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


RULES = [_normalise_gemm, _fold_constant, _fuse_bias, _matmul_to_dense, _fuse_relu, _simplify_reshape]


def _remove_dead(g: Graph) -> bool:
    changed = False
    for node in reversed(list(g.nodes)):
        if all(not v.uses and v not in g.outputs for v in node.outputs):
            g.remove_node(node)
            changed = True
    return g.remove_unused_constants() or changed


@register("canonicalize")
def canonicalize(g: Graph, ctx: PassContext) -> bool:
    """Normalise Gemm, fold constants, fuse bias and ReLU into dense layers, drop dead code."""
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
