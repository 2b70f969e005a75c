"""Stream modules for branching networks in Verilator: fork, FIFO, add, concat, residual blocks.

Each test renders the templates into a fresh rtl/ directory with a small top module that
fits the harness (one input stream, one output stream), lints it with -Wall, and streams
frames through it with random input gaps and output backpressure, comparing with a numpy
oracle exactly. The residual tests also hold the skip FIFO sizing rule
(backends/fifo_depth.py) to the hardware: the rule's depth runs, one beat less stalls.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnfpga.backends.fifo_depth import (branch_needed, concat_join, dense_needed, identity_needed,
                                        skip_fifo_depth)
from nnfpga.backends.rtl_layers import DenseLayer, check, reference_forward
from nnfpga.backends.verilog import _dense_params, _mem_lines, _templates
from nnfpga.errors import BuildError
from nnfpga.hardware import param_words, weight_words, with_submodules
from nnfpga.hw_tests.sim import lint, simulate

LINT_OFF = "/* verilator lint_off UNUSEDSIGNAL */"
LINT_ON = "/* verilator lint_on UNUSEDSIGNAL */"


# --------------------------------------------------------------------------------------
# building a design directory


def make_design(rtl_dir: Path, modules: list[str], top: str, inp: dict, out: dict,
                mem: dict[str, str] | None = None, predicted: int | None = None) -> Path:
    """Render `modules` (template stems), write the top, .mem files and design.json."""
    rtl_dir.mkdir(parents=True, exist_ok=True)
    env = _templates()
    sources = []
    for m in with_submodules([f"nnfpga_{m}" for m in modules]):
        name = f"{m}.sv"
        (rtl_dir / name).write_text(env.get_template(f"{name}.j2").render())
        sources.append(name)
    (rtl_dir / "nnfpga_top.sv").write_text(top)
    for name, text in (mem or {}).items():
        (rtl_dir / name).write_text(text)
    design = {"top": "nnfpga_top", "sources": sources + ["nnfpga_top.sv"], "mem_files": sorted(mem or {}),
              "input": inp, "output": out}
    if predicted:
        design["predicted_cycles_per_inference"] = predicted
    (rtl_dir / "design.json").write_text(json.dumps(design, indent=2) + "\n")
    out_text = lint(rtl_dir)
    assert "%Warning" not in out_text and "%Error" not in out_text, out_text
    return rtl_dir


def stream(elements: int, bits: int, signed: bool, par: int) -> dict:
    return {"elements": elements, "bits": bits, "signed": signed, "par": par}


def ports(in_width: int, out_width: int, tlast_used: bool) -> str:
    tlast = "    input  logic s_axis_tlast,"
    if not tlast_used:
        tlast = f"    {LINT_OFF}\n{tlast}\n    {LINT_ON}"
    return f"""module nnfpga_top (
    input  logic clk,
    input  logic rst_n,
    input  logic [{in_width - 1}:0] s_axis_tdata,
    input  logic s_axis_tvalid,
    output logic s_axis_tready,
{tlast}
    output logic [{out_width - 1}:0] m_axis_tdata,
    output logic m_axis_tvalid,
    input  logic m_axis_tready,
    output logic m_axis_tlast
);
"""


def wires(prefix: str, width: int, tlast: str = "used") -> str:
    """Declarations of one internal stream; tlast "used", "unused" (lint waiver) or "none"."""
    text = f"    logic [{width - 1}:0] {prefix}_tdata;\n    logic {prefix}_tvalid, {prefix}_tready;\n"
    if tlast == "used":
        text += f"    logic {prefix}_tlast;\n"
    elif tlast == "unused":
        text += f"    {LINT_OFF}\n    logic {prefix}_tlast;\n    {LINT_ON}\n"
    return text


def conn(port: str, prefix: str, tlast: bool = True) -> str:
    names = ["tdata", "tvalid", "tready"] + (["tlast"] if tlast else [])
    return ", ".join(f".{port}_axis_{n}({prefix}_{n})" for n in names)


def fork(width: int, src: str, m0: str, m1: str, inst: str = "u_fork") -> str:
    return (f"    nnfpga_fork #(.WIDTH({width})) {inst} (.clk(clk), .rst_n(rst_n), {conn('s', src)},\n"
            f"        {conn('m0', m0)},\n        {conn('m1', m1)});\n")


def fifo(width: int, depth: int, src: str, dst: str, inst: str, ram_min: int | None = None) -> str:
    ram = f", .RAM_MIN_DEPTH({ram_min})" if ram_min is not None else ""
    return (f"    nnfpga_fifo #(.WIDTH({width}), .DEPTH({depth}){ram}) {inst} (.clk(clk), .rst_n(rst_n),\n"
            f"        {conn('s', src)}, {conn('m', dst)});\n")


def run(rtl_dir: Path, x: np.ndarray, expected: np.ndarray, work: Path, seed: int, timing_samples: int = 3):
    result = simulate(rtl_dir, x, expected, work_dir=work, gap_prob=0.3, backpressure_prob=0.3, seed=seed,
                      timing_samples=timing_samples)
    np.testing.assert_array_equal(result.outputs, expected)
    assert result.mismatches == 0
    return result


def assert_stalls(rtl_dir: Path, x: np.ndarray, expected: np.ndarray, work: Path, seed: int) -> str:
    """The harness's watchdog must report that the design stopped moving."""
    with pytest.raises(BuildError, match="the design stopped") as err:
        simulate(rtl_dir, x, expected, work_dir=work, gap_prob=0.3, backpressure_prob=0.3, seed=seed,
                 timing_samples=0)
    return str(err.value)


