"""Section 2 — verification speed: the Verilator build (cold, then cached) and simulated
inferences per second for the digits and jet models at fold pe=4, simd=8, driven as
`nnfpga verify` drives them (random input gaps and output backpressure, p = 0.3), on both
simulation paths: cocotb (Python drives every edge: hw_tests/sim.py) and the fast path
(the self-checking SystemVerilog testbench: hw_tests/fastsim.py), on the same inputs.
Then the soak: SOAK_INFERENCES back-to-back inferences through the digits RTL with gaps
and backpressure, counting lost, extra and mismatching (reordered, duplicated) beats."""
from __future__ import annotations

import resource
import time

import numpy as np

from bench.common import DEFAULT_FOLD, WORKLOADS, fmt_rate, fmt_seconds

GAP_PROB = BACKPRESSURE_PROB = 0.3
"""The same as `nnfpga verify`."""
TIMING_SAMPLES = 8
"""hw_tests.sim.simulate's default back-to-back timing run, simulated after the random run."""
LONG_RUN = {"cocotb": 4, "fast": 40}
"""The long cached run simulates this many times the cold run's samples (the fast path's
run of 4x would end in well under a second, too short to time)."""
SOAK_INFERENCES = 10_000
SOAK_WORKLOAD = "digits"


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


def _simulator(path: str):
    from nnfpga.hw_tests.fastsim import simulate_fast
    from nnfpga.hw_tests.sim import simulate

    return {"cocotb": simulate, "fast": simulate_fast}[path]


