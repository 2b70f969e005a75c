"""The CLI contract and bad input: one clear message, exit code != 0, no traceback, and no
partial build directory."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnx_models import mlp, save
from nnfpga.cli import main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def no_partial_dirs(parent):
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


@pytest.fixture
def model_path(tmp_path):
    return save(mlp(), tmp_path / "mlp.onnx")


def test_compile_writes_a_build_directory(tmp_path, model_path, capsys):
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build")
    assert code == 0
    build = tmp_path / "build"
    for name in ("manifest.json", "reference.onnx", "model.onnx", "ir/final.ir", "ir/00-import.ir",
                 "ir/01-canonicalize.ir", "ir/02-quantize.ir", "ir/03-channels_last.ir", "ir/04-autofold.ir"):
        assert (build / name).is_file(), name
    assert list((build / "rtl").glob("*.sv"))
    assert "no calibration data" in err  # synthetic calibration is announced
    assert no_partial_dirs(tmp_path)


def test_same_input_same_bytes(tmp_path, model_path, capsys):
    for out in ("a", "b"):
        assert run_cli(capsys, "compile", model_path, "-o", tmp_path / out)[0] == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_existing_directory_needs_force(tmp_path, model_path, capsys):
    out = tmp_path / "build"
    assert run_cli(capsys, "compile", model_path, "-o", out)[0] == 0
    (out / "stale.txt").write_text("from an older build")
    code, _, err = run_cli(capsys, "compile", model_path, "-o", out)
    assert code == 2 and "--force" in err
    assert (out / "stale.txt").is_file()
    code, _, _ = run_cli(capsys, "compile", model_path, "-o", out, "--force")
    assert code == 0 and not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert no_partial_dirs(tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"this is not an onnx model at all \x00\xff", "mlp.onnx"),
    ("truncated", "mlp.onnx"),
])
def test_garbage_and_truncated_models(tmp_path, capsys, content, message):
    path = tmp_path / "mlp.onnx"
    if content == "truncated":
        data = mlp().SerializeToString()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert code == 2 and message in err
    assert not (tmp_path / "build").exists() and no_partial_dirs(tmp_path)


def test_unsupported_op_names_op_node_and_supported_list(tmp_path, capsys):
    # Cos is in neither table (Softmax would run on the host).
    path = save(mlp(extra_op="Cos"), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert code == 2
    assert "Cos" in err and "the_cos" in err and "Gemm" in err and "Softmax" in err
    assert not (tmp_path / "build").exists()


def test_dynamic_batch_is_fixed_to_one(tmp_path, capsys):
    path = save(mlp(batch="N"), tmp_path / "m.onnx")
    code, out, _ = run_cli(capsys, "ir", path)
    assert code == 0 and "%x: tensor<1x16xf32>" in out


def test_calibration_of_the_wrong_shape(tmp_path, model_path, capsys):
    np.savez(tmp_path / "calib.npz", x=np.zeros((10, 15), np.float32))
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", "--calib", tmp_path / "calib.npz")
    assert code == 2 and "[10, 15]" in err and "[N, 16]" in err
    assert not (tmp_path / "build").exists() and no_partial_dirs(tmp_path)


def test_calibration_file_missing(tmp_path, model_path, capsys):
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "b", "--calib", tmp_path / "nope.npz")
    assert code == 2 and "nope.npz" in err


@pytest.mark.parametrize("pipeline, message", [
    ("canonicalize,frobnicate", "unknown pass 'frobnicate'"),
    ("canonicalize,quantize{wbits=8,bogus=1}", "no option 'bogus'"),
    ("canonicalize,quantize{wbits=eight}", "must be int"),
    ("canonicalize,quantize{wbits=12}", "outside 2..8"),
    ("canonicalize,", "ends with a comma"),
])
def test_bad_pipelines(tmp_path, model_path, capsys, pipeline, message):
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", "--pipeline", pipeline)
    assert code == 2 and message in err
    assert not (tmp_path / "build").exists() and no_partial_dirs(tmp_path)


def test_ir_after_pass(model_path, capsys):
    code, out, _ = run_cli(capsys, "ir", model_path, "--after", "quantize")
    assert code == 0 and "qmatmul" in out and "requant" in out and "pe =" not in out
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "nosuch")
    assert code == 2 and "nosuch" in err


def test_dump_after_prints_ir(tmp_path, model_path, capsys):
    code, out, _ = run_cli(capsys, "compile", model_path, "-o", tmp_path / "b", "--dump-after", "canonicalize")
    assert code == 0 and out.startswith("graph @mlp") and "dense(" in out


def test_verify_on_a_non_build_directory(tmp_path, capsys):
    code, _, err = run_cli(capsys, "verify", tmp_path)
    assert code == 2 and "not an nnfpga build directory" in err


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nnfpga.cli", "compile", str(tmp_path / "missing.onnx"),
                           "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_ir_after_partition_on_a_model_with_host_ops(tmp_path, capsys):
    path = save(mlp(extra_op="Softmax"), tmp_path / "m.onnx")
    code, out, _ = run_cli(capsys, "ir", path, "--after", "partition")
    assert code == 0 and 'op_type = "Softmax", place = "host"' in out and 'place = "accel"' in out
    code, out, _ = run_cli(capsys, "ir", path, "--after", "quantize", "--host-ops", "%h1")
    assert code == 0 and '%h1 = dense(%h0_r_dq, %h1_bt, %b1_1) {place = "host"}' in out
    assert out.count("qmatmul(") == 1


def test_target_fps_picks_the_smallest_design_that_reaches_it(tmp_path, model_path, capsys):
    assert run_cli(capsys, "compile", model_path, "-o", tmp_path / "fast")[0] == 0
    fast = json.loads((tmp_path / "fast" / "manifest.json").read_text())
    fps, mhz = 2e6, 50.0  # at most 25 cycles per inference
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "slow", "--target-fps", fps,
                           "--freq", mhz)
    assert code == 0, err
    slow = json.loads((tmp_path / "slow" / "manifest.json").read_text())
    assert "autofold{target_fps=2000000.0,clock_mhz=50.0}" in slow["pipeline"]
    assert fast["predicted_cycles_per_inference"] < slow["predicted_cycles_per_inference"] <= mhz * 1e6 / fps
    mults = lambda m: sum(l["pe"] * l["simd"] for l in m["layers"])  # noqa: E731
    assert mults(slow) < mults(fast)


@pytest.mark.parametrize("extra, message", [
    (["--target-fps", "1e12"], "needs less than one cycle per inference"),
    (["--target-fps", "5e7", "--target", "ecp5-25k"], "the largest feasible rate"),
    (["--target-fps", "1000", "--pipeline", "canonicalize,quantize,fold"], "has no autofold pass"),
    (["--target-fps", "1000", "--freq", "0"], "--freq 0 above 0"),
])
def test_target_fps_that_cannot_be_met(tmp_path, model_path, capsys, extra, message):
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", *extra)
    assert code == 2 and message in err, err
    assert not (tmp_path / "build").exists() and no_partial_dirs(tmp_path)
