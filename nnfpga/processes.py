"""Tools run as child processes (Verilator and make, g++, yosys, nextpnr), and what stops
them when nnfpga is interrupted.

Why it is built this way:
- A tool started with `popen` or `run` gets a process group of its own, so stopping it also
  stops what it started (make's compilers, the YoWASP runner's worker).
- `interruptible()` (the CLI runs every command inside it) turns SIGTERM, like SIGINT, into
  `Interrupted` raised in the main thread once the children are stopped. Every `finally` and
  `except BaseException` clean-up (partial build directories, temporary simulation
  directories) then runs before the process exits, on files no child is still writing.
- cocotb's runner starts Verilator, make and the simulator with a plain subprocess.run, in
  our own process group; those are found as our descendants in /proc.
- A second signal during the clean-up ends the process at once (the default action).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 2.0
"""How long a stopped child gets to exit after SIGTERM before SIGKILL."""

_GROUPS: set[int] = set()
"""Process groups of the running children started by `popen` (each group's id is its leader's pid)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the children are already stopped."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def popen(args, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a new process group; `forget(proc)` once it has been waited for."""
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    _GROUPS.add(proc.pid)
    return proc


def forget(proc: subprocess.Popen) -> None:
    _GROUPS.discard(proc.pid)


def stop(proc: subprocess.Popen) -> None:
    """Stop a child started by `popen` and its whole process group."""
    _stop({proc.pid}, set())


def run(args, *, capture_output: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run in a process group of its own; the whole group is stopped when this
    thread is interrupted (or anything else escapes) while the tool runs."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = popen(args, **kwargs)
    try:
        with proc:
            try:
                stdout, stderr = proc.communicate()
            except BaseException:
                stop(proc)
                raise
    finally:
        forget(proc)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, state) of every process /proc shows."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        found.append((int(entry.name), int(fields[1]), int(fields[2]), fields[0]))
    return found


def _alive(groups: set[int], pids: set[int]) -> set[int]:
    """The processes, zombies aside, that are in `groups` or are among `pids` or their descendants."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, ppid, _, _ in table:
        children.setdefault(ppid, []).append(pid)
    wanted, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in wanted:
            wanted.add(pid)
            todo.extend(children.get(pid, []))
    return {pid for pid, _, pgrp, state in table if state != "Z" and (pgrp in groups or pid in wanted)}


def _stop(groups: set[int], descendants_of: set[int]) -> None:
    """SIGTERM to the groups and to every descendant of `descendants_of`, then SIGKILL to what
    is still running after GRACE_SECONDS."""
    if not Path("/proc").is_dir():  # no process table to read (not Linux): the groups at least
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        return

    def running() -> set[int]:
        return (_alive(groups, set()) | _alive(set(), descendants_of)) - descendants_of - {os.getpid()}

    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = running()
        if not targets:
            return
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and running():
            time.sleep(0.02)


def stop_children() -> None:
    """Stop every tool this process started, and everything those started."""
    _stop(set(_GROUPS), {os.getpid()})


def _on_signal(signum, frame) -> None:
    for sig in STOP_SIGNALS:  # a second signal ends the process at once
        signal.signal(sig, signal.SIG_DFL)
    stop_children()
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT and SIGTERM stop the children and raise Interrupted in this (the main)
    thread. The previous handlers come back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
