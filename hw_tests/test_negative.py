"""The checks check themselves: a build made deliberately wrong must be caught.

`nnfpga verify` on RTL with a requantizer that truncates instead of rounding, or with one
weight ROM word changed, must print `bit_exact: false` and exit 1; the same build untouched
exits 0, so the failure is the fault's. The HLS C simulation must likewise reject a
corrupted HLS source. If verify's mismatch count were forced to 0, or the comparison
skipped, these tests would fail.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnfpga.build import CompileOptions, compile_model
from nnfpga.errors import BuildError

ROOT = Path(__file__).resolve().parents[1]
JET = ROOT / "examples" / "jet_mlp"
SAMPLES = 20

ROUNDING = ("localparam logic [SW-1:0] ROUND_ZP = (SW'(OUT_ZP) << SHIFT) + (SW'(1) << (SHIFT - 1));",
            "localparam logic [SW-1:0] ROUND_ZP = (SW'(OUT_ZP) << SHIFT);")
"""The requantizer's round-half-up constant, and the same without the half: floor."""


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("negative") / "jet"
    compile_model(JET / "model.onnx", out, CompileOptions(calib_path=JET / "calib.npz"))
    return out


def broken_copy(build: Path, where: Path, path: str, old: str, new: str) -> Path:
    """A copy of `build` with `old` replaced by `new` (exactly once) in the file `path`."""
    shutil.copytree(build, where, ignore=shutil.ignore_patterns("sim", "csim"))
    target = where / path
    text = target.read_text()
    assert text.count(old) == 1, f"{path} changed; update this test's edit"
    target.write_text(text.replace(old, new))
    return where


def verify_cli(build: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "nnfpga.cli", "verify", str(build), "--samples", str(SAMPLES),
                           "--seed", "3", "--json"], capture_output=True, text=True, timeout=1200)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    return proc.returncode, json.loads(lines[-1])


def test_the_untouched_build_verifies(build):
    code, result = verify_cli(build)
    assert code == 0 and result["bit_exact"] is True and result["mismatches"] == 0


def test_a_requantizer_that_truncates_fails_verify(build, tmp_path):
    bad = broken_copy(build, tmp_path / "floor", "rtl/nnfpga_requant.sv", *ROUNDING)
    code, result = verify_cli(bad)
    assert code == 1
    assert result["bit_exact"] is False
    assert result["mismatches"] > 0
    assert result["ir_vs_reference_mismatches"] == 0  # the compiler's own check still holds


def test_one_changed_weight_word_fails_verify(build, tmp_path):
    rom = sorted((build / "rtl").glob("*_w.mem"))[0]
    first = rom.read_text().splitlines()[0]
    # The word's top hex digit changed: the last weight packed in it moves by 2^(bits-4) or more.
    changed = format(int(first[0], 16) ^ 0x4, "x") + first[1:]
    bad = broken_copy(build, tmp_path / "rom", f"rtl/{rom.name}", first + "\n", changed + "\n")
    code, result = verify_cli(bad)
    assert code == 1
    assert result["bit_exact"] is False and result["mismatches"] > 0


def test_hls_csim_rejects_a_corrupted_source(build, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    from nnfpga.backends.hls import csim

    x = np.loadtxt(build / "hls" / "tb_input.txt", dtype=np.int64, ndmin=2)
    expected = np.loadtxt(build / "hls" / "tb_expected.txt", dtype=np.int64, ndmin=2)
    assert np.array_equal(csim(build / "hls", x, expected, work_dir=tmp_path / "good", strict=True), expected)

    bad = broken_copy(build, tmp_path / "floor", "hls/nnfpga_int.h",
                      "return (p + (nn_int<64>(1) << (SHIFT - 1))) >> SHIFT;", "return p >> SHIFT;")
    with pytest.raises(BuildError, match="does not match the expected outputs"):
        csim(bad / "hls", x, expected, work_dir=tmp_path / "bad", strict=True)
    out = csim(bad / "hls", x, expected, work_dir=tmp_path / "bad")
    assert np.any(out != expected, axis=1).sum() > 0
