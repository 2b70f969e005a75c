"""SystemVerilog backend: a graph of stream modules (backends/stream_graph.py) -> RTL.

    emit_stream_verilog(design, out_dir)  writes out_dir/{<module>.sv ..., <top>.sv, *.mem, design.json}

Every module is a static template (templates/verilog) rendered once; the top level
instantiates them with parameters decided in Python and wires their streams. Every number
in the RTL (widths, folding, requant constants, ROM layouts from nnfpga.hardware) is
decided here. design.json tells the testbench (hw_tests/sim.py), the synthesis flow
(backends/synth.py) and the reports what the top level is: top, sources in compile order,
mem_files, the input and output stream formats, layers, instances, fifos,
predicted_cycles_per_inference and predicted_latency_cycles, both from the cycle model of
backends/stream_sim.py (`predicted_timing`).

Output is byte-identical for the same design, and no model name reaches the Verilog text
without `hw_identifier`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import numpy as np

from nnfpga.backends.const_graph import layer_pipeline_stages
from nnfpga.backends.rtl_layers import check as check_layer_chain
from nnfpga.backends.stream_graph import StreamDesign, is_image
from nnfpga.backends.stream_latency import frame_latency
from nnfpga.backends.stream_sim import simulate
from nnfpga.backends.verilog_const import const_module_name, const_params, render_const_dense
from nnfpga.cost import weight_rom_address_copies
from nnfpga.hardware import (SUBMODULES, X_COPY_LANES, folding_cycles, param_fields, schedule_field_bits,
                             schedule_fields, slice_weight_fields, weight_fields, with_submodules)

DEFAULT_TOP = "nnfpga_top"

_SV_RESERVED = frozenset("""
    accept_on alias always always_comb always_ff always_latch and assert assign assume automatic
    before begin bind bins binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle
    checker class clocking cmos config const constraint context continue cover covergroup
    coverpoint cross deassign default defparam design disable dist do edge else end endcase
    endchecker endclass endclocking endconfig endfunction endgenerate endgroup endinterface
    endmodule endpackage endprimitive endprogram endproperty endspecify endsequence endtable
    endtask enum event eventually expect export extends extern final first_match for force
    foreach forever fork forkjoin function generate genvar global highz0 highz1 if iff ifnone
    ignore_bins illegal_bins implements implies import incdir include initial inout input inside
    instance int integer interconnect interface intersect join join_any join_none large let
    liblist library local localparam logic longint macromodule matches medium modport module
    nand negedge nettype new nexttime nmos nor noshowcancelled not notif0 notif1 null or output
    package packed parameter pmos posedge primitive priority program property protected pull0
    pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent pure rand randc randcase
    randsequence rcmos real realtime ref reg reject_on release repeat restrict return rnmos rpmos
    rtran rtranif0 rtranif1 s_always s_eventually s_nexttime s_until s_until_with scalared
    sequence shortint shortreal showcancelled signed small soft solve specify specparam static
    string strong strong0 strong1 struct super supply0 supply1 sync_accept_on sync_reject_on
    table tagged task this throughout time timeprecision timeunit tran tranif0 tranif1 tri tri0
    tri1 triand trior trireg type typedef union unique unique0 unsigned until until_with untyped
    use uwire var vectored virtual void wait wait_order wand weak weak0 weak1 while wildcard wire
    with within wor xnor xor
