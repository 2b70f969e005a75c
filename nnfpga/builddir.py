"""A build directory and the sample data fed to one: the manifest, writing a directory or a
file whole or not at all, and .npz arrays matched to a graph's inputs.

Shared by compile (nnfpga/build.py), verify, run, report and synthesis (backends/synth.py).
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from nnfpga.errors import BuildError, CalibrationError, NnfpgaError
from nnfpga.ir import Graph, clean_name
from nnfpga.ir.textio import load_ir
from nnfpga.sample_data import read_npz

MANIFEST = "manifest.json"


MANIFEST_KEYS = ("model", "pipeline", "float_input", "float_output", "accelerator_input", "accelerator_output",
                 "layers", "rtl", "predicted_cycles_per_inference")
"""What every manifest holds; verify, run and report rely on it."""
LAYER_KEYS = ("name", "k", "n", "pe", "simd", "wbits", "acc_bits", "cycles")


def _damaged(build_dir: Path, what: str) -> BuildError:
    return BuildError(f"{build_dir} is a damaged nnfpga build: {what}; compile it again "
                      f"('nnfpga compile MODEL -o {build_dir} --force')")


def load_build(build_dir: Path) -> dict:
    """The manifest of `build_dir`; BuildError when it is not a build directory or its
    manifest is damaged."""
    build_dir = Path(build_dir)
    path = build_dir / MANIFEST
    if not path.is_file():
        raise BuildError(f"{build_dir} is not an nnfpga build directory (no {MANIFEST}); "
                         "run 'nnfpga compile MODEL -o DIR' first")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _damaged(build_dir, f"{MANIFEST} cannot be read ({e})") from None
    if not isinstance(manifest, dict):
        raise _damaged(build_dir, f"{MANIFEST} is not a JSON object")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if not missing and isinstance(manifest["layers"], list):
        missing = sorted({f"layers[].{k}" for l in manifest["layers"] for k in LAYER_KEYS
                          if not isinstance(l, dict) or k not in l})
    if missing or not isinstance(manifest["layers"], list):
        raise _damaged(build_dir, f"{MANIFEST} lacks {', '.join(missing) or 'its list of layers'}")
    return manifest


def load_final_ir(build_dir: Path) -> Graph:
    """The build's integer IR (ir/final.ir and .npz)."""
    try:
        return load_ir(Path(build_dir) / "ir" / "final")
    except (NnfpgaError, ValueError, zipfile.BadZipFile) as e:
        raise _damaged(Path(build_dir), f"ir/final cannot be loaded ({e})") from None


def load_build_model(build_dir: Path, name: str = "reference.onnx"):
    """One of the build's ONNX models (reference.onnx, the integer reference, or model.onnx,
    the float model compiled) as an onnx.ModelProto."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(Path(build_dir) / name))
    except (OSError, DecodeError, ValueError) as e:
        raise _damaged(Path(build_dir), f"{name} cannot be loaded ({e})") from None


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    return read_npz(path, what)  # checked: readable, sized, finite numbers, samples on axis 0


def match_inputs(g: Graph, arrays: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Map npz arrays to graph inputs by (sanitised) name; a lone array feeds a lone input."""
    data = {k: v for k, v in arrays.items() if k != "label"}
    if len(g.inputs) == 1 and len(data) == 1:
        return {g.inputs[0].name: next(iter(data.values()))}
    by_clean = {clean_name(k): v for k, v in data.items()}
    missing = [v.name for v in g.inputs if v.name not in by_clean]
    if missing:
        raise CalibrationError(f"{what} has no array for model input(s) {', '.join(missing)} "
                               f"(arrays in the file: {', '.join(sorted(data)) or 'none'})")
    return {v.name: by_clean[v.name] for v in g.inputs}


def check_sample_shapes(g: Graph, feeds: dict[str, np.ndarray], what: str) -> None:
    for v in g.inputs:
        x = feeds[v.name]
        sample = v.type.shape[1:] if v.type.shape and v.type.shape[0] == 1 else v.type.shape
        if x.ndim == 0 or (tuple(x.shape[1:]) != tuple(sample) and tuple(x.shape[1:]) != v.type.shape):
            raise CalibrationError(
                f"{what} for input '{v.name}' has shape {list(x.shape)}, but the model takes "
                f"{list(v.type.shape)}: expected [N, {', '.join(map(str, sample))}] (N samples)")
        if not np.issubdtype(x.dtype, np.number):
            raise CalibrationError(f"{what} for input '{v.name}' holds {x.dtype}, not numbers")