# --------------------------------------------------------------------------------------
# the sizing rule on paper (no simulator)


def test_needed_functions_compose_with_the_right_off_by_ones():
    d = dense_needed(k=8, n=4, pe=2, in_par=4)            # 2 beats in, 2 beats out per vector
    assert [d(j) for j in range(6)] == [2, 2, 4, 4, 6, 6]
    assert [branch_needed([])(j) for j in range(4)] == [1, 2, 3, 4]
    assert [branch_needed([identity_needed] * 3)(j) for j in range(4)] == [1, 2, 3, 4]
    # dense 8 -> 12 (4 beats in, 4 out) then 12 -> 8 (4 in, 4 out): a vector of 4 beats.
    two = branch_needed([dense_needed(8, 12, 3, 2), dense_needed(12, 8, 2, 3)])
    assert [two(j) for j in range(9)] == [4, 4, 4, 4, 8, 8, 8, 8, 12]
    # A FIFO between the denses changes nothing; a dense that halves the beats doubles the need.
    assert all(branch_needed([dense_needed(8, 12, 3, 2), identity_needed, dense_needed(12, 8, 2, 3)])(j) == two(j)
               for j in range(20))
    half = branch_needed([dense_needed(8, 8, 4, 1), dense_needed(8, 8, 1, 4)])  # 8 in, 2 mid, 8 out
    assert [half(j) for j in (0, 7, 8)] == [8, 8, 16]


