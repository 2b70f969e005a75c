"""The `nnfpga` subcommands (nnfpga/cli.py is the entry point, which states the contract):
the argument parser, one function per subcommand, and the console output. This module loads
the whole compiler; cli.main imports it once its Ctrl-C handling is in place.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from nnfpga.backends.synth import ROUTERS, build_synth, describe_critical_path
from nnfpga.build import CompileOptions, Hooks, compile_model
from nnfpga.builddir import load_build, load_npz, match_inputs
from nnfpga.devices import DEFAULT_DEVICE, DEVICES
from nnfpga.errors import BuildError, NnfpgaError
from nnfpga.finetune import finetune_lowrank
from nnfpga.frontend import load_onnx_quantized
from nnfpga.ir import print_graph
from nnfpga.ir.textio import write_npz
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.partition import with_partition
from nnfpga.report import build_report, format_text
from nnfpga.run import run_build
from nnfpga.verify import verify_build
from nnfpga.version import __version__

# Text from users (paths, names, messages quoting them) is never parsed as rich markup: it is
# printed with markup=False or as Text, whose styles are set here, not read from the string.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _say(label: str, style: str, message: str) -> None:
    err.print(Text.assemble((label, style), " ", message))


def _warn(message: str) -> None:
    _say("warning:", "yellow", message)


def error(message: str) -> None:
    _say("error:", "red", message)


def _require_simulator_tools(command: str) -> None:
    """Verilator compiles the simulation with a C++ compiler and make: say which is missing
    before anything starts."""
    compiler = os.environ.get("CXX", "g++")
    missing = [tool for tool in (compiler, "make") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{command} simulates the RTL in Verilator, which needs a C++ compiler and make: "
                         f"{' and '.join(missing)} not found on PATH (Debian/Ubuntu: apt-get install g++ make)")


def _input_shapes(items: list[str] | None) -> dict[str, list[int]] | None:
    if not items:
        return None
    shapes = {}
    for item in items:
        name, eq, dims = item.partition("=")
        try:
            if not eq:
                raise ValueError
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise NnfpgaError(f"--input-shape '{item}' must look like name=1,3,32,32") from None
    return shapes


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)  # a log or pipe gets no bar (not even a blank line)


def _bar_updater(bar: Progress):
    """A `progress(stage, done, total)` callback drawing one bar per stage."""
    tasks = {}

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)
    return progress


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=Text(title))
    for col in columns:
        table.add_column(col, justify="left" if col == columns[0] else "right")
    return table


def cmd_compile(args) -> int:
    with _progress() as bar:
        options = CompileOptions(
            pipeline=args.pipeline, calib_path=args.calib, force=args.force,
            input_shapes=_input_shapes(args.input_shape), seed=args.seed, target=args.target,
            host_ops=args.host_ops, host_target=args.host_target, target_fps=args.target_fps, freq_mhz=args.freq)
        hooks = Hooks(warn=_warn, progress=_bar_updater(bar),
                      on_dump=lambda name, text: out.print(text, end="", markup=False), dump_after=args.dump_after)
        result = compile_model(Path(args.model), Path(args.output), options, hooks)
    columns = ("layer", "K", "N", "pe", "simd", "wbits", "acc", "cycles")
    table = _table(f"{args.model} -> {args.output}", columns)
    for l in result.manifest["layers"]:
        table.add_row(*(Text(str(l[k])) for k in ("name", "k", "n", "pe", "simd", "wbits", "acc_bits", "cycles")))
    err.print(table)
    err.print(f"predicted cycles per inference: {result.manifest['predicted_cycles_per_inference']}", markup=False)
    for part in result.manifest.get("host", {}).get("parts", []):
        seconds = result.timings.get(f"tvm_{part['name']}_seconds")
        built = f"{part['library']}, TVM {seconds:.2f} s" if part["library"] else "not compiled (see above)"
        err.print(f"host {part['name']}: {', '.join(part['ops'])} -> {built}", markup=False)
    return 0


def cmd_verify(args) -> int:
    load_build(Path(args.dir))  # a clear message when DIR is not a build, before the tools are looked for
    _require_simulator_tools("verify")
    with _progress() as bar:
        result = verify_build(Path(args.dir), samples=args.samples, inputs_path=args.inputs,
                              seed=args.seed, progress=_bar_updater(bar))
    (Path(args.dir) / "verify.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.json:
        out.print(json.dumps(result, sort_keys=True), markup=False)
    else:
        for key in sorted(result):
            out.print(f"{key:32} {result[key]}", markup=False)
        verdict = Text("bit-exact", "green") if result["bit_exact"] else Text("MISMATCH", "red")
        out.print(Text.assemble(verdict, f": {result['samples'] - result['mismatches']}/{result['samples']} "
                                         "samples agree"))
    return 0 if result["bit_exact"] else 1


def _check_save_path(save: str) -> None:
    """--save is written after the whole run: refuse a path it cannot be written to first."""
    path = Path(save)
    if path.is_dir():
        raise BuildError(f"--save {save} is a directory; name the .npz file to write")
    if not path.parent.is_dir():
        raise BuildError(f"--save {save}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise BuildError(f"--save {save}: directory {path.parent} is not writable")


def cmd_run(args) -> int:
    if args.save:
        _check_save_path(args.save)
    load_build(Path(args.dir))
    if args.accelerator == "rtl":
        _require_simulator_tools("run")
    with _progress() as bar:
        result, outputs = run_build(Path(args.dir), Path(args.inputs), samples=args.samples,
                                    accelerator=args.accelerator, seed=args.seed, progress=_bar_updater(bar))
    (Path(args.dir) / "run.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.save:
        write_npz(Path(args.save), outputs)
    if args.json:
        out.print(json.dumps(result, sort_keys=True), markup=False)
    else:
        for key in sorted(result):
            out.print(f"{key:32} {result[key]}", markup=False)
    return 0


def cmd_ir(args) -> int:
    g, fixed_quant = load_onnx_quantized(Path(args.model), _input_shapes(args.input_shape))
    if args.after:
        calib = match_inputs(g, load_npz(Path(args.calib), "calibration"), "calibration data") if args.calib else None
        ctx = PassContext(calib=calib, seed=args.seed, warn=_warn, fixed_quant=fixed_quant)
        steps = with_partition(parse_pipeline(args.pipeline), g, args.host_ops)  # host ops: partition added
        g = run_pipeline(g, steps, ctx, stop_after=args.after)
    out.print(print_graph(g), end="", markup=False)
    return 0


def cmd_finetune(args) -> int:
    with _progress() as bar:
        result = finetune_lowrank(Path(args.model), Path(args.output), Path(args.train), pipeline=args.pipeline,
                                  epochs=args.epochs, seed=args.seed, force=args.force, progress=_bar_updater(bar))
    out.print(json.dumps({k: v for k, v in result.items() if k != "lowrank"}, sort_keys=True), markup=False)
    return 0


def cmd_report(args) -> int:
    report = build_report(Path(args.dir))  # also writes DIR/report.json and DIR/report.html
    if args.json:
        out.print(json.dumps(report, sort_keys=True), markup=False)
    else:
        out.print(format_text(report), markup=False)
    return 0


def cmd_build(args) -> int:
    started: dict[str, float] = {}
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)

    def progress(stage: str, done: int, total: int | None) -> None:
        # Tools report only their start and end; the spinner and clock show they are alive.
        if stage not in started:
            started[stage] = time.monotonic()
            bar.add_task(stage, total=None)
        elif total is not None and done >= total:
            _say("done", "green", f"{stage} in {time.monotonic() - started[stage]:.1f} s")
            for task in bar.tasks:
                if task.description == stage:
                    bar.remove_task(task.id)

    with bar:
        s = build_synth(Path(args.dir), target=args.target, freq_mhz=args.freq, router=args.router, force=args.force,
                        progress=progress, warn=_warn)
    table = _table(f"{args.dir}: {s['top']} on {s['target']} ({s['part']}), yosys {s['yosys']}",
                   ("resource", "used", "available", "%"))
    for key, name in (("luts", "LUTs"), ("ffs", "FFs"), ("dsps", "DSPs"), ("brams", "BRAM")):
        avail = s["available"][key]
        table.add_row(name, f"{s[key]:g}", str(avail), f"{100 * s[key] / avail:.1f}" if avail else "-")
    out.print(table)
    if s["fmax_mhz"] is not None:
        verdict = Text("met", "green") if s["timing_met"] else Text("not met", "yellow")
        out.print(Text.assemble(f"Fmax {s['fmax_mhz']:.1f} MHz (target {s['freq_mhz']:g} MHz, ", verdict,
                                f"); bitstream {Path(args.dir) / s['bitstream']} ({s['board']['pins']} pins)"))
        if not s["timing_met"] and s.get("critical_path"):
            out.print(f"critical path {describe_critical_path(s['critical_path'])}", markup=False)
    out.print(f"summary {Path(args.dir) / 'synth' / 'synth.json'}; "
              f"Vivado project {Path(args.dir) / s['vivado']['tcl']} (needs Vivado)", markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnfpga", description="Compile ONNX networks to bit-exact FPGA hardware.")
    p.add_argument("--version", action="version", version=f"nnfpga {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="model -> build directory (IR dumps, RTL, reference ONNX)")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("-o", "--output", required=True, help="build directory to create")
    c.add_argument("--target", default=DEFAULT_DEVICE, choices=list(DEVICES),
                   help="device whose budget autofold fits the design to; recorded in the build")
    c.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"pass pipeline (default: {DEFAULT_PIPELINE})")
    c.add_argument("--calib", help="calibration data .npz (one array per model input, samples on axis 0)")
    c.add_argument("--force", action="store_true", help="replace an existing build directory")
    c.add_argument("--target-fps", type=float, metavar="FPS",
                   help="the smallest design reaching FPS inferences/s (sets autofold's target_fps)")
    c.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock --target-fps is counted at (default 100 MHz)")
    c.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,..", help="fix a dynamic input shape")
    c.add_argument("--dump-after", metavar="PASS", help="print the IR after PASS (or 'all') to stdout")
    c.add_argument("--seed", type=int, default=0, help="seed for synthetic calibration data")
    c.add_argument("--host-ops", metavar="OP,..", help="also place these on the host (dense, reshape, Gemm, .., %%value)")
    c.add_argument("--host-target", default="llvm", metavar="TARGET",
                   help="TVM target for host ops (default llvm, this CPU; e.g. 'llvm -mtriple=aarch64-linux-gnu')")
    c.set_defaults(fn=cmd_compile)

    v = sub.add_parser("verify", help="simulate the RTL against onnxruntime; exit 0 iff bit-exact")
    v.add_argument("dir", help="build directory")
    v.add_argument("--samples", type=int, help=f"number of samples (default: all in --inputs, else {200})")
    v.add_argument("--inputs", help="input data .npz (samples on axis 0; an optional 'label' array)")
    v.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    v.add_argument("--seed", type=int, default=0, help="seed for random inputs, gaps and backpressure")
    v.set_defaults(fn=cmd_verify)

    u = sub.add_parser("run", help="run a build end to end (host prefix, RTL, host suffix) against the float model")
    u.add_argument("dir", help="build directory")
    u.add_argument("--inputs", required=True, help="input data .npz (samples on axis 0; an optional 'label' array)")
    u.add_argument("--samples", type=int, help="number of samples (default: all)")
    u.add_argument("--accelerator", choices=["rtl", "reference"], default="rtl",
                   help="rtl: the Verilated RTL (default); reference: onnxruntime on reference.onnx (bit-exact, faster)")
    u.add_argument("--save", metavar="OUT.npz", help="write the model outputs (one array per output)")
    u.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    u.add_argument("--seed", type=int, default=0)
    u.set_defaults(fn=cmd_run)

    i = sub.add_parser("ir", help="print the IR of a model, after a pass of the pipeline")
    i.add_argument("model")
    i.add_argument("--after", metavar="PASS", help="run the pipeline up to and including PASS")
    i.add_argument("--pipeline", default=DEFAULT_PIPELINE)
    i.add_argument("--calib", help="calibration data .npz")
    i.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,..")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--host-ops", metavar="OP,..", help="also place these on the host (dense, reshape, Gemm, .., %%value)")
    i.set_defaults(fn=cmd_ir)

    f = sub.add_parser("finetune", help="factor a model (lowrank) and fine-tune the factors with PyTorch -> float ONNX")
    f.add_argument("model", help="ONNX model file (a classifier)")
    f.add_argument("--train", required=True, metavar="FILE.npz", help="training inputs and their 'label' array")
    f.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="fine-tuned float model to write")
    f.add_argument("--pipeline", default="canonicalize,lowrank", help="passes up to and including lowrank")
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--force", action="store_true", help="replace an existing OUT.onnx")
    f.set_defaults(fn=cmd_finetune)

    r = sub.add_parser("report", help="summarise a build (and its last verification)")
    r.add_argument("dir")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_report)

    b = sub.add_parser("build", help="synthesize a build (yosys); on ECP5 also place, route and write a bitstream")
    b.add_argument("dir", help="build directory made by 'nnfpga compile'")
    b.add_argument("--target", choices=list(DEVICES), help="device (default: the one the build was compiled for)")
    b.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock target for nextpnr and the Vivado constraint (default: 100)")
    b.add_argument("--router", choices=ROUTERS, default=ROUTERS[0],
                   help="nextpnr-ecp5's router (default: router1; router2 finishes sooner on congested designs)")
    b.add_argument("--force", action="store_true", help="replace an existing DIR/synth")
    b.set_defaults(fn=cmd_build)
    return p