def check_out_dir(out_dir: Path, force: bool, *, marker: str = MANIFEST, keep: tuple[Path, ...] = ()) -> None:
    """Raise BuildError unless `out_dir` may be (re)written: it does not exist, or `force` is
    given and it is a directory nnfpga wrote (it holds `marker`) that is neither the working
    directory, nor one of its ancestors, nor a directory holding one of the `keep` paths (the
    model, the calibration data)."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise BuildError(f"{out_dir} exists and is not a directory")
    if not force:
        raise BuildError(f"output directory {out_dir} already exists; pass --force to replace it")
    where, cwd = out_dir.resolve(), Path.cwd().resolve()
    if where == cwd or where in cwd.parents:
        raise BuildError(f"--force will not replace {out_dir}: it is the working directory or holds it")
    for path in keep:
        if where in Path(path).resolve().parents:
            raise BuildError(f"--force will not replace {out_dir}: it holds {path}")
    if not (out_dir / marker).is_file():
        raise BuildError(f"--force replaces only a directory nnfpga wrote, and {out_dir} has no {marker}; "
                         "remove it yourself or choose another output directory")


STALE_SECONDS = 60
"""A partial directory no process holds is left over from a killed one, once it is this old
(younger, its writer may not have locked it yet)."""
_HELD: dict[Path, int] = {}
"""Partial directories this process writes -> the open descriptor holding their lock."""


def _lock(path: Path) -> int | None:
    """A descriptor holding an exclusive lock on the directory `path`, or None when another
    holds it. The lock ends with the descriptor, so a killed writer leaves none behind."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _clear_partials(out_dir: Path) -> None:
    """Refuse when another process is writing `out_dir`; remove partial directories that
    killed processes left behind."""
    for partial in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.partial-*"):
        try:
            fd = _lock(partial)
            if fd is None:
                raise BuildError(f"another nnfpga process is writing {out_dir} (into {partial.name}); "
                                 "wait for it to finish")
            try:
                if time.time() - partial.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(partial, ignore_errors=True)
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):  # gone meanwhile, or not ours
            continue


def prepare_out_dir(out_dir: Path, force: bool, *, marker: str = MANIFEST, keep: tuple[Path, ...] = ()) -> Path:
    """Check `out_dir` (check_out_dir) and return a fresh hidden sibling to build in, locked
    while this process writes it, which `commit_out_dir` moves into place (or
    `discard_out_dir` removes)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force, marker=marker, keep=keep)
    existing = next(p for p in out_dir.absolute().parents if p.exists())
    if not existing.is_dir():
        raise BuildError(f"cannot create {out_dir}: {existing} is a file, not a directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _clear_partials(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        _HELD[tmp] = _lock(tmp)
        return tmp
    except OSError as e:
        raise BuildError(f"cannot create {out_dir}: {e.strerror or e}") from None


def _release(tmp: Path) -> None:
    fd = _HELD.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def discard_out_dir(tmp: Path) -> None:
    """Remove a partial directory from prepare_out_dir (the build failed or was interrupted)."""
    _release(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def commit_out_dir(tmp: Path, out_dir: Path, force: bool = True, *, marker: str = MANIFEST) -> None:
    """Move the finished `tmp` to `out_dir`. Without `force` an `out_dir` that appeared meanwhile
    (another compile into the same directory) is an error and stays as it is: the rename into
    place is the claim, and it fails on an existing non-empty directory. With `force` an
    existing `out_dir` is replaced if it is still a directory nnfpga wrote."""
    trash = None
    try:
        if force and out_dir.is_dir() and (out_dir / marker).is_file():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            try:
                out_dir.rename(trash / "old")
            except FileNotFoundError:  # another process moved it first
                pass
        if out_dir.exists() or out_dir.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(out_dir))
        tmp.rename(out_dir)
        _release(tmp)
    except OSError as e:
        if trash is not None and (trash / "old").exists() and not out_dir.exists():
            (trash / "old").rename(out_dir)  # put the old build back
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise BuildError(f"output directory {out_dir} was created by another process while this one "
                             f"was writing it{'' if force else '; pass --force to replace it'}") from None
        raise BuildError(f"cannot write {out_dir}: {e.strerror or e}") from None
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a reader never sees half a file, an error leaves the
    old file (or none) and no temporary behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
