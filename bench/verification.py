"""Section 2 — verification speed: the Verilator build (cold, then cached) and simulated
inferences per second for the digits and jet models at the default fold, driven as
`nnfpga verify` drives them (random input gaps and output backpressure, p = 0.3)."""
from __future__ import annotations

import time

import numpy as np

from bench.common import DEFAULT_FOLD, WORKLOADS, fmt_rate, fmt_seconds

GAP_PROB = BACKPRESSURE_PROB = 0.3
"""The same as `nnfpga verify`."""
TIMING_SAMPLES = 8
"""hw_tests.sim.simulate's default back-to-back timing run, simulated after the random run."""


def quantized_inputs_and_golden(build, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The accelerator's integer inputs and onnxruntime(reference.onnx)'s outputs, as verify does."""
    import onnx

    from nnfpga.backends.reference_onnx import run_reference
    from nnfpga.ir.interpreter import quantize_array
    from nnfpga.verify import _qtype

    m = build.manifest
    x_q = quantize_array(x.reshape((len(x),) + tuple(m["accelerator_input"]["shape"])),
                         _qtype(m["accelerator_input"]))
    reference = onnx.load(str(build.out_dir / "reference.onnx"))
    golden = next(iter(run_reference(reference, {reference.graph.input[0].name: x_q}).values()))
    return x_q.reshape(len(x), -1), golden.reshape(len(x), -1).astype(np.int64)


def run(ctx) -> dict:
    from nnfpga.hw_tests.sim import simulate

    rows = []
    for w in WORKLOADS.values():
        build = ctx.build(w, DEFAULT_FOLD)
        x, _ = w.inputs(ctx.verify_samples, seed=ctx.seed)
        x_q, golden = quantized_inputs_and_golden(build, x)
        work = ctx.work / "verify" / w.name  # new for every run: the first build is cold
        row = {"model": w.name, "samples": len(x), "timing_samples": TIMING_SAMPLES,
               "gap_prob": GAP_PROB, "backpressure_prob": BACKPRESSURE_PROB}
        for phase in ("cold", "cached"):
            ctx.say(f"simulate {w.name} ({phase} Verilator build, {len(x)} inferences)")
            start = time.perf_counter()
            sim = simulate(build.out_dir / "rtl", x_q, golden, work_dir=work, gap_prob=GAP_PROB,
                           backpressure_prob=BACKPRESSURE_PROB, seed=ctx.seed, timing_samples=TIMING_SAMPLES)
            wall = time.perf_counter() - start
            inferences = len(x) + TIMING_SAMPLES
            row[phase] = {
                "build_seconds": sim.build_seconds, "build_cached": sim.build_cached,
                "sim_seconds": sim.sim_seconds, "wall_seconds": wall, "cycles": sim.cycles,
                "inferences_per_second": inferences / sim.sim_seconds,
                "cycles_per_second": sim.cycles / sim.sim_seconds,
                "mismatches": sim.mismatches, "cycles_per_inference": sim.cycles_per_inference,
            }
        rows.append(row)
    return {"fold": DEFAULT_FOLD, "rows": rows,
            "what": "simulate() on the default-fold build: Verilator build (cold: new work dir; "
                    "cached: same work dir), then the simulation; inferences/s = (samples + timing "
                    "samples) / sim_seconds, simulator start-up included"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="2. Verification speed — Verilator + cocotb, default fold, gaps and backpressure p=0.3")
    for col in ("model", "run", "inferences", "Verilator build", "sim time", "inferences/s",
                "sim cycles/s", "cycles", "bit-exact"):
        t.add_column(col, justify="left" if col in ("model", "run") else "right")
    for r in result["rows"]:
        for phase in ("cold", "cached"):
            p = r[phase]
            build = "reused" if p["build_cached"] else fmt_seconds(p["build_seconds"])
            t.add_row(r["model"], phase, f"{r['samples']} + {r['timing_samples']}", build,
                      fmt_seconds(p["sim_seconds"]), fmt_rate(p["inferences_per_second"]),
                      fmt_rate(p["cycles_per_second"]), f"{p['cycles']:,}",
                      "yes" if p["mismatches"] == 0 else f"[red]{p['mismatches']} mismatches[/red]")
    return t
