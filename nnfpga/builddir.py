"""A build directory and the sample data fed to one: the manifest, writing a directory or a
file whole or not at all, and .npz arrays matched to a graph's inputs.

Shared by compile (nnfpga/build.py), verify, run, report and synthesis (backends/synth.py).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from nnfpga.errors import BuildError, CalibrationError
from nnfpga.ir import Graph, clean_name
from nnfpga.sample_data import read_npz

MANIFEST = "manifest.json"


def load_build(build_dir: Path) -> dict:
    """The manifest of `build_dir`; BuildError when it is not a build directory."""
    build_dir = Path(build_dir)
    path = build_dir / MANIFEST
    if not path.is_file():
        raise BuildError(f"{build_dir} is not an nnfpga build directory (no {MANIFEST}); "
                         "run 'nnfpga compile MODEL -o DIR' first")
    return json.loads(path.read_text())


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


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Refuse to overwrite without force; return a fresh temporary sibling to build in."""
    if out_dir.exists() and not force:
        raise BuildError(f"output directory {out_dir} already exists; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise BuildError(f"{out_dir} exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))


def commit_out_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(trash / "old")
        tmp.rename(out_dir)
        shutil.rmtree(trash)
    else:
        tmp.rename(out_dir)


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
