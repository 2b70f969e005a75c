"""Guards on what users hand the compiler: pipeline strings, calibration and input data,
models. Each mistake is one `error:` line and exit code 2 through the CLI, never a
traceback, and nothing is written; a doubtful but usable input is a warning."""
import numpy as np
import pytest

from onnx_models import mlp, save
from nnfpga.cli import main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def assert_refused(tmp_path, code, err, *phrases):
    assert code == 2, err
    assert len(error_lines(err)) == 1, err
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    assert not (tmp_path / "build").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.fixture
def model_path(tmp_path):
    return save(mlp(), tmp_path / "mlp.onnx")


# -- pipeline strings -----------------------------------------------------------------------

@pytest.mark.parametrize("pipeline, phrases", [
    ("canonicalize,quantize{wbits=8,wbits=4}", ["'wbits'", "given twice"]),
    ("canonicalize,quantize,channels_last,autofold{target_fps=nan}", ["target_fps", "finite"]),
    ("canonicalize,quantize,channels_last,autofold{target_fps=inf}", ["target_fps", "finite"]),
    ("canonicalize,quantize,channels_last,autofold{clock_mhz=-inf}", ["clock_mhz", "finite"]),
    ("canonicalize,fold,quantize", ["put quantize before fold", "float dense"]),
    ("fold", ["put quantize before fold", "float gemm"]),
    ("canonicalize,autofold,quantize", ["put quantize before autofold"]),
    ("canonicalize,quantize,lowrank", ["put lowrank before quantize"]),
    ("canonicalize,quantize,quantize", ["quantize runs once", "already integer"]),
    ("canonicalize,quantize{wbit=8}", ["no option 'wbit'", "abits, calib, pct, wbits"]),
])
def test_bad_pipelines_are_refused(tmp_path, model_path, capsys, pipeline, phrases):
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", "--pipeline", pipeline)
    assert_refused(tmp_path, code, err, *phrases)


def test_well_ordered_pipelines_still_run(tmp_path, model_path, capsys):
    code, out, err = run_cli(capsys, "ir", model_path, "--after", "fold",
                             "--pipeline", "canonicalize,lowrank,quantize{wbits=4,abits=6},fold{pe=2}")
    assert code == 0, err
    assert "pe = 2" in out
