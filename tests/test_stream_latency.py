"""The stream design's latency model (backends/stream_latency.py) agrees with the cost
model's per-layer formula (measured on MLPs) where both apply; Verilator holds it to CNNs
in hw_tests."""
from pathlib import Path

import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.stream_latency import frame_latency
from nnfpga.build import CompileOptions, compile_model
from nnfpga.cost import estimate

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp"


@pytest.mark.parametrize("fold, measured", [("fold{pe=4,simd=8}", 261), ("fold{pe=2,simd=16}", 247)])
def test_a_dense_chain_as_stream_modules_has_the_chains_latency(tmp_path, fold, measured):
    # `measured`: Verilator's latency of these builds (nnfpga/cost.py, Validation)
    options = CompileOptions(pipeline=f"canonicalize,quantize,{fold}", calib_path=DIGITS / "calib.npz")
    r = compile_model(DIGITS / "model.onnx", tmp_path / "b", options)
    design = lower_stream(r.graph, region_input(r.graph))
    chain = estimate(design.layers, design.input.par)["total"]["latency_cycles"]
    assert frame_latency(design) == chain == measured
