"""The fast path (self-checking SystemVerilog testbench) against the cocotb path and against
faults it must catch: wrong values, extra beats after the last frame, a misplaced tlast, a
stalled design, a ROM file left out of design.json.

Both paths run on the same inputs and must give the same outputs (==) and the same
interval and latency; the hand-written fixture (see test_harness.py) knows its own.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnfpga.errors import BuildError
from nnfpga.hw_tests import fastsim
from nnfpga.hw_tests.fastsim import simulate_fast
from nnfpga.hw_tests.sim import simulate
from nnfpga.hw_tests.test_harness import FIXTURE, INTERVAL, LATENCY, fixture_inputs, model, variant

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits_mlp"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fast")


def test_fast_and_cocotb_paths_agree_on_the_fixture(work):
    x = fixture_inputs(200, seed=8)
    fast = simulate_fast(FIXTURE, x, model(x), work_dir=work, seed=7)
    slow = simulate(FIXTURE, x, model(x), work_dir=work, seed=7)
    np.testing.assert_array_equal(fast.outputs, model(x))
    assert np.array_equal(fast.outputs, slow.outputs)
    assert fast.mismatches == slow.mismatches == 0
    assert fast.cycles_per_inference == slow.cycles_per_inference == INTERVAL
    assert fast.latency_cycles == slow.latency_cycles == LATENCY


def test_wrong_expectations_are_counted_per_row(work):
    x = fixture_inputs(40, seed=2)
    wrong = model(x)
    wrong[[0, 17, 33], 1] += 1
    result = simulate_fast(FIXTURE, x, wrong, work_dir=work, seed=3)
    np.testing.assert_array_equal(result.outputs, model(x))
    # Three rows in the randomized run, and row 0 again in the timing run (rows 0..7 replayed).
    assert result.mismatches == 4


@pytest.mark.parametrize("probs", [(0.0, 0.0), (0.9, 0.9), (0.0, 0.95), (0.95, 0.0)])
def test_gaps_and_backpressure_keep_every_beat(work, probs):
    x = fixture_inputs(300, seed=5)
    result = simulate_fast(FIXTURE, x, model(x), work_dir=work, gap_prob=probs[0], backpressure_prob=probs[1],
                           seed=11)
    assert result.mismatches == 0
    np.testing.assert_array_equal(result.outputs, model(x))
    assert result.cycles_per_inference == INTERVAL
    # Each cycle moves at most one beat per stream: 4 input beats per inference at least.
    assert result.cycles >= 4 * (len(x) + 8)
    if probs[1] >= 0.9:
        assert result.cycles > 4 * (len(x) + 8) * 5, "backpressure at 0.9+ must slow the output side"


def test_no_expected_still_outputs(work):
    x = fixture_inputs(10, seed=4)
    result = simulate_fast(FIXTURE, x, work_dir=work, timing_samples=0)
    np.testing.assert_array_equal(result.outputs, model(x))
    assert result.mismatches == 0 and result.cycles_per_inference is None and result.latency_cycles is None


def test_build_is_cached(work, monkeypatch):
    x = fixture_inputs(5, seed=6)
    simulate_fast(FIXTURE, x, model(x), work_dir=work)
    monkeypatch.setattr(fastsim, "_BUILDS", {})
    again = simulate_fast(FIXTURE, x, model(x), work_dir=work)
    assert again.build_cached and again.build_seconds == 0.0 and again.mismatches == 0
    assert len(list(work.glob("fast-*.tmp*"))) == 0


def repeat_last_bank(files):
    """Bank 1's frame goes out twice: with two inputs, four beats after the last expected frame."""
    text = files["pair_diff.sv"]
    text = text.replace("logic [1:0] cool;", "logic [1:0] cool;\n    logic again;")
    text = text.replace("cool  <= 2'd0;\n", "cool  <= 2'd0;\n            again <= 1'b0;\n", 1)
    text = text.replace("""                if (m_tlast) begin
                    full[rbank] <= 1'b0;""", """                if (m_tlast && rbank && !again) begin
                    again <= 1'b1;
                    cool  <= 2'(COOLDOWN);
                end else if (m_tlast) begin
                    again <= 1'b0;
                    full[rbank] <= 1'b0;""")
    assert text.count("again") == 5, "the fixture changed; update this edit"
    files["pair_diff.sv"] = text