def test_skip_fifo_depth_for_add_and_concat_joins():
    depth, worst, text = skip_fifo_depth(dense_needed(16, 16, 2, 2), identity_needed, out_beats=24)
    assert (depth, worst) == (7, 0)
    assert "worst j=0" in text and "needed_long=8" in text and "depth 7" in text
    assert skip_fifo_depth(identity_needed, identity_needed, 10)[0] == 0   # equal branches: no FIFO
    # Concat of a pixel with itself (both inputs straight from the fork, 4 beats each): a is
    # read first, so b must hold a pixel's 4 beats, one of them in the fork's register.
    assert skip_fifo_depth(identity_needed, identity_needed, 3 * 8, concat_join(3, 4, 4, "a"))[:2] == (3, 3)
    # Read in that order, a never waits for b: a FIFO on a would not be needed.
    assert skip_fifo_depth(identity_needed, identity_needed, 3 * 8, concat_join(3, 4, 4, "b"))[0] == 0
    # A 1x1 dense (4 beats in, 2 out per pixel) on a, b straight from the fork (4 beats):
    # a's first beat of a pixel needs the whole pixel in, b has given the earlier pixels.
    dense_a = dense_needed(8, 4, 2, 2)
    assert skip_fifo_depth(dense_a, identity_needed, 3 * 6, concat_join(3, 2, 4, "a"))[:2] == (3, 0)
    with pytest.raises(ValueError):
        dense_needed(8, 8, 3, 1)


# --------------------------------------------------------------------------------------
# FIFO alone: every storage shape, full throughput, tlast carried


# (depth, RAM_MIN_DEPTH or None for the default, latency): array storage for 2 and 3,
# the block-RAM shape forced for 3 and 37 (not a power of two), array for 5. Each is the
# smallest of its storage that passes a beat per cycle with a registered s_axis_tready.
FIFO_CHAIN = [(2, None, 1), (3, None, 1), (3, 3, 2), (37, 16, 2), (5, None, 1)]


def test_fifo_chain_of_depths_is_exact_at_one_beat_per_cycle(tmp_path):
    par, bits, beats = 2, 8, 12
    width = par * bits
    body = ports(width, width, tlast_used=True)
    names = ["s"] + [f"q{i}" for i in range(len(FIFO_CHAIN) - 1)] + ["m"]
    for n in names[1:-1]:
        body += wires(n, width)
    for i, (depth, ram_min, _) in enumerate(FIFO_CHAIN):
        src = "s_axis" if i == 0 else names[i]
        dst = "m_axis" if i == len(FIFO_CHAIN) - 1 else names[i + 1]
        body += fifo(width, depth, src, dst, f"u_fifo{i}", ram_min)
    body += "endmodule\n"
    rtl = make_design(tmp_path / "rtl", ["fifo"], body, stream(beats * par, bits, False, par),
                      stream(beats * par, bits, False, par))
    x = np.random.default_rng(1).integers(0, 256, (40, beats * par))
    result = run(rtl, x, x, tmp_path / "work", seed=11, timing_samples=4)
    # One beat per cycle through every depth, and the latencies the header states.
    assert result.cycles_per_inference == beats
    assert result.latency_cycles == beats - 1 + sum(lat for _, _, lat in FIFO_CHAIN)


def test_fifo_of_depth_one_passes_a_beat_every_other_cycle(tmp_path):
    # s_axis_tready is a register: the one slot, emptied in a cycle, takes a beat the next.
    par, bits, beats = 1, 8, 12
    body = ports(par * bits, par * bits, tlast_used=True) + fifo(par * bits, 1, "s_axis", "m_axis", "u_fifo")
    rtl = make_design(tmp_path / "rtl", ["fifo"], body + "endmodule\n", stream(beats, bits, False, par),
                      stream(beats, bits, False, par))
    x = np.random.default_rng(5).integers(0, 256, (10, beats))
    result = run(rtl, x, x, tmp_path / "work", seed=12, timing_samples=4)
    assert result.cycles_per_inference == 2 * beats
    assert result.latency_cycles == 2 * beats - 1


# --------------------------------------------------------------------------------------
# fork -> (nothing | FIFO) -> concat: the rule, and one beat less


