"""Host fallback end to end: host prefix (TVM) -> Verilated RTL -> host suffix (TVM).

Two digits models: the digits MLP with a Softmax appended (examples/digits_softmax), and a
variant with an input normalisation (Sub) before the first layer and a Sigmoid between the
second and the third, which splits the layers: the accelerator keeps the larger chain
(64x64 + 64x32 multiply-accumulates) and the last layer runs on the host in float. `run`
must agree with onnxruntime on the float model on at least 98% of the test images, and the
accelerated part must be bit-exact (`verify`).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from nnfpga.build import CompileOptions, Hooks, compile_model
from nnfpga.run import run_build
from nnfpga.verify import verify_build

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits_mlp"
SOFTMAX = ROOT / "examples" / "digits_softmax" / "model.onnx"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tvm") is None,
                                reason="Apache TVM is not installed: pip install -e '.[host]' "
                                       "(or pip install apache-tvm) to run the host fallback")


def sigmoid_variant(path: Path) -> Path:
    """Digits with Sub(input, 0.5) first and Sigmoid in place of the second ReLU."""
    model = onnx.load(str(SOFTMAX))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.full((1, 64), 0.5, np.float32), "centre"))
    for node in graph.node:
        if node.op_type == "Relu" and node.name == "relu1":
            node.op_type = "Sigmoid"
        node.input[:] = ["centred" if i == "input" else i for i in node.input]
    graph.node.insert(0, helper.make_node("Sub", ["input", "centre"], ["centred"], name="normalise"))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("variant", ["softmax", "prefix_sigmoid_softmax"])
def test_run_agrees_with_the_float_model_and_the_accelerator_is_bit_exact(tmp_path, variant):
    model = SOFTMAX if variant == "softmax" else sigmoid_variant(tmp_path / "m.onnx")
    warnings = []
    build = compile_model(model, tmp_path / "build", CompileOptions(calib_path=DIGITS / "calib.npz"),
                          Hooks(warn=warnings.append))
    host = build.manifest["host"]
    parts = {p["name"]: p["ops"] for p in host["parts"]}
    if variant == "softmax":
        assert parts == {"suffix": ["Softmax (%probs)"]} and not warnings
    else:
        assert parts == {"prefix": ["Sub (%centred)"],
                         "suffix": ["Sigmoid (%relu1)", "dense (%logits)", "Softmax (%probs)"]}
        assert any("split this model into 2" in w for w in warnings)
        assert len(build.manifest["layers"]) == 2
    print("TVM seconds:", build.timings)

    result, outputs = run_build(build.out_dir, DIGITS / "test.npz", seed=5)
    print(variant, "run:", result)
    assert result["samples"] == 450 and result["accelerator"] == "rtl"
    assert result["top1_agreement"] >= 0.98
    assert result["float_max_abs_err"] < 0.25  # probabilities
    assert abs(result["accuracy"] - result["float_accuracy"]) <= 0.02  # the sigmoid variant is untrained
    probs = outputs["probs"].reshape(450, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)

    check = verify_build(build.out_dir, inputs_path=DIGITS / "test.npz", samples=150, seed=6)
    print(variant, "verify:", check)
    assert check["bit_exact"] and check["mismatches"] == 0 and check["ir_vs_reference_mismatches"] == 0
    assert check["top1_agreement"] >= 0.98  # the whole chain, host suffix in the interpreter


def test_cnn_ending_in_softmax_runs_end_to_end(tmp_path):
    """The digits CNN with a Softmax appended: convolutions on the accelerator, Softmax on the host."""
    cnn = ROOT / "examples" / "digits_cnn"
    model = onnx.load(str(cnn / "model.onnx"))
    graph = model.graph
    graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
    graph.output[0].name = "probs"
    onnx.checker.check_model(model)
    path = tmp_path / "cnn_softmax.onnx"
    onnx.save(model, str(path))

    build = compile_model(path, tmp_path / "build", CompileOptions(calib_path=cnn / "calib.npz"))
    assert {p["name"]: p["ops"] for p in build.manifest["host"]["parts"]} == {"suffix": ["Softmax (%probs)"]}
    result, outputs = run_build(build.out_dir, cnn / "test.npz", samples=200, seed=5)
    print("cnn run:", result)
    assert result["top1_agreement"] >= 0.98
    assert abs(result["accuracy"] - result["float_accuracy"]) <= 0.02
    np.testing.assert_allclose(outputs["probs"].reshape(200, 10).sum(1), 1.0, rtol=1e-5)
    check = verify_build(build.out_dir, inputs_path=cnn / "test.npz", samples=100, seed=6)
    assert check["bit_exact"] and check["mismatches"] == 0
