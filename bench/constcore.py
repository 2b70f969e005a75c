"""Section `const` (`python -m bench --only const`; `--quick`: the first layer only), or alone
`python -m bench.constcore [--skip-mlp] [--out FILE]`: the const core against da4ml.

1. The jet MLP's first layer (16→64, int8 weights as our `quantize` makes them, int8
   inputs), fully parallel: the const core's shift-add graph (the layer module's `_mvm`,
   bias set to zero so both compute y = x·W) and da4ml 0.6's CMVM solution of the SAME
   integer weights, both through one yosys script (`synth_xilinx -family xc7`, nnfpga's
   backends/synth.py; LUT/FF/DSP counted from the netlist). Exactness: our graph evaluated
   exactly and the whole layer (graph, bias, requant, stream control) simulated in
   Verilator against the numpy oracle; da4ml's solution in its own interpreter against x·W.
2. The whole jet MLP with `fold{core=const}` on every layer (one vector per cycle) for
   xc7z020: LUT, FF, DSP and the latency in cycles, predicted and measured in Verilator.

da4ml runs in a child process (bench/_child.py); install it with
`pip install -r bench/requirements.txt`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from bench.common import EXAMPLES, ChildError, run_child
from bench.peers import DA4ML_LATENCY_CUTOFF
from nnfpga.backends.const_graph import const_graph, evaluate
from nnfpga.backends.lower import region_input
from nnfpga.backends.rtl_layers import reference_forward
from nnfpga.backends.stream_graph import chain_design, lower_stream
from nnfpga.backends.synth import synthesize
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.build import CompileOptions, compile_model
from nnfpga.builddir import load_final_ir
from nnfpga.devices import device
from nnfpga.hw_tests.sim import simulate
from nnfpga.verify import verify_build

TARGET = "xc7z020"
JET = EXAMPLES / "jet_mlp"
CONST_PIPELINE = "canonicalize,quantize,fold{core=const}"


def _foreign_rtl(folder: Path, sources: list[Path], top: str) -> Path:
    """A folder synthesize() accepts: the sources and a minimal design.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        shutil.copyfile(src, folder / Path(src).name)
    (folder / "design.json").write_text(json.dumps({
        "top": top, "sources": sorted(Path(s).name for s in sources), "mem_files": [], "input": {}, "output": {}}))
    return folder


def _synth(rtl: Path, work: Path, top: str | None = None) -> dict:
    r = synthesize(rtl, work, device(TARGET), top=top)
    return {"luts": r.luts, "ffs": r.ffs, "dsps": r.dsps, "seconds": round(r.seconds, 1), "top": r.top,
            "yosys": r.yosys_version}


def jet_build(work: Path) -> Path:
    build = work / "jet_const"
    compile_model(JET / "model.onnx", build, CompileOptions(target=TARGET, pipeline=CONST_PIPELINE,
                                                            calib_path=JET / "calib.npz"))
    return build


def first_layer(build: Path):
    g = load_final_ir(build)
    return lower_stream(g, region_input(g)).layers[0]


def layer_row(layer, work: Path, seed: int = 0) -> list[dict]:
    """Our const core and da4ml on `layer`'s integer weights."""
    lo, hi = (-(1 << (layer.in_bits - 1)), (1 << (layer.in_bits - 1)) - 1) if layer.in_signed \
        else (0, (1 << layer.in_bits) - 1)
    xs = np.random.default_rng(seed).integers(lo, hi + 1, (256, layer.k))
    xs[0], xs[1] = lo, hi
    graph = const_graph(layer)
    ours = {"tool": "nnfpga const", "k": layer.k, "n": layer.n, "wbits": layer.wbits,
            "adders": len(graph.adders), "adder_bits": graph.adder_bits, "graph_register_stages": graph.stages + 1,
            "exact_graph": bool(np.array_equal(evaluate(graph, xs).astype(np.int64), xs @ layer.weights))}
    # The multiply-accumulate alone (x·W, as da4ml's module computes it): the _mvm module of
    # the same layer with a zero bias.
    bare = dataclasses.replace(layer, bias=np.zeros_like(layer.bias))
    bare_rtl = work / "const_mvm_rtl"
    emit_stream_verilog(chain_design([bare]), bare_rtl)
    design = json.loads((bare_rtl / "design.json").read_text())
    module = next(i["module"] for i in design["instances"] if i["module"].startswith("nnfpga_const_"))
    ours["synth"] = _synth(bare_rtl, work / "const_mvm_yosys", top=f"{module}_mvm")

    theirs = {"tool": "da4ml"}
    np.savez(work / "layer.npz", weights=layer.weights, in_bits=layer.in_bits, in_signed=layer.in_signed)
    try:
        r = run_child("da4ml", {"label": "jet-0", "layer": str(work / "layer.npz"),
                                "latency_cutoff": DA4ML_LATENCY_CUTOFF, "work": str(work)}, work)
    except ChildError as e:
        r = {"status": "error", "error": str(e)}
    theirs.update(r)
    if r["status"] == "ok":
        theirs["exact"] = r["exact_in_interpreter"]
        rtl = _foreign_rtl(work / "da4ml_rtl", [Path(s) for s in r["sources"]], r["top"])
        theirs["synth"] = _synth(rtl, work / "da4ml_yosys")
    # Last, the slow part: the whole layer (graph, bias, requant, stream control) in Verilator.
    rtl = work / "const_layer_rtl"
    emit_stream_verilog(chain_design([layer]), rtl)
    sim = simulate(rtl, xs[:64], reference_forward([layer], xs[:64])[-1], work_dir=work / "const_layer_sim", seed=seed)
    ours.update(exact_rtl=sim.mismatches == 0, latency_cycles=sim.latency_cycles,
                interval_cycles=sim.cycles_per_inference)
    return [ours, theirs]


