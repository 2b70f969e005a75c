"""Reading sample data (.npz: --calib, --inputs, --train) and the checks every array passes
before a model sees it.

An .npz is a zip of .npy arrays. Each array's header is read first, so a file announcing an
array larger than the machine's memory is refused before anything is allocated; then every
array must hold numbers (no NaN or ±Inf, none beyond float32's range), at least one sample
on axis 0. Every message names the file and the array. Data that is whole numbers from 0 to
at most 255 (above 10) is accepted with a warning (`raw_pixel_note`): it looks like raw 8-bit
pixels given to a model that was most likely trained on scaled inputs.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nnfpga.errors import CalibrationError
from nnfpga.limits import check_tensor_size

NPY_MAGIC = b"\x93NUMPY"
FLOAT32_MAX = float(np.finfo(np.float32).max)
RAW_PIXEL_MAX = 255
RAW_PIXEL_MIN_MAX = 10
"""raw_pixel_note's rule: whole numbers, none below 0, the largest in (10, 255]."""


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """The arrays of the .npz at `path`, checked (`check_arrays`); CalibrationError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{what} file {path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            is_npy = f.read(len(NPY_MAGIC)) == NPY_MAGIC
        if is_npy:
            raise CalibrationError(f"{what} file {path} is a .npy file (one bare array); nnfpga reads .npz "
                                   "files with one named array per model input: np.savez('data.npz', input=x)")
        raise CalibrationError(f"cannot read {what} file {path}: it is not an .npz file (a zip archive of "
                               ".npy arrays, as np.savez writes), or it is truncated")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
            if not members:
                raise CalibrationError(f"{what} file {path} holds no arrays")
            for member in members:
                name = member.filename[: -len(".npy")]
                arrays[name] = _read_member(archive, member, name, path, what)
    except CalibrationError:
        raise
    except Exception as e:  # zipfile, zlib and numpy each raise their own kinds on a damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CalibrationError(f"cannot read {what} file {path}: it is damaged ({reason})") from None
    check_arrays(arrays, what, path)
    return arrays


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, name: str, path: Path, what: str) -> np.ndarray:
    where = f"array '{name}' of {what} file {path}"
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CalibrationError(f"{where} is in .npy format {version[0]}.{version[1]}; save it with np.savez")
    if dtype.hasobject:
        raise CalibrationError(f"{where} holds Python objects ({dtype}), not numbers")
    check_tensor_size(int(np.prod(shape, dtype=object)), max(1, dtype.itemsize), where, CalibrationError)
    with archive.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def check_arrays(arrays: dict[str, np.ndarray], what: str, path: Path | str) -> None:
    """Every array holds numbers, none of them NaN or ±Inf, and at least one sample on axis 0."""
    for name, x in arrays.items():
        where = f"array '{name}' of {what} file {path}"
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
                or x.dtype == np.bool_):
            raise CalibrationError(f"{where} holds {x.dtype}; nnfpga takes integer or floating-point numbers")
        if x.ndim == 0:
            raise CalibrationError(f"{where} is a single number; samples go on axis 0 (shape [N, ...])")
        if x.shape[0] == 0:
            raise CalibrationError(f"{where} has no samples (shape {list(x.shape)}); give at least one on axis 0")
        if x.size == 0:
            raise CalibrationError(f"{where} is empty (shape {list(x.shape)})")
        if np.issubdtype(x.dtype, np.floating):
            bad = ~np.isfinite(x)
            if bad.any():
                sample = int(np.argwhere(bad)[0][0])
                raise CalibrationError(f"{where} holds {int(bad.sum())} NaN or infinite value(s), the first in "
                                       f"sample {sample}; clean or drop those samples")
            if x.dtype.itemsize > 4 and np.abs(x).max() > FLOAT32_MAX:  # the model computes in float32
                raise CalibrationError(f"{where} holds values up to {np.abs(x).max():g}, beyond float32's range "
                                       f"(±{FLOAT32_MAX:.4g}), which the model computes in")


def raw_pixel_note(x: np.ndarray) -> str | None:
    """A warning when `x` looks like raw 8-bit pixels (whole numbers 0..255, the largest above
    10), which a model trained on inputs scaled to 0..1 or standardised would misread."""
    if x.size == 0 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        return None
    lo, hi = x.min(), x.max()
    if not (lo >= 0 and RAW_PIXEL_MIN_MAX < hi <= RAW_PIXEL_MAX):
        return None
    if np.issubdtype(x.dtype, np.floating) and not np.array_equal(x, np.floor(x)):
        return None
    return (f"it holds whole numbers from {lo:g} to {hi:g}, which looks like raw 8-bit pixel values; if the "
            "model was trained on scaled inputs (0..1, or standardised), scale this data the same way "
            "(e.g. x / 255)")
