"""The const core's layer module: a dense layer with its weights hard-wired as the adder
graph of backends/const_graph.py, rendered from templates/verilog/nnfpga_const_dense.sv.j2.

    const_module_name(instance)                  nnfpga_const_<instance>: one module per layer
    render_const_dense(env, layer, module, note) the module's text (and its _mvm submodule)

Python decides every node's width, stage and operands; the template writes them out.
"""
from __future__ import annotations

import jinja2

from nnfpga.backends.const_graph import AdderGraph, const_graph, const_pipeline_stages
from nnfpga.backends.rtl_layers import DenseLayer


def const_module_name(instance: str) -> str:
    return f"nnfpga_const_{instance}"


def _literal(values, bits: int) -> str:
    """A packed constant, element 0 in the low bits, two's complement."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    total = bits * len(values)
    return f"{total}'h{word:0{(total + 3) // 4}x}"


def _signed_literal(value: int, bits: int) -> str:
    return f"-{bits}'sd{-value}" if value < 0 else f"{bits}'sd{value}"


def _graph_view(g: AdderGraph, layer: DenseLayer) -> dict:
    """Names, widths and pipeline registers of every node: node i of stage st is n{i}_s{st},
    and a node read in a later stage rides registers n{i}_s{st+1} ... to it."""
    nodes = len(g.lo)
    last_stage = g.stages
    needed = [g.stage(i) for i in range(nodes)]
    for i, a in enumerate(g.adders):
        st = g.stage(g.inputs + i)
        needed[a.a] = max(needed[a.a], st)
        needed[a.b] = max(needed[a.b], st)
    for o in g.outputs:
        if o.node is not None:
            needed[o.node] = last_stage

    def at(node: int, stage: int) -> str:
        return f"n{node}_s{stage}"

    used = {a.a for a in g.adders} | {a.b for a in g.adders} | {o.node for o in g.outputs}
    inputs = []
    for k in (k for k in range(g.inputs) if k in used):
        bits = layer.in_bits
        element = f"x[{k * bits} +: {bits}]"
        expr = f"$signed({element})" if layer.in_signed else f"$signed({{1'b0, {element}}})"
        inputs.append({"name": at(k, 0), "width": g.width(k), "expr": expr})
    adders = []
    for i, a in enumerate(g.adders):
        node = g.inputs + i
        st = g.stage(node)
        width = g.width(node)
        pass_low = a.sign_a > 0 and 0 < a.shift < width and g.width(a.a) >= a.shift
        adders.append({"name": at(node, st), "width": width, "shift": a.shift, "pass_low": pass_low,
                       "a": at(a.a, st), "b": at(a.b, st), "sign_a": "" if a.sign_a > 0 else "-",
                       "op_b": "+" if a.sign_b > 0 else "-"})
    registers = [{"name": at(i, s), "source": at(i, s - 1), "width": g.width(i)}
                 for i in range(nodes) if i in used or i >= g.inputs for s in range(g.stage(i) + 1, needed[i] + 1)]
    outputs = [{"lane": lane, "bias": _signed_literal(int(layer.bias[lane]), layer.acc_bits),
                "node": at(o.node, last_stage) if o.node is not None else "",
                "op": "+" if o.sign > 0 else "-", "shift": o.shift}
               for lane, o in enumerate(g.outputs)]
    return {"inputs": inputs, "adders": adders, "registers": registers, "outputs": outputs,
            "graph_stages": last_stage}


def render_const_dense(env: jinja2.Environment, layer: DenseLayer, module: str, note: str) -> str:
    """The Verilog of `layer` on the const core as module `module`."""
    g = const_graph(layer)
    return env.get_template("nnfpga_const_dense.sv.j2").render(
        module=module, note=note, k=layer.k, n=layer.n, in_bits=layer.in_bits, acc_bits=layer.acc_bits,
        mult_bits=layer.mult_bits, pipe_stages=const_pipeline_stages(layer), adder_count=len(g.adders),
        mult_literal=_literal(layer.mult, layer.mult_bits), **_graph_view(g, layer))


def const_params(layer: DenseLayer, in_par: int) -> list[tuple[str, object]]:
    """The const layer module's instance parameters (the weights, bias and M are in its text)."""
    return [("K", layer.k), ("N", layer.n), ("IN_PAR", in_par), ("IN_BITS", layer.in_bits),
            ("ACC_BITS", layer.acc_bits), ("MULT_BITS", layer.mult_bits), ("SHIFT", layer.shift),
            ("OUT_BITS", layer.out_bits), ("OUT_ZP", layer.out_zp), ("LO", layer.lo), ("HI", layer.hi),
            ("PIPE_STAGES", const_pipeline_stages(layer))]
