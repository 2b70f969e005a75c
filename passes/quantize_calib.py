"""Calibration methods of `quantize{calib=...}`: which float range each tensor gets.

    minmax      activations: [min, max] of the calibration values; weights: max |w| per channel
    percentile  activations: [p, 100-p] percentiles (`pct=p`); weights: max |w| per channel
    mse         activations: the clipping of [min, max] with the least mean squared quantization
                error (clipping + rounding); weights: per channel, the clipping of max |w| with
                the least squared error

At <= 4 bits one outlier stretches a min/max range so far that the useful values share a few
levels; clipping it costs less than the resolution it buys back. Only the float ranges change:
the types, zero points and requant multipliers downstream are derived from them as before, so
the integer semantics (and every backend's bit-exactness) is the same for every method.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from nnfpga.errors import PipelineError

CALIB_METHODS = ("minmax", "percentile", "mse")
CLIP_STEPS = 100
"""Clipping fractions the mse search tries: 1/100, 2/100, ..., 1 (1 is the min/max range)."""
MSE_SAMPLE = 1 << 16
"""Activation values the mse search scores (an even stride through larger tensors)."""


def check_options(calib: str, pct: float) -> None:
    if calib not in CALIB_METHODS:
        raise PipelineError(f"quantize: calib={calib!r} is not a calibration method; "
                            f"allowed: {', '.join(CALIB_METHODS)}")
    if not 0.0 < pct < 50.0:
        raise PipelineError(f"quantize: pct={pct} is outside (0, 50) (the percentile clipped at each end, "
                            "e.g. 0.01 keeps the 0.01st to 99.99th percentiles)")


def clip_fractions() -> np.ndarray:
    # The last fraction is exactly 1.0 (linspace writes its endpoint), so min/max is a candidate
    # and the chosen error is never above min/max's.
    return np.linspace(1.0 / CLIP_STEPS, 1.0, CLIP_STEPS)


def activation_range(values: np.ndarray, calib: str, pct: float, bits: int,
                     activation_type: Callable) -> np.ndarray:
    """[lo, hi] for a tensor's calibration values under `calib` (activation_type widens it to hold 0)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if calib == "percentile":
        lo, hi = np.percentile(x, [pct, 100.0 - pct])
        return np.array([lo, hi])
    if calib == "mse":
        return mse_activation_range(x, bits, activation_type)
    return np.array([x.min(), x.max()])


def activation_error(x: np.ndarray, t) -> float:
    """Mean squared error of quantizing x to the per-tensor type t and back."""
    q = np.clip(np.rint(x / t.scale) + t.zero_point, t.min, t.max)
    return float(np.mean(((q - t.zero_point) * t.scale - x) ** 2))


def mse_activation_range(x: np.ndarray, bits: int, activation_type: Callable) -> np.ndarray:
    if x.size > MSE_SAMPLE:
        x = x[:: -(-x.size // MSE_SAMPLE)]
    lo, hi = float(x.min()), float(x.max())
    candidates = [activation_type(f * lo, f * hi, bits) for f in clip_fractions()]
    scale = np.array([t.scale for t in candidates])[:, None]
    zero = np.array([t.zero_point for t in candidates], dtype=np.float64)[:, None]
    qmin = np.array([t.min for t in candidates], dtype=np.float64)[:, None]
    qmax = np.array([t.max for t in candidates], dtype=np.float64)[:, None]
    q = np.clip(np.rint(x[None, :] / scale) + zero, qmin, qmax)
    error = np.mean(((q - zero) * scale - x[None, :]) ** 2, axis=1)
    best = clip_fractions()[int(np.argmin(error))]
    return np.array([best * lo, best * hi])


def weight_scale(w_rows: np.ndarray, wbits: int, calib: str) -> np.ndarray:
    """Per output channel scale of w_rows [channels, fan-in], symmetric, before the scale floor."""
    wmax = (1 << (wbits - 1)) - 1
    top = np.abs(w_rows).max(axis=1)
    if calib != "mse":
        return top / wmax
    best_scale, best_error = top / wmax, np.full(len(top), np.inf)
    for f in clip_fractions():
        scale = np.where(top > 0, f * top / wmax, 1.0)[:, None]
        error = np.sum((np.clip(np.rint(w_rows / scale), -wmax, wmax) * scale - w_rows) ** 2, axis=1)
        better = error < best_error
        best_scale = np.where(better, f * top / wmax, best_scale)
        best_error = np.where(better, error, best_error)
    return best_scale


class CalibratedRanges(dict):
    """The calibration values' ranges under a method, summarised when first read (an mse search
    over every intermediate tensor would be wasted on those quantize never types)."""

    def __init__(self, raw: dict[str, np.ndarray], summarise: Callable[[str, np.ndarray], np.ndarray]):
        super().__init__()
        self.raw, self.summarise = raw, summarise

    def __missing__(self, name: str) -> np.ndarray:
        self[name] = self.summarise(name, self.raw[name])
        return self[name]

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self.raw

    def __bool__(self) -> bool:
        return bool(self.raw)
