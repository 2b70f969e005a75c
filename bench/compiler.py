"""Section 1 — compiler speed: `compile_model` (ONNX -> IR -> passes -> RTL, HLS C++,
reference ONNX; no simulation), wall time and peak memory, one child process per model."""
from __future__ import annotations

import statistics

from bench.common import (DEFAULT_FOLD, EXAMPLES, LIGHT_CALIB_SAMPLES, SYNTHETIC_MLP, WORKLOADS, fmt_bytes,
                          fmt_seconds, light_models, pipeline, run_child, synthetic_mlp)


QUICK_LIGHT = ("light_squeezenet",)
"""The light graphs a --quick run compiles."""


def run(ctx) -> dict:
    models = [(w.name, w.model, w.calib, ctx.repeat) for w in WORKLOADS.values()]
    big = "mlp_" + "x".join(map(str, SYNTHETIC_MLP))
    # No calibration file: compile draws 256 seeded samples, as the CLI does without --calib.
    models.append((big, synthetic_mlp(ctx.work / "models" / f"{big}.onnx"), None, 1 if ctx.quick else 3))
    cnn = EXAMPLES / "digits_cnn"
    models.append(("digits_cnn", cnn / "model.onnx", cnn / "calib.npz", ctx.repeat))
    # --quick keeps its two-minute budget with the smallest light graph; the default set compiles all nine.
    light = {k: v for k, v in light_models().items() if not ctx.quick or k in QUICK_LIGHT}
    models += [(name, path, "light", 1) for name, path in light.items()]
    rows = []
    for name, path, calib, repeat in models:
        if not path.is_file():
            rows.append({"model": name, "status": "missing", "path": str(path)})
            ctx.say(f"compile {name}: not found at {path}")
            continue
        ctx.say(f"compile {name} ×{repeat}")
        r = run_child("compile", {"label": name, "model": str(path), "light_calib": calib == "light",
                                  "calib": calib and calib != "light" and str(calib),
                                  "pipeline": pipeline(DEFAULT_FOLD), "repeat": repeat,
                                  "tracemalloc": not (ctx.quick and repeat == 1), "work": str(ctx.work / "compile" / name)},
                      ctx.work / "compile")
        row = {"model": name, "path": str(path), "repeat": repeat, **r}
        if r["status"] == "ok":
            # The first compile in a process also pays for what loads on first use (Jinja templates,
            # TVM for host parts); the backends are imported with nnfpga.build.
            row["first_seconds"] = r["seconds"][0]
            if len(r["seconds"]) > 1:
                row["warm_median_seconds"] = statistics.median(r["seconds"][1:])
                row["warm_min_seconds"] = min(r["seconds"][1:])
        rows.append(row)
    return {"pipeline": pipeline(DEFAULT_FOLD), "rows": rows,
            "what": "compile_model wall time (after importing nnfpga.build; first and warm) and the child process's peak RSS "
                    "(imports included); tracemalloc peak = Python heap of one extra compile"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="1. Compiler speed — compile_model, frontend → RTL, no simulation")
    t.caption = ("one process per model; imports = nnfpga.build, every backend included; first compile includes "
                 "what loads on first use (Jinja templates, TVM); warm = median "
                 "of the later compiles; peak RSS of the process, imports included; tracemalloc peak = "
                 f"Python heap during one more compile. {SYNTHETIC_MLP[0]}→…: seeded random weights, "
                 f"calibrated on 256 synthetic samples; light_*: the onnx package's test graphs, calibrated on "
                 f"{LIGHT_CALIB_SAMPLES} synthetic samples, Softmax/LRN on the host (TVM); MACs: the accelerator's")
    for col in ("model", "status", "first compile", "warm median", "imports", "peak RSS",
                "tracemalloc peak", "MACs", "notes"):
        t.add_column(col, justify="left" if col in ("model", "status", "notes") else "right")
    for r in result["rows"]:
        if r["status"] == "ok":
            t.add_row(r["model"], "ok", fmt_seconds(r["first_seconds"]), fmt_seconds(r.get("warm_median_seconds")),
                      fmt_seconds(r["import_seconds"]), fmt_bytes(r["max_rss_bytes"]),
                      fmt_bytes(r["tracemalloc_peak_bytes"]), f"{r['macs']:,}",
                      f"{r['repeat']} compile{'s' if r['repeat'] > 1 else ''}")
        elif r["status"] == "unsupported":
            why = (f"unsupported: {', '.join(r['unsupported_ops'])} ({r['unsupported_nodes']} nodes)"
                   if r["unsupported_ops"] else r["message_first_line"][:160])
            t.add_row(r["model"], "rejected", f"rejected in {fmt_seconds(r['seconds_to_reject'])}", "—",
                      fmt_seconds(r["import_seconds"]), fmt_bytes(r["max_rss_bytes"]), "—", "—", why)
        else:
            t.add_row(r["model"], f"[red]{r['status']}[/red]", *["—"] * 6, r.get("error", r.get("path", "")))
    return t
