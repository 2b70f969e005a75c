"""`python -m bench [--quick] [--only compiler,verify,hardware,peers,fuzz,bits] [--out bench/results/]`

Measures the compiler and the hardware it makes, prints one table per section and writes
every number to one JSON file per run (named by date and machine tag). Run it from the
repository root. Sections:

  compiler   compile_model wall time and peak memory (examples, and the onnx package's
             light_resnet50 / light_vgg19, which nnfpga rejects: the unsupported ops are recorded)
  verify     Verilator build time and simulated inferences per second
  hardware   cycles per inference (measured and predicted), latency, MACs per model and
             folding; synthesis figures when nnfpga.backends.synth exists
  peers      hls4ml and da4ml on the same models and layers, when installed
  cost       the cost model's LUT/FF/DSP/BRAM and cycles against yosys and Verilator on
             MLPs and CNNs at several foldings
  quantized  models that arrive quantized (QDQ, QOperator, QONNX): output integers identical to
             onnxruntime's on the quantized model, largest difference, top-1
  lowrank    accuracy vs MACs of factored MNIST/digits models before and after fine-tuning,
             and cycles per inference factored vs whole (only when named in --only)
  fuzz       mutated example models, .npz data and pipeline strings, 10,000 cases (--quick:
             600): ok, clear errors, crashes, hangs (only when named in --only)
  split      accuracy of the MNIST and digits MLPs split between 4-bit LUT and 8-bit DSP
             parts at several ratios, against int8 (only when named in --only)
  bits       the MNIST MLP's weight bit planes and zero sign-magnitude slices, and accuracy after
             bitslice{s=2,keep=1..3} (only when named in --only)
  bitserial  MNIST MLP on the bit-serial core: cycles per inference with and without
             zero-slice skipping on the same weights, zero slices, accuracy (only when named)
  precision  accuracy vs interval of the MNIST MLP at uniform 8/6/4 bits and at per-layer bits
             chosen by the precision pass for several rates (only when named in --only)
  const      the const core against da4ml on the jet MLP's first layer (yosys synth_xilinx), and the
             whole jet MLP on it for xc7z020 (only when named in --only; --quick: the layer only)
  cores_table  DSP-only, packed, LUT-only, DSP+LUT and split 8/4 designs of every example on
             ecp5-85k, ecp5-25k and xc7z020: cycles, resources, Fmax, accuracy (only when
             named in --only; --quick: the MNIST MLP on ecp5-85k)
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console

from bench import common

SECTIONS = ("compiler", "verify", "hardware", "peers", "cost", "quantized", "lowrank", "fuzz", "split", "bits",
            "bitserial", "precision", "cores_table", "const")
ON_REQUEST = ("lowrank", "fuzz", "split", "bits", "bitserial", "precision", "cores_table", "const")
"""Sections run only when --only names them: lowrank trains models (14+ minutes), fuzz runs
10,000 compiles (about 15 minutes), split and bits run 10,000 MNIST images per row, precision
searches bits for several targets and runs two MNIST MLP designs in Verilator, cores_table
compiles and simulates 75 designs."""
MODULE_OF = {"verify": "verification", "cost": "cost_model", "const": "constcore"}
"""A section's module in bench/, where its name differs."""
ALIASES = {"compile": "compiler", "verification": "verify", "hw": "hardware", "peer": "peers", "cost_model": "cost"}


