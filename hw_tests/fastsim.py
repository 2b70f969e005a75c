"""The fast regression path: stimulus, gaps, backpressure and checks inside the simulator.

`simulate_fast` takes the same arguments and returns the same `SimResult` as
`sim.simulate`, but the design runs under a self-checking SystemVerilog testbench
(templates/verilog/nnfpga_stream_check.sv.j2) compiled by Verilator into a plain
executable with a ten-line C++ main that toggles the clock. Nothing crosses into Python
per clock edge: inputs and expected outputs go in as hex files, the accepted output beats
and a JSON verdict (mismatching rows, lost, extra and tlast-misplaced beats, stall, timing)
come back as files.

Why a bare Verilator binary rather than cocotb starting the SV testbench: cocotb would only
start the clock and wait for the verdict, yet its clock still calls into the simulator's
GPI on every edge and its start-up costs a Python interpreter inside the simulator; a C++
loop has neither. The cocotb path (sim.py, axis_tb.py) stays for the fine-grained tests
that inspect individual handshakes.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import jinja2
import numpy as np

from nnfpga import processes
from nnfpga.errors import BuildError
from nnfpga.hw_tests.beats import pack_beats, unpack_beats
from nnfpga.hw_tests.sim import (TIMESCALE, SimResult, _tool_lines, check_request, check_sim_log, fresh_run_dir,
                                 load_design, verilator_bin, verilator_env)

TB_MODULE = "nnfpga_stream_check"
TB_TEMPLATE = "nnfpga_stream_check.sv.j2"
BINARY = "Vcheck"
MARKER = "nnfpga-fast-build.json"
PROBABILITY_STEPS = 1 << 16
"""Gap and backpressure probabilities become thresholds on 16 random bits."""

MAIN_CPP = """// Clock loop for the self-checking testbench: two evaluations per cycle until $finish.
#include <memory>
#include "verilated.h"
#include "V{tb}.h"

