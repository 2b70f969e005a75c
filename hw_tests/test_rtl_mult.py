"""nnfpga_mult's two implementations compute the same thing with the same latency.

On ECP5 targets yosys reads nnfpga_mult with NNFPGA_ECP5_DSP defined and gets a MULT18X18D
with its operand and output registers; Verilator (and every hardware test) simulates the
behavioural twin. Here yosys synthesizes the MULT18X18D branch for ECP5 (`synth_ecp5`), its
netlist is simulated with a model of the primitive written from Lattice's documentation
(fixtures/mult18x18d_model.v), and a testbench compares it cycle by cycle with the twin and
with the exact product of the operands given two cycles before.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nnfpga.backends.synth import _run_tool
from nnfpga.backends.verilog import _templates
from nnfpga.hardware import ECP5_DSP_DEFINE, MULT_STAGES
from nnfpga.hw_tests.sim import verilator_bin, verilator_env

MODEL = Path(__file__).parent / "fixtures" / "mult18x18d_model.v"
CYCLES = 3000

# (A_BITS, B_BITS, P_BITS): the dense products (input widened by a sign bit x weight), the
# requantizer's single product (acc x {0, M}), a low piece and a 2-bit top piece of a split one.
SHAPES = [(9, 8, 17), (18, 17, 35), (18, 17, 36), (2, 17, 36), (5, 3, 8)]

TESTBENCH = """
module tb (input logic clk);
    localparam int A = {a}, B = {b}, P = {p}, LATENCY = {latency};
    logic signed [A-1:0] a;
    logic signed [B-1:0] b;
    logic signed [P-1:0] p_twin, p_netlist;
    logic signed [P-1:0] expected [LATENCY + 1];
    int cycle = 0;

    nnfpga_mult #(.A_BITS(A), .B_BITS(B), .P_BITS(P)) u_twin (.clk(clk), .a(a), .b(b), .p(p_twin));
    nnfpga_mult_netlist u_netlist (.clk(clk), .a(a), .b(b), .p(p_netlist));

    function automatic logic [63:0] pick(int bits, logic [63:0] r);
        // the extremes and their neighbours often, random values otherwise
        case (r[63:61])
            3'd0: return {{1'b0, {{63{{1'b1}}}}}} >> (64 - bits);          // max
            3'd1: return ~({{1'b0, {{63{{1'b1}}}}}} >> (64 - bits));       // min
            3'd2: return '1;                                               // -1
            3'd3: return '0;
            default: return r;
        endcase
    endfunction

    always @(posedge clk) begin
        logic [63:0] ra, rb;
        ra = {{$urandom, $urandom}};
        rb = {{$urandom, $urandom}};
        a <= A'(pick(A, ra));
        b <= B'(pick(B, rb));
        expected[0] <= P'(64'(a) * 64'(b));
        for (int i = 1; i <= LATENCY; i++) expected[i] <= expected[i-1];
        cycle <= cycle + 1;
        if (cycle > LATENCY + 2) begin
            if (p_twin !== expected[LATENCY - 1] || p_netlist !== expected[LATENCY - 1]) begin
                $display("MISMATCH cycle %0d: expected %0d, twin %0d, netlist %0d",
                         cycle, expected[LATENCY - 1], p_twin, p_netlist);
                $fatal(1);
            end
        end
        if (cycle == {cycles}) begin
            $display("PASS %0d cycles", cycle);
            $finish;
        end
    end
endmodule
"""

MAIN = """
#include "Vtb.h"
#include "verilated.h"
int main(int argc, char** argv) {
    VerilatedContext context;
    context.commandArgs(argc, argv);
    Vtb top{&context};
    top.clk = 0;
    while (!context.gotFinish()) {
        top.clk = !top.clk;
        top.eval();
        context.timeInc(5);
    }
    top.final();
    return 0;
}
"""


def synthesize_mult(work: Path, shape: tuple[int, int, int]) -> str:
    """yosys's ECP5 netlist of nnfpga_mult at `shape`, renamed nnfpga_mult_netlist."""
    a, b, p = shape
    script = "\n".join([
        f"read_verilog -sv -D{ECP5_DSP_DEFINE} nnfpga_mult.sv",
        "read_verilog -lib -specify +/ecp5/cells_sim.v +/ecp5/cells_bb.v",
        f"chparam -set A_BITS {a} -set B_BITS {b} -set P_BITS {p} nnfpga_mult",
        "synth_ecp5 -top nnfpga_mult",
        "rename nnfpga_mult nnfpga_mult_netlist",
        "write_verilog -noattr -selected netlist.v",
        "tee -o stat.txt stat",
        ""])
    (work / "mult.ys").write_text(script)
    _run_tool("yosys", ["-q", "-l", "yosys.log", "-s", "mult.ys"], work, work / "yosys.out", "yosys", lambda *_: None)
    return (work / "stat.txt").read_text()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_mult18x18d_netlist_equals_the_behavioural_twin(tmp_path, shape):
    a, b, p = shape
    (tmp_path / "nnfpga_mult.sv").write_text(_templates().get_template("nnfpga_mult.sv.j2").render())
    stat = synthesize_mult(tmp_path, shape)
    # one MULT18X18D and nothing else that holds state: its own registers make the latency
    assert re.search(r"\bMULT18X18D\s+1\b|\b1\s+MULT18X18D\b", stat), stat
    assert "TRELLIS_FF" not in stat, stat
    netlist = (tmp_path / "netlist.v").read_text()
    for param in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK"):
        assert re.search(rf'\.{param}\("CLK0"\)', netlist), param

    (tmp_path / "tb.sv").write_text(TESTBENCH.format(a=a, b=b, p=p, latency=MULT_STAGES, cycles=CYCLES))
    (tmp_path / "main.cpp").write_text(MAIN)
    build = subprocess.run(
        [str(verilator_bin()), "--cc", "--exe", "--build", "-Wno-fatal", "--top-module", "tb", "-Mdir", "obj",
         "tb.sv", "nnfpga_mult.sv", "netlist.v", str(MODEL), "main.cpp"],
        cwd=tmp_path, env=verilator_env(), capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = subprocess.run([str(tmp_path / "obj" / "Vtb")], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and f"PASS {CYCLES} cycles" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]


def test_operands_wider_than_the_port_stay_behavioural(tmp_path):
    """A 19-bit operand does not fit MULT18X18D: the module falls back to `*` (yosys splits it)."""
    (tmp_path / "nnfpga_mult.sv").write_text(_templates().get_template("nnfpga_mult.sv.j2").render())
    (tmp_path / "fallback.ys").write_text("\n".join([
        f"read_verilog -sv -D{ECP5_DSP_DEFINE} nnfpga_mult.sv",
        "read_verilog -lib -specify +/ecp5/cells_sim.v +/ecp5/cells_bb.v",
        "chparam -set A_BITS 19 -set B_BITS 17 -set P_BITS 36 nnfpga_mult",
        "hierarchy -top nnfpga_mult", "proc", "tee -o cells.txt stat", ""]))
    _run_tool("yosys", ["-q", "-s", "fallback.ys"], tmp_path, tmp_path / "yosys.out", "yosys", lambda *_: None)
    cells = (tmp_path / "cells.txt").read_text()
    assert "MULT18X18D" not in cells and "$mul" in cells, cells