class Context:
    """What sections share: settings, the scratch directory, builds made so far, results."""

    def __init__(self, args, work: Path, err: Console):
        self.quick = args.quick
        self.seed = args.seed
        self.target = args.target
        self.work = work
        self.err = err
        self.repeat = 3 if self.quick else 10
        self.verify_samples = 200 if self.quick else 1000
        self.hw_samples = 50 if self.quick else 200
        self.peer_samples = 200 if self.quick else 450
        self.results: dict = {}
        self._builds: dict = {}
        self._synth: dict = {}
        self.synth_module, self.synth_note = common.synth_status()
        self.synth_mode = args.synth if args.synth != "auto" else ("off" if self.quick else "some")
        self.pnr = args.pnr
        if self.synth_module is not None:
            self.synth_note = {
                "off": "synthesis skipped (--quick or --synth off): yosys takes about 40 s per design here; "
                       "run without --quick, or with --synth some|all",
                "some": "synthesis (yosys, the same script for every design) on the default-fold rows and the "
                        "first da4ml layer; --synth all for every row",
                "all": "synthesis (yosys, the same script for every design) on every row",
            }[self.synth_mode] + ("; Fmax from nextpnr (--pnr)" if self.pnr and self.synth_mode != "off" else
                                  "; no Fmax, so no throughput or roofline in inferences/s: add --pnr "
                                  "(nextpnr took about 15 min for the jet default fold on 2 cores)")

    def say(self, message: str, style: str = "dim") -> None:
        self.err.print(f"[{style}]  {message}[/{style}]", highlight=False)

    def build(self, workload, fold: dict, fresh: bool = False):
        """compile_model for a workload and fold, once per run (fresh=True: a new compile)."""
        from nnfpga.build import CompileOptions, compile_model

        key = (workload.name, fold["pe"], fold["simd"])
        if key in self._builds and not fresh:
            return self._builds[key]
        out = self.work / "builds" / f"{workload.name}-pe{fold['pe']}-simd{fold['simd']}{'-fresh' if fresh else ''}"
        options = CompileOptions(pipeline=common.pipeline(fold), calib_path=workload.calib, force=True,
                                 target=self.target, seed=self.seed)
        result = compile_model(workload.model, out, options)
        self._builds.setdefault(key, result)
        return result

    def synthesize(self, rtl_dir: Path, label: str, important: bool = False, place: bool = True) -> dict | None:
        """yosys figures for a design once per run (sections share them), Fmax too with --pnr."""
        placed = self._synth.get((str(rtl_dir), True))
        if placed is not None:
            return placed
        key = (str(rtl_dir), place and self.pnr)
        if self._synth.get(key) is None:  # None: not run for this row's importance, or not yet
            self._synth[key] = common.synthesize(self, rtl_dir=rtl_dir, label=label, important=important,
                                                 place=place)
        return self._synth[key]

    def synthesize_sources(self, sources: list[str], top: str, label: str, important: bool = False) -> dict | None:
        return common.synthesize(self, sources=sources, top=top, label=label, important=important)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer samples, foldings and repeats (under 2 minutes)")
    p.add_argument("--only", default=None, help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--out", default=str(common.REPO / "bench" / "results"),
                   help="folder for the JSON result (default bench/results/)")
    p.add_argument("--target", default="ecp5-85k", help="device from nnfpga/devices.py (default ecp5-85k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default=None, help="machine tag in the file name (default: arch and core count)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (builds, logs)")
    p.add_argument("--synth", choices=("auto", "off", "some", "all"), default="auto",
                   help="yosys synthesis: auto = off with --quick, else some (default-fold rows, first da4ml layer)")
    p.add_argument("--pnr", action="store_true", help="also place and route for Fmax (nextpnr; very slow)")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown instead")
    p.add_argument("--from", dest="from_json", metavar="FILE.json", default=None,
                   help="measure nothing: print the tables of a saved result")
    args = p.parse_args(argv)
    chosen = [s for s in SECTIONS if s not in ON_REQUEST]
    if args.only:
        chosen = []
        for name in (n.strip() for n in args.only.split(",") if n.strip()):
            name = ALIASES.get(name, name)
            if name not in SECTIONS:
                p.error(f"unknown section '{name}'; sections: {', '.join(SECTIONS)}")
            chosen.append(name)
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    if not out.is_terminal:  # piped to a file: wide enough that the tables do not wrap
        out = Console(highlight=False, width=200)
    if args.from_json:
        return show_saved(Path(args.from_json), out, args.markdown)
    from nnfpga.devices import device
    from nnfpga.errors import NnfpgaError

    try:
        device(args.target)
    except NnfpgaError as e:
        err.print(f"error: {e}")
        return 2

    started = time.perf_counter()
    iso, stamp = common.now_stamp()
    work = Path(tempfile.mkdtemp(prefix="nnfpga-bench-"))
    ctx = Context(args, work, err)
    mode = "quick" if args.quick else "default"
    machine = common.machine_info()
    out.print(f"[bold]nnfpga benchmarks[/bold] — {mode} run, {iso}, machine {machine['tag']} "
              f"({machine['cpu_model']}), load average {', '.join(f'{v:.2f}' for v in machine['load_average_at_start'] or [])}")
    out.print(f"[yellow]{ctx.synth_note}[/yellow]", markup=True)

    modules = {name: section_module(name) for name in args.sections}
    record = {"schema": 1, "date": iso, "mode": mode, "sections_run": args.sections, "target": args.target,
              "seed": args.seed, "machine": machine, "synth": ctx.synth_note, "sections": {}, "errors": {}}
    for name in args.sections:
        err.print(f"[bold]▶ {name}[/bold]")
        t0 = time.perf_counter()
        try:
            result = modules[name].run(ctx)
        except Exception as e:
            tb = traceback.format_exc()
            record["errors"][name] = tb
            out.print(f"[red]section {name} failed: {type(e).__name__}: {e}[/red]")
            err.print(tb, markup=False)
            continue
        result["seconds"] = time.perf_counter() - t0
        ctx.results[name] = record["sections"][name] = result
        print_section(out, name, result, args.markdown)

    record["total_seconds"] = time.perf_counter() - started
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-{args.tag or machine['tag']}-{mode}.json"
    path.write_text(json.dumps(record, indent=1, sort_keys=True, default=_json_default) + "\n")
    out.print(f"total {common.fmt_seconds(record['total_seconds'])}; results in {path}")
    if args.keep:
        out.print(f"scratch kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if record["errors"] else 0


def section_module(name: str):
    return importlib.import_module(f"bench.{MODULE_OF.get(name, name)}")


def section_tables(name: str, result: dict) -> list:
    module = section_module(name)
    return module.tables(result) if hasattr(module, "tables") else [module.table(result)]


def print_section(out: Console, name: str, result: dict, markdown: bool) -> None:
    for table in section_tables(name, result):
        if markdown:
            out.print(common.to_markdown(table), markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(table)
    lines = [f"{name}: {common.fmt_seconds(result['seconds'])}" + ("\n" if markdown else "")]
    if name == "peers":
        lines += [f"skipped: {pkg} not installed ({s['install']})"
                  for pkg, s in result["status"].items() if not s["installed"]]
    for line in lines:
        out.print(line, markup=False, style="yellow" if line.startswith("skipped") else "dim")


def show_saved(path: Path, out: Console, markdown: bool) -> int:
    record = json.loads(Path(path).read_text())
    m = record["machine"]
    out.print(f"{record['mode']} run, {record['date']}, machine {m['tag']} ({m['cpu_model']}, {m['cpus']} cores), "
              f"nnfpga {m['git']['commit'][:10] if m['git'].get('commit') else '?'}"
              f"{' (dirty)' if m['git'].get('dirty') else ''}, total {common.fmt_seconds(record['total_seconds'])}",
              markup=False)
    out.print(record.get("synth", ""), markup=False)
    if markdown:
        out.print("", markup=False)
    for name in SECTIONS:
        if name in record["sections"]:
            print_section(out, name, record["sections"][name], markdown)
    for name, tb in record.get("errors", {}).items():
        out.print(f"section {name} failed:\n{tb}", markup=False)
    return 0


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
