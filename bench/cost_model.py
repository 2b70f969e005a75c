"""Section 5 — the cost model against yosys: LUT/FF/DSP/BRAM estimated by nnfpga.cost (dense
layers) and nnfpga.cost_stream (windows, pools, FIFOs, joins) next to what yosys's synthesis
of the same RTL counts, and cycles per inference predicted next to Verilator's, on MLPs and
CNNs at several foldings.

    error = estimate / measured − 1          (+ over-estimate, − under-estimate)

Measured figures need synthesis (not with --quick unless --synth some|all); cycles come from
the hardware section's simulation of the same design when it ran, else from a short one here
(not with --quick).
"""
from __future__ import annotations

from bench.common import AUTOFOLD, CNN_WORKLOADS, DEFAULT_FOLD, WORKLOADS, fold_label

DESIGNS = [("jet", DEFAULT_FOLD), ("jet", AUTOFOLD), ("digits", {"pe": 2, "simd": 16}), ("digits", DEFAULT_FOLD),
           ("digits", AUTOFOLD), ("digits_cnn", {"pe": 2, "simd": 4}), ("digits_cnn", DEFAULT_FOLD),
           ("digits_cnn", AUTOFOLD)]
RESOURCES = ("luts", "ffs", "dsps", "brams")
TOLERANCE = 0.25
"""The error the cost model is held to on every figure (README, Cost model)."""
SIM_SAMPLES = 6


def _measured_cycles(ctx, workload, fold, build) -> int | None:
    for row in (ctx.results.get("hardware") or {}).get("rows", []):
        if row["model"] == workload.name and row["fold"] == fold:
            return row["cycles_per_inference"]
    if ctx.quick:  # --quick keeps to its budget: only what the hardware section simulated
        return None
    from bench.verification import quantized_inputs_and_golden
    from nnfpga.hw_tests.sim import simulate

    x, _ = workload.inputs(SIM_SAMPLES, seed=ctx.seed)
    x_q, golden = quantized_inputs_and_golden(build, x)
    ctx.say(f"simulate {workload.name} {fold_label(fold)} ({SIM_SAMPLES} inferences)")
    sim = simulate(build.out_dir / "rtl", x_q, golden, work_dir=ctx.work / "cost" / workload.name, seed=ctx.seed)
    return sim.cycles_per_inference if sim.mismatches == 0 else None


def run(ctx) -> dict:
    import json

    from nnfpga.cost import estimate
    from nnfpga.report import cost_inputs

    workloads = {**WORKLOADS, **CNN_WORKLOADS}
    rows = []
    for name, fold in DESIGNS:
        w = workloads[name]
        build = ctx.build(w, fold)
        design = json.loads((build.out_dir / "rtl" / "design.json").read_text())
        notes: list[str] = []
        est = estimate(device=ctx.target, **cost_inputs(build.out_dir, build.manifest, design, notes))
        label = f"{name}-autofold" if fold == AUTOFOLD else f"{name}-pe{fold['pe']}-simd{fold['simd']}"
        synth = ctx.synthesize(build.out_dir / "rtl", label, important=True, place=False)
        row = {"model": name, "fold": fold, "fold_label": fold_label(fold), "notes": notes,
               "estimate": {r: est["total"][r] for r in RESOURCES},
               "estimate_stream_modules": {r: sum(m[r] for m in est["modules"]) for r in RESOURCES},
               "predicted_cycles": build.manifest["predicted_cycles_per_inference"],
               "cycles": _measured_cycles(ctx, w, fold, build)}
        if synth is not None and "error" not in synth:
            row["measured"] = {r: synth[r] for r in RESOURCES}
            row["error"] = {r: (row["estimate"][r] / synth[r] - 1) if synth[r] else
                            (0.0 if row["estimate"][r] == 0 else None) for r in RESOURCES}
        elif synth is not None:
            row["synth_error"] = synth["error"]
        rows.append(row)
    errors = [abs(e) for r in rows for e in (r.get("error") or {}).values() if e is not None]
    return {"device": ctx.target, "tolerance": TOLERANCE, "rows": rows,
            "worst_error": max(errors) if errors else None,
            "over_tolerance": [f"{r['model']} {r['fold_label']} {k}" for r in rows
                               for k, e in (r.get("error") or {}).items() if e is not None and abs(e) > TOLERANCE]}


def _error(e: float | None) -> str:
    if e is None:
        return "—"
    text = f"{e:+.0%}"
    return f"[red]{text}[/red]" if abs(e) > TOLERANCE else text


def table(result: dict):
    from rich.table import Table

    t = Table(title=f"5. Cost model vs yosys — {result['device']} (estimate / measured, error)")
    worst = result.get("worst_error")
    t.caption = ("error = estimate / measured − 1; LUTs in the device's LUT (LUT4 on ECP5 with a CCU2C carry "
                 "counted as two, LUT6 on Xilinx), BRAM in DP16KD or RAMB36 blocks; measured = yosys synthesis "
                 "of the accelerator alone; "
                 + (f"worst error {worst:.0%} (held to {result['tolerance']:.0%})" if worst is not None
                    else "no synthesis in this run (add --synth some)"))
    for c in ("model", "fold", "LUT", "FF", "DSP", "BRAM", "of it: windows, pools, FIFOs (LUT/FF)",
              "cycles/inf predicted", "Verilator"):
        t.add_column(c, justify="left" if c in ("model", "fold") else "right")
    for r in result["rows"]:
        cells = [r["model"], r["fold_label"]]
        for k in RESOURCES:
            est, meas = r["estimate"][k], (r.get("measured") or {}).get(k)
            cells.append(f"{est:,} / {meas:,} ({_error(r['error'][k])})" if meas is not None else f"{est:,} / —")
        m = r["estimate_stream_modules"]
        cells.append(f"{m['luts']:,} / {m['ffs']:,}" if m["luts"] else "—")
        cells += [f"{r['predicted_cycles']:,}", f"{r['cycles']:,}" if r["cycles"] is not None else "—"]
        t.add_row(*cells)
    return t