def fork_concat_design(rtl_dir: Path, pixels: int, c: int, par: int, bits: int, depth: int) -> Path:
    width = par * bits
    body = ports(width, width, tlast_used=True)
    body += wires("f0", width, "unused") + wires("f1", width) + wires("k", width, "unused")
    body += fork(width, "s_axis", "f0", "f1")
    body += fifo(width, depth, "f1", "k", "u_skip", ram_min=2)
    body += (f"    nnfpga_concat #(.PIXELS({pixels}), .CA({c}), .CB({c}), .PAR({par}), .BITS({bits})) u_cat (\n"
             f"        .clk(clk), .rst_n(rst_n), {conn('a', 'f0', False)}, {conn('b', 'k', False)},\n"
             f"        {conn('m', 'm_axis')});\nendmodule\n")
    return make_design(rtl_dir, ["fork", "fifo", "concat"], body, stream(pixels * c, bits, True, par),
                       stream(pixels * 2 * c, bits, True, par))


def test_fork_fifo_concat_runs_at_the_rule_depth_and_stalls_below(tmp_path):
    pixels, c, par, bits = 3, 8, 2, 6
    beats = c // par
    depth, worst, why = skip_fifo_depth(identity_needed, identity_needed, pixels * 2 * beats,
                                        concat_join(pixels, beats, beats, long_input="a"))
    print(why)
    assert depth == beats - 1 and worst == beats - 1
    x = np.random.default_rng(2).integers(-32, 32, (30, pixels * c))
    pix = x.reshape(-1, pixels, c)
    expected = np.concatenate([pix, pix], axis=2).reshape(len(x), -1)
    run(fork_concat_design(tmp_path / "ok", pixels, c, par, bits, depth), x, expected, tmp_path / "w1", seed=3)
    assert_stalls(fork_concat_design(tmp_path / "short", pixels, c, par, bits, depth - 1), x, expected,
                  tmp_path / "w2", seed=3)


# --------------------------------------------------------------------------------------
# add: operands side by side in one input beat, split by a fork, a FIFO on b


def add_oracle(a, b, cfg) -> np.ndarray:
    a, b = a.astype(object), b.astype(object)
    acc = (a - cfg["A_ZP"]) * cfg["MA"] + (b - cfg["B_ZP"]) * cfg["MB"] + (1 << (cfg["SHIFT"] - 1))
    y = cfg["OUT_ZP"] + (acc >> cfg["SHIFT"])
    return np.clip(y, cfg["LO"], cfg["HI"]).astype(np.int64)


def type_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


ADD_CONFIGS = [
    # u8 + i6, signed output; large multipliers; rounding at a 15-bit shift. A FIFO on b only:
    # b then arrives a cycle after a, and a has nothing but the fork's one-beat register to
    # wait in, so the pair moves every other cycle (latency imbalance, not a deadlock).
    dict(PAR=2, A_BITS=8, A_SIGNED=0, A_ZP=131, MA=40000, B_BITS=6, B_SIGNED=1, B_ZP=-5, MB=65535,
         SHIFT=15, OUT_BITS=8, OUT_SIGNED=1, OUT_ZP=-7, LO=-100, HI=90, BEATS=5, FIFO_A=0, FIFO_B=1, RATE=2),
    # i8 + u4, unsigned output; a small shift, so many exact halves round up. FIFOs of
    # different depths but the same latency on both sides: one beat per cycle.
    dict(PAR=3, A_BITS=8, A_SIGNED=1, A_ZP=-20, MA=5, B_BITS=4, B_SIGNED=0, B_ZP=9, MB=37,
         SHIFT=3, OUT_BITS=8, OUT_SIGNED=0, OUT_ZP=128, LO=30, HI=220, BEATS=4, FIFO_A=2, FIFO_B=3, RATE=1),
]
TOP_ONLY = ("FIFO_A", "FIFO_B", "RATE", "OUT_SIGNED")


