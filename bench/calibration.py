"""Accuracy of quantize{wbits=B,abits=B,calib=C} on the examples' test sets, per bit width and
calibration method (the IR interpreter, calibrated on each example's calib.npz).

    python -m bench.calibration            (prints a Markdown table; about 30 s on 2 cores)

Each quantized model's integer region is also run through its reference ONNX (onnxruntime) on
the test images and must equal the interpreter bit for bit, whatever the calibration method.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from bench.common import EXAMPLES

MODELS = ("mnist_mlp", "mnist_cnn", "digits_mlp")
BITS = (8, 6, 4, 3)
METHODS = ("minmax", "percentile", "mse")


def _load(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def accuracy(model: str, bits: int, method: str) -> float:
    from nnfpga.backends.reference_onnx import reference_region, run_reference, to_reference_onnx
    from nnfpga.frontend import load_onnx
    from nnfpga.ir import run_batch
    from nnfpga.passes import PassContext, parse_pipeline, run_pipeline

    folder = EXAMPLES / model
    test = _load(folder / "test.npz")
    pipeline = f"canonicalize,quantize{{wbits={bits},abits={bits},calib={method}}}"
    q = run_pipeline(load_onnx(folder / "model.onnx"), parse_pipeline(pipeline),
                     PassContext(calib=_load(folder / "calib.npz")))
    reference, region = to_reference_onnx(q), reference_region(q)
    (logits,) = q.outputs
    q.outputs = [*region.inputs, *region.outputs, logits]
    env = run_batch(q, {q.inputs[0].name: test["input"]})
    golden = run_reference(reference, {v.name: env[v.name] for v in region.inputs})
    for v in region.outputs:
        if not np.array_equal(golden[v.name], env[v.name]):
            raise AssertionError(f"{model} {pipeline}: the interpreter and the reference ONNX differ at %{v.name}")
    out = env[logits.name].reshape(len(test["label"]), -1)
    return float(np.mean(out.argmax(1) == test["label"]))


def float_accuracy(model: str) -> float:
    from nnfpga.frontend import load_onnx
    from nnfpga.ir import run_batch

    test = _load(EXAMPLES / model / "test.npz")
    g = load_onnx(EXAMPLES / model / "model.onnx")
    (out,) = run_batch(g, {g.inputs[0].name: test["input"]}).values()
    return float(np.mean(out.reshape(len(test["label"]), -1).argmax(1) == test["label"]))


def main() -> int:
    start = time.time()
    print("| model (float IR accuracy) | bits | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for model in MODELS:
        name = f"{model} ({100 * float_accuracy(model):.1f}%)"
        for bits in BITS:
            cells = [f"{100 * accuracy(model, bits, m):.1f}%" for m in METHODS]
            print(f"| {name} | {bits} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n({time.time() - start:.0f} s; every model equal to its reference ONNX bit for bit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
