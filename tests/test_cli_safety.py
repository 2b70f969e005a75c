"""The CLI under user mistakes and faults: exit code 2, one `error:` line, no traceback, and
the user's files as they were; --force replaces only a build. Concurrent compiles and
signals: test_cli_interrupts.py."""
import errno
import json
import os
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from onnx_models import mlp, save
from nnfpga.cli import main
from nnfpga.version import __version__

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits_mlp"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def refused(capsys, *args) -> str:
    """Run the CLI, expect a user error: exit 2 and exactly one `error:` line; return it."""
    code, _, err = run_cli(capsys, *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture
def model_path(tmp_path):
    return save(mlp(), tmp_path / "mlp.onnx")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished build of the small MLP, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("built") / "build"
    model = save(mlp(), out.parent / "mlp.onnx")
    assert main(["compile", str(model), "-o", str(out)]) == 0
    return out


# -- 1. --force replaces only a build it may replace ------------------------------------------

def test_force_refuses_a_directory_holding_the_model_and_data(tmp_path, capsys):
    example = shutil.copytree(DIGITS, tmp_path / "digits_mlp")
    before = snapshot(example)
    line = refused(capsys, "compile", example / "model.onnx", "--calib", example / "calib.npz",
                   "-o", example, "--force")
    assert "will not replace" in line and "model.onnx" in line
    assert snapshot(example) == before and leftovers(tmp_path) == []


def test_force_refuses_a_directory_holding_the_calibration_data(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(DIGITS, data)
    (data / "manifest.json").write_text("{}")  # even one that looks like a build
    before = snapshot(data)
    line = refused(capsys, "compile", model_path, "--calib", data / "calib.npz", "-o", data, "--force")
    assert "calib.npz" in line
    assert snapshot(data) == before


def test_force_refuses_a_directory_nnfpga_did_not_write(tmp_path, model_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.py").write_text("print('mine')\n")
    line = refused(capsys, "compile", model_path, "-o", mine, "--force")
    assert "manifest.json" in line
    assert (mine / "train.py").read_text() == "print('mine')\n" and leftovers(tmp_path) == []


@pytest.mark.parametrize("target", [".", "..", "ancestor"])
def test_force_refuses_the_working_directory_and_its_ancestors(tmp_path, model_path, capsys, monkeypatch, target):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / "a" / "manifest.json").write_text("{}")  # the rule holds whatever the directory holds
    (work / "manifest.json").write_text("{}")
    (work / "notes.txt").write_text("keep")
    monkeypatch.chdir(work)
    out = tmp_path / "a" if target == "ancestor" else Path(target)
    line = refused(capsys, "compile", model_path, "-o", out, "--force")
    assert "working directory" in line
    assert (work / "notes.txt").read_text() == "keep"
    assert leftovers(work) == [] and leftovers(tmp_path / "a") == [] and leftovers(tmp_path) == []


def test_force_replaces_a_build(tmp_path, model_path, capsys):
    out = tmp_path / "build"
    assert run_cli(capsys, "compile", model_path, "-o", out)[0] == 0
    (out / "verify.json").write_text("{}")  # from an earlier run
    assert run_cli(capsys, "compile", model_path, "-o", out, "--force")[0] == 0
    assert (out / "manifest.json").is_file() and not (out / "verify.json").exists()
    assert leftovers(tmp_path) == []


# -- 2. paths that cannot be written, markup in paths, damaged builds ------------------------------

@pytest.mark.parametrize("where", ["/proc/nnfpga-test-build", "/sys/nnfpga-test-build", "file"])
def test_output_where_nothing_can_be_written(tmp_path, model_path, capsys, where):
    if where == "file":
        (tmp_path / "file").write_text("a regular file")
        where = tmp_path / "file" / "build"
    line = refused(capsys, "compile", model_path, "-o", where)
    assert "cannot create" in line and str(where) in line
    assert not Path(where).exists()


def test_output_on_a_read_only_file_system(tmp_path, model_path, capsys, monkeypatch):
    """The superuser writes through file modes, so the failure is simulated where it happens."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr("nnfpga.builddir.tempfile.mkdtemp", read_only)
    line = refused(capsys, "compile", model_path, "-o", tmp_path / "build")
    assert "Read-only file system" in line
    assert not (tmp_path / "build").exists()


def test_a_full_disk_leaves_no_partial_directory(tmp_path, model_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("nnfpga.build.shutil.copyfile", full)  # copying the model in, late in the build
    line = refused(capsys, "compile", model_path, "-o", tmp_path / "build")
    assert "No space left on device" in line and "build" in line
    assert not (tmp_path / "build").exists() and leftovers(tmp_path) == []


def test_brackets_in_paths_are_printed_as_they_are(tmp_path, capsys):
    folder = tmp_path / "[bold]x["
    folder.mkdir()
    model = save(mlp(), folder / "]m.onnx")  # the path reads .../[bold]x[/]m.onnx
    out = folder / "]out[i]"
    code, _, err = run_cli(capsys, "compile", model, "-o", out)
    assert code == 0 and (out / "manifest.json").is_file()
    assert f"{model} -> {out}" in err  # the table title, brackets kept
    line = refused(capsys, "compile", folder / "[red]missing[" / "red].onnx", "-o", tmp_path / "b")
    assert "[red]missing[/red].onnx" in line
    line = refused(capsys, "build", folder)  # not a build: the error names it whole
    assert str(folder) in line


@pytest.mark.parametrize("damage", ["truncated manifest", "manifest not an object", "manifest missing keys",
                                    "IR missing", "IR truncated", "constants not a zip", "reference truncated",
                                    "float model truncated"])
@pytest.mark.parametrize("command", ["verify", "run", "report"])
def test_a_damaged_build(tmp_path, built, capsys, damage, command):
    build = shutil.copytree(built, tmp_path / "build")
    file = {"truncated manifest": "manifest.json", "manifest not an object": "manifest.json",
            "manifest missing keys": "manifest.json", "IR missing": "ir/final.ir", "IR truncated": "ir/final.ir",
            "constants not a zip": "ir/final.npz", "reference truncated": "reference.onnx",
            "float model truncated": "model.onnx"}[damage]
    path = build / file
    if damage == "IR missing":
        path.unlink()
    elif damage == "manifest not an object":
        path.write_text("[1, 2]")
    elif damage == "manifest missing keys":
        path.write_text(json.dumps({"model": "mlp.onnx"}))
    else:
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 16), np.float32))
    args = {"verify": ["verify", build, "--samples", "2"], "report": ["report", build],
            "run": ["run", build, "--inputs", tmp_path / "in.npz", "--accelerator", "reference"]}[command]
    if command == "report" and file != "manifest.json":
        assert run_cli(capsys, *args)[0] == 0  # the report notes what it could not read and goes on
        return
    line = refused(capsys, *args)
    assert "damaged" in line and file.split("/")[-1].split(".")[0] in line
    assert not (build / "sim").exists()  # refused before any simulation


def test_run_save_into_a_missing_directory_is_refused_before_the_run(tmp_path, built, capsys):
    build = shutil.copytree(built, tmp_path / "build")
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 16), np.float32))
    line = refused(capsys, "run", build, "--inputs", tmp_path / "in.npz", "--save", tmp_path / "no" / "out.npz")
    assert "does not exist" in line
    assert not (build / "run.json").exists() and not (build / "sim").exists()


# -- 3. small items -----------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnfpga {__version__}"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__


def test_a_misspelled_dump_after_names_the_passes(tmp_path, model_path, capsys):
    line = refused(capsys, "compile", model_path, "-o", tmp_path / "build", "--dump-after", "quantise")
    assert "quantise" in line and "canonicalize, quantize, channels_last, autofold" in line
    assert not (tmp_path / "build").exists() and leftovers(tmp_path) == []


def test_the_tvm_hint_is_pinned_to_the_tested_version():
    from nnfpga.backends.host import INSTALL_HINT, TVM_REQUIREMENT

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["host"] == [TVM_REQUIREMENT]
    assert f"pip install '{TVM_REQUIREMENT}'" in INSTALL_HINT


@pytest.mark.parametrize("missing", ["g++", "make"])
def test_verify_says_which_simulator_tool_is_missing(tmp_path, built, capsys, monkeypatch, missing):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in {"g++", "make"} - {missing}:  # the other one is there
        (bin_dir / tool).symlink_to(shutil.which(tool) or "/bin/true")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CXX", raising=False)
    line = refused(capsys, "verify", built)
    assert f"{missing} not found" in line and "C++ compiler and make" in line
