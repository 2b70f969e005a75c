"""HLS C++ of whole compiled models: g++ C simulation == onnxruntime(reference.onnx), bit for bit.

The build directory's hls/ comes from the same integer IR as the RTL; the golden is the
reference ONNX model in onnxruntime, exactly as `nnfpga verify` uses it for the RTL.
"""
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from nnfpga.backends.hls import csim
from nnfpga.backends.reference_onnx import run_reference
from nnfpga.build import compile_model
from nnfpga.ir.interpreter import quantize_array
from nnfpga.verify import _qtype

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")


def quantized_inputs(build: Path, x: np.ndarray) -> np.ndarray:
    import json
    record = json.loads((build / "manifest.json").read_text())["accelerator_input"]
    return quantize_array(x.reshape(len(x), -1).astype(np.float64), _qtype(record))


@pytest.mark.parametrize("example, inputs, pipeline", [
    ("digits_mlp", "test.npz", "canonicalize,quantize,fold"),
    ("jet_mlp", None, "canonicalize,quantize,fold{pe=2,simd=16}"),
    ("jet_mlp", None, "canonicalize,quantize{wbits=4,abits=5},fold{pe=8,simd=4}"),
])
def test_csim_matches_onnxruntime_on_the_reference(tmp_path, example, inputs, pipeline):
    folder = EXAMPLES / example
    build = tmp_path / "build"
    compile_model(folder / "model.onnx", build, pipeline=pipeline, calib_path=folder / "calib.npz")
    if inputs:
        x = np.load(folder / inputs)["input"][:300]
    else:
        x = np.random.default_rng(4).standard_normal((500, 16)).astype(np.float32)
    x_q = quantized_inputs(build, x)
    reference = onnx.load(str(build / "reference.onnx"))
    (golden,) = run_reference(reference, {reference.graph.input[0].name: x_q}).values()
    out = csim(build / "hls", x_q, work_dir=tmp_path / "csim")
    assert out.shape == (len(x), golden.reshape(len(x), -1).shape[1])
    assert np.array_equal(out, golden.reshape(len(x), -1))


def test_build_testbench_vectors_are_the_exact_outputs(tmp_path):
    """The vectors compile writes for Vitis csim/cosim pass the generated testbench as they are."""
    folder = EXAMPLES / "jet_mlp"
    compile_model(folder / "model.onnx", tmp_path / "b", calib_path=folder / "calib.npz")
    hls = tmp_path / "b" / "hls"
    x = np.loadtxt(hls / "tb_input.txt", dtype=np.int64, ndmin=2)
    expected = np.loadtxt(hls / "tb_expected.txt", dtype=np.int64, ndmin=2)
    assert len(x) == 16
    assert np.array_equal(csim(hls, x, expected, work_dir=tmp_path / "csim", strict=True), expected)
