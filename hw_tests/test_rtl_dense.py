"""The generated accelerator in Verilator, bit for bit against onnxruntime(reference.onnx).

Each test compiles a model with the real pipeline, then `verify_build` drives the RTL with
random input gaps and output backpressure and compares every output with the golden.
Cycles per inference are measured on back-to-back inferences with no gaps and must equal
the build's prediction (design.json, the cycle model of backends/stream_sim.py); the
latency must equal nnfpga.cost's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nnfpga.build import CompileOptions, compile_model
from nnfpga.cost import estimate
from nnfpga.errors import BuildError
from nnfpga.hw_tests.sim import lint
from nnfpga.report import cost_inputs
from nnfpga.verify import verify_build

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT / "tests"))
from onnx_models import mlp, save  # noqa: E402


def compiled(tmp_path_factory, model: Path, pipeline: str, calib: Path | None = None) -> Path:
    out = tmp_path_factory.mktemp("build") / "b"
    compile_model(model, out, CompileOptions(pipeline=pipeline, calib_path=calib))
    return out


def predicted_latency(build: Path) -> int:
    """The latency nnfpga.cost predicts for a dense chain (nnfpga.hardware's stage counts)."""
    design = json.loads((build / "rtl" / "design.json").read_text())
    manifest = json.loads((build / "manifest.json").read_text())
    return estimate(device="ecp5-85k", **cost_inputs(build, manifest, design, []))["total"]["latency_cycles"]


def check_timing(result: dict, build: Path) -> None:
    predicted, measured = result["predicted_cycles_per_inference"], result["cycles_per_inference"]
    latency = predicted_latency(build)
    print(f"cycles per inference: measured {measured}, predicted {predicted}; "
          f"latency {result['latency_cycles']} cycles, predicted {latency}")
    assert measured == predicted
    assert result["latency_cycles"] == latency
    assert result["predicted_latency_cycles"] == latency  # verify --json carries the prediction, MLPs too


@pytest.mark.parametrize("pipeline", [
    "canonicalize,quantize,fold{pe=4,simd=8}",
    "canonicalize,quantize{wbits=6,abits=7},fold{pe=2,simd=16}",
])
def test_jet_mlp_is_bit_exact_for_two_foldings(tmp_path_factory, pipeline):
    jet = EXAMPLES / "jet_mlp"
    build = compiled(tmp_path_factory, jet / "model.onnx", pipeline, jet / "calib.npz")
    result = verify_build(build, samples=500, seed=1)
    print(result)
    assert result["samples"] == 500
    assert result["mismatches"] == 0 and result["ir_vs_reference_mismatches"] == 0
    assert result["bit_exact"]
    check_timing(result, build)


def test_jet_mlp_with_weight_rom_address_copies_is_bit_exact(tmp_path_factory):
    # The default pipeline's folding puts 256- to 512-bit weight words in logic ROMs, each
    # 64-bit slice read through its own copy of the address register (W_ADDR_COPIES).
    jet = EXAMPLES / "jet_mlp"
    build = compiled(tmp_path_factory, jet / "model.onnx", "canonicalize,quantize,channels_last,autofold",
                     jet / "calib.npz")
    assert "W_ADDR_COPIES(8)" in (build / "rtl" / "nnfpga_top.sv").read_text()
    result = verify_build(build, samples=300, seed=3)
    assert result["samples"] == 300 and result["mismatches"] == 0 and result["bit_exact"]
    check_timing(result, build)


def test_digits_mlp_is_bit_exact_and_accurate(tmp_path_factory):
    digits = EXAMPLES / "digits_mlp"
    build = compiled(tmp_path_factory, digits / "model.onnx",
                     "canonicalize,quantize{wbits=8,abits=8},fold{pe=4,simd=8}", digits / "calib.npz")
    result = verify_build(build, inputs_path=digits / "test.npz", samples=300, seed=2)
    print(f"float accuracy {result['float_accuracy']:.4f}, quantized accuracy "
          f"{result['quantized_accuracy']:.4f}, top-1 agreement {result['top1_agreement']:.4f}")
    assert result["samples"] == 300 and result["bit_exact"]
    assert result["top1_agreement"] >= 0.98
    assert abs(result["float_accuracy"] - result["quantized_accuracy"]) <= 0.02
    check_timing(result, build)


def test_unfolded_and_fully_parallel_layers(tmp_path_factory):
    """The folding extremes: one multiply per cycle, and a whole layer per cycle."""
    model = tmp_path_factory.mktemp("m") / "small.onnx"
    save(mlp([12, 10, 6], seed=5), model)
    for pipeline in ["canonicalize,quantize{abits=4,wbits=3},fold{pe=1,simd=1}",
                     "canonicalize,quantize,fold{pe=64,simd=64}"]:
        build = compiled(tmp_path_factory, model, pipeline)
        result = verify_build(build, samples=60, seed=3)
        assert result["bit_exact"], (pipeline, result)
        check_timing(result, build)


def test_hostile_node_name_lints_and_simulates(tmp_path_factory):
    """A node and the tensor it writes named `x; $finish; //`."""
    m = mlp([8, 6, 4], seed=7, node_name="x; $finish; //")
    for node in m.graph.node:
        node.input[:] = ["x; $finish; //" if t == "h0_r" else t for t in node.input]
        node.output[:] = ["x; $finish; //" if t == "h0_r" else t for t in node.output]
    model = tmp_path_factory.mktemp("m") / "hostile.onnx"
    save(m, model)
    build = compiled(tmp_path_factory, model, "canonicalize,quantize,fold")
    text = "".join(p.read_text() for p in (build / "rtl").glob("*.sv"))
    assert "$finish" not in text
    lint(build / "rtl")  # raises with Verilator's messages on any warning
    assert verify_build(build, samples=20)["bit_exact"]


def test_lint_is_clean_for_every_folding_shape(tmp_path_factory):
    model = tmp_path_factory.mktemp("m") / "m.onnx"
    save(mlp([6, 5, 3], seed=9), model)
    for pipeline in ["canonicalize,quantize{wbits=2,abits=2},fold{pe=1,simd=1}",
                     "canonicalize,quantize,fold{pe=5,simd=6}",
                     "canonicalize,quantize{abits=8},fold{pe=1,simd=3}"]:
        lint(compiled(tmp_path_factory, model, pipeline) / "rtl")


def test_the_template_checks_its_stage_count(tmp_path_factory):
    """nnfpga_dense computes its own stage count and refuses a PIPE_STAGES that differs from it
    (nnfpga.hardware.dense_pipeline_stages): the two cannot drift apart unnoticed."""
    model = tmp_path_factory.mktemp("m") / "m.onnx"
    save(mlp([16, 8, 4], seed=3), model)
    rtl = compiled(tmp_path_factory, model, "canonicalize,quantize,fold{pe=2,simd=8}") / "rtl"
    lint(rtl)
    top = rtl / "nnfpga_top.sv"
    text = top.read_text()
    stages = json.loads((rtl / "design.json").read_text())["pipeline_stages_per_layer"][0]
    assert f".PIPE_STAGES({stages})" in text
    top.write_text(text.replace(f".PIPE_STAGES({stages})", f".PIPE_STAGES({stages + 1})", 1))
    with pytest.raises(BuildError, match="PIPE_STAGES"):
        lint(rtl)


@pytest.mark.parametrize("pipeline, cores", [
    ("canonicalize,quantize{wbits=4,abits=8},fold{pe=4,simd=8,core=lut}", [("lut", 1)] * 3),
    # 2 products of 8-bit inputs and 5-bit weights per 18x18 multiplier (18 bits: they fit)
    ("canonicalize,quantize{wbits=5,abits=8},fold{pe=4,simd=8,core=relu0:lut,pack=relu1:2+logits:2}",
     [("lut", 1), ("dsp", 2), ("dsp", 2)]),
])
def test_digits_mlp_on_lut_and_packed_cores_is_bit_exact(tmp_path_factory, pipeline, cores):
    digits = EXAMPLES / "digits_mlp"
    build = compiled(tmp_path_factory, digits / "model.onnx", pipeline, digits / "calib.npz")
    layers = json.loads((build / "rtl" / "design.json").read_text())["layers"]
    assert [(l["core"], l["pack"]) for l in layers] == cores
    lint(build / "rtl")  # raises with Verilator's messages on any warning
    result = verify_build(build, inputs_path=digits / "test.npz", samples=200, seed=4)
    print(f"{pipeline}: float accuracy {result['float_accuracy']:.4f}, quantized accuracy "
          f"{result['quantized_accuracy']:.4f}")
    assert result["samples"] == 200 and result["mismatches"] == 0 and result["bit_exact"]
    check_timing(result, build)


def test_digits_mlp_on_the_bitserial_core_is_bit_exact(tmp_path_factory):
    """Every layer on the bitserial core, 1-bit slices, 2 x 4 tiles (some all zero): outputs ==
    onnxruntime's, and the cycles per inference measured == the schedule's tile count."""
    digits = EXAMPLES / "digits_mlp"
    pipeline = "canonicalize,quantize{wbits=6,abits=8},fold{pe=2,simd=4,core=bitserial,slice=1}"
    build = compiled(tmp_path_factory, digits / "model.onnx", pipeline, digits / "calib.npz")
    design = json.loads((build / "rtl" / "design.json").read_text())
    assert [l["core"] for l in design["layers"]] == ["bitserial"] * 3
    tiles = [int(i["params"]["TILES"]) for i in design["instances"] if i["module"] == "nnfpga_dense"]
    every = [l["n"] // l["pe"] * (l["k"] // l["simd"]) * 5 for l in design["layers"]]  # 5 magnitude bits
    assert tiles == [l["cycles"] for l in design["layers"]]
    assert all(t <= e for t, e in zip(tiles, every)) and tiles != every
    lint(build / "rtl")  # raises with Verilator's messages on any warning
    result = verify_build(build, inputs_path=digits / "test.npz", samples=200, seed=4)
    print(f"tiles {tiles} of {every}; float accuracy {result['float_accuracy']:.4f}, quantized accuracy "
          f"{result['quantized_accuracy']:.4f}")
    assert result["samples"] == 200 and result["mismatches"] == 0 and result["bit_exact"]
    check_timing(result, build)
