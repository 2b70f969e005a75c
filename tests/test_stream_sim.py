"""The cycle model of stream designs (backends/stream_sim.py) against Verilator's numbers.

The numbers asserted here were measured in Verilator on the same designs
(hw_tests/test_cnn_models.py checks measured == predicted on every build); the cycle model is
cheap enough to run in every compile, so it is tested here without a simulator.
"""
import inspect
import sys
from pathlib import Path

import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.stream_latency import frame_latency
from nnfpga import hardware
from nnfpga.backends import stream_sim
from nnfpga.backends.stream_sim import TIMING_FRAMES, simulate
from nnfpga.build import CompileOptions, compile_model
from nnfpga.errors import NnfpgaError
from nnfpga.frontend import load_onnx
from nnfpga.hw_tests import sim
from nnfpga.hw_tests.test_rtl_cnn import RESIDUAL, _graph
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline

sys.path.insert(0, str(Path(__file__).parent))
import onnx_models  # noqa: E402


def design_of(builder: str, tmp_path: Path, folding: list[tuple[int, int]] | None = None):
    """The default pipeline's design, or with `folding` (pe, simd per layer, one tap per beat)."""
    model = onnx_models.save(getattr(onnx_models, builder)(), tmp_path / f"{builder}.onnx")
    pipeline = DEFAULT_PIPELINE if folding is None else DEFAULT_PIPELINE.replace(",autofold", "")
    g = run_pipeline(load_onnx(Path(model), None), parse_pipeline(pipeline), PassContext(seed=0))
    if folding is not None:
        layers = [n for n in g.nodes if n.op in ("qconv", "qmatmul")]
        for node, (pe, simd) in zip(layers, folding, strict=True):
            node.attrs.update(pe=pe, simd=simd)
    return lower_stream(g, region_input(g))


def test_the_model_times_as_many_inferences_as_the_harness():
    assert inspect.signature(sim.simulate).parameters["timing_samples"].default == TIMING_FRAMES


# (builder, latency, interval): Verilator, default pipeline (README, Convolutional networks)
MEASURED = [("residual_block", 754, 512), ("depthwise_separable", 775, 384), ("strided_cnn", 281, 144),
            ("concat_block", 580, 360), ("conv1d_net", 125, 32)]


@pytest.mark.parametrize("builder, latency, interval", MEASURED, ids=[m[0] for m in MEASURED])
def test_where_no_module_waits_on_another_the_model_agrees_with_the_recurrences(tmp_path, builder, latency, interval):
    design = design_of(builder, tmp_path)
    assert simulate(design) == (latency, interval)
    assert (frame_latency(design), design.interval) == (latency, interval)


def test_the_digits_cnn_as_built_by_default(tmp_path):
    digits = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn"
    r = compile_model(digits / "model.onnx", tmp_path / "b", CompileOptions(calib_path=digits / "calib.npz"))
    assert simulate(lower_stream(r.graph, region_input(r.graph))) == (570, 192)  # Verilator (hw_tests/test_cnn_models.py)


def test_the_strided_cnn_hands_rows_over_as_measured(tmp_path):
    # The second window stops its input until an output row is done (rule (b)) while the
    # dense layer before it delivers 8 beats per 9 cycles: the window alone would take 432
    # cycles a frame, and the recurrences, which leave backpressure out, give 779 for the latency.
    # (The folding autofold chose before windows took several taps per beat.)
    design = design_of("strided_cnn", tmp_path, [(1, 9), (2, 8), (1, 1)])
    # Verilator measured 805 when this was the default (hw_tests/test_cnn_models.py), before the
    # dense layers' two more register stages (S1b, S5) added 2 cycles each.
    assert simulate(design) == (811, 442)
    assert (frame_latency(design), design.interval) == (779, 432)


def test_the_dense_pipeline_depth_comes_from_nnfpga_hardware(tmp_path, monkeypatch):
    # The template takes PIPE_STAGES (and its output FIFO depth) from nnfpga.hardware; a
    # register stage more there must cost every dense layer one cycle of latency here too.
    design = design_of("residual_block", tmp_path)
    denses = sum(i.module == "nnfpga_dense" for i in design.instances)
    latency, interval = simulate(design)
    monkeypatch.setattr(stream_sim, "layer_pipeline_stages", lambda layer:
                        hardware.dense_pipeline_stages(layer.simd, layer.acc_bits, layer.mult_bits) + 1)
    assert simulate(design) == (latency + denses, interval)


def test_a_skip_fifo_below_its_deadlock_bound_is_reported():
    # The residual block that hw_tests/test_rtl_cnn.py stalls in Verilator one beat below the bound.
    g, calib = _graph(RESIDUAL)
    q = run_pipeline(g, parse_pipeline("quantize,channels_last,fold{pe=4,simd=12}"), PassContext(calib=calib))
    design = lower_stream(q, region_input(q))
    (fifo,) = design.fifos
    inst = next(i for i in design.instances if i.name == fifo["instance"])
    assert simulate(design) == (565, 324)  # as built (measured in test_rtl_cnn)
    inst.params["DEPTH"] = fifo["deadlock_depth"]
    assert simulate(design) is not None
    inst.params["DEPTH"] = fifo["deadlock_depth"] - 1
    with pytest.raises(NnfpgaError, match="stalls at cycle"):
        simulate(design)
