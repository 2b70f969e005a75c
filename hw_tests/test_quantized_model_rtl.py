"""A model that arrives quantized (onnxruntime's quantize_static, QDQ per channel) compiled
with its own scales, no calibration data, and verified bit-exact in Verilator."""
from __future__ import annotations

import sys
from pathlib import Path

from nnfpga.build import CompileOptions, Hooks, compile_model
from nnfpga.verify import verify_build

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_quantized_models import quantize_example  # noqa: E402


def test_qdq_digits_cnn_is_bit_exact_in_rtl(tmp_path):
    model = quantize_example("digits_cnn", "qdq", True, tmp_path)
    build = tmp_path / "build"
    warnings: list[str] = []
    compile_model(model, build, CompileOptions(), Hooks(warn=warnings.append))
    assert not any("calibrat" in w for w in warnings), warnings
    result = verify_build(build, samples=150, inputs_path=ROOT / "examples" / "digits_cnn" / "test.npz", seed=1)
    print(result)
    assert result["samples"] == 150 and result["mismatches"] == 0 and result["bit_exact"]
    # verify's float figures compare with onnxruntime running the quantized model itself
    assert result["top1_agreement"] >= 0.99
    assert abs(result["quantized_accuracy"] - result["float_accuracy"]) <= 0.01


def test_qoperator_concat_block_is_bit_exact_in_rtl(tmp_path):
    """QLinearConcat of branches quantized apart: the requantizing 1×1 depthwise conv in RTL."""
    from test_quantized_models import quantize_block

    model = quantize_block("concat_block", "qop", tmp_path)
    build = tmp_path / "build"
    compile_model(model, build, CompileOptions())
    result = verify_build(build, samples=40, seed=2)
    print(result)
    assert result["samples"] == 40 and result["mismatches"] == 0 and result["bit_exact"]
