"""The stream lowering of a split layer's join: a FIFO behind each part lets both run at their
own rate (the cycle model of backends/stream_sim.py, which Verilator matches in
hw_tests/test_rtl_split.py); the HLS backend computes the same integers."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends import stream_graph
from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import predicted_timing
from nnfpga.build import CompileOptions, compile_model
from nnfpga.frontend import load_onnx
from nnfpga.passes import PassContext, run_pipeline
from test_hls_models import csim_and_golden

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp"


def _split_digits(pipeline):
    g = load_onnx(DIGITS / "model.onnx")
    calib = next(iter(np.load(DIGITS / "calib.npz").values()))
    return run_pipeline(g, pipeline, PassContext(calib={g.inputs[0].name: calib}, device="ecp5-85k"))


def test_each_part_gets_a_fifo_of_one_pixel_and_the_pair_runs_at_its_rate(monkeypatch):
    # A rate the parts set (at the fastest folding, the concat's one beat per cycle sets it).
    g = _split_digits("canonicalize,split{ratio=0.5},quantize,channels_last,autofold{target_fps=800000}")
    design = lower_stream(g, region_input(g))
    joins = [f for f in design.fifos if f["derivation"].startswith("split layer")]
    beats = {}
    for inst in design.instances:
        if inst.module == "nnfpga_concat":
            par = int(inst.params["PAR"])
            beats[inst.name] = (int(inst.params["CA"]) // par, int(inst.params["CB"]) // par)
    assert len(beats) == 2 and sorted(f["depth"] for f in joins) == sorted(max(b, 2) for p in beats.values() for b in p)
    slowest = max(inst.cycles for inst in design.instances)
    assert predicted_timing(design)[1] == slowest
    monkeypatch.setattr(stream_graph, "split_layer_of", lambda a, b: None)
    without = lower_stream(g, region_input(g))
    assert not [f for f in without.fifos if f["derivation"].startswith("split layer")]
    assert predicted_timing(without)[1] > slowest  # a part stalls while the concat takes the other


def test_a_concat_of_two_unrelated_layers_gets_no_split_fifo():
    g = _split_digits("canonicalize,split{ratio=0.5},quantize,channels_last,fold{pe=2,simd=4}")
    for node in g.nodes:
        if node.op == "qmatmul" and node.attrs.get("part_of") == "relu1":
            node.attrs["part_of"] = "relu1_" + node.attrs["core"]  # no longer parts of one layer
    design = lower_stream(g, region_input(g))
    assert [f["join"] for f in design.fifos if f["derivation"].startswith("split layer")] == \
        [f["join"] for f in design.fifos if "relu0" in f["derivation"]]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_split_digits_mlp_hls_csim_equals_the_reference(tmp_path):
    build = tmp_path / "build"
    compile_model(DIGITS / "model.onnx", build, CompileOptions(
        pipeline="canonicalize,split{ratio=0.5},quantize,channels_last,fold{pe=2,simd=4}", calib_path=DIGITS / "calib.npz"))
    x = np.load(DIGITS / "test.npz")["input"][:200]
    out, golden = csim_and_golden(build, x, tmp_path / "csim")
    assert out.shape == golden.shape == (200, 10)
    assert np.array_equal(out, golden)
