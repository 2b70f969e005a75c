"""Vitis HLS C++ for a graph of stream modules (backends/stream_graph.py): convolutional and
branching networks.

    emit_hls_graph(design, out_dir)   writes out_dir/hls/* and out_dir/project/vitis_hls.tcl

The files, the top function's interface, the testbench and the Vitis project come from the
shared parts in backends/hls.py, whose `csim` runs the design. Streams carry one element
per transfer, images channels-last, and each instance becomes:

    nnfpga_dense     the dense layer process (templates/hls/nnfpga_dense.j2), once per vector of the frame (a conv:
                     one vector per output pixel, K = kh·kw·C in window order)
    nnfpga_window    a line buffer that reads input rows only as the next output row needs
                     them (stream_model.WindowParams.need_rows, the RTL's rule), then emits
                     that row's windows with PAD outside the image, each in the RTL window's
                     beat order (stream_model.window_element_order; (ky, kx, c) at one tap per beat)
    nnfpga_pool, nnfpga_add, nnfpga_concat   the RTL module's arithmetic, element by element
    nnfpga_fork      a process copying each element to two streams
    nnfpga_fifo      no process: the stream it sits on gets `#pragma HLS STREAM depth=`
                     (its DEPTH beats times the elements per beat)
    nnfpga_repack    no process: with one element per transfer its two sides are one stream

Processes are called in the order data flows through them (C simulation runs them one
after another, so a reader must come after its writer; DATAFLOW expects the same order).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from nnfpga.backends import stream_model
from nnfpga.backends.hls import (DEFAULT_CLOCK_NS, DEFAULT_PART, DEFAULT_TOP, _MAX_EXACT, _c_array,
                                 _check_layer, _core, _int_type, _layer_context, _layer_names,
                                 _literal, _range, c_identifier, check_target, port_context,
                                 render_design, test_vector_files)
from nnfpga.backends.stream_graph import Instance, StreamDesign, data_order, is_image
from nnfpga.errors import BuildError

NO_PROCESS = ("nnfpga_fifo", "nnfpga_repack")
"""Modules that become a stream (a depth, or nothing) instead of a process."""
PORT_ORDER = ("s_axis", "a_axis", "b_axis", "m_axis", "m0_axis", "m1_axis")
"""A process's arguments in this order: its inputs, then its outputs."""
DEFAULT_DEPTH = 2
"""Depth of a stream between two processes that needs no skip FIFO."""


def _comment(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_ %:.,>x+-]", "_", text)


def _streams(design: StreamDesign, order: list[Instance]) -> tuple[dict[int, dict], list[dict]]:
    """The C++ stream of every Stream (by id) and the streams the top declares. A FIFO's or a
    repack's output is its input's stream; a FIFO deepens it."""
    port_in = {"name": "in", "type": _int_type(design.input.bits, design.input.signed), "depth": 0, "fifo": ""}
    streams: dict[int, dict] = {id(design.input): port_in}
    declared: list[dict] = []
    for inst in order:
        for s in inst.outputs.values():
            if inst.module not in NO_PROCESS:
                streams[id(s)] = {"name": f"stream_{len(declared) + 1}", "type": _int_type(s.bits, s.signed),
                                  "depth": DEFAULT_DEPTH, "fifo": ""}
                declared.append(streams[id(s)])
                continue
            src = inst.inputs["s_axis"]
            entry = streams[id(src)]
            if entry is port_in:
                raise BuildError(f"{inst.name}: a {inst.module} on the top-level input has no stream of its own")
            if (s.bits, s.signed) != (src.bits, src.signed):
                raise BuildError(f"{inst.name}: a {inst.module} must not change the element type")
            if inst.module == "nnfpga_fifo":
                entry["depth"] = max(entry["depth"], inst.params["DEPTH"] * src.par)
                entry["fifo"] = f"skip FIFO {inst.name}: {inst.params['DEPTH']} beats of {src.par} elements"
            streams[id(s)] = entry
    out = streams[id(design.output)]
    if out is port_in:
        raise BuildError("the stream design computes nothing: its output is its input")
    declared.remove(out)
    out["name"] = "out"
    return streams, declared


def _order(v) -> str:
    if not is_image(v):
        return "row-major"
    shape = v.type.shape[2:] + v.type.shape[1:2]
    return f"channels-last ({' x '.join(map(str, shape))}, pixel by pixel, each pixel's channels together)"


def _plus(v: int) -> str:
    """`+ v` as C++ that reads well for negative v too (`- 4`, not `+ -4`)."""
    return f"+ {_literal(v)}" if v >= 0 else f"- {_literal(-v)}"


def _pad(value: int, bits: int, signed: bool) -> str:
    """The window's PAD as the stream element it becomes (the RTL truncates it to BITS bits)."""
    lo, _ = _range(bits, signed)
    return _literal((int(value) - lo) % (1 << bits) + lo)


