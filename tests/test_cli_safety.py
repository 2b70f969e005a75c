"""The CLI under user mistakes and faults: exit code 2, one `error:` line, no traceback, and
the user's files as they were; --force replaces only a build; concurrent compiles into one
directory cannot both succeed; SIGTERM and Ctrl-C leave nothing behind."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from onnx_models import mlp, save
from nnfpga import processes
from nnfpga.builddir import commit_out_dir, discard_out_dir, prepare_out_dir
from nnfpga.cli import main
from nnfpga.errors import BuildError
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


# -- 3. two compiles into one directory ---------------------------------------------------------

def test_the_rename_into_place_claims_the_directory(tmp_path):
    """Two compiles found no directory and built; the second to finish must not replace the first."""
    out = tmp_path / "build"
    first = prepare_out_dir(out, False)
    second = tmp_path / ".build.partial-other"  # the other process's, made at the same moment
    second.mkdir()
    (first / "manifest.json").write_text('{"who": "first"}')
    (second / "manifest.json").write_text('{"who": "second"}')
    commit_out_dir(first, out, False)
    with pytest.raises(BuildError, match="another process"):
        commit_out_dir(second, out, False)
    assert json.loads((out / "manifest.json").read_text()) == {"who": "first"}
    discard_out_dir(second)
    assert leftovers(tmp_path) == []


def test_a_directory_being_written_is_refused_at_once(tmp_path, model_path, capsys):
    out = tmp_path / "build"
    writing = prepare_out_dir(out, False)  # held (locked) as a running compile holds it
    line = refused(capsys, "compile", model_path, "-o", out)
    assert "another nnfpga process is writing" in line
    assert writing.is_dir() and not out.exists()
    discard_out_dir(writing)


def test_a_killed_compile_leaves_nothing_the_next_one_keeps(tmp_path, model_path, capsys):
    stale = tmp_path / ".build.partial-killed"  # no process holds it: its writer was killed
    (stale / "ir").mkdir(parents=True)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert run_cli(capsys, "compile", model_path, "-o", tmp_path / "build")[0] == 0
    assert leftovers(tmp_path) == [] and (tmp_path / "build" / "manifest.json").is_file()


def test_concurrent_compiles_into_one_directory(tmp_path, model_path):
    out = tmp_path / "build"
    cmd = [sys.executable, "-m", "nnfpga.cli", "compile", str(model_path), "-o", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser and "error:" in loser and str(out) in loser
    assert (out / "manifest.json").is_file() and leftovers(tmp_path) == []


# -- 4. signals ---------------------------------------------------------------------------------

def _start_compile(tmp_path: Path, out: Path) -> subprocess.Popen:
    model = save(mlp(sizes=(256, 256, 256, 10)), tmp_path / "wide.onnx")  # a few seconds of work
    return subprocess.Popen([sys.executable, "-m", "nnfpga.cli", "compile", str(model), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_compile_removes_the_partial_directory(tmp_path, sig, code):
    out = tmp_path / "build"
    proc = _start_compile(tmp_path, out)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leftovers(tmp_path), "the compile never created its partial directory"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "error: interrupted" in err and "Traceback" not in err
    assert leftovers(tmp_path) == [] and not out.exists()


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Python alone leaves it at the default)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def test_ctrl_c_while_starting_up(tmp_path, model_path):
    """Ctrl-C as soon as main() is running, while the compiler's modules still load (about a second)."""
    proc = subprocess.Popen([sys.executable, "-m", "nnfpga.cli", "compile", str(model_path), "-o",
                             str(tmp_path / "build")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _catches_sigterm(proc.pid):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.strip()] == ["error: interrupted"]
    assert not (tmp_path / "build").exists() and leftovers(tmp_path) == []


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else None
        except OSError:
            continue
        if stat:
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    found, todo = set(), list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


def _interrupt_when(proc: subprocess.Popen, ready, sig=signal.SIGTERM) -> tuple[int, str, set[int]]:
    """Wait until `ready()` and a child process runs, send `sig`; return (exit code, stderr,
    the descendants seen just before the signal)."""
    deadline = time.monotonic() + 180
    while not (ready() and _descendants(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # the tool is well under way
    children = _descendants(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, children


needs_compiler = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("make") is None,
                                    reason="Verilator needs g++ and make")


@needs_compiler
def test_sigterm_during_verify_leaves_no_simulator_build_and_no_compiler(tmp_path, built):
    build = shutil.copytree(built, tmp_path / "build", ignore=shutil.ignore_patterns("sim"))
    proc = subprocess.Popen([sys.executable, "-m", "nnfpga.cli", "verify", str(build), "--samples", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, err, children = _interrupt_when(proc, lambda: list(build.glob("sim/*.tmp*")))
    assert code == 143 and "error: interrupted" in err and "Traceback" not in err
    assert list(build.glob("sim/*.tmp*")) == []
    assert children and [pid for pid in children if _running(pid)] == []


def test_sigterm_during_synthesis_leaves_no_partial_directory_and_no_yosys(tmp_path, built):
    build = shutil.copytree(built, tmp_path / "build")
    proc = subprocess.Popen([sys.executable, "-m", "nnfpga.cli", "build", str(build)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, err, children = _interrupt_when(proc, lambda: list(build.glob(".synth.partial-*")))
    assert code == 143 and "error: interrupted" in err and "Traceback" not in err
    assert leftovers(build) == [] and not (build / "synth").exists()
    assert children and [pid for pid in children if _running(pid)] == []


CHILDREN = """
import subprocess, sys, threading
from nnfpga import processes
with processes.interruptible():
    # as cocotb's runner starts Verilator: a plain child in our process group, from a thread
    plain = subprocess.Popen(["sleep", "60"])
    # as the tools are started: a group of their own, with a grandchild
    threading.Thread(target=processes.run, args=(["sh", "-c", "sleep 60 & echo $! > grandchild; wait"],),
                     daemon=True).start()
    open("plain", "w").write(str(plain.pid))
    try:
        threading.Event().wait(60)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(143)
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_children_and_grandchildren(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILDREN], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not all((tmp_path / f).is_file() and (tmp_path / f).read_text().strip() for f in ("plain", "grandchild")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    pids = [int((tmp_path / f).read_text()) for f in ("plain", "grandchild")]
    assert all(_running(pid) for pid in pids)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "interrupted" in out
    time.sleep(0.2)
    assert [pid for pid in pids if _running(pid)] == []


def test_interruptible_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with processes.interruptible():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


# -- 5. small items -----------------------------------------------------------------------------

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
