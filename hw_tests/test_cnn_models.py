"""Convolutional ONNX models compiled with the default pipeline and verified in Verilator.

`verify_build` drives the RTL with random input gaps and output backpressure and compares
every output with onnxruntime on the reference ONNX; the measured interval and latency
equal the ones predicted from the module graph.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nnfpga.build import CompileOptions, compile_model
from nnfpga.verify import verify_build

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import onnx_models  # noqa: E402

def _check_rate(result: dict) -> None:
    """Measured interval and latency equal the cycle model's (backends/stream_sim.py)."""
    for what in ("cycles_per_inference", "latency_cycles"):
        predicted, measured = result[f"predicted_{what}"], result[what]
        print(f"{what}: measured {measured}, predicted {predicted}")
        assert measured == predicted


def test_digits_cnn_is_bit_exact_and_as_accurate_as_float(tmp_path):
    digits = ROOT / "examples" / "digits_cnn"
    build = tmp_path / "digits_cnn"
    compile_model(digits / "model.onnx", build, CompileOptions(calib_path=digits / "calib.npz"))
    result = verify_build(build, samples=150, inputs_path=digits / "test.npz", seed=1)
    print(result)
    assert result["samples"] == 150 and result["mismatches"] == 0 and result["bit_exact"]
    assert result["quantized_accuracy"] >= result["float_accuracy"] - 0.02
    _check_rate(result)


def test_digits_cnn_on_mixed_cores_is_bit_exact(tmp_path):
    """Convolutions on the lut core and packed two per multiplier (4-bit weights), the dense
    layer on the lut core: the window's matrix-vector units take the cores like dense ones."""
    digits = ROOT / "examples" / "digits_cnn"
    build = tmp_path / "digits_cnn_cores"
    pipeline = "canonicalize,quantize{wbits=4},channels_last,fold{pe=4,simd=8,core=Relu_output_0:lut+logits:lut,pack=Relu_1_output_0:2}"
    compile_model(digits / "model.onnx", build, CompileOptions(calib_path=digits / "calib.npz", pipeline=pipeline))
    result = verify_build(build, samples=30, inputs_path=digits / "test.npz", seed=2)
    assert result["samples"] == 30 and result["mismatches"] == 0 and result["bit_exact"]
    _check_rate(result)


@pytest.mark.parametrize("builder", ["residual_block", "depthwise_separable", "strided_cnn", "concat_block",
                                     "conv1d_net"])
def test_cnn_block_is_bit_exact_under_backpressure(tmp_path, builder):
    model = onnx_models.save(getattr(onnx_models, builder)(), tmp_path / f"{builder}.onnx")
    build = tmp_path / "build"
    compile_model(Path(model), build)
    result = verify_build(build, samples=40, seed=2)
    print(builder, result)
    assert result["samples"] == 40 and result["mismatches"] == 0 and result["bit_exact"]
    _check_rate(result)


def test_an_image_output_streams_out_channels_last(tmp_path):
    """A backbone whose result is a feature map (a head would run elsewhere): the hardware
    emits it channels-last and verify compares it in that order."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(4)
    w = numpy_helper.from_array((rng.standard_normal((4, 2, 3, 3)) * 0.4).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "backbone", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 3, 3])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "backbone.onnx"
    onnx.save(model, str(path))
    build = tmp_path / "build"
    compile_model(path, build, CompileOptions(pipeline="canonicalize,quantize,channels_last,fold{pe=2,simd=6}"))
    result = verify_build(build, samples=30, seed=3)
    assert result["bit_exact"] and result["mismatches"] == 0
    assert result["float_max_abs_err"] < 0.1
    _check_rate(result)