def mlp_row(build: Path, work: Path) -> dict:
    design = json.loads((build / "rtl" / "design.json").read_text())
    row = {"model": "jet MLP 16-64-32-32-5", "pipeline": CONST_PIPELINE, "target": TARGET,
           "predicted_latency_cycles": design["predicted_latency_cycles"],
           "predicted_cycles_per_inference": design["predicted_cycles_per_inference"]}
    row["synth"] = _synth(build / "rtl", work / "mlp_yosys")
    print(f"jet MLP synthesized: {row['synth']}", flush=True)
    result = verify_build(build, samples=64)
    row.update(bit_exact=result["bit_exact"], latency_cycles=result["latency_cycles"],
               cycles_per_inference=result["cycles_per_inference"])
    return row


def run(ctx) -> dict:
    """The section: the layer against da4ml, then (not with --quick) the whole MLP."""
    work = ctx.work / "const"
    work.mkdir(parents=True, exist_ok=True)
    ctx.say("const: the jet MLP's first layer, nnfpga const core and da4ml, yosys synth_xilinx")
    build = jet_build(work)
    result = {"layer": layer_row(first_layer(build), work)}
    ours, theirs = result["layer"]
    if "luts" in ours.get("synth", {}) and "luts" in theirs.get("synth", {}):
        result["lut_ratio"] = ours["synth"]["luts"] / theirs["synth"]["luts"]
    if not ctx.quick:
        ctx.say(f"const: the whole jet MLP on the const core for {TARGET}")
        result["mlp"] = mlp_row(build, work)
    result["command"] = "python -m bench --only const" + (" --quick" if ctx.quick else "")
    return result


def table(result: dict) -> Table:
    t = Table(title="const — jet MLP 16→64 layer (int8, fully parallel) and the whole MLP at one vector per "
                    f"cycle, yosys synth_xilinx ({TARGET})")
    for col in ("design", "LUT", "FF", "DSP", "latency (cycles)", "exact"):
        t.add_column(col, justify="left" if col == "design" else "right")
    for r in result["layer"]:
        s = r.get("synth", {})
        t.add_row(f"layer 0: {r['tool']}", str(s.get("luts", "—")), str(s.get("ffs", "—")), str(s.get("dsps", "—")),
                  "—", str(r.get("exact_rtl", r.get("exact"))))
    if "lut_ratio" in result:
        t.add_row("layer 0: const / da4ml LUTs", f"{result['lut_ratio']:.3f}", "", "", "", "")
    if "mlp" in result:
        m, s = result["mlp"], result["mlp"]["synth"]
        t.add_row("jet MLP, fold{core=const}", str(s.get("luts")), str(s.get("ffs")), str(s.get("dsps")),
                  f"{m['latency_cycles']} (predicted {m['predicted_latency_cycles']})", str(m["bit_exact"]))
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-mlp", action="store_true", help="only the first layer against da4ml")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    ap.add_argument("--work", type=Path, help="keep the work files here (default: a temporary folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="nnfpga-constcore-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    build = jet_build(work)
    rows = {"layer": layer_row(first_layer(build), work)}
    ours, theirs = rows["layer"]
    print("jet layer 0 (16→64, int8), fully parallel, yosys synth_xilinx xc7:", flush=True)
    for r in rows["layer"]:
        s = r.get("synth", {})
        print(f"  {r['tool']:14s} LUT {s.get('luts')}  FF {s.get('ffs')}  DSP {s.get('dsps')}  "
              f"exact {r.get('exact_rtl', r.get('exact'))}")
    if "luts" in ours.get("synth", {}) and "luts" in theirs.get("synth", {}):
        rows["lut_ratio"] = ours["synth"]["luts"] / theirs["synth"]["luts"]
        print(f"  const / da4ml LUTs: {rows['lut_ratio']:.3f}")
    if not args.skip_mlp:
        rows["mlp"] = m = mlp_row(build, work)
        s = m["synth"]
        print(f"jet MLP, fold{{core=const}}, {TARGET}: LUT {s['luts']}  FF {s['ffs']}  DSP {s['dsps']}  "
              f"latency {m['latency_cycles']} cycles (predicted {m['predicted_latency_cycles']}), "
              f"{m['cycles_per_inference']} cycles per inference, bit-exact {m['bit_exact']}")
    rows["seconds"] = round(time.perf_counter() - start, 1)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