def _child_cpu_seconds() -> float:
    """CPU time of this process's finished children (the simulator runs as one): unlike wall
    time, it does not grow when other work shares the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _speed_row(ctx, w, path: str) -> dict:
    build = ctx.build(w, DEFAULT_FOLD)
    simulate = _simulator(path)
    row = {"model": w.name, "path": path, "timing_samples": TIMING_SAMPLES,
           "gap_prob": GAP_PROB, "backpressure_prob": BACKPRESSURE_PROB}
    work = ctx.work / "verify" / f"{w.name}-{path}"  # new for every run: the first build is cold
    # cold: a fresh Verilator build; cached and long: the same design again, with the same
    # and with LONG_RUN times the inputs, so the difference of those two gives the rate
    # without simulator start-up, in wall time and in the simulator's CPU time.
    for phase, count in (("cold", ctx.verify_samples), ("cached", ctx.verify_samples),
                         ("long", LONG_RUN[path] * ctx.verify_samples)):
        x, _ = w.inputs(count, seed=ctx.seed)
        x_q, golden = quantized_inputs_and_golden(build, x)
        ctx.say(f"simulate {w.name} on the {path} path ({phase}, {len(x)} inferences)")
        start, cpu = time.perf_counter(), _child_cpu_seconds()
        sim = simulate(build.out_dir / "rtl", x_q, golden, work_dir=work, gap_prob=GAP_PROB,
                       backpressure_prob=BACKPRESSURE_PROB, seed=ctx.seed, timing_samples=TIMING_SAMPLES)
        wall, cpu = time.perf_counter() - start, _child_cpu_seconds() - cpu
        inferences = len(x) + TIMING_SAMPLES
        row[phase] = {
            "samples": len(x), "inferences": inferences,
            "build_seconds": sim.build_seconds, "build_cached": sim.build_cached,
            "sim_seconds": sim.sim_seconds, "wall_seconds": wall, "cycles": sim.cycles,
            "child_cpu_seconds": cpu,
            "inferences_per_second": inferences / sim.sim_seconds,
            "cycles_per_second": sim.cycles / sim.sim_seconds,
            "mismatches": sim.mismatches, "cycles_per_inference": sim.cycles_per_inference,
            "outputs_equal_golden": bool(np.array_equal(sim.outputs, golden)),
        }
    short, long = row["cached"], row["long"]
    dt, dcpu = long["sim_seconds"] - short["sim_seconds"], long["child_cpu_seconds"] - short["child_cpu_seconds"]
    if dt > 0:
        row["marginal_inferences_per_second"] = (long["inferences"] - short["inferences"]) / dt
        row["marginal_cycles_per_second"] = (long["cycles"] - short["cycles"]) / dt
        row["startup_seconds_estimate"] = max(0.0, short["sim_seconds"] - short["inferences"]
                                              / row["marginal_inferences_per_second"])
    if dcpu > 0:
        row["marginal_cycles_per_cpu_second"] = (long["cycles"] - short["cycles"]) / dcpu
    return row


def _soak(ctx) -> dict:
    """SOAK_INFERENCES distinct inputs (seeded standard normal, as verify draws without
    --inputs) through the fast path, gaps and backpressure p=0.3, no timing run. The
    testbench counts every output beat: lost (never came), extra (after the last expected
    frame), tlast misplaced; each inference's output is compared with its own golden row,
    so a reordered or duplicated frame shows as mismatches."""
    import json

    from nnfpga.hw_tests.fastsim import simulate_fast

    w = WORKLOADS[SOAK_WORKLOAD]
    build = ctx.build(w, DEFAULT_FOLD)
    rng = np.random.default_rng(ctx.seed)
    k = int(np.prod(build.manifest["accelerator_input"]["shape"]))
    x = rng.standard_normal((SOAK_INFERENCES, k)).astype(np.float32)
    x_q, golden = quantized_inputs_and_golden(build, x)
    work = ctx.work / "soak"
    ctx.say(f"soak: {SOAK_INFERENCES} inferences through {w.name} on the fast path")
    cpu = _child_cpu_seconds()
    sim = simulate_fast(build.out_dir / "rtl", x_q, golden, work_dir=work, gap_prob=GAP_PROB,
                        backpressure_prob=BACKPRESSURE_PROB, seed=ctx.seed, timing_samples=0)
    cpu = _child_cpu_seconds() - cpu  # the Verilator build included, when it was not cached
    verdict = json.loads((work / "fast-run" / "result.json").read_text())
    return {"model": w.name, "inferences": SOAK_INFERENCES, "gap_prob": GAP_PROB,
            "backpressure_prob": BACKPRESSURE_PROB, "cycles": sim.cycles, "sim_seconds": sim.sim_seconds,
            "build_cached": sim.build_cached, "child_cpu_seconds": cpu,
            "distinct_golden_rows": int(len(np.unique(golden, axis=0))),
            "beats_out": verdict["beats_out"], "lost_beats": verdict["lost_beats"],
            "extra_beats": verdict["extra_beats"], "tlast_errors": verdict["tlast_errors"],
            "mismatched_inferences": sim.mismatches,
            "outputs_equal_golden": bool(np.array_equal(sim.outputs, golden))}


def run(ctx) -> dict:
    rows = [_speed_row(ctx, w, path) for w in WORKLOADS.values() for path in ("cocotb", "fast")]
    speedup = {}
    for w in WORKLOADS:
        by_path = {r["path"]: r.get("marginal_cycles_per_cpu_second") for r in rows if r["model"] == w}
        if by_path.get("cocotb") and by_path.get("fast"):
            speedup[w] = by_path["fast"] / by_path["cocotb"]
    return {"fold": DEFAULT_FOLD, "rows": rows, "marginal_cpu_speedup": speedup, "soak": _soak(ctx),
            "what": "simulate() (cocotb) and simulate_fast() on the default-fold build: Verilator build "
                    "(cold: new work dir; cached, long: same work dir), then the simulation. inferences/s = "
                    "(samples + timing samples) / sim_seconds, simulator start-up included; marginal = the "
                    f"difference between the long run ({LONG_RUN} x the samples) and the cached run, per "
                    "wall second and per CPU second of the simulator process"}


def tables(result: dict) -> list:
    from rich.table import Table

    t = Table(title="2. Verification speed — Verilator through cocotb (cocotbext-axi) and the fast path "
                    "(self-checking SV testbench), fold pe=4, simd=8, gaps and backpressure p=0.3")
    speedups = ", ".join(f"{m} {s:.1f}x" for m, s in result.get("marginal_cpu_speedup", {}).items())
    t.caption = ("inferences/s and cycles/s: per wall second, simulator start-up included; marginal = difference "
                 "of the long and the cached run (start-up excluded), per wall second and per CPU second of the "
                 f"simulator (unaffected by other load); fast over cocotb, marginal cycles per CPU second: "
                 f"{speedups or '—'}")
    for col in ("model", "path", "run", "inferences", "Verilator build", "sim time", "inferences/s",
                "sim cycles/s", "marginal inferences/s", "marginal cycles/s", "marginal cycles/CPU s", "bit-exact"):
        t.add_column(col, justify="left" if col in ("model", "path", "run") else "right")
    for r in result["rows"]:
        for phase in ("cold", "cached", "long"):
            if phase not in r:
                continue
            p = r[phase]
            build = "reused" if p["build_cached"] else fmt_seconds(p["build_seconds"])
            last = phase == "long"
            t.add_row(r["model"], r.get("path", "cocotb"), phase, f"{p['samples']} + {r['timing_samples']}", build,
                      fmt_seconds(p["sim_seconds"]), fmt_rate(p["inferences_per_second"]),
                      fmt_rate(p["cycles_per_second"]),
                      fmt_rate(r.get("marginal_inferences_per_second")) if last else "",
                      fmt_rate(r.get("marginal_cycles_per_second")) if last else "",
                      fmt_rate(r.get("marginal_cycles_per_cpu_second")) if last else "",
                      "yes" if p["mismatches"] == 0 else f"[red]{p['mismatches']} mismatches[/red]")
    out = [t]
    soak = result.get("soak")
    if soak:
        s = Table(title=f"2b. Soak — {soak['inferences']:,} back-to-back inferences through the {soak['model']} RTL "
                        f"(fast path), gaps and backpressure p={soak['gap_prob']}")
        s.caption = ("lost = expected output beats that never came; extra = beats after the last expected frame; "
                     "mismatched = inferences whose output differs from its own golden row (a reordered or "
                     "duplicated frame lands here)")
        for col in ("inferences", "distinct inputs' outputs", "cycles", "sim time", "output beats",
                    "lost", "extra", "tlast errors", "mismatched"):
            s.add_column(col, justify="right")
        s.add_row(f"{soak['inferences']:,}", f"{soak['distinct_golden_rows']:,}", f"{soak['cycles']:,}",
                  fmt_seconds(soak["sim_seconds"]), f"{soak['beats_out']:,}", str(soak["lost_beats"]),
                  str(soak["extra_beats"]), str(soak["tlast_errors"]), str(soak["mismatched_inferences"]))
        out.append(s)
    return out
