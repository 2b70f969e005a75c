"""SystemVerilog for a graph of stream modules (backends/stream_graph.py): convolutional
and branching networks.

    emit_stream_verilog(design, out_dir)  writes out_dir/{<module>.sv ..., <top>.sv, *.mem, design.json}

Every module is a static template rendered once; the top level instantiates them with
parameters decided in Python and wires their streams. design.json has the keys the
harness, synthesis and reports read for dense chains (top, sources, mem_files, input,
output, layers, predicted_cycles_per_inference) plus `instances`, `fifos` and
`predicted_latency_cycles` (backends/stream_latency.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from nnfpga.backends.rtl_layers import MULT_BITS, check as check_layer_chain, folding_cycles
from nnfpga.backends.stream_graph import StreamDesign, is_image
from nnfpga.backends.stream_latency import frame_latency
from nnfpga.backends.verilog import (DEFAULT_TOP, _layer_view, _templates, hw_identifier, mem_text, param_fields,
                                     weight_fields)
from nnfpga.hardware import dense_pipeline_stages, with_submodules

INPUT_TLAST = {"nnfpga_fork", "nnfpga_fifo"}
"""Modules with an s_axis_tlast input port (the others delimit frames by counting)."""
LAST_MODULE_TLAST = "last_unused"
"""The wire the last module's own tlast goes to: the top level counts output beats itself."""


def dense_parameters(l, in_par: int, w_file: str, p_file: str) -> list[tuple[str, object]]:
    """nnfpga_dense's parameters for layer `l` fed `in_par` elements per beat, as Verilog text values."""
    return [("K", l.k), ("N", l.n), ("PE", l.pe), ("SIMD", l.simd), ("IN_PAR", in_par),
            ("IN_BITS", l.in_bits), ("IN_SIGNED", f"1'b{int(l.in_signed)}"), ("W_BITS", l.wbits),
            ("PROD_BITS", l.in_bits + 1 + l.wbits), ("ACC_BITS", l.acc_bits), ("MULT_BITS", MULT_BITS),
            ("SHIFT", l.shift), ("OUT_BITS", l.out_bits), ("OUT_ZP", l.out_zp), ("LO", l.lo), ("HI", l.hi),
            ("PIPE_STAGES", dense_pipeline_stages(l.simd, l.acc_bits)),
            ("W_FILE", f'"{w_file}"'), ("P_FILE", f'"{p_file}"')]


def _dense_params(inst, name: str) -> tuple[list[tuple[str, object]], dict[str, str]]:
    l = inst.layer
    v = _layer_view(0, l, name, inst.params["IN_PAR"], "")
    params = dense_parameters(l, v["in_par"], v["w_file"], v["p_file"])
    mems = {v["w_file"]: mem_text(weight_fields(l), l.wbits),
            v["p_file"]: mem_text(param_fields(l), MULT_BITS + l.acc_bits)}
    return params, mems


def _sv_value(key: str, value) -> str:
    if key.endswith("SIGNED") and isinstance(value, int):
        return f"1'b{int(value)}"
    return str(value)


def emit_stream_verilog(design: StreamDesign, out_dir: Path, *, top: str = DEFAULT_TOP) -> list[Path]:
    """Write the accelerator's RTL into `out_dir` (created); return the files written."""
    for l in design.layers:
        check_layer_chain([l])
    top = hw_identifier(top, DEFAULT_TOP)
    env = _templates()
    files: dict[str, str] = {}
    modules: list[str] = []
    views = []
    for inst in design.instances:
        if inst.module not in modules:
            modules.append(inst.module)
        name = hw_identifier(inst.name)
        if inst.layer is not None:
            params, mems = _dense_params(inst, name)
            files.update(mems)
        else:
            params = [(k, _sv_value(k, v)) for k, v in inst.params.items()]
        views.append({
            "module": inst.module, "name": name, "params": params, "note": inst.note, "cycles": inst.cycles,
            "inputs": [(port, s.name, inst.module in INPUT_TLAST) for port, s in inst.inputs.items()],
            "outputs": [(port, s.name, LAST_MODULE_TLAST if s.name == "m_axis" else f"{s.name}_tlast")
                        for port, s in inst.outputs.items()],
        })
    streams = [s for inst in design.instances for s in inst.outputs.values()]
    wires = [s for s in streams if s.name not in ("s_axis", "m_axis")]
    ports = {
        "input": {"elements": design.input_value.type.size, "bits": design.input.bits, "signed": design.input.signed,
                  "par": design.input.par, "beats": design.input.beats, "width": design.input.width,
                  "image": is_image(design.input_value)},
        "output": {"elements": design.output_value.type.size, "bits": design.output.bits,
                   "signed": design.output.signed, "par": design.output.par, "beats": design.output.beats,
                   "width": design.output.width, "image": is_image(design.output_value)},
    }
    modules = with_submodules(modules)
    for m in modules:
        files[f"{m}.sv"] = env.get_template(f"{m}.sv.j2").render()
    files[f"{top}.sv"] = env.get_template("nnfpga_graph_top.sv.j2").render(
        top=top, instances=views, wires=wires, fifos=design.fifos, output_tlast=LAST_MODULE_TLAST, **ports)
    layers = [(inst, v) for inst, v in zip(design.instances, views) if inst.layer is not None]
    info = {
        "top": top,
        "sources": [f"{m}.sv" for m in modules] + [f"{top}.sv"],
        "mem_files": sorted(n for n in files if n.endswith(".mem")),
        "input": {k: ports["input"][k] for k in ("elements", "bits", "signed", "par", "beats")},
        "output": {k: ports["output"][k] for k in ("elements", "bits", "signed", "par", "beats")},
        "stream_order": {side: "channels-last (pixel by pixel, channels together)" if ports[side]["image"]
                         else "row-major" for side in ("input", "output")},
        "layers": [{"instance": v["name"], "k": i.layer.k, "n": i.layer.n, "pe": i.layer.pe, "simd": i.layer.simd,
                    "in_par": i.params["IN_PAR"], "wbits": i.layer.wbits, "acc_bits": i.layer.acc_bits,
                    "cycles": folding_cycles(i.layer), "vectors": i.vectors,
                    "fill_beats": i.layer.k // i.params["IN_PAR"]} for i, v in layers],
        "instances": [{"name": v["name"], "module": v["module"], "cycles": v["cycles"], "note": v["note"],
                       "params": {k: p for k, p in v["params"]}} for v in views],
        "fifos": design.fifos,
        "predicted_cycles_per_inference": design.interval,
        "predicted_latency_cycles": frame_latency(design),
        "pipeline_stages_per_layer": [dense_pipeline_stages(i.layer.simd, i.layer.acc_bits) for i, _ in layers],
    }
    files["design.json"] = json.dumps(info, indent=2, sort_keys=True) + "\n"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in files.items():
        (out_dir / fname).write_text(text)
        written.append(out_dir / fname)
    return written
