"""Split designs (split pass) in Verilator: a layer divided between a 4-bit LUT part and an
8-bit DSP part stays bit-exact against onnxruntime(reference.onnx), and the FIFOs at the
parts' join let the interval reach the parts' own rate, as predicted."""
from __future__ import annotations

import json
from pathlib import Path

from nnfpga.build import CompileOptions, compile_model
from nnfpga.verify import verify_build

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_split_digits_mlp_is_bit_exact_at_its_parts_rate(tmp_path):
    digits = EXAMPLES / "digits_mlp"
    out = tmp_path / "b"
    build = compile_model(digits / "model.onnx", out, CompileOptions(
        calib_path=digits / "calib.npz", pipeline="canonicalize,split{ratio=0.5,lut_bits=4},quantize,channels_last,autofold{target_fps=1500000}"))
    # (a rate the parts set: at the fastest folding the concat's one beat per cycle would set it)
    split = [r for r in build.manifest["pass_reports"] if r["pass"] == "split" and r["split"]]
    assert [r["layer"] for r in split] == ["relu0", "relu1"]  # the output layer keeps its channel order
    design = json.loads((out / "rtl" / "design.json").read_text())
    joins = [f for f in design["fifos"] if f["derivation"].startswith("split layer")]
    assert len(joins) == 4  # one FIFO per part at each of the two joins
    slowest = max(layer["cycles"] * layer["vectors"] for layer in design["layers"])
    # without the join FIFOs a part stalls while the concat takes the other (tests/test_split_lowering.py)
    assert design["predicted_cycles_per_inference"] == slowest == 64
    result = verify_build(out, inputs_path=digits / "test.npz", samples=100, seed=6)
    print(json.dumps({k: result[k] for k in ("float_accuracy", "quantized_accuracy", "cycles_per_inference",
                                             "predicted_cycles_per_inference", "latency_cycles")}))
    assert result["samples"] == 100 and result["mismatches"] == 0 and result["ir_vs_reference_mismatches"] == 0
    assert result["bit_exact"]
    assert result["cycles_per_inference"] == result["predicted_cycles_per_inference"] == 64
    assert result["latency_cycles"] == result["predicted_latency_cycles"]


def test_split_digits_cnn_is_bit_exact(tmp_path):
    digits = EXAMPLES / "digits_cnn"
    out = tmp_path / "b"
    build = compile_model(digits / "model.onnx", out, CompileOptions(
        calib_path=digits / "calib.npz", pipeline="canonicalize,split{ratio=0.5,lut_bits=4},quantize,channels_last,fold{pe=2,simd=4}"))
    split = [r for r in build.manifest["pass_reports"] if r["pass"] == "split" and r["split"]]
    assert any(r["op"] == "conv" for r in split)
    result = verify_build(out, inputs_path=digits / "test.npz", samples=40, seed=7)
    assert result["mismatches"] == 0 and result["ir_vs_reference_mismatches"] == 0
    assert result["bit_exact"]
    assert result["cycles_per_inference"] == result["predicted_cycles_per_inference"]