@pytest.mark.parametrize("cfg", ADD_CONFIGS, ids=["u8+i6", "i8+u4"])
def test_add_is_exact_for_signed_unsigned_zero_points_and_clamps(tmp_path, cfg):
    par, beats = cfg["PAR"], cfg["BEATS"]
    # One input element type that holds both operands: the harness packs `ew` bits per element.
    ew = max(cfg["A_BITS"] + (not cfg["A_SIGNED"]), cfg["B_BITS"] + (not cfg["B_SIGNED"]))
    width, out_width = 2 * par * ew, par * cfg["OUT_BITS"]
    aw, bw = par * cfg["A_BITS"], par * cfg["B_BITS"]
    a_bits = ", ".join(f"j_tdata[{p * ew + cfg['A_BITS'] - 1}:{p * ew}]" for p in reversed(range(par)))
    b_bits = ", ".join(f"k_tdata[{(par + p) * ew + cfg['B_BITS'] - 1}:{(par + p) * ew}]"
                       for p in reversed(range(par)))
    params = ", ".join(f".{k}({'1' + chr(39) + 'b' if k.endswith('SIGNED') else ''}{v})" for k, v in cfg.items()
                       if k not in TOP_ONLY)
    body = ports(width, out_width, tlast_used=True)
    # a takes the low PAR elements of its side's copy (j), b the high PAR elements of its own (k).
    body += f"    {LINT_OFF}\n" + wires("j", width) + wires("k", width) + f"    {LINT_ON}\n"
    body += wires("f0", width) + wires("f1", width)
    body += f"    logic [{aw - 1}:0] a_tdata;\n    logic [{bw - 1}:0] b_tdata;\n"
    body += f"    assign a_tdata = {{{a_bits}}};\n    assign b_tdata = {{{b_bits}}};\n"
    body += fork(width, "s_axis", "f0", "f1")
    for side, src, dst in (("A", "f0", "j"), ("B", "f1", "k")):
        if cfg[f"FIFO_{side}"]:
            body += fifo(width, cfg[f"FIFO_{side}"], src, dst, f"u_fifo_{side.lower()}")
        else:
            body += "".join(f"    assign {dst}_{n} = {src}_{n};\n" for n in ("tdata", "tvalid", "tlast"))
            body += f"    assign {src}_tready = {dst}_tready;\n"
    body += (f"    nnfpga_add #({params}) u_add (.clk(clk), .rst_n(rst_n),\n"
             f"        .a_axis_tdata(a_tdata), .a_axis_tvalid(j_tvalid), .a_axis_tready(j_tready),\n"
             f"        .b_axis_tdata(b_tdata), .b_axis_tvalid(k_tvalid), .b_axis_tready(k_tready),\n"
             f"        {conn('m', 'm_axis')});\nendmodule\n")
    rtl = make_design(tmp_path / "rtl", ["fork", "fifo", "add"], body,
                      stream(beats * 2 * par, ew, True, 2 * par),
                      stream(beats * par, cfg["OUT_BITS"], bool(cfg["OUT_SIGNED"]), par))

    rng = np.random.default_rng(cfg["SHIFT"])
    rows = 60
    a = rng.integers(*np.add(type_range(cfg["A_BITS"], cfg["A_SIGNED"]), (0, 1)), (rows, beats, par))
    b = rng.integers(*np.add(type_range(cfg["B_BITS"], cfg["B_SIGNED"]), (0, 1)), (rows, beats, par))
    a[0], b[0] = type_range(cfg["A_BITS"], cfg["A_SIGNED"])[0], type_range(cfg["B_BITS"], cfg["B_SIGNED"])[0]
    a[1], b[1] = type_range(cfg["A_BITS"], cfg["A_SIGNED"])[1], type_range(cfg["B_BITS"], cfg["B_SIGNED"])[1]
    x = np.concatenate([a, b], axis=2).reshape(rows, -1)
    expected = add_oracle(a, b, cfg).reshape(rows, -1)
    # The data must reach both clamps and the inside, or the test would prove less.
    assert (expected == cfg["LO"]).any() and (expected == cfg["HI"]).any()
    assert ((expected > cfg["LO"]) & (expected < cfg["HI"])).mean() > 0.3
    result = run(rtl, x, expected, tmp_path / "work", seed=5, timing_samples=4)
    assert result.cycles_per_inference == cfg["RATE"] * beats