""".split())


def hw_identifier(raw: str, fallback: str = "layer") -> str:
    """A Verilog identifier from `raw`: [a-z0-9_], a letter first, not a keyword, <= 48 chars."""
    s = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", str(raw).lower())).strip("_")[:48].strip("_")
    if not s:
        s = fallback
    if not s[0].isalpha():
        s = "n" + s
    if s in _SV_RESERVED:
        s = s + "_"
    return s


def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("nnfpga.templates", "verilog"),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


def _mem_lines(words: list[int], bits: int) -> str:
    """`$readmemh` text: one word per line, two's complement, zero-padded hex."""
    digits = (bits + 3) // 4
    mask = (1 << bits) - 1
    return "".join(f"{w & mask:0{digits}x}\n" for w in words)


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def mem_text(fields: np.ndarray, bits: int, chunk: int = 1 << 16) -> str:
    """`$readmemh` text of words packed from `fields` [words, lanes] (lane 0 in the low bits,
    each `bits` wide, two's complement): the same text as `_mem_lines` on the packed words,
    computed with numpy so a layer of millions of weights takes seconds."""
    fields = np.asarray(fields, np.int64)
    words, lanes = fields.shape
    width = lanes * bits
    digits = (width + 3) // 4
    out = []
    for start in range(0, words, chunk):
        f = fields[start:start + chunk] & ((1 << bits) - 1)
        lsb_first = ((f[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(len(f), width)
        padded = np.zeros((len(f), digits * 4), np.uint8)
        padded[:, :width] = lsb_first
        nibbles = padded.reshape(len(f), digits, 4) @ np.array([1, 2, 4, 8], np.uint8)
        chars = _HEX[nibbles[:, ::-1]]
        out.append(np.concatenate([chars, np.full((len(f), 1), ord("\n"), np.uint8)], axis=1).tobytes())
    return b"".join(out).decode()


INPUT_TLAST = {"nnfpga_fork", "nnfpga_fifo"}
"""Modules with an s_axis_tlast input port (the others delimit frames by counting)."""
LAST_MODULE_TLAST = "last_unused"
"""The wire the last module's own tlast goes to: the top level counts output beats itself."""


def _dense_params(inst, name: str) -> tuple[list[tuple[str, object]], dict[str, str]]:
    """The nnfpga_dense instance's parameters, with every width decided here (the one place
    they are written), and its two ROM files."""
    l = inst.layer
    v = {"in_par": inst.params["IN_PAR"], "prod_bits": l.in_bits + 1 + l.wbits,  # (input widened by a sign bit) x weight
         "w_file": f"{name}_w.mem", "p_file": f"{name}_p.mem"}
    params = [("K", l.k), ("N", l.n), ("PE", l.pe), ("SIMD", l.simd), ("IN_PAR", v["in_par"]),
              ("IN_BITS", l.in_bits), ("IN_SIGNED", f"1'b{int(l.in_signed)}"), ("W_BITS", l.wbits),
              ("PROD_BITS", v["prod_bits"]), ("ACC_BITS", l.acc_bits), ("MULT_BITS", l.mult_bits),
              ("SHIFT", l.shift), ("OUT_BITS", l.out_bits), ("OUT_ZP", l.out_zp), ("LO", l.lo), ("HI", l.hi),
              ("PIPE_STAGES", layer_pipeline_stages(l)),
              ("CORE", f'"{l.core}"'), ("PACK", l.pack),
              *([("X_COPY_LANES", X_COPY_LANES)] if l.core in ("lut", "bitserial") else []),
              *([("W_ADDR_COPIES", copies)] if (copies := weight_rom_address_copies(l)) > 1 else []),
              ("W_FILE", f'"{v["w_file"]}"'), ("P_FILE", f'"{v["p_file"]}"')]
    mems = {v["w_file"]: mem_text(weight_fields(l), l.wbits),
            v["p_file"]: mem_text(param_fields(l), l.mult_bits + l.acc_bits)}
    if l.core == "bitserial":
        _bitserial_params(l, name, params, mems)
    return params, mems


def _bitserial_params(l, name: str, params: list, mems: dict) -> None:
    """The bitserial core's parameters and ROMs in place of the plain weight ROM: weight lanes
    are signed slices of slice_bits + 1 bits, one word per listed tile, and a schedule ROM."""
    lane_bits = l.slice_bits + 1
    sf_bits, k_bits = schedule_field_bits(l)
    s_file = f"{name}_s.mem"
    overrides = {"W_BITS": lane_bits, "PROD_BITS": l.in_bits + 1 + lane_bits}
    params[:] = [(key, overrides.get(key, value)) for key, value in params]
    params[params.index(("PACK", l.pack)) + 1:params.index(("PACK", l.pack)) + 1] = [
        ("SLICE_BITS", l.slice_bits), ("TILES", folding_cycles(l)), ("S_SF_BITS", sf_bits),
        ("S_K_BITS", k_bits)]
    params.append(("S_FILE", f'"{s_file}"'))
    mems[f"{name}_w.mem"] = mem_text(slice_weight_fields(l), lane_bits)
    mems[s_file] = mem_text(schedule_fields(l), sf_bits + k_bits + 2)


def _comment(text: str) -> str:
    """`text` safe inside a // comment of the top level: no newline, nothing a tool could read."""
    return re.sub(r"[^A-Za-z0-9_ %:.,>+-]", "_", text)


def _sv_value(key: str, value) -> str:
    if key.endswith("SIGNED") and isinstance(value, int):
        return f"1'b{int(value)}"
    return str(value)


def predicted_timing(design: StreamDesign) -> tuple[int, int | float]:
    """(latency, interval) in cycles as the harness measures them: the cycle model of
    backends/stream_sim.py, or for a design too large to simulate, the latency recurrences of
    backends/stream_latency.py and the slowest module's cycles (both ignore backpressure)."""
    timing = simulate(design)
    return timing if timing is not None else (frame_latency(design), design.interval)


def emit_stream_verilog(design: StreamDesign, out_dir: Path, *, top: str = DEFAULT_TOP) -> list[Path]:
    """Write the accelerator's RTL into `out_dir` (created); return the files written."""
    for l in design.layers:
        check_layer_chain([l])
    top = hw_identifier(top, DEFAULT_TOP)
    env = _templates()
    files: dict[str, str] = {}
    modules: list[str] = []
    views = []
    generated: dict[str, str] = {}   # per-layer modules (the const core): name -> text
    for inst in design.instances:
        name = hw_identifier(inst.name)
        module = inst.module
        if inst.layer is not None and inst.layer.core == "const":
            module = const_module_name(name)
            generated[module] = render_const_dense(env, inst.layer, module, _comment(inst.note))
            params = const_params(inst.layer, inst.params["IN_PAR"])
        elif inst.layer is not None:
            params, mems = _dense_params(inst, name)
            files.update(mems)
        else:
            params = [(k, _sv_value(k, v)) for k, v in inst.params.items()]
        if inst.module not in modules and module == inst.module:
            modules.append(inst.module)
        views.append({
            "module": module, "name": name, "params": params, "note": _comment(inst.note), "cycles": inst.cycles,
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
    modules = with_submodules(modules + [sub for sub in SUBMODULES["nnfpga_const_dense"] if generated])
    for m in modules:
        files[f"{m}.sv"] = env.get_template(f"{m}.sv.j2").render()
    for m, text in generated.items():
        files[f"{m}.sv"] = text
    files[f"{top}.sv"] = env.get_template("nnfpga_graph_top.sv.j2").render(
        top=top, instances=views, wires=wires, fifos=design.fifos, output_tlast=LAST_MODULE_TLAST, **ports)
    layers = [(inst, v) for inst, v in zip(design.instances, views) if inst.layer is not None]
    latency, interval = predicted_timing(design)
    info = {
        "top": top,
        "sources": [f"{m}.sv" for m in modules] + [f"{m}.sv" for m in generated] + [f"{top}.sv"],
        "mem_files": sorted(n for n in files if n.endswith(".mem")),
        "input": {k: ports["input"][k] for k in ("elements", "bits", "signed", "par", "beats")},
        "output": {k: ports["output"][k] for k in ("elements", "bits", "signed", "par", "beats")},
        "stream_order": {side: "channels-last (pixel by pixel, channels together)" if ports[side]["image"]
                         else "row-major" for side in ("input", "output")},
        "layers": [{"instance": v["name"], "k": i.layer.k, "n": i.layer.n, "pe": i.layer.pe, "simd": i.layer.simd,
                    "in_par": i.params["IN_PAR"], "wbits": i.layer.wbits, "acc_bits": i.layer.acc_bits,
                    "core": i.layer.core, "pack": i.layer.pack,
                    "cycles": folding_cycles(i.layer), "vectors": i.vectors,
                    "fill_beats": i.layer.k // i.params["IN_PAR"]} for i, v in layers],
        "instances": [{"name": v["name"], "module": v["module"], "cycles": v["cycles"], "note": v["note"],
                       "params": {k: p for k, p in v["params"]}} for v in views],
        "fifos": design.fifos,
        "predicted_cycles_per_inference": interval,
        "predicted_latency_cycles": latency,
        "pipeline_stages_per_layer": [layer_pipeline_stages(i.layer) for i, _ in layers],
    }
    files["design.json"] = json.dumps(info, indent=2, sort_keys=True) + "\n"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in files.items():
        (out_dir / fname).write_text(text)
        written.append(out_dir / fname)
    return written
