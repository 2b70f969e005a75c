"""nnfpga_window and nnfpga_pool in Verilator, bit for bit against numpy, and their timing model.

Each test renders the module templates into a tmp dir with a small top module holding
concrete parameters (a window generator alone, a pool alone, or a window feeding a pool
as max or average pooling), lints it with `verilator -Wall`, and streams a few frames
through `simulate` with random input gaps and output backpressure. The oracles build the
windows with explicit loops over the definition, independent of the line-buffer logic.

Timing is held to backends/stream_model.py: the measured back-to-back interval and the
latency from idle must agree with `*_cycles` and `*_latency_cycles` within SLACK cycles.
A module tested alone sits in a probe top whose output beats also carry the count of input
beats accepted so far, so every output beat, under random stalls, is checked against the
contract: it left no earlier than `*_needed_beats` input beats were in, and the input never
ran past `*_accept_limit`. (One build per configuration checks both data and contract;
Verilator builds dominate the run time.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pytest

from nnfpga.backends.stream_model import (
    WINDOW_STAGES, PoolParams, WindowParams, window_element_order, pool_accept_limit, pool_capacity_beats, pool_cycles,
    pool_latency_cycles, pool_needed_beats, pool_stages, window_accept_limit, window_capacity_beats, window_cycles,
    window_latency_cycles, window_needed_beats,
)
from nnfpga.hw_tests.beats import unpack_beats
from nnfpga.hardware import with_submodules
from nnfpga.hw_tests.sim import lint, simulate

SLACK = 3
"""Cycles the measured interval or latency may differ from the model's."""
FRAMES = 5
PROBE_BITS = 24


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("nnfpga.templates", "verilog"),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


@dataclass(frozen=True)
class Stage:
    module: str
    params: dict
    in_width: int
    out_width: int


def window_stage(p: WindowParams) -> Stage:
    return Stage("nnfpga_window", p.verilog_params(), p.PAR * p.BITS, p.out_par * p.BITS)


def pool_stage(p: PoolParams) -> Stage:
    return Stage("nnfpga_pool", p.verilog_params(), p.PAR * p.IN_BITS, p.PAR * p.OUT_BITS)


def _sv_value(name: str, value: int) -> str:
    return f"1'b{value}" if name == "IN_SIGNED" else str(value)


def top_module(stages: list[Stage], probe: bool = False) -> str:
    """A top with the accelerator port names (see hw_tests/fixtures/pair_diff) chaining `stages`.

    With `probe`, each output beat is {input beats accepted so far (this cycle's included),
    the design's output beat}, PROBE_BITS more bits wide.
    """
    data_width = stages[-1].out_width
    out_width = data_width + (PROBE_BITS if probe else 0)
    text = [f"""// Test top: {' -> '.join(s.module for s in stages)}{' (probe)' if probe else ''}.
module nnfpga_top (
    input  logic clk,
    input  logic rst_n,
    input  logic [{stages[0].in_width - 1}:0] s_axis_tdata,
    input  logic s_axis_tvalid,
    output logic s_axis_tready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic s_axis_tlast,
    /* verilator lint_on UNUSEDSIGNAL */
    output logic [{out_width - 1}:0] m_axis_tdata,
    output logic m_axis_tvalid,
    input  logic m_axis_tready,
    output logic m_axis_tlast
);
"""]
    names = ["s_axis"] + [f"link{i}" for i in range(len(stages) - 1)] + ["m_axis"]
    for i, s in enumerate(stages[:-1]):
        text.append(f"    logic [{s.out_width - 1}:0] link{i}_tdata;\n    logic link{i}_tvalid, link{i}_tready;\n"
                    f"    /* verilator lint_off UNUSEDSIGNAL */\n    logic link{i}_tlast;\n"
                    f"    /* verilator lint_on UNUSEDSIGNAL */\n")
    if probe:
        text.append(f"    logic [{data_width - 1}:0] dut_tdata;\n    logic [{PROBE_BITS - 1}:0] accepted;\n"
                    "    always_ff @(posedge clk) begin\n"
                    "        if (!rst_n) accepted <= '0;\n"
                    "        else if (s_axis_tvalid && s_axis_tready) accepted <= accepted + 1'b1;\n"
                    "    end\n"
                    f"    assign m_axis_tdata = {{accepted + {PROBE_BITS}'(s_axis_tvalid && s_axis_tready), dut_tdata}};\n")
    for i, s in enumerate(stages):
        src, dst = names[i], names[i + 1]
        out_data = "dut_tdata" if probe and i == len(stages) - 1 else f"{dst}_tdata"
        params = ",\n".join(f"        .{k}({_sv_value(k, v)})" for k, v in s.params.items())
        text.append(f"""    {s.module} #(
{params}
    ) stage{i} (
        .clk(clk),
        .rst_n(rst_n),
        .s_axis_tdata({src}_tdata),
        .s_axis_tvalid({src}_tvalid),
        .s_axis_tready({src}_tready),
        .m_axis_tdata({out_data}),
        .m_axis_tvalid({dst}_tvalid),
        .m_axis_tready({dst}_tready),
        .m_axis_tlast({dst}_tlast)
    );
""")
    text.append("endmodule\n")
    return "".join(text)