# --------------------------------------------------------------------------------------
# concat with CA != CB, PAR > 1: input pixels carry b's channels first, the top splits them


def test_concat_of_unequal_channel_counts(tmp_path):
    pixels, ca, cb, par, bits = 3, 4, 6, 2, 5
    ba, bb = ca // par, cb // par
    width = par * bits
    body = ports(width, width, tlast_used=False)
    body += wires("sa", width, "none") + wires("sb", width, "none") + wires("k", width, "unused")
    body += f"""    // Per pixel the input holds b's {cb} channels, then a's {ca}: the first {bb} beats go to b.
    logic [{max(1, (ba + bb - 1).bit_length()) - 1}:0] beat;
    logic to_b;
    assign to_b = beat < {bb};
    assign sa_tdata = s_axis_tdata;
    assign sb_tdata = s_axis_tdata;
    assign sa_tvalid = s_axis_tvalid && !to_b;
    assign sb_tvalid = s_axis_tvalid && to_b;
    assign s_axis_tready = to_b ? sb_tready : sa_tready;
    always_ff @(posedge clk) begin
        if (!rst_n) begin
            beat <= '0;
        end else if (s_axis_tvalid && s_axis_tready) begin
            beat <= beat == {ba + bb - 1} ? '0 : beat + 1'b1;
        end
    end
    logic sb_tlast;
    assign sb_tlast = 1'b0;
"""
    # b waits in the FIFO while a's beats of the same pixel pass: it must hold all of b's, and
    # one more, since a slot freed by a beat leaving takes a new beat only from the next cycle
    # on (s_axis_tready is a register); with bb it runs a cycle per pixel slower.
    body += fifo(width, bb + 1, "sb", "k", "u_hold")
    body += (f"    nnfpga_concat #(.PIXELS({pixels}), .CA({ca}), .CB({cb}), .PAR({par}), .BITS({bits})) u_cat (\n"
             f"        .clk(clk), .rst_n(rst_n), {conn('a', 'sa', False)}, {conn('b', 'k', False)},\n"
             f"        {conn('m', 'm_axis')});\nendmodule\n")
    rtl = make_design(tmp_path / "rtl", ["fifo", "concat"], body, stream(pixels * (ca + cb), bits, False, par),
                      stream(pixels * (ca + cb), bits, False, par))
    x = np.random.default_rng(4).integers(0, 32, (40, pixels * (ca + cb)))
    pix = x.reshape(-1, pixels, cb + ca)
    expected = np.concatenate([pix[:, :, cb:], pix[:, :, :cb]], axis=2).reshape(len(x), -1)
    result = run(rtl, x, expected, tmp_path / "work", seed=6, timing_samples=4)
    assert result.cycles_per_inference == pixels * (ba + bb)


# --------------------------------------------------------------------------------------
# the residual block: fork -> (dense [-> dense]) + skip FIFO -> add


def dense_layer(rng, name: str, k: int, n: int, pe: int, simd: int, in_bits: int, in_signed: bool,
                out_bits: int, out_signed: bool) -> DenseLayer:
    lo, hi = type_range(out_bits, out_signed)
    layer = DenseLayer(name=name, weights=rng.integers(-127, 128, (k, n)), bias=rng.integers(-2000, 2000, n),
                       wbits=8, in_bits=in_bits, in_signed=in_signed, acc_bits=24,
                       mult=rng.integers(1 << 14, 1 << 16, n), shift=23, out_zp=lo + 5, lo=lo, hi=hi,
                       out_bits=out_bits, out_signed=out_signed, pe=pe, simd=simd)
    check([layer])
    return layer


