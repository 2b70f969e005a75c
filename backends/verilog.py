"""SystemVerilog backend: dense layer records -> stream modules, weight ROM files, top level.

    emit_verilog(layers, out_dir)  writes out_dir/{nnfpga_dense.sv, <top>.sv, *.mem, design.json}

The templates hold the module structure; every number in them (widths, folding, requant
constants, ROM layouts) is decided here. `design.json` tells the testbench, the synthesis
flow and the reports what the top level is: sources in compile order, ROM files, the
stream formats and the cycles the folding predicts.

Output is byte-identical for the same layers, and no model name reaches the Verilog text
without `hw_identifier`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import numpy as np

from nnfpga.backends.rtl_layers import MULT_BITS, DenseLayer, LayerConfigError, check, folding_cycles
from nnfpga.hardware import dense_pipeline_stages, with_submodules

DEFAULT_TOP = "nnfpga_top"
DENSE_MODULE = "nnfpga_dense.sv"

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


def _pack(fields: list[int], bits: int) -> int:
    """Pack `fields` into one word, field 0 in the low bits, each `bits` wide."""
    mask = (1 << bits) - 1
    word = 0
    for i, f in enumerate(fields):
        word |= (int(f) & mask) << (i * bits)
    return word


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


def weight_fields(l: DenseLayer) -> np.ndarray:
    """[NF·SF, PE·SIMD] weight ROM lanes: word nf*SF + sf, lane p*SIMD + s holds W[sf*SIMD + s][nf*PE + p]."""
    nf, sf = l.n // l.pe, l.k // l.simd
    return l.weights.reshape(sf, l.simd, nf, l.pe).transpose(2, 0, 3, 1).reshape(nf * sf, l.pe * l.simd)


def param_fields(l: DenseLayer) -> np.ndarray:
    """[NF, PE] parameter ROM lanes: {M, bias} of channel nf*PE + p."""
    lanes = (l.mult.astype(np.int64) << l.acc_bits) | (l.bias.astype(np.int64) & ((1 << l.acc_bits) - 1))
    return lanes.reshape(l.n // l.pe, l.pe)


def weight_words(l: DenseLayer) -> list[int]:
    """Weight ROM: word nf*SF + sf holds W[sf*SIMD + s][nf*PE + p] at lane p*SIMD + s."""
    nf_count, sf_count = l.n // l.pe, l.k // l.simd
    words = []
    for nf in range(nf_count):
        for sf in range(sf_count):
            tile = l.weights[sf * l.simd:(sf + 1) * l.simd, nf * l.pe:(nf + 1) * l.pe]  # [SIMD, PE]
            words.append(_pack(tile.T.reshape(-1).tolist(), l.wbits))
    return words


def param_words(l: DenseLayer) -> list[int]:
    """Parameter ROM: word nf holds {M, bias} of channel nf*PE + p at lane p."""
    lane_bits = MULT_BITS + l.acc_bits
    words = []
    for nf in range(l.n // l.pe):
        lanes = []
        for p in range(l.pe):
            ch = nf * l.pe + p
            bias = int(l.bias[ch]) & ((1 << l.acc_bits) - 1)
            lanes.append((int(l.mult[ch]) << l.acc_bits) | bias)
        words.append(_pack(lanes, lane_bits))
    return words


def _layer_view(i: int, l: DenseLayer, name: str, in_par: int, src: str) -> dict:
    """Everything the template needs about one layer, with widths decided here."""
    prod_bits = l.in_bits + 1 + l.wbits  # (input widened by one sign bit) x weight
    return {
        "inst": f"u_{name}", "k": l.k, "n": l.n, "pe": l.pe, "simd": l.simd, "in_par": in_par,
        "in_bits": l.in_bits, "in_signed": l.in_signed, "wbits": l.wbits,
        "prod_bits": prod_bits, "acc_bits": l.acc_bits, "mult_bits": MULT_BITS,
        "shift": l.shift, "pipe_stages": dense_pipeline_stages(l.simd, l.acc_bits),
        "out_bits": l.out_bits, "out_zp": l.out_zp, "lo": l.lo, "hi": l.hi,
        "w_file": f"{name}_w.mem", "p_file": f"{name}_p.mem",
        "out_width": l.pe * l.out_bits, "cycles": folding_cycles(l), "src": src,
    }


def emit_verilog(layers: list[DenseLayer], out_dir: Path, *, top: str = DEFAULT_TOP,
                 in_par: int | None = None) -> list[Path]:
    """Write the accelerator's RTL into `out_dir` (created); return the files written.

    `in_par` is how many input elements the top level accepts per beat (default: the first
    layer's simd, so the input never limits the first layer); it must divide K.
    """
    check(layers)
    top = hw_identifier(top, DEFAULT_TOP)
    in_par = layers[0].simd if in_par is None else in_par
    if in_par < 1 or layers[0].k % in_par:
        raise LayerConfigError(f"in_par={in_par} must divide the input length {layers[0].k}")

    names: list[str] = []
    for i, l in enumerate(layers):
        base = hw_identifier(l.name)
        name = base if base.startswith(f"l{i}_") else f"l{i}_{base}"
        names.append(name)

    views = []
    for i, (l, name) in enumerate(zip(layers, names)):
        src = "s_axis" if i == 0 else views[-1]["inst"]
        views.append(_layer_view(i, l, name, in_par if i == 0 else layers[i - 1].pe, src))
    for v in views[:-1]:
        v["dst"] = v["inst"]
    views[-1]["dst"] = "m_axis"

    first, last = layers[0], layers[-1]
    env = _templates()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    modules = with_submodules(["nnfpga_dense"])
    files: dict[str, str] = {
        **{f"{m}.sv": env.get_template(f"{m}.sv.j2").render() for m in modules},
        f"{top}.sv": env.get_template("nnfpga_top.sv.j2").render(
            top=top, layers=views,
            in_elements=first.k, in_bits=first.in_bits, in_signed=first.in_signed,
            in_par=in_par, in_beats=first.k // in_par, in_width=in_par * first.in_bits,
            out_elements=last.n, out_bits=last.out_bits, out_signed=last.out_signed,
            out_par=last.pe, out_beats=last.n // last.pe, out_width=last.pe * last.out_bits),
    }
    for l, v in zip(layers, views):
        files[v["w_file"]] = mem_text(weight_fields(l), l.wbits)
        files[v["p_file"]] = mem_text(param_fields(l), MULT_BITS + l.acc_bits)

    cycles = [folding_cycles(l) for l in layers]
    design = {
        "top": top,
        "sources": [f"{m}.sv" for m in modules] + [f"{top}.sv"],
        "mem_files": [name for v in views for name in (v["w_file"], v["p_file"])],
        "input": {"elements": first.k, "bits": first.in_bits, "signed": first.in_signed,
                  "par": in_par, "beats": first.k // in_par},
        "output": {"elements": last.n, "bits": last.out_bits, "signed": last.out_signed,
                   "par": last.pe, "beats": last.n // last.pe},
        "layers": [{"instance": v["inst"], "k": l.k, "n": l.n, "pe": l.pe, "simd": l.simd,
                    "in_par": v["in_par"], "wbits": l.wbits, "acc_bits": l.acc_bits,
                    "cycles": c, "fill_beats": l.k // v["in_par"]}
                   for l, v, c in zip(layers, views, cycles)],
        "predicted_cycles_per_inference": predicted_interval(layers, in_par),
        "pipeline_stages_per_layer": [v["pipe_stages"] for v in views],
    }
    files["design.json"] = json.dumps(design, indent=2, sort_keys=True) + "\n"

    written = []
    for fname, text in files.items():
        path = out_dir / fname
        path.write_text(text)
        written.append(path)
    return written


def predicted_interval(layers: list[DenseLayer], in_par: int) -> int:
    """Steady-state cycles between inferences: the slowest stage of the chain.

    Each layer computes for (N/pe)·(K/simd) cycles and fills its other input buffer in
    K/in_par beats at the same time, so the interval is the largest of those numbers.
    """
    stages = []
    for i, l in enumerate(layers):
        par = in_par if i == 0 else layers[i - 1].pe
        stages += [folding_cycles(l), l.k // par]
    return int(max(stages))