def _process(inst: Instance, name: str, types: dict, cores, index: int) -> dict:
    """Template context of one process (`index`: its place among the processes); Python decides
    every number."""
    ins = [inst.inputs[p] for p in PORT_ORDER if p in inst.inputs]
    outs = [inst.outputs[p] for p in PORT_ORDER if p in inst.outputs]
    p = inst.params
    ctx = {"module": inst.module, "name": name, "note": _comment(inst.note),
           "args": [types[id(s)]["name"] for s in ins + outs]}
    type_of = lambda s: _int_type(s.bits, s.signed)  # noqa: E731
    if inst.module == "nnfpga_dense":
        layer = inst.layer
        _check_layer(index, layer)
        for side, s, bits, signed in (("input", ins[0], layer.in_bits, layer.in_signed),
                                      ("output", outs[0], layer.out_bits, layer.out_signed)):
            if (s.bits, s.signed) != (bits, signed):
                raise BuildError(f"{name}: its {side} stream carries {type_of(s)} but the layer has "
                                 f"{_int_type(bits, signed)}")
        if ins[0].beats * ins[0].par != inst.vectors * layer.k:
            raise BuildError(f"{name}: {ins[0].beats * ins[0].par} input elements per frame are not "
                             f"{inst.vectors} vectors of K={layer.k}")
        ctx.update(_layer_context(layer, name, _core(layer, cores), inst.vectors))
    elif inst.module == "nnfpga_window":
        w = stream_model.WindowParams(**p)
        need = [w.need_rows(oy) for oy in range(w.OH)]
        ctx.update({k: getattr(w, k) for k in ("C", "H", "W", "KH", "KW", "SH", "SW", "DH", "DW", "PT", "PL",
                                                 "OH", "OW", "PAR", "TH", "TW")},
                   type=type_of(ins[0]), row_len=w.W * w.C, need_init=_c_array(np.array(need)),
                   rows=max(n - w.free_rows(oy) for oy, n in enumerate(need)),
                   pad=_pad(w.PAD, ins[0].bits, ins[0].signed))
    elif inst.module == "nnfpga_pool":
        q = stream_model.PoolParams(**p)
        if q.MODE == 1 and (1 << (q.ACC_BITS - 1)) * q.MULT >= _MAX_EXACT:
            raise BuildError(f"{name}: a {q.ACC_BITS}-bit sum times {q.MULT} can reach 2^53")
        ctx.update(C=q.C, P=q.P, windows=q.FRAME_WINDOWS, max=q.MODE == 0, in_type=type_of(ins[0]),
                   out_type=type_of(outs[0]), acc_type=type_of(ins[0]) if q.MODE == 0 else _int_type(q.ACC_BITS, True),
                   acc_bits=q.ACC_BITS, bias=_literal(q.BIAS), mult=_literal(q.MULT), shift=q.SHIFT,
                   plus_out_zp=_plus(q.OUT_ZP), lo=_literal(q.LO), hi=_literal(q.HI), out_bits=outs[0].bits,
                   out_wrap="nn_wrap" if outs[0].signed else "nn_uwrap")
    elif inst.module == "nnfpga_add":
        if not 1 <= p["SHIFT"] <= 62:
            raise BuildError(f"{name}: shift {p['SHIFT']} outside 1..62")
        ctx.update(a_type=type_of(ins[0]), b_type=type_of(ins[1]), out_type=type_of(outs[0]),
                   count=p["BEATS"] * p["PAR"], shift=p["SHIFT"], out_bits=outs[0].bits,
                   out_wrap="nn_wrap" if outs[0].signed else "nn_uwrap",
                   minus_a_zp=_plus(-p["A_ZP"]), minus_b_zp=_plus(-p["B_ZP"]), plus_out_zp=_plus(p["OUT_ZP"]),
                   **{k.lower(): _literal(p[k]) for k in ("MA", "MB", "LO", "HI")})
    elif inst.module == "nnfpga_concat":
        if len({type_of(s) for s in ins + outs}) != 1:
            raise BuildError(f"{name}: concat joins {type_of(ins[0])} and {type_of(ins[1])} into {type_of(outs[0])}; "
                             "the three must be one type")
        ctx.update(type=type_of(outs[0]), pixels=p["PIXELS"], CA=p["CA"], pixel_len=p["CA"] + p["CB"])
    elif inst.module == "nnfpga_fork":
        ctx.update(type=type_of(ins[0]), count=ins[0].beats * ins[0].par)
    else:
        raise BuildError(f"the HLS backend has no process for module {inst.module} (instance {name})")
    return ctx


def emit_hls_graph(design: StreamDesign, out_dir: Path, top: str = DEFAULT_TOP, *,
                   cores: Mapping[str, str] | None = None, part: str = DEFAULT_PART,
                   clock_ns: float = DEFAULT_CLOCK_NS, test_inputs: np.ndarray | None = None,
                   test_expected: np.ndarray | None = None) -> list[Path]:
    """Write `out_dir/hls/*` and `out_dir/project/vitis_hls.tcl` for `design`; return the files.

    `cores` maps a dense layer's (model) name to "dsp" or "lut" (multipliers bound to DSPs or
    fabric); otherwise a record's `core` attribute, if any, else "dsp". `test_inputs`
    [B, elements] (and `test_expected`) in stream order (images channels-last,
    `lower.to_stream_order`) become tb_input.txt / tb_expected.txt, which the Vitis project's
    csim and cosim run; without them the testbench finds no vectors.
    """
    top = c_identifier(top, DEFAULT_TOP)
    check_target(part, clock_ns)
    order = data_order(design)
    types, declared = _streams(design, order)
    procs = [inst for inst in order if inst.module not in NO_PROCESS]
    names = _layer_names(procs, top)
    processes = [_process(inst, name, types, cores, i) for i, (inst, name) in enumerate(zip(procs, names))]
    ports = port_context(top, (design.input.bits, design.input.signed, design.input_value.type.size),
                         (design.output.bits, design.output.signed, design.output_value.type.size),
                         f"Element order: input {_order(design.input_value)}, output {_order(design.output_value)}.")
    data = test_vector_files(ports, test_inputs, test_expected)
    context = {**ports, "processes": processes, "streams": declared,
               "layers": [p for p in processes if p["module"] == "nnfpga_dense"]}
    return render_design(out_dir, context, "hls/nnfpga_graph.cpp.j2", data, part, clock_ns)