def write_rtl(rtl: Path, stages: list[Stage], input_stream: dict, output_stream: dict, predicted: int,
              probe: bool = False) -> Path:
    rtl.mkdir(parents=True, exist_ok=True)
    env = _env()
    modules = with_submodules(sorted({s.module for s in stages}))
    for m in modules:
        (rtl / f"{m}.sv").write_text(env.get_template(f"{m}.sv.j2").render())
    (rtl / "nnfpga_top.sv").write_text(top_module(stages, probe))
    design = {"top": "nnfpga_top", "sources": [f"{m}.sv" for m in modules] + ["nnfpga_top.sv"],
              "input": input_stream, "output": output_stream, "predicted_cycles_per_inference": predicted}
    (rtl / "design.json").write_text(json.dumps(design, indent=2) + "\n")
    lint(rtl)
    return rtl


def stream(elements: int, bits: int, signed: bool, par: int) -> dict:
    return {"elements": elements, "bits": bits, "signed": signed, "par": par}


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def random_frames(rng, frames: int, elements: int, bits: int, signed: bool) -> np.ndarray:
    lo, hi = value_range(bits, signed)
    x = rng.integers(lo, hi + 1, size=(frames, elements))
    x[0, :2] = lo, hi
    return x


# --------------------------------------------------------------------------------------
# oracles


def as_stored(value: int, bits: int, signed: bool) -> int:
    """`value` truncated to `bits` bits, read back with the stream's signedness."""
    v = value & ((1 << bits) - 1)
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def window_oracle(p: WindowParams, signed: bool, x: np.ndarray) -> np.ndarray:
    img = x.reshape(len(x), p.H, p.W, p.C)
    out = np.full((len(x), p.OH, p.OW, p.KH, p.KW, p.C), as_stored(p.PAD, p.BITS, signed), dtype=np.int64)
    for oy in range(p.OH):
        for ox in range(p.OW):
            for ky in range(p.KH):
                for kx in range(p.KW):
                    iy = oy * p.SH - p.PT + ky * p.DH
                    ix = ox * p.SW - p.PL + kx * p.DW
                    if 0 <= iy < p.H and 0 <= ix < p.W:
                        out[:, oy, ox, ky, kx, :] = img[:, iy, ix, :]
    # each window's elements in the stream's order (tap blocks, channel beats, taps)
    order = window_element_order(p.KH, p.KW, p.C, p.PAR, p.taps)
    return out.reshape(len(x), p.OH * p.OW, -1)[:, :, order].reshape(len(x), -1)


def pool_oracle(p: PoolParams, x: np.ndarray) -> np.ndarray:
    win = x.reshape(len(x), p.FRAME_WINDOWS, p.P, p.C).astype(np.int64)
    if p.MODE == 0:
        return win.max(axis=2).reshape(len(x), -1)
    acc = p.BIAS + win.sum(axis=2)
    assert np.all(np.abs(acc) < 1 << (p.ACC_BITS - 1)), "test parameters: the sum must fit ACC_BITS"
    y = p.OUT_ZP + ((acc * p.MULT + (1 << (p.SHIFT - 1))) >> p.SHIFT)
    return np.clip(y, p.LO, p.HI).reshape(len(x), -1)


# --------------------------------------------------------------------------------------
# configurations

