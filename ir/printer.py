"""IR text printer: one op per line, attributes sorted, floats exact, arrays by `@name`.

    graph @mlp(%x: tensor<1x64xf32>) {
      const %w0 : tensor<64x32x!q<i8, @w0.scale, axis=1>> = @w0
      %q = quantize(%x) : tensor<1x64x!q<u8, 0.0627>>
      %a = qmatmul(%q, %w0, %b0) : tensor<1x32xi20>
      %y = requant(%a) {hi = 255, lo = 0, mult = @m0, shift = 15} : tensor<1x32x!q<u8, 0.05>>
      return %y
    }
"""
from __future__ import annotations

import json

from nnfpga.errors import IRError
from nnfpga.ir.graph import ArrayRef, Graph, Node
from nnfpga.ir.types import FloatType, IntType, QuantType, TensorType, format_float


def format_attr(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(x) for x in value) + "]"
    if isinstance(value, (ArrayRef, TensorType, FloatType, IntType, QuantType)):
        return repr(value)
    raise IRError(f"attribute value {value!r} has no text form")


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    args = ", ".join(f"%{v.name}" for v in node.inputs)
    attrs = ""
    if node.attrs:
        attrs = " {" + ", ".join(f"{k} = {format_attr(node.attrs[k])}" for k in sorted(node.attrs)) + "}"
    types = ", ".join(repr(v.type) for v in node.outputs)
    return f"{outs} = {node.op}({args}){attrs} : {types}"


def print_graph(g: Graph) -> str:
    params = ", ".join(f"%{v.name}: {v.type!r}" for v in g.inputs)
    lines = [f"graph @{g.name}({params}) {{"]
    for c in g.constants:
        lines.append(f"  const %{c.name} : {c.type!r} = @{c.array}")
    for node in g.nodes:
        lines.append("  " + format_node(node))
    lines.append("  return " + ", ".join(f"%{v.name}" for v in g.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
