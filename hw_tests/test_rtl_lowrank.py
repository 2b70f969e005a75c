"""Factored designs (lowrank) in Verilator: a layer split into K->r and r->N stays bit-exact
against onnxruntime(reference.onnx), and the interval follows the smaller layers."""
from __future__ import annotations

import json
from pathlib import Path

from nnfpga.build import CompileOptions, compile_model
from nnfpga.verify import verify_build

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_factored_digits_mlp_is_bit_exact(tmp_path):
    digits = EXAMPLES / "digits_mlp"
    out = tmp_path / "b"
    build = compile_model(digits / "model.onnx", out, CompileOptions(
        calib_path=digits / "calib.npz", pipeline="canonicalize,lowrank{energy=0.9},quantize,fold{pe=2,simd=4}"))
    factored = [r for r in build.manifest["pass_reports"] if r["factored"]]
    assert factored, "energy 0.9 factors at least one digits layer"
    assert len(build.manifest["layers"]) == 3 + len(factored)
    result = verify_build(out, inputs_path=digits / "test.npz", samples=200, seed=4)
    print(json.dumps({k: result[k] for k in ("float_accuracy", "quantized_accuracy", "cycles_per_inference",
                                             "predicted_cycles_per_inference")}))
    assert result["samples"] == 200 and result["mismatches"] == 0 and result["ir_vs_reference_mismatches"] == 0
    assert result["bit_exact"]
    assert result["cycles_per_inference"] == result["predicted_cycles_per_inference"]
    assert result["quantized_accuracy"] >= result["float_accuracy"] - 0.05


def test_factored_digits_cnn_is_bit_exact(tmp_path):
    digits = EXAMPLES / "digits_cnn"
    out = tmp_path / "b"
    build = compile_model(digits / "model.onnx", out, CompileOptions(
        calib_path=digits / "calib.npz", pipeline="canonicalize,lowrank{rank=2},quantize,channels_last,fold{pe=2,simd=4}"))
    assert any(r["factored"] and r["op"] == "conv" for r in build.manifest["pass_reports"])
    result = verify_build(out, inputs_path=digits / "test.npz", samples=40, seed=5)
    assert result["mismatches"] == 0 and result["ir_vs_reference_mismatches"] == 0
    assert result["bit_exact"]
