"""Section 4 — peers side by side.

hls4ml: the same float MLP weights through its PyTorch front end (Vitis backend,
io_parallel, its default ap_fixed<16,6> config), conversion and compile() (its g++ C
simulation) timed, outputs compared with onnxruntime on the float model — next to nnfpga's
8-bit build of the same model (compile time; dequantized output of the integer IR, which
`verify` proves equal to the RTL).

da4ml: the same constant-weight layers (nnfpga's int8 per-channel weights, 8-bit inputs of
nnfpga's input type) through da4ml's CMVM optimizer to pipelined Verilog, next to nnfpga's
fully parallel unit for that layer alone (fold pe=N, simd=K), simulated for its latency.
nnfpga's layer also adds the bias and requantizes (ReLU, clamp); da4ml's computes x·W only.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import time

import numpy as np

from bench.common import DEFAULT_FOLD, FULLY_PARALLEL, WORKLOADS, ChildError, fmt_bytes, fmt_seconds, run_child

DA4ML_LATENCY_CUTOFF = 5
"""da4ml's pipelining budget: the largest combinational delay per register stage, in its
own adder-delay units (RTLModel latency_cutoff)."""

INSTALL = {"hls4ml": "pip install hls4ml", "da4ml": "pip install da4ml"}


def _requires(pkg: str) -> list[str]:
    try:
        return [r for r in importlib.metadata.requires(pkg) or [] if "extra ==" not in r]
    except importlib.metadata.PackageNotFoundError:
        return []


def peer_status() -> dict:
    """Which peers import here, their versions and what their base install pulls in."""
    status = {}
    for pkg in ("hls4ml", "da4ml"):
        present = importlib.util.find_spec(pkg) is not None
        status[pkg] = {"installed": present,
                       "version": importlib.metadata.version(pkg) if present else None,
                       "requires": _requires(pkg) if present else None,
                       "install": INSTALL[pkg]}
    status["hls4ml"]["needs_torch"] = importlib.util.find_spec("torch") is not None
    return status


def _accuracy(y: np.ndarray, ref: np.ndarray, labels) -> dict:
    out = {"max_abs_err_vs_float": float(np.abs(y - ref).max()),
           "mean_abs_err_vs_float": float(np.abs(y - ref).mean())}
    if y.shape[1] > 1:
        out["top1_agreement"] = float(np.mean(y.argmax(1) == ref.argmax(1)))
        if labels is not None:
            out["accuracy"] = float(np.mean(y.argmax(1) == labels))
    return out


def run_hls4ml(ctx, status: dict) -> dict:
    from nnfpga.backends.hls import compile_csim, csim
    from nnfpga.ir.interpreter import dequantize_array
    from nnfpga.verify import _qtype, float_model_outputs

    from bench.verification import quantized_inputs_and_golden

    rows = []
    for w in WORKLOADS.values():
        x, labels = w.inputs(ctx.peer_samples, seed=ctx.seed)
        ref = float_model_outputs(w.model, x).reshape(len(x), -1)
        ref_row = {"model": w.name, "tool": "onnxruntime (float)", "samples": len(x)}
        if labels is not None and ref.shape[1] > 1:
            ref_row["accuracy"] = float(np.mean(ref.argmax(1) == labels))

        # nnfpga: one timed compile of the default 8-bit build, then its own HLS C simulation
        # (g++), the counterpart of hls4ml's compile() + predict().
        start = time.perf_counter()
        build = ctx.build(w, DEFAULT_FOLD, fresh=True)
        compile_seconds = time.perf_counter() - start
        x_q, golden = quantized_inputs_and_golden(build, x)
        csim_work = ctx.work / "peers" / f"nnfpga-csim-{w.name}"
        ctx.say(f"nnfpga HLS C simulation {w.name} (g++)")
        start = time.perf_counter()
        compile_csim(build.out_dir / "hls", csim_work)
        csim_build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        y_q = csim(build.out_dir / "hls", x_q, work_dir=csim_work)
        predict_seconds = time.perf_counter() - start
        y = dequantize_array(y_q, _qtype(build.manifest["accelerator_output"])).reshape(len(x), -1)
        nn_row = {"model": w.name, "tool": "nnfpga", "precision": "int8 (w8a8, per-channel)",
                  "convert_seconds": compile_seconds, "compile_seconds": csim_build_seconds,
                  "predict_seconds": predict_seconds, "samples": len(x),
                  "csim_mismatches_vs_reference": int(np.any(y_q != golden, axis=1).sum()),
                  **_accuracy(y, ref, labels)}

        row = {"model": w.name, "tool": "hls4ml"}
        if not status["installed"]:
            row.update(status="skipped", why=f"hls4ml not installed ({INSTALL['hls4ml']})")
        elif not status["needs_torch"]:
            row.update(status="skipped", why="torch not installed (hls4ml's PyTorch front end is used)")
        else:
            work = ctx.work / "peers" / f"hls4ml-{w.name}"
            work.mkdir(parents=True, exist_ok=True)
            np.save(work / "inputs.npy", x)
            ctx.say(f"hls4ml convert + compile {w.name}")
            try:
                r = run_child("hls4ml", {"label": w.name, "model": str(w.model), "inputs": str(work / "inputs.npy"),
                                         "outputs": str(work / "outputs.npy"), "work": str(work)}, work)
            except ChildError as e:
                r = {"status": "error", "error": str(e)}
            row.update(r)
            if r["status"] == "ok":
                row.update(_accuracy(np.load(work / "outputs.npy"), ref, labels))
        rows += [ref_row, nn_row, row]
    return {"rows": rows}


def run_da4ml(ctx, status: dict) -> dict:
    from nnfpga.backends.lower import region_input
    from nnfpga.backends.rtl_layers import reference_forward
    from nnfpga.backends.stream_graph import chain_design, lower_stream
    from nnfpga.backends.verilog import emit_stream_verilog
    from nnfpga.hw_tests.sim import simulate

    picks = [("jet", 0)] if ctx.quick else [("jet", 0), ("jet", 1), ("jet", 2), ("jet", 3), ("digits", 0)]
    rows = []
    for model, index in picks:
        w = WORKLOADS[model]
        g = ctx.build(w, FULLY_PARALLEL).graph
        layer = lower_stream(g, region_input(g)).layers[index]
        label = f"{model} layer {index} ({layer.k}→{layer.n})"
        work = ctx.work / "peers" / f"da4ml-{model}-{index}"

        # nnfpga: this layer alone, fully parallel, as its own accelerator.
        rtl = work / "nnfpga_rtl"
        start = time.perf_counter()
        emit_stream_verilog(chain_design([layer]), rtl)
        gen_seconds = time.perf_counter() - start
        lo, hi = (-(1 << (layer.in_bits - 1)), (1 << (layer.in_bits - 1)) - 1) if layer.in_signed \
            else (0, (1 << layer.in_bits) - 1)
        xs = np.random.default_rng(ctx.seed).integers(lo, hi + 1, (64, layer.k))
        ctx.say(f"simulate nnfpga {label}, fully parallel")
        sim = simulate(rtl, xs, reference_forward([layer], xs)[-1], work_dir=work / "sim", seed=ctx.seed)
        nn = {"layer": label, "tool": "nnfpga", "k": layer.k, "n": layer.n, "wbits": layer.wbits,
              "in_bits": layer.in_bits, "in_signed": layer.in_signed, "pe": layer.pe, "simd": layer.simd,
              "gen_seconds": gen_seconds, "latency_cycles": sim.latency_cycles,
              "interval_cycles": sim.cycles_per_inference, "exact": sim.mismatches == 0,
              "exact_check": "RTL in Verilator vs numpy oracle (incl. bias, requant)",
              "multipliers": layer.k * layer.n}
        synth = ctx.synthesize(rtl, f"nnfpga-{model}-{index}", important=(model, index) == picks[0])
        if synth is not None:
            nn["synth"] = synth

        row = {"layer": label, "tool": "da4ml"}
        if not status["installed"]:
            row.update(status="skipped", why=f"da4ml not installed ({INSTALL['da4ml']})")
        else:
            work.mkdir(parents=True, exist_ok=True)
            np.savez(work / "layer.npz", weights=layer.weights, in_bits=layer.in_bits, in_signed=layer.in_signed)
            ctx.say(f"da4ml {label}")
            try:
                r = run_child("da4ml", {"label": f"{model}-{index}", "layer": str(work / "layer.npz"),
                                        "latency_cutoff": DA4ML_LATENCY_CUTOFF, "work": str(work)}, work)
            except ChildError as e:
                r = {"status": "error", "error": str(e)}
            row.update(r)
            if r["status"] == "ok":
                row["gen_seconds"] = r["trace_seconds"] + r["write_seconds"]
                row["latency_cycles"] = r["pipeline_stages"]
                row["interval_cycles"] = 1
                row["exact"] = r["exact_in_interpreter"]
                row["exact_check"] = "da4ml interpreter vs x·W (256 random inputs)"
                synth = ctx.synthesize_sources(r["sources"], r["top"], f"da4ml-{model}-{index}",
                                               important=(model, index) == picks[0])
                if synth is not None:
                    row["synth"] = synth
        rows += [nn, row]
    return {"latency_cutoff": DA4ML_LATENCY_CUTOFF, "rows": rows}


def run(ctx) -> dict:
    status = peer_status()
    for pkg, s in status.items():
        if not s["installed"]:
            ctx.say(f"skipped: {pkg} not installed ({s['install']})", style="yellow")
    return {"status": status, "hls4ml": run_hls4ml(ctx, status["hls4ml"]),
            "da4ml": run_da4ml(ctx, status["da4ml"]), "synth": ctx.synth_note}


def _pct(v):
    return "—" if v is None else f"{v:.1%}"


def tables(result: dict) -> list:
    from rich.table import Table

    out = []
    samples = next((r["samples"] for r in result["hls4ml"]["rows"] if r.get("samples")), "?")
    t = Table(title=f"4a. hls4ml vs nnfpga — same float weights, C simulation (g++) of {samples} inputs; "
                    "errors against onnxruntime on the float model")
    exact = [r for r in result["hls4ml"]["rows"] if "csim_mismatches_vs_reference" in r]
    t.caption = ("nnfpga's C simulation vs onnxruntime(reference.onnx): "
                 + ", ".join(f"{r['model']} {'bit-exact' if r['csim_mismatches_vs_reference'] == 0 else str(r['csim_mismatches_vs_reference']) + ' mismatches'}"
                             for r in exact)
                 + ". hls4ml's latency and II need Vitis HLS csynth (not run here).")
    for c in ("model", "tool", "precision", "convert", "C sim build (g++)",
              "C sim run", "max |err|", "top-1 agree", "accuracy", "peak RSS"):
        t.add_column(c, justify="left" if c in ("model", "tool", "precision") else "right")
    for r in result["hls4ml"]["rows"]:
        if r.get("status") == "skipped":
            t.add_row(r["model"], r["tool"], f"[yellow]skipped: {r['why']}[/yellow]", *["—"] * 7)
            continue
        if r.get("status") == "error":
            t.add_row(r["model"], r["tool"], f"[red]{r['error'][:200]}[/red]", *["—"] * 7)
            continue
        if r["tool"].startswith("onnxruntime"):
            t.add_row(r["model"], r["tool"], "float32", "—", "—", "—", "0 (reference)", "—",
                      _pct(r.get("accuracy")), "—")
            continue
        precision = r.get("precision") or "—"
        if r["tool"] == "hls4ml":
            precision = f"{precision}, {r.get('strategy')}, reuse {r.get('reuse_factor')}"
        t.add_row(r["model"], r["tool"], precision, fmt_seconds(r.get("convert_seconds")),
                  fmt_seconds(r.get("compile_seconds")), fmt_seconds(r.get("predict_seconds")),
                  f"{r['max_abs_err_vs_float']:.4f}", _pct(r.get("top1_agreement")), _pct(r.get("accuracy")),
                  fmt_bytes(r.get("max_rss_bytes")))
    out.append(t)

    rows = result["da4ml"]["rows"]
    with_synth = any("synth" in r for r in rows)
    t = Table(title=f"4b. da4ml vs nnfpga fully parallel — one int8 layer (da4ml latency_cutoff="
                    f"{result['da4ml']['latency_cutoff']})")
    cols = ["layer", "tool", "generate", "latency (cycles)", "interval", "exact", "size estimate"]
    if with_synth:
        cols += ["LUT", "FF", "DSP", "Fmax MHz"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("layer", "tool") else "right")
    for r in rows:
        if r.get("status") == "skipped":
            t.add_row(r["layer"], r["tool"], f"[yellow]skipped: {r['why']}[/yellow]", *["—"] * (len(cols) - 3))
            continue
        if r.get("status") == "error":
            t.add_row(r["layer"], r["tool"], f"[red]{r['error'][:200]}[/red]", *["—"] * (len(cols) - 3))
            continue
        size = (f"{r['multipliers']:,} multipliers" if r["tool"] == "nnfpga"
                else f"{r['cost']:,.0f} (da4ml cost estimate)")
        cells = [r["layer"], r["tool"], fmt_seconds(r["gen_seconds"]), str(r["latency_cycles"]),
                 str(r["interval_cycles"]), "yes" if r["exact"] else "[red]no[/red]", size]
        if with_synth:
            s = r.get("synth") or {}
            if s.get("error"):
                cells += [f"[red]{s['error'][:60]}[/red]", "—", "—"]
            else:
                cells += [f"{s[k]:,}" if k in s else "—" for k in ("luts", "ffs", "dsps")]
            cells.append(f"{s['fmax_mhz']:.1f}" if s.get("fmax_mhz") else "—")
        t.add_row(*cells)
    out.append(t)
    return out
