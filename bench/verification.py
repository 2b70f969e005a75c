"""Section 2 — verification speed: the Verilator build (cold, then cached) and simulated
inferences per second for the digits and jet models at fold pe=4, simd=8, driven as
`nnfpga verify` drives them (random input gaps and output backpressure, p = 0.3)."""
from __future__ import annotations

import time

import numpy as np

from bench.common import DEFAULT_FOLD, WORKLOADS, fmt_rate, fmt_seconds

GAP_PROB = BACKPRESSURE_PROB = 0.3
"""The same as `nnfpga verify`."""
TIMING_SAMPLES = 8
"""hw_tests.sim.simulate's default back-to-back timing run, simulated after the random run."""
LONG_RUN = 4
"""The cached run simulates this many times the cold run's samples."""


def quantized_inputs_and_golden(build, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The accelerator's integer inputs and onnxruntime(reference.onnx)'s outputs, as verify does,
    one row per inference in stream order (images channels-last)."""
    import onnx

    from nnfpga.backends.lower import to_stream_order
    from nnfpga.backends.reference_onnx import run_reference
    from nnfpga.ir.interpreter import quantize_array
    from nnfpga.verify import _qtype

    m = build.manifest
    x_q = quantize_array(x.reshape((len(x),) + tuple(m["accelerator_input"]["shape"])),
                         _qtype(m["accelerator_input"]))
    reference = onnx.load(str(build.out_dir / "reference.onnx"))
    golden = next(iter(run_reference(reference, {reference.graph.input[0].name: x_q}).values()))
    return (to_stream_order(x_q, m["accelerator_input"]["shape"]),
            to_stream_order(golden, m["accelerator_output"]["shape"]).astype(np.int64))


def run(ctx) -> dict:
    from nnfpga.hw_tests.sim import simulate

    rows = []
    for w in WORKLOADS.values():
        build = ctx.build(w, DEFAULT_FOLD)
        row = {"model": w.name, "timing_samples": TIMING_SAMPLES,
               "gap_prob": GAP_PROB, "backpressure_prob": BACKPRESSURE_PROB}
        work = ctx.work / "verify" / w.name  # new for every run: the first build is cold
        # cold: a fresh Verilator build; cached: the same design again with LONG_RUN times the
        # inputs, so the difference of the two runs gives the rate without simulator start-up.
        for phase, count in (("cold", ctx.verify_samples), ("cached", LONG_RUN * ctx.verify_samples)):
            x, _ = w.inputs(count, seed=ctx.seed)
            x_q, golden = quantized_inputs_and_golden(build, x)
            ctx.say(f"simulate {w.name} ({phase} Verilator build, {len(x)} inferences)")
            start = time.perf_counter()
            sim = simulate(build.out_dir / "rtl", x_q, golden, work_dir=work, gap_prob=GAP_PROB,
                           backpressure_prob=BACKPRESSURE_PROB, seed=ctx.seed, timing_samples=TIMING_SAMPLES)
            wall = time.perf_counter() - start
            inferences = len(x) + TIMING_SAMPLES
            row[phase] = {
                "samples": len(x), "inferences": inferences,
                "build_seconds": sim.build_seconds, "build_cached": sim.build_cached,
                "sim_seconds": sim.sim_seconds, "wall_seconds": wall, "cycles": sim.cycles,
                "inferences_per_second": inferences / sim.sim_seconds,
                "cycles_per_second": sim.cycles / sim.sim_seconds,
                "mismatches": sim.mismatches, "cycles_per_inference": sim.cycles_per_inference,
            }
        cold, long = row["cold"], row["cached"]
        dt = long["sim_seconds"] - cold["sim_seconds"]
        if dt > 0:
            row["marginal_inferences_per_second"] = (long["inferences"] - cold["inferences"]) / dt
            row["marginal_cycles_per_second"] = (long["cycles"] - cold["cycles"]) / dt
            row["startup_seconds_estimate"] = max(0.0, cold["sim_seconds"] - cold["inferences"]
                                                  / row["marginal_inferences_per_second"])
        rows.append(row)
    return {"fold": DEFAULT_FOLD, "rows": rows,
            "what": "simulate() on the default-fold build: Verilator build (cold: new work dir; "
                    "cached: same work dir), then the simulation. inferences/s = (samples + timing "
                    "samples) / sim_seconds, simulator start-up included; marginal = the difference "
                    f"between the cached run ({LONG_RUN}x the samples) and the cold run"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="2. Verification speed — Verilator + cocotb, fold pe=4, simd=8, gaps and backpressure p=0.3")
    t.caption = ("inferences/s and cycles/s include simulator start-up; marginal = difference of the two runs "
                 "(start-up excluded)")
    for col in ("model", "run", "inferences", "Verilator build", "sim time", "inferences/s",
                "sim cycles/s", "marginal inferences/s", "marginal cycles/s", "bit-exact"):
        t.add_column(col, justify="left" if col in ("model", "run") else "right")
    for r in result["rows"]:
        for phase in ("cold", "cached"):
            p = r[phase]
            build = "reused" if p["build_cached"] else fmt_seconds(p["build_seconds"])
            t.add_row(r["model"], phase, f"{p['samples']} + {r['timing_samples']}", build,
                      fmt_seconds(p["sim_seconds"]), fmt_rate(p["inferences_per_second"]),
                      fmt_rate(p["cycles_per_second"]),
                      fmt_rate(r.get("marginal_inferences_per_second")) if phase == "cached" else "",
                      fmt_rate(r.get("marginal_cycles_per_second")) if phase == "cached" else "",
                      "yes" if p["mismatches"] == 0 else f"[red]{p['mismatches']} mismatches[/red]")
    return t
