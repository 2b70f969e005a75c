"""Lowering convolutional graphs to stream modules, without simulation: matrices, module
choice, FIFO sizing, errors, and the build directory and report they produce."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.lower import from_stream_order, region_input, to_stream_order
from nnfpga.backends.stream_graph import conv_matrix, lower_stream
from nnfpga.build import compile_model
from nnfpga.errors import NnfpgaError
from nnfpga.ir import parse
from nnfpga.ir.spatial import conv_nchw
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline
from nnfpga.report import build_report

sys.path.insert(0, str(Path(__file__).parent))
import onnx_models  # noqa: E402


def test_conv_matrix_rows_follow_the_window_order():
    rng = np.random.default_rng(0)
    for group, (o, c) in ((1, (3, 2)), (2, (4, 4)), (4, (4, 4))):
        w = rng.integers(-5, 6, (o, c // group, 3, 2))
        x = rng.integers(-9, 10, (1, c, 3, 2))  # one window exactly
        want = conv_nchw(x, w, np.zeros(o, np.int64), {"group": group, "strides": [1, 1], "pads": [0, 0, 0, 0],
                                                        "dilations": [1, 1]}).reshape(o)
        window = x[0].transpose(1, 2, 0).reshape(-1)  # (ky, kx, c), as nnfpga_window streams it
        assert np.array_equal(window @ conv_matrix(w, c, group), want)


def test_stream_order_is_channels_last():
    x = np.arange(2 * 3 * 2 * 2).reshape(2, 1, 3, 2, 2)
    s = to_stream_order(x, (1, 3, 2, 2))
    assert s.shape == (2, 12) and list(s[0, :3]) == [x[0, 0, 0, 0, 0], x[0, 0, 1, 0, 0], x[0, 0, 2, 0, 0]]
    assert np.array_equal(to_stream_order(x.reshape(2, 1, 12), (1, 12)), x.reshape(2, 12))


def _quantized(text: str, pipeline: str = "quantize,channels_last"):
    g = parse(text, {"w": np.ones((2, 2, 3, 3), np.float32), "b": np.zeros(2, np.float32)})
    calib = {g.inputs[0].name: np.random.default_rng(0).standard_normal((8,) + g.inputs[0].type.shape[1:]).astype(np.float32)}
    return run_pipeline(g, parse_pipeline(pipeline), PassContext(calib=calib))


CONV_OUT = """graph @g(%x: tensor<1x2x4x4xf32>) {
  const %w : tensor<2x2x3x3xf32> = @w
  const %b : tensor<2xf32> = @b
  %c = conv(%x, %w, %b) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x2x4x4xf32>
  return %c
}
"""


def test_an_image_leaves_the_accelerator_channels_last(tmp_path):
    q = _quantized(CONV_OUT)
    design = lower_stream(q, region_input(q))
    assert design.output_value.type.shape == (1, 2, 4, 4) and design.output.beats == 32 // design.output.par
    x = np.arange(2 * 32).reshape(2, 1, 2, 4, 4)
    assert np.array_equal(from_stream_order(to_stream_order(x, (1, 2, 4, 4)), (1, 2, 4, 4)), x)


def test_nchw_flatten_without_channels_last_is_explained():
    text = CONV_OUT.replace("  return %c", "  %f = reshape(%c) {shape = [1, 32]} : tensor<1x32xf32>\n  return %f")
    q = _quantized(text, "quantize")
    with pytest.raises(NnfpgaError, match="channels_last"):
        lower_stream(q, region_input(q))


def test_residual_build_records_its_skip_fifo_and_reports_the_derivation(tmp_path):
    model = onnx_models.save(onnx_models.residual_block(), tmp_path / "res.onnx")
    build = tmp_path / "b"
    compile_model(Path(model), build)
    design = json.loads((build / "rtl" / "design.json").read_text())
    modules = [i["module"] for i in design["instances"]]
    assert modules.count("nnfpga_fork") == 1 and modules.count("nnfpga_add") == 1
    (fifo,) = design["fifos"]
    assert fifo["depth"] == 2 * fifo["deadlock_depth"] + 2 and fifo["deadlock_depth"] > 0
    assert f"depth {fifo['deadlock_depth']}" in fifo["derivation"]
    assert (build / "hls" / "nnfpga_design.cpp").is_file() and (build / "hls" / "tb_expected.txt").is_file()
    report = build_report(build)
    assert report["fifos"] == design["fifos"]
    html = (build / "report.html").read_text()
    assert "cannot deadlock" in html and fifo["instance"] in html