def window(C, H, W, KH, KW, *, S=(1, 1), D=(1, 1), pad=(0, 0), out=None, PAR=1, BITS=8, PAD=0, bottom_right=None,
           taps=(1, 1)):
    """WindowParams with OH, OW from bottom/right padding (default: as top/left) unless `out` is given."""
    (SH, SW), (DH, DW), (PT, PL) = S, D, pad
    if out is None:
        PB, PR = bottom_right or pad
        out = ((H + PT + PB - (KH - 1) * DH - 1) // SH + 1, (W + PL + PR - (KW - 1) * DW - 1) // SW + 1)
    return WindowParams(C=C, H=H, W=W, KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW, PT=PT, PL=PL,
                        OH=out[0], OW=out[1], PAR=PAR, BITS=BITS, PAD=PAD, TH=taps[0], TW=taps[1])


WINDOWS = {
    # name: (params, signed, (gap_prob, backpressure_prob))
    "conv3x3_pad1_par2": (window(4, 5, 6, 3, 3, pad=(1, 1), PAR=2, PAD=3), False, (0.3, 0.3)),
    "stride2x3_pad2_signed_par1": (window(3, 7, 5, 2, 2, S=(2, 3), pad=(2, 2), bottom_right=(1, 0),
                                          BITS=6, PAD=-20), True, (0.05, 0.8)),
    "dilation2_par_c": (window(2, 6, 7, 3, 3, D=(2, 2), pad=(2, 2), PAR=2, PAD=-128), True, (0.3, 0.3)),
    "1x1_pad1_top_row_all_padding": (window(4, 3, 4, 1, 1, pad=(1, 1), PAR=4, BITS=4, PAD=5), False, (0.8, 0.05)),
    "1d_h1_stride2": (window(4, 1, 10, 1, 5, S=(1, 2), pad=(0, 2), bottom_right=(0, 1), PAR=2, BITS=5,
                             PAD=1), False, (0.3, 0.3)),
    "stride_gt_kernel_unused_rows": (window(2, 8, 4, 1, 2, S=(3, 2), out=(2, 2), BITS=8), False, (0.3, 0.3)),
    # several taps per beat (taps=(TH, TW)): a kernel row, whole rows, part of a row (the probe
    # top carries a beat and a 24-bit count in one 64-bit word, so the beats stay narrow)
    "taps_row_5x5_c1_pad2": (window(1, 9, 8, 5, 5, pad=(2, 2), PAD=-3, taps=(1, 5)), True, (0.3, 0.3)),
    "taps_whole_3x3_stride2": (window(1, 7, 6, 3, 3, S=(2, 2), pad=(1, 1), BITS=4, PAD=9, taps=(3, 3)),
                               False, (0.3, 0.3)),
    "taps_whole_2x2_two_beats_per_pixel": (window(2, 5, 6, 2, 2, S=(1, 2), pad=(1, 1), BITS=5, PAD=-7,
                                                  taps=(2, 2)), True, (0.3, 0.3)),
    "taps_two_rows_dilation_dh2_dw1": (window(2, 9, 8, 4, 3, D=(2, 1), pad=(3, 1), bottom_right=(2, 0), BITS=6,
                                              PAD=5, taps=(2, 3)), False, (0.05, 0.8)),
    "taps_half_row_stride_dilation_dw2": (window(3, 6, 9, 2, 4, S=(1, 2), D=(1, 2), pad=(1, 3), PAR=3, BITS=4, PAD=-1,
                                                 taps=(1, 2)), True, (0.8, 0.05)),
}

POOLS = {
    # name: (params, (gap_prob, backpressure_prob)); MODE 0 and global pooling run behind a window below
    "sum_signed_clamped_par1": (PoolParams(C=3, P=4, PAR=1, IN_BITS=6, IN_SIGNED=1, MODE=1, ACC_BITS=10,
                                           MULT=40000, SHIFT=17, BIAS=5, OUT_BITS=6, OUT_ZP=2, LO=-5, HI=20,
                                           FRAME_WINDOWS=2), (0.05, 0.8)),
}


def _max_pool() -> tuple[WindowParams, PoolParams]:
    """MaxPool 3x3, stride 2, pads 1: PAD is the storage minimum."""
    wp = window(4, 7, 7, 3, 3, S=(2, 2), pad=(1, 1), PAR=2, PAD=-128)
    return wp, PoolParams(C=4, P=9, PAR=2, IN_BITS=8, IN_SIGNED=1, MODE=0, OUT_BITS=8,
                          FRAME_WINDOWS=wp.OH * wp.OW)


def _avg_pool() -> tuple[WindowParams, PoolParams]:
    """AveragePool 2x2, stride 2, pads 1, count_include_pad: PAD is the zero point, sum / 4."""
    zp = 7
    wp = window(3, 5, 5, 2, 2, S=(2, 2), pad=(1, 1), PAR=3, PAD=zp)
    return wp, PoolParams(C=3, P=4, PAR=3, IN_BITS=8, IN_SIGNED=0, MODE=1, ACC_BITS=12, MULT=1 << 14,
                          SHIFT=16, BIAS=-4 * zp, OUT_BITS=8, OUT_ZP=zp, LO=0, HI=255,
                          FRAME_WINDOWS=wp.OH * wp.OW)


def _global_avg_pool() -> tuple[WindowParams, PoolParams]:
    """GlobalAveragePool: a window as large as the image (KH = H, KW = W) passes the image
    through in raster order, which is what a pool with P = H*W takes alone."""
    zp = 10
    wp = window(6, 3, 4, 3, 4, PAR=3, PAD=0)
    return wp, PoolParams(C=6, P=12, PAR=3, IN_BITS=8, IN_SIGNED=0, MODE=1, ACC_BITS=13, MULT=43691,
                          SHIFT=19, BIAS=-12 * zp, OUT_BITS=8, OUT_ZP=-3, LO=-128, HI=127)


CHAINS = {
    # name: (window, pool, input signed, output signed)
    "max_pool_3x3_s2_pad1_signed": (*_max_pool(), True, True),
    "avg_pool_2x2_s2_pad1_unsigned": (*_avg_pool(), False, False),
    "global_avg_pool_unsigned_to_signed": (*_global_avg_pool(), False, True),
}


def check_timing(result, cycles: int, latency: int) -> None:
    print(f"cycles per frame: measured {result.cycles_per_inference}, model {cycles}; "
          f"latency: measured {result.latency_cycles}, model {latency}")
    assert abs(result.cycles_per_inference - cycles) <= SLACK
    assert abs(result.latency_cycles - latency) <= SLACK


def probed_run(tmp_path: Path, stages: list[Stage], in_stream: dict, expected: np.ndarray, out_bits: int,
               out_signed: bool, par: int, x: np.ndarray, predicted: int, probs: tuple[float, float],
               seed: int):
    """Simulate `stages` in the probe top; check their data against `expected`.

    Returns the SimResult and, per frame and output beat, the input beats accepted when
    that beat was taken.
    """
    data_bits = par * out_bits
    beats = expected.shape[1] // par
    rtl = write_rtl(tmp_path / "rtl", stages, in_stream, stream(beats, data_bits + PROBE_BITS, False, 1),
                    predicted, probe=True)
    result = simulate(rtl, x, work_dir=tmp_path / "sim", gap_prob=probs[0], backpressure_prob=probs[1], seed=seed)
    words = result.outputs
    data = np.array([unpack_beats([int(w) & ((1 << data_bits) - 1) for w in row], out_bits, par, out_signed)
                     for row in words], dtype=np.int64)
    bad = np.flatnonzero(np.any(data != expected, axis=1))
    assert len(bad) == 0, f"frames {bad.tolist()} differ; first: {data[bad[0]].tolist()} != {expected[bad[0]].tolist()}"
    return result, words >> data_bits


def check_contract(counts: np.ndarray, in_beats: int, out_beats: int, needed, limit) -> None:
    """needed(j) <= input beats accepted when output beat j is taken <= limit(beats taken)."""
    for f in range(len(counts)):
        for j in range(out_beats):
            count = int(counts[f, j])
            assert count >= f * in_beats + needed(j), f"frame {f} beat {j}: only {count} input beats in"
            assert count <= limit(f * out_beats + j + 1), f"frame {f} beat {j}: {count} input beats in"


# --------------------------------------------------------------------------------------
# tests


MODULES = {**{name: v[0] for name, v in WINDOWS.items()}, **{name: v[0] for name, v in POOLS.items()},
           **{f"{name}.{i}": v[i] for name, v in CHAINS.items() for i in (0, 1)}}


@pytest.mark.parametrize("name", list(MODULES))
def test_model_cannot_deadlock(name):
    """Output beat j's inputs can always be taken once j beats have left (two frames)."""
    p = MODULES[name]
    if isinstance(p, WindowParams):
        needed, limit = window_needed_beats, window_accept_limit
        assert window_capacity_beats(p) == p.rows * p.row_beats or p.out_row_beats <= WINDOW_STAGES
    else:
        needed, limit = pool_needed_beats, pool_accept_limit
        assert pool_capacity_beats(p) >= needed(p, 0)
    for f in range(2):
        for j in range(p.out_beats):
            assert f * p.in_beats + needed(p, j) <= limit(p, f * p.out_beats + j)


@pytest.mark.parametrize("name", list(WINDOWS))
def test_window_is_bit_exact_on_time_and_keeps_its_contract(tmp_path, name):
    p, signed, probs = WINDOWS[name]
    x = random_frames(np.random.default_rng(len(name)), FRAMES, p.H * p.W * p.C, p.BITS, signed)
    result, counts = probed_run(tmp_path, [window_stage(p)], stream(p.H * p.W * p.C, p.BITS, signed, p.PAR),
                                window_oracle(p, signed, x), p.BITS, signed, p.out_par, x, window_cycles(p),
                                probs, seed=11)
    assert window_cycles(p) >= max(p.in_beats, p.out_beats)
    check_timing(result, window_cycles(p), window_latency_cycles(p))
    check_contract(counts, p.in_beats, p.out_beats, lambda j: window_needed_beats(p, j),
                   lambda e: window_accept_limit(p, e))


@pytest.mark.parametrize("name", list(POOLS))
def test_pool_is_bit_exact_on_time_and_keeps_its_contract(tmp_path, name):
    p, probs = POOLS[name]
    in_signed = bool(p.IN_SIGNED)
    out_signed = in_signed if p.MODE == 0 else p.LO < 0
    x = random_frames(np.random.default_rng(len(name)), 3 * FRAMES, p.in_beats * p.PAR, p.IN_BITS, in_signed)
    result, counts = probed_run(tmp_path, [pool_stage(p)], stream(p.in_beats * p.PAR, p.IN_BITS, in_signed, p.PAR),
                                pool_oracle(p, x), p.OUT_BITS, out_signed, p.PAR, x, pool_cycles(p), probs,
                                seed=12)
    check_timing(result, pool_cycles(p), pool_latency_cycles(p))
    check_contract(counts, p.in_beats, p.out_beats, lambda j: pool_needed_beats(p, j),
                   lambda e: pool_accept_limit(p, e))


@pytest.mark.parametrize("name", list(CHAINS))
def test_window_then_pool_is_bit_exact_on_time_and_keeps_the_composed_contract(tmp_path, name):
    """The contracts compose: the chain needs the window inputs of the pool's needed beats,
    and while e beats have left the pool, the window has emitted at most the pool's limit."""
    wp, pp, signed, out_signed = CHAINS[name]
    assert pp.in_beats == wp.out_beats and pool_cycles(pp) <= window_cycles(wp)
    x = random_frames(np.random.default_rng(3), FRAMES, wp.H * wp.W * wp.C, wp.BITS, signed)
    expected = pool_oracle(pp, window_oracle(wp, signed, x))
    result, counts = probed_run(tmp_path, [window_stage(wp), pool_stage(pp)],
                                stream(wp.H * wp.W * wp.C, wp.BITS, signed, wp.PAR), expected, pp.OUT_BITS,
                                out_signed, pp.PAR, x, window_cycles(wp), (0.3, 0.3), seed=13)
    # The pool takes the window's beats as they come and adds its own pipeline.
    check_timing(result, window_cycles(wp), window_latency_cycles(wp) + pool_stages(pp))
    check_contract(counts, wp.in_beats, pp.out_beats,
                   lambda j: window_needed_beats(wp, pool_needed_beats(pp, j) - 1),
                   lambda e: window_accept_limit(wp, pool_accept_limit(pp, e)))
