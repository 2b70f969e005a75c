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


# -- calibration and input data -------------------------------------------------------------

def _calib(n=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 16)).astype(np.float32)


def _with_value(value):
    x = _calib()
    x[3, 5] = value
    return x


def _huge_header_npz(path):
    """An .npz whose one array's header announces 2^40 float32 elements (4 TiB), data absent."""
    import zipfile
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20)}
    body = io.BytesIO()
    np.lib.format.write_array_header_1_0(body, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", body.getvalue() + b"\0" * 64)


def _damaged_member_npz(path):
    """A valid zip whose deflated member is cut: the zip directory reads, the array does not."""
    import zipfile
    good = io.BytesIO()
    np.savez_compressed(good, x=_calib(200))
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as z:
        info = z.infolist()[0]
    data = bytearray(good.getvalue())
    start = info.header_offset + 30 + len(info.filename) + 40
    data[start:start + 40] = bytes(40)  # zero the middle of the compressed stream
    path.write_bytes(bytes(data))


import io  # noqa: E402  (used by the helpers above)


@pytest.mark.parametrize("make, phrases", [
    (lambda p: np.savez(p, x=_with_value(np.nan)), ["array 'x'", "NaN or infinite", "sample 3"]),
    (lambda p: np.savez(p, x=_with_value(np.inf)), ["array 'x'", "NaN or infinite"]),
    (lambda p: np.savez(p, x=_with_value(-np.inf)), ["array 'x'", "NaN or infinite"]),
    (lambda p: np.savez(p, x=_calib(0)), ["array 'x'", "no samples"]),
    (lambda p: np.savez(p, x=np.float32(1.0)), ["array 'x'", "single number"]),
    (lambda p: np.savez(p, x=np.array(["a", "b"])), ["array 'x'", "integer or floating-point"]),
    (lambda p: np.savez(p, x=_calib().astype(np.complex64)), ["array 'x'", "complex64"]),
    (lambda p: np.savez(p, x=_calib()[:, :10]), ["input 'x'", "shape [20, 10]", "[N, 16]"]),
    (lambda p: np.save(p, _calib()), [".npy file"]),
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), ["not an .npz file"]),
    (lambda p: p.write_bytes(b""), ["not an .npz file"]),
    (_huge_header_npz, ["array 'x'", "refused before allocating"]),
    (_damaged_member_npz, ["damaged"]),
])
def test_bad_calibration_data_is_refused(tmp_path, model_path, capsys, make, phrases):
    path = tmp_path / "calib.npz"
    make(path)
    if not path.exists():  # np.save appends .npy to a name without it
        path = next(tmp_path.glob("calib.npz*"))
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", "--calib", path)
    assert_refused(tmp_path, code, err, *phrases)
    assert path.name in err or "input 'x'" in err


def test_bad_inputs_for_ir_are_refused_too(tmp_path, model_path, capsys):
    np.savez(tmp_path / "calib.npz", x=_with_value(np.nan))
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "quantize", "--calib", tmp_path / "calib.npz")
    assert_refused(tmp_path, code, err, "NaN")


def test_raw_pixel_data_is_a_warning(tmp_path, model_path, capsys):
    np.savez(tmp_path / "u8.npz", x=(_calib() * 255).astype(np.uint8))
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "quantize", "--calib", tmp_path / "u8.npz")
    assert code == 0 and not error_lines(err)
    assert "warning:" in err and "raw 8-bit pixel values" in err and "x / 255" in err
    np.savez(tmp_path / "scaled.npz", x=_calib())
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "quantize", "--calib", tmp_path / "scaled.npz")
    assert code == 0 and "pixel" not in err