@pytest.mark.parametrize("path", ["fast", "cocotb"])
@pytest.mark.parametrize("timing_samples", [0, 2])
def test_extra_beats_after_the_last_frame_fail(tmp_path, path, timing_samples):
    doubled = variant(tmp_path, "doubled", repeat_last_bank)
    x = fixture_inputs(3, seed=9)[:2]
    run = simulate_fast if path == "fast" else simulate
    with pytest.raises(BuildError, match=r"(?s)output beat.*(after|beyond)"):
        run(doubled, x, model(x), work_dir=tmp_path / "sim", gap_prob=0.0, backpressure_prob=0.0,
            timing_samples=timing_samples)
    # The unmodified design passes the same run: the failure is the extra frame's.
    assert run(FIXTURE, x, model(x), work_dir=tmp_path / "ok", gap_prob=0.0, backpressure_prob=0.0,
               timing_samples=timing_samples).mismatches == 0


def test_a_misplaced_tlast_fails(tmp_path):
    def early_tlast(files):
        files["pair_diff.sv"] = files["pair_diff.sv"].replace("assign m_tlast  = rbeat == 2'd3;",
                                                              "assign m_tlast  = rbeat == 2'd2;")

    with pytest.raises(BuildError, match=r"m_axis_tlast misplaced on \d+ output beats .* on beat 3"):
        simulate_fast(variant(tmp_path, "early", early_tlast), np.zeros((2, 8), int), work_dir=tmp_path / "sim")


def test_a_stalled_design_fails(tmp_path):
    def never_ready(files):
        files["pair_diff.sv"] = files["pair_diff.sv"].replace("assign s_tready = !full[wbank];",
                                                              "assign s_tready = 1'b0;")

    with pytest.raises(BuildError, match=r"the design stopped.* 0 of 10 inferences out"):
        simulate_fast(variant(tmp_path, "stuck", never_ready), np.zeros((2, 8), int), work_dir=tmp_path / "sim")


def test_a_rom_file_missing_from_design_json_is_caught(tmp_path):
    def forget_rom(files):
        design = json.loads(files["design.json"])
        design["mem_files"] = []
        files["design.json"] = json.dumps(design)

    with pytest.raises(BuildError, match=r"(?s)offsets.mem.*mem_files"):
        simulate_fast(variant(tmp_path, "forgetful", forget_rom), np.zeros((2, 8), int), work_dir=tmp_path / "sim")


def test_both_paths_give_the_same_outputs_on_the_digits_mlp(tmp_path):
    import onnx

    from nnfpga.backends.lower import to_stream_order
    from nnfpga.backends.reference_onnx import run_reference
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.ir.interpreter import quantize_array
    from nnfpga.verify import _qtype

    build = compile_model(DIGITS / "model.onnx", tmp_path / "build", CompileOptions(calib_path=DIGITS / "calib.npz"))
    accel_in, accel_out = build.manifest["accelerator_input"], build.manifest["accelerator_output"]
    x = np.load(DIGITS / "test.npz")["input"][:100]
    q = quantize_array(x.reshape((len(x), *accel_in["shape"])), _qtype(accel_in))
    reference = onnx.load(str(build.out_dir / "reference.onnx"))
    golden = next(iter(run_reference(reference, {reference.graph.input[0].name: q}).values()))
    x_q = to_stream_order(q, accel_in["shape"])
    golden = to_stream_order(golden, accel_out["shape"]).astype(np.int64)
    fast = simulate_fast(build.out_dir / "rtl", x_q, golden, work_dir=tmp_path / "sim", seed=5)
    slow = simulate(build.out_dir / "rtl", x_q, golden, work_dir=tmp_path / "sim", seed=5)
    assert np.array_equal(fast.outputs, slow.outputs)
    assert np.array_equal(fast.outputs, golden)
    assert fast.mismatches == slow.mismatches == 0
    assert fast.cycles_per_inference == slow.cycles_per_inference
    assert fast.latency_cycles == slow.latency_cycles