def dense_instance(l: DenseLayer, in_par: int, src: str, dst: str, inst: str) -> str:
    # The parameters the Verilog backend gives the same layer (its ROM files are written here from the words).
    params, _ = _dense_params(SimpleNamespace(layer=l, params={"IN_PAR": in_par}), inst)
    plist = ", ".join(f".{k}({v})" for k, v in params)
    return (f"    nnfpga_dense #({plist}) {inst} (.clk(clk), .rst_n(rst_n),\n"
            f"        {conn('s', src, False)}, {conn('m', dst)});\n")


RES_ADD = dict(A_ZP=0, MA=23000, B_ZP=100, MB=30000, SHIFT=15, OUT_ZP=-4, LO=-128, HI=127)


def residual(rtl_dir: Path, layers: list[DenseLayer], in_par: int, pixels: int, depth: int) -> Path:
    """fork -> layers (long branch) and FIFO(depth) (skip) -> add; input u8, output i8."""
    k, last = layers[0].k, layers[-1]
    in_width = in_par * 8
    par = last.pe
    assert last.n == k and k // in_par == last.n // par
    body = ports(in_width, par * 8, tlast_used=True)
    body += wires("f0", in_width, "unused") + wires("f1", in_width) + wires("k", in_width, "unused")
    body += fork(in_width, "s_axis", "f0", "f1")
    mem, src, par_in = {}, "f0", in_par
    for i, l in enumerate(layers):
        dst = f"d{i}"
        body += wires(dst, l.pe * l.out_bits, "unused")
        body += dense_instance(l, par_in, src, dst, f"u_dense{i}")
        mem[f"u_dense{i}_w.mem"] = _mem_lines(weight_words(l), l.pe * l.simd * l.wbits)
        mem[f"u_dense{i}_p.mem"] = _mem_lines(param_words(l), l.pe * (l.mult_bits + l.acc_bits))
        src, par_in = dst, l.pe
    body += fifo(in_width, depth, "f1", "k", "u_skip")
    add = dict(PAR=par, A_BITS=last.out_bits, A_SIGNED=f"1'b{int(last.out_signed)}", B_BITS=8, B_SIGNED="1'b0",
               OUT_BITS=8, BEATS=pixels * k // par, **RES_ADD)
    body += (f"    nnfpga_add #({', '.join(f'.{n}({v})' for n, v in add.items())}) u_add (.clk(clk), .rst_n(rst_n),\n"
             f"        {conn('a', src, False)}, {conn('b', 'k', False)}, {conn('m', 'm_axis')});\nendmodule\n")
    cycles = max(max((l.n // l.pe) * (l.k // l.simd) for l in layers), k // in_par) * pixels
    return make_design(rtl_dir, ["fork", "fifo", "dense", "add"], body, stream(pixels * k, 8, False, in_par),
                       stream(pixels * k, 8, True, par), mem, predicted=cycles)


def residual_oracle(layers, x, pixels):
    k = layers[0].k
    vec = x.reshape(-1, k)
    long = reference_forward(layers, vec)[-1]
    cfg = dict(RES_ADD)
    return add_oracle(long, vec, cfg).reshape(len(x), pixels * k)


def residual_case(rng, chain: str):
    if chain == "one_dense":
        # K = N = 8, one element per beat: 8 beats per vector in and out.
        layers = [dense_layer(rng, "fc", 8, 8, pe=1, simd=2, in_bits=8, in_signed=False, out_bits=8, out_signed=True)]
        return layers, 1, [dense_needed(8, 8, 1, 1)]
    # 8 -> 12 -> 8, two elements per beat in, three between the layers, two out: 4 beats per vector.
    layers = [dense_layer(rng, "fc0", 8, 12, pe=3, simd=4, in_bits=8, in_signed=False, out_bits=8, out_signed=False),
              dense_layer(rng, "fc1", 12, 8, pe=2, simd=3, in_bits=8, in_signed=False, out_bits=8, out_signed=True)]
    return layers, 2, [dense_needed(8, 12, 3, 2), dense_needed(12, 8, 2, 3)]


@pytest.mark.parametrize("chain", ["one_dense", "two_denses"])
def test_residual_block_runs_at_the_rule_depth_and_deadlocks_one_below(tmp_path, chain):
    pixels = 3
    rng = np.random.default_rng(7 if chain == "one_dense" else 8)
    layers, in_par, funcs = residual_case(rng, chain)
    k = layers[0].k
    beats = pixels * k // layers[-1].pe
    depth, worst, why = skip_fifo_depth(branch_needed(funcs), identity_needed, beats)
    print(f"{chain}: {why}")
    assert depth == k // in_par - 1 and worst == 0

    x = rng.integers(0, 256, (12, pixels * k))
    expected = residual_oracle(layers, x, pixels)
    assert len(np.unique(expected)) > 20  # the oracle's values are not all clamped
    result = run(residual(tmp_path / "ok", layers, in_par, pixels, depth), x, expected, tmp_path / "w1", seed=9,
                 timing_samples=3)
    print(f"{chain}: depth {depth}: bit-exact; back to back {result.cycles_per_inference} cycles per frame, "
          f"latency {result.latency_cycles}")
    why_stalled = assert_stalls(residual(tmp_path / "short", layers, in_par, pixels, depth - 1), x, expected,
                                tmp_path / "w2", seed=9)
    print(f"{chain}: depth {depth - 1}: {why_stalled.splitlines()[0]}")


def test_dense_branch_joined_by_concat_runs_at_the_rule_depth(tmp_path):
    """A 1x1 convolution next to its own input: fork -> dense (8 -> 4 channels) on a, the
    pixel itself through the skip FIFO on b, concatenated to 12 channels per pixel."""
    pixels, c, ca, par = 4, 8, 4, 2
    rng = np.random.default_rng(10)
    layer = dense_layer(rng, "pw", c, ca, pe=par, simd=4, in_bits=8, in_signed=False, out_bits=8,
                        out_signed=False)
    depth, worst, why = skip_fifo_depth(dense_needed(c, ca, par, par), identity_needed,
                                        pixels * (ca + c) // par,
                                        concat_join(pixels, ca // par, c // par, long_input="a"))
    print(why)
    assert (depth, worst) == (c // par - 1, 0)
    width = par * 8
    body = ports(width, width, tlast_used=True)
    body += wires("f0", width, "unused") + wires("f1", width) + wires("k", width, "unused")
    body += wires("d0", width, "unused")
    body += fork(width, "s_axis", "f0", "f1")
    body += dense_instance(layer, par, "f0", "d0", "u_dense0")
    body += fifo(width, depth, "f1", "k", "u_skip")
    body += (f"    nnfpga_concat #(.PIXELS({pixels}), .CA({ca}), .CB({c}), .PAR({par}), .BITS(8)) u_cat (\n"
             f"        .clk(clk), .rst_n(rst_n), {conn('a', 'd0', False)}, {conn('b', 'k', False)},\n"
             f"        {conn('m', 'm_axis')});\nendmodule\n")
    mem = {"u_dense0_w.mem": _mem_lines(weight_words(layer), layer.pe * layer.simd * layer.wbits),
           "u_dense0_p.mem": _mem_lines(param_words(layer), layer.pe * (layer.mult_bits + layer.acc_bits))}
    rtl = make_design(tmp_path / "rtl", ["fork", "fifo", "dense", "concat"], body,
                      stream(pixels * c, 8, False, par), stream(pixels * (ca + c), 8, False, par), mem,
                      predicted=pixels * (ca // par) * (c // 4))
    x = rng.integers(0, 256, (12, pixels * c))
    vec = x.reshape(-1, c)
    expected = np.concatenate([reference_forward([layer], vec)[-1], vec], axis=1).reshape(len(x), -1)
    assert len(np.unique(expected[:, :ca])) > 20
    run(rtl, x, expected, tmp_path / "work", seed=12)