int main(int argc, char** argv) {{
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    auto top = std::make_unique<V{tb}>(context.get());
    top->clk = 0;
    top->eval();
    while (!context->gotFinish()) {{
        context->timeInc(5);
        top->clk = !top->clk;
        top->eval();
    }}
    top->final();
    return 0;
}}
""".format(tb=TB_MODULE)

_BUILDS: dict[str, Path] = {}


def testbench_source(design: dict) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("nnfpga.templates", "verilog"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    if design["top"] == TB_MODULE:
        raise BuildError(f"the design's top module may not be called {TB_MODULE} (the testbench's name)")
    return env.get_template(TB_TEMPLATE).render(
        top=design["top"], w_in=design["input"]["par"] * design["input"]["bits"],
        w_out=design["output"]["par"] * design["output"]["bits"],
        in_beats=design["input"]["beats"], out_beats=design["output"]["beats"])


def _build_args(mdir: Path) -> list[str]:
    # -O3 and g++ -O3 on the model (Verilator's default is -Os): on the digits MLP about
    # 1.5x the simulated cycles per CPU second, for a few seconds more of build.
    return ["--cc", "--exe", "--build", "-j", "2", "--top-module", TB_MODULE, "-O3",
            "-MAKEFLAGS", "OPT_FAST=-O3", "-MAKEFLAGS", "OPT_GLOBAL=-O2",
            "--timescale", "/".join(TIMESCALE), "-Mdir", str(mdir), "-o", BINARY]


def _build_key(rtl_dir: Path, design: dict, tb: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"verilator": importlib.metadata.version("verilator"), "args": _build_args(Path("m")),
                         "main": MAIN_CPP, "tb": tb}, sort_keys=True).encode())
    for name in list(design["sources"]) + ["|"] + list(design["mem_files"]):
        h.update(name.encode() + b"\0")
        if name != "|":
            data = (rtl_dir / name).read_bytes()
            h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _complete(build_dir: Path, key: str) -> bool:
    try:
        return ((build_dir / "obj" / BINARY).is_file()
                and json.loads((build_dir / MARKER).read_text()).get("key") == key)
    except (OSError, json.JSONDecodeError):
        return False


def build(rtl_dir: Path, design: dict, work_dir: Path) -> tuple[Path, bool, float]:
    """(the testbench executable, reused?, seconds); built beside its final place and moved in
    only when complete, so an interrupted build never looks usable."""
    tb = testbench_source(design)
    key = _build_key(rtl_dir, design, tb)
    for candidate in (_BUILDS.get(key), work_dir / f"fast-{key[:16]}"):
        if candidate is not None and _complete(candidate, key):
            _BUILDS[key] = candidate
            return candidate / "obj" / BINARY, True, 0.0
    final = work_dir / f"fast-{key[:16]}"
    staging = work_dir / f"fast-{key[:16]}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    processes.remove_on_interrupt(staging)  # from before it exists: a signal never leaves it behind
    staging.mkdir(parents=True)
    (staging / f"{TB_MODULE}.sv").write_text(tb)
    (staging / "main.cpp").write_text(MAIN_CPP)
    cmd = [str(verilator_bin()), *_build_args(staging / "obj"),
           *[str((rtl_dir / s).resolve()) for s in design["sources"]],
           str(staging / f"{TB_MODULE}.sv"), str(staging / "main.cpp")]
    log = work_dir / "fast-build.log"
    start = time.perf_counter()
    proc = processes.run(cmd, cwd=staging, env=verilator_env(), capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"Verilator could not build the testbench for {rtl_dir}:\n"
                         f"{_tool_lines(proc.stdout + proc.stderr)}\nfull log: {log}")
    seconds = time.perf_counter() - start
    (staging / MARKER).write_text(json.dumps({"key": key, "seconds": round(seconds, 3)}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    try:
        staging.rename(final)
    except OSError:
        if not _complete(final, key):  # unless a concurrent build got there first
            raise
        shutil.rmtree(staging, ignore_errors=True)
    processes.keep_on_interrupt(staging)
    _BUILDS[key] = final
    return final / "obj" / BINARY, False, seconds


def _write_beats(path: Path, rows: np.ndarray, stream: dict) -> None:
    digits = (stream["par"] * stream["bits"] + 3) // 4
    words = pack_beats(rows, stream["bits"], stream["par"])
    path.write_text("".join(f"{w:0{digits}x}\n" for row in words for w in row))


def _read_beats(path: Path, stream: dict, rows: int) -> np.ndarray:
    words = [int(line, 16) for line in path.read_text().split()]
    per_row = stream["beats"]
    values = [unpack_beats(words[r * per_row:(r + 1) * per_row], stream["bits"], stream["par"], stream["signed"])
              for r in range(rows)]
    return np.array(values, dtype=np.int64).reshape(rows, stream["elements"])


def simulate_fast(rtl_dir: Path, inputs, expected=None, *, work_dir: Path, gap_prob: float = 0.3,
                  backpressure_prob: float = 0.3, seed: int = 0, progress: Callable | None = None,
                  timing_samples: int = 8) -> SimResult:
    """`sim.simulate` with the testbench inside the simulator; see the module docstring.

    The random run's gaps and backpressure come from the testbench's own generators (seeded
    by `seed`), so they differ cycle by cycle from the cocotb path's; the outputs may not.
    """
    rtl_dir = Path(rtl_dir)
    design = load_design(rtl_dir)
    x, y = check_request(design, inputs, expected, gap_prob, backpressure_prob, timing_samples)
    report = progress or (lambda stage, done, total: None)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)

    report("verilator build", 0, 1)
    binary, cached, build_seconds = build(rtl_dir, design, work_dir)
    report("verilator build", 1, 1)

    run_dir = fresh_run_dir(work_dir / "fast-run", rtl_dir, design)
    picks = [i % len(x) for i in range(timing_samples)]  # the timing run replays the first rows
    _write_beats(run_dir / "inputs.hex", np.concatenate([x, x[picks]]), design["input"])
    if y is not None:
        _write_beats(run_dir / "expected.hex", np.concatenate([y, y[picks]]), design["output"])
    predicted = int(design.get("predicted_cycles_per_inference") or 0)
    settings = {
        "inputs": run_dir / "inputs.hex", "outputs": run_dir / "outputs.hex", "result": run_dir / "result.json",
        "random_rows": len(x), "timing_rows": timing_samples, "seed": int(seed) & 0x7FFFFFFF,
        "gap_threshold": round(gap_prob * PROBABILITY_STEPS),
        "bp_threshold": round(backpressure_prob * PROBABILITY_STEPS),
        "idle_cycles": max(16, 2 * predicted), "drain_cycles": max(64, 2 * predicted),
        "stall_cycles": max(10_000, 50 * predicted),
    }
    if y is not None:
        settings["expected"] = run_dir / "expected.hex"
    total = len(x) + timing_samples
    log = run_dir / "sim.log"
    report("simulation", 0, total)
    start = time.perf_counter()
    _run(binary, run_dir, [f"+{k}={v}" for k, v in settings.items()], log,
         lambda done: report("simulation", min(done, total), total))
    sim_seconds = time.perf_counter() - start

    text = log.read_text(errors="replace")
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise BuildError(f"simulation of {rtl_dir} produced no verdict:\n{_tool_lines(text, limit=30)}\nfull log: {log}")
    result = json.loads(result_path.read_text())
    _check_verdict(rtl_dir, result, text, log, total, design)
    report("simulation", total, total)

    outputs = _read_beats(run_dir / "outputs.hex", design["output"], total)[:len(x)]
    mismatches = 0
    if y is not None:
        mismatches = int(np.any(outputs != y, axis=1).sum())
        if mismatches != result["mismatched_rows"]:
            raise BuildError(f"testbench counted {result['mismatched_rows']} mismatching rows but the outputs "
                             f"it wrote differ from expected in {mismatches}; see {run_dir}")
        mismatches += int(result["timing_mismatched_rows"])
    latency = interval = None
    if timing_samples:
        latency = result["timing_first_out"] - result["timing_first_in"]
    if timing_samples >= 2:
        interval = (result["timing_last_out"] - result["timing_first_out"]) / (timing_samples - 1)
        interval = int(interval) if interval.is_integer() else interval
    return SimResult(outputs=outputs, mismatches=mismatches, cycles_per_inference=interval,
                     latency_cycles=latency, build_seconds=build_seconds, sim_seconds=sim_seconds,
                     build_cached=cached, cycles=int(result["cycles"]), log_path=log)


def _run(binary: Path, run_dir: Path, args: list[str], log: Path, on_done: Callable[[int], None]) -> None:
    """Run the testbench, relaying its "done N" lines; the process never outlives the call."""
    with open(log, "w") as sink, processes.popen([str(binary), *args], cwd=run_dir, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True) as proc:
        try:
            for line in proc.stdout:
                sink.write(line)
                if line.startswith("done "):
                    on_done(int(line.split()[1]))
            proc.wait()
        finally:
            if proc.poll() is None:
                processes.stop(proc)
            processes.forget(proc)


def _check_verdict(rtl_dir: Path, result: dict, text: str, log: Path, total: int, design: dict) -> None:
    """Protocol faults are errors, as in the cocotb path; mismatching values are counted.
    A misplaced tlast or an extra beat comes first: a design that does either often stalls next."""
    out_beats = design["output"]["beats"]
    check_sim_log(rtl_dir, text, log)
    if result["tlast_errors"]:
        raise BuildError(f"simulation of {rtl_dir} failed: m_axis_tlast misplaced on {result['tlast_errors']} "
                         f"output beats (first at cycle {result['first_tlast_error_cycle']}); it must be 1 exactly "
                         f"on beat {out_beats - 1} of each inference")
    if result["extra_beats"]:
        raise BuildError(f"simulation of {rtl_dir} failed: {result['extra_beats']} output beats after the "
                         f"last expected frame of a run (first at cycle {result['first_extra_cycle']}); "
                         f"{total} inferences were sent")
    if result["stalled"]:
        raise BuildError(f"simulation of {rtl_dir} failed: the design stopped: no transfer on either stream "
                         f"after cycle {result['cycles']}, with {result['beats_out'] // out_beats} of {total} "
                         f"inferences out\nfull log: {log}")
    if result["lost_beats"]:
        raise BuildError(f"simulation of {rtl_dir} failed: {result['lost_beats']} output beats never came")
