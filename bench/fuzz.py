"""Section fuzz — the fuzzers of tests/fuzz_cases.py (mutated example models, mutated .npz
calibration data, random pipeline strings) on >= 10,000 cases.

    python -m bench --only fuzz          (10,000 cases; --quick: 600)

Each case runs in a worker process that compiles in-process as `nnfpga compile` does (no
Verilator, no build directory). Outcomes: ok, a clear error (an NnfpgaError with a message),
a crash (any other exception, or the worker dying), a hang (no answer within CASE_SECONDS;
the worker is killed and replaced). Crashes list their kind, seed and exception, so each one
replays with `fuzz_cases.run_case(kind, seed)`.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback

from bench.common import REPO

CASES = {"model": 5000, "npz": 2500, "pipeline": 2500}
QUICK_CASES = {"model": 300, "npz": 150, "pipeline": 150}
CASE_SECONDS = 60.0
"""A case without an answer after this long is a hang (the slowest ordinary case takes seconds)."""
SEED_BASE = 1_000_000
"""Bench seeds start here (times --seed + 1), away from the small seeds the tests name."""
LISTED_CRASHES = 20


def _worker(conn) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import warnings

    warnings.simplefilter("ignore")  # numpy's overflow warnings on extreme data are expected
    from fuzz_cases import run_case

    while True:
        job = conn.recv()
        if job is None:
            return
        kind, seed = job
        t0 = time.perf_counter()
        try:
            outcome, detail = run_case(kind, seed)
        except Exception as e:  # the point of fuzzing: report it, keep going
            frame = traceback.extract_tb(e.__traceback__)[-1]
            outcome = "crash"
            detail = (f"{type(e).__name__}: {str(e).strip()[:200]} "
                      f"({os.path.basename(frame.filename)}:{frame.lineno})")
        conn.send((outcome, detail, time.perf_counter() - t0))


class _Worker:
    def __init__(self, mp):
        self.conn, child = mp.Pipe()
        self.process = mp.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.job = None
        self.started = 0.0

    def give(self, job) -> None:
        self.job, self.started = job, time.perf_counter()
        self.conn.send(job)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _run_jobs(jobs: list[tuple[str, int]], workers: int, say) -> list[dict]:
    """Every job's outcome, `workers` cases at a time; dead or hung workers are replaced."""
    mp = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared with the bench
    pool = [_Worker(mp) for _ in range(workers)]
    pending, results = list(reversed(jobs)), []
    try:
        while pending or any(w.job for w in pool):
            for i, w in enumerate(pool):
                if w.job is None:
                    if not pending:
                        continue
                    w.give(pending.pop())
                replace = True
                if w.conn.poll(0.02):
                    try:
                        outcome, detail, seconds = w.conn.recv()
                        replace = False
                    except EOFError:  # the process itself died mid-case
                        outcome, detail, seconds = "crash", f"worker died (exit {w.process.exitcode})", 0.0
                elif not w.process.is_alive():
                    outcome, detail, seconds = "crash", f"worker died (exit {w.process.exitcode})", 0.0
                elif time.perf_counter() - w.started > CASE_SECONDS:
                    outcome, detail, seconds = "hang", f"no answer in {CASE_SECONDS:g} s", CASE_SECONDS
                else:
                    continue
                results.append({"kind": w.job[0], "seed": w.job[1], "outcome": outcome, "detail": detail,
                                "seconds": seconds})
                if replace:
                    w.stop(kill=True)
                    pool[i] = _Worker(mp)
                else:
                    w.job = None
                if len(results) % 1000 == 0:
                    say(f"{len(results)}/{len(jobs)} cases")
    finally:
        for w in pool:
            w.stop(kill=w.job is not None)
    return results


def run(ctx) -> dict:
    counts = QUICK_CASES if ctx.quick else CASES
    base = SEED_BASE * (ctx.seed + 1)
    jobs = [(kind, base + i) for kind, n in counts.items() for i in range(n)]
    workers = max(1, min(2, os.cpu_count() or 1))
    ctx.say(f"fuzz: {len(jobs)} cases on {workers} worker process(es), {CASE_SECONDS:g} s per case at most")
    t0 = time.perf_counter()
    results = _run_jobs(jobs, workers, ctx.say)
    wall = time.perf_counter() - t0
    rows = []
    for kind in counts:
        mine = [r for r in results if r["kind"] == kind]
        seconds = sorted(r["seconds"] for r in mine)
        rows.append({"kind": kind, "cases": len(mine),
                     **{o: sum(r["outcome"] == o for r in mine) for o in ("ok", "error", "crash", "hang")},
                     "mean_ms": 1000 * sum(seconds) / max(1, len(seconds)),
                     "slowest_s": seconds[-1] if seconds else None})
    bad = [r for r in results if r["outcome"] in ("crash", "hang")]
    return {"rows": rows, "cases": len(results), "crashes": sum(r["outcome"] == "crash" for r in results),
            "hangs": sum(r["outcome"] == "hang" for r in results), "workers": workers,
            "case_seconds": CASE_SECONDS, "wall_seconds": wall, "failures": bad[:LISTED_CRASHES],
            "seed_base": base}


def tables(result: dict) -> list:
    from rich.table import Table

    t = Table(title=f"Fuzzing — mutated models, .npz data and pipelines, in-process compile "
                    f"({result['cases']} cases, {result['workers']} workers, hang = no answer in "
                    f"{result['case_seconds']:g} s)")
    for col in ("fuzzer", "cases", "ok", "clear error", "crash", "hang", "mean ms/case", "slowest s"):
        t.add_column(col, justify="left" if col == "fuzzer" else "right")
    for r in result["rows"]:
        t.add_row(r["kind"], str(r["cases"]), str(r["ok"]), str(r["error"]), str(r["crash"]), str(r["hang"]),
                  f"{r['mean_ms']:.0f}", f"{r['slowest_s']:.1f}" if r["slowest_s"] is not None else "-")
    t.add_row("total", str(result["cases"]), str(sum(r["ok"] for r in result["rows"])),
              str(sum(r["error"] for r in result["rows"])), str(result["crashes"]), str(result["hangs"]), "", "")
    out = [t]
    if result["failures"]:
        f = Table(title="Fuzz failures (replay: fuzz_cases.run_case(kind, seed))")
        for col in ("fuzzer", "seed", "outcome", "detail"):
            f.add_column(col)
        for r in result["failures"]:
            f.add_row(r["kind"], str(r["seed"]), r["outcome"], r["detail"])
        out.append(f)
    return out
