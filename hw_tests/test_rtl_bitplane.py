"""Bit-sliced and bit-planed designs in Verilator: weights rounded by bitslice, planes dropped
by bitplane (requant shift, M and weight bits rewritten), bit-exact against
onnxruntime(reference.onnx)."""
from __future__ import annotations

from pathlib import Path

from nnfpga.build import CompileOptions, compile_model
from nnfpga.verify import verify_build

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_bitsliced_digits_mlp_is_bit_exact(tmp_path):
    digits = EXAMPLES / "digits_mlp"
    out = tmp_path / "b"
    build = compile_model(digits / "model.onnx", out, CompileOptions(
        calib_path=digits / "calib.npz",
        pipeline="canonicalize,quantize,bitslice{s=2,keep=1},bitplane,fold{pe=2,simd=4}"))
    reports = build.manifest["pass_reports"]
    assert [r["pass"] for r in reports] == ["bitslice"] * 4 + ["bitplane"] * 3
    assert any(r["low_planes_dropped_max"] > 0 for r in reports if r["pass"] == "bitplane")
    result = verify_build(out, inputs_path=digits / "test.npz", samples=100, seed=6)
    assert result["samples"] == 100 and result["mismatches"] == 0 and result["ir_vs_reference_mismatches"] == 0
    assert result["bit_exact"]
