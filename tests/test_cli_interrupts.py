"""Concurrent compiles into one directory cannot both succeed; SIGTERM and Ctrl-C during
compile, verify and build stop every child process, remove partial and temporary
directories, print `error: interrupted` and exit 143 or 130."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnx_models import mlp, save
from nnfpga import processes
from nnfpga.builddir import commit_out_dir, discard_out_dir, prepare_out_dir
from nnfpga.errors import BuildError
from test_cli_safety import built, leftovers, model_path, refused, run_cli  # noqa: F401 (fixtures)


# -- two compiles into one directory ---------------------------------------------------------

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


# -- signals ---------------------------------------------------------------------------------

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
