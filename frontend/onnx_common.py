"""What the ONNX node translators share: the exception for a node nnfpga cannot take, and
small readers of ONNX nodes."""
from __future__ import annotations

import onnx
from onnx import helper

from nnfpga.errors import ModelError


class Unsupported(Exception):
    """A node of a supported op type uses an attribute, operand or shape nnfpga cannot take."""


def node_attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values (strings stay bytes, as ONNX stores them)."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def optional_input(node: onnx.NodeProto, index: int) -> str | None:
    """The name of input `index`, or None when it is absent or skipped ('')."""
    return node.input[index] if len(node.input) > index and node.input[index] else None


def describe(node: onnx.NodeProto) -> str:
    """How a message names a node: by its name, else by its first result."""
    if node.name:
        return f"node '{node.name}'"
    outputs = [o for o in node.output if o]
    return f"unnamed node producing '{outputs[0]}'" if outputs else "unnamed node"


def constant_axes(imp, node: onnx.NodeProto) -> list[int] | None:
    """Constant axes: the attribute in old opsets, input 1 in new ones; None when absent."""
    name = optional_input(node, 1)
    if name is not None:
        if not imp.is_const(name):
            raise Unsupported("its axes are computed at run time; only constant axes are supported")
        return [int(a) for a in imp.consts[name].reshape(-1)]
    if "axes" in node_attrs(node):
        return [int(a) for a in node_attrs(node)["axes"]]
    return None


def normalised_axes(node: onnx.NodeProto, axes: list[int], rank: int) -> list[int]:
    """`axes` of a rank-`rank` tensor made non-negative and sorted (ModelError when out of range)."""
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise ModelError(f"{node.op_type} ({describe(node)}): axes {axes} are repeated or lie outside "
                         f"the {rank} axes")
    return sorted(a % rank for a in axes)
