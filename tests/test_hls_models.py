"""HLS C++ of whole compiled models: g++ C simulation == onnxruntime(reference.onnx), bit for bit.

The build directory's hls/ comes from the same integer IR as the RTL; the golden is the
reference ONNX model in onnxruntime, exactly as `nnfpga verify` uses it for the RTL. Dense
chains come from backends/hls.py, convolutional and branching models from backends/hls_graph.py;
both stream images channels-last (lower.to_stream_order), as the RTL does.
"""
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from nnfpga.backends.hls import csim
from nnfpga.backends.lower import from_stream_order, region_input, to_stream_order
from nnfpga.backends.reference_onnx import run_reference
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.build import CompileOptions, compile_model
from nnfpga.ir.interpreter import quantize_array
from nnfpga.ir.textio import load_ir
from nnfpga.verify import _qtype

sys.path.insert(0, str(Path(__file__).parent))
import onnx_models  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")


def quantized_inputs(build: Path, x: np.ndarray) -> np.ndarray:
    """The accelerator's input for float samples x, in the IR's shape [B, *input shape]."""
    record = json.loads((build / "manifest.json").read_text())["accelerator_input"]
    return quantize_array(x.reshape((len(x), *record["shape"])).astype(np.float64), _qtype(record))


def csim_and_golden(build: Path, x: np.ndarray, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """C simulation of build/hls and onnxruntime(reference.onnx) on the same inputs, both in stream order."""
    manifest = json.loads((build / "manifest.json").read_text())
    x_q = quantized_inputs(build, x)
    reference = onnx.load(str(build / "reference.onnx"))
    (golden,) = run_reference(reference, {reference.graph.input[0].name: x_q}).values()
    out = csim(build / "hls", to_stream_order(x_q, manifest["accelerator_input"]["shape"]), work_dir=work)
    return out, to_stream_order(golden, manifest["accelerator_output"]["shape"])


@pytest.mark.parametrize("example, inputs, pipeline", [
    ("digits_mlp", "test.npz", "canonicalize,quantize,fold"),
    ("jet_mlp", None, "canonicalize,quantize,fold{pe=2,simd=16}"),
    ("jet_mlp", None, "canonicalize,quantize{wbits=4,abits=5},fold{pe=8,simd=4}"),
])
def test_csim_matches_onnxruntime_on_the_reference(tmp_path, example, inputs, pipeline):
    folder = EXAMPLES / example
    build = tmp_path / "build"
    compile_model(folder / "model.onnx", build, CompileOptions(pipeline=pipeline, calib_path=folder / "calib.npz"))
    if inputs:
        x = np.load(folder / inputs)["input"][:300]
    else:
        x = np.random.default_rng(4).standard_normal((500, 16)).astype(np.float32)
    out, golden = csim_and_golden(build, x, tmp_path / "csim")
    assert out.shape == golden.shape == (len(x), golden.shape[1])
    assert np.array_equal(out, golden)


def test_digits_cnn_csim_matches_onnxruntime(tmp_path):
    folder = EXAMPLES / "digits_cnn"
    build = tmp_path / "build"
    compile_model(folder / "model.onnx", build, CompileOptions(calib_path=folder / "calib.npz"))
    x = np.load(folder / "test.npz")["input"]
    out, golden = csim_and_golden(build, x, tmp_path / "csim")
    assert len(out) == len(x) >= 100 and np.unique(golden).size > 50  # many distinct logits
    assert np.array_equal(out, golden)


@pytest.mark.parametrize("builder", ["residual_block", "depthwise_separable", "strided_cnn", "concat_block",
                                     "conv1d_net"])
def test_cnn_block_csim_matches_onnxruntime(tmp_path, builder):
    """Calibrated on compile's seeded random data; fed other seeded random data."""
    model = onnx_models.save(getattr(onnx_models, builder)(), tmp_path / f"{builder}.onnx")
    build = tmp_path / "build"
    compile_model(Path(model), build)
    shape = json.loads((build / "manifest.json").read_text())["float_input"]["shape"]
    x = np.random.default_rng(7).standard_normal((100, *shape[1:])).astype(np.float32)
    out, golden = csim_and_golden(build, x, tmp_path / "csim")
    assert np.unique(golden).size > 20
    assert np.array_equal(out, golden)


@pytest.mark.parametrize("builder, fold", [("residual_block", "fold{pe=2,simd=4,window=3}"),
                                           ("strided_cnn", "fold{pe=4,simd=9,window=9}")])
def test_window_taps_csim_matches_onnxruntime(tmp_path, builder, fold):
    """Windows that emit several taps per beat, with a pixel over several beats (pe below the
    channels): the weight rows follow the window's stream order in C++ as in the RTL."""
    model = onnx_models.save(getattr(onnx_models, builder)(), tmp_path / f"{builder}.onnx")
    build = tmp_path / "build"
    compile_model(Path(model), build, CompileOptions(pipeline=f"canonicalize,quantize,channels_last,{fold}"))
    g = load_ir(build / "ir" / "final")
    design = lower_stream(g, region_input(g))
    windows = [i.params for i in design.instances if i.module == "nnfpga_window"]
    assert any(w["TH"] * w["TW"] > 1 and w["PAR"] < w["C"] for w in windows)
    shape = json.loads((build / "manifest.json").read_text())["float_input"]["shape"]
    x = np.random.default_rng(8).standard_normal((60, *shape[1:])).astype(np.float32)
    out, golden = csim_and_golden(build, x, tmp_path / "csim")
    assert np.unique(golden).size > 20
    assert np.array_equal(out, golden)


def test_cnn_hls_has_the_rtl_structure(tmp_path):
    """One process per module (no repack, the skip FIFO a stream depth), a pragma per dense layer."""
    model = onnx_models.save(onnx_models.residual_block(), tmp_path / "residual.onnx")
    build = tmp_path / "build"
    compile_model(Path(model), build)
    cpp = (build / "hls" / "nnfpga_design.cpp").read_text()
    g = load_ir(build / "ir" / "final")
    design = lower_stream(g, region_input(g))
    modules = [i.module for i in design.instances]
    calls = re.findall(r"^    (\w+)_layer\(", cpp, re.M)
    assert len(calls) == len(modules) - modules.count("nnfpga_fifo") - modules.count("nnfpga_repack")
    assert "#pragma HLS DATAFLOW" in cpp
    assert len(re.findall(r"BIND_OP variable=prod op=mul impl=dsp", cpp)) == len(design.layers)
    (fifo,) = [i for i in design.instances if i.module == "nnfpga_fifo"]
    assert f"depth={fifo.params['DEPTH'] * fifo.inputs['s_axis'].par}\n" in cpp
    tcl = (build / "project" / "vitis_hls.tcl").read_text()
    assert "set_top nnfpga_top" in tcl and "tb_expected.txt" in tcl


@pytest.mark.parametrize("example", ["jet_mlp", "digits_cnn"])
def test_build_testbench_vectors_are_the_exact_outputs(tmp_path, example):
    """The vectors compile writes for Vitis csim/cosim pass the generated testbench as they are,
    and are what onnxruntime computes on the reference."""
    folder = EXAMPLES / example
    compile_model(folder / "model.onnx", tmp_path / "b", CompileOptions(calib_path=folder / "calib.npz"))
    hls = tmp_path / "b" / "hls"
    x = np.loadtxt(hls / "tb_input.txt", dtype=np.int64, ndmin=2)
    expected = np.loadtxt(hls / "tb_expected.txt", dtype=np.int64, ndmin=2)
    assert len(x) == 16
    assert np.array_equal(csim(hls, x, expected, work_dir=tmp_path / "csim", strict=True), expected)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    reference = onnx.load(str(tmp_path / "b" / "reference.onnx"))
    x_ir = from_stream_order(x, manifest["accelerator_input"]["shape"])
    (golden,) = run_reference(reference, {reference.graph.input[0].name: x_ir}).values()
    assert np.array_equal(to_stream_order(golden, manifest["accelerator_output"]["shape"]), expected)


def test_cnn_hls_bad_input_is_a_clear_error(tmp_path):
    from nnfpga.backends.hls_graph import emit_hls_graph
    from nnfpga.errors import BuildError, CalibrationError

    model = onnx_models.save(onnx_models.conv1d_net(), tmp_path / "conv1d.onnx")
    compile_model(Path(model), tmp_path / "build")
    g = load_ir(tmp_path / "build" / "ir" / "final")
    design = lower_stream(g, region_input(g))
    with pytest.raises(CalibrationError, match=r"test_inputs must be integer vectors \[B, 32\]"):
        emit_hls_graph(design, tmp_path / "a", test_inputs=np.zeros((2, 31), np.int64))
    with pytest.raises(BuildError, match="not a part name"):
        emit_hls_graph(design, tmp_path / "b", part="x}; exec rm")
    design.instances[1].module = "nnfpga_mystery"
    with pytest.raises(BuildError, match="no process for module nnfpga_mystery"):
        emit_hls_graph(design, tmp_path / "c")
