"""Pass registry and the context passes share.

A pass is a function `(graph, ctx, **options) -> bool` (True when it changed the graph),
registered with its options so pipeline strings can be checked before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nnfpga.errors import PipelineError


@dataclass
class PassContext:
    """What passes may read besides the graph."""

    calib: dict[str, np.ndarray] | None = None
    """Calibration samples per graph input, each [B, *sample shape]; None = synthesise."""
    seed: int = 0
    """Seed for anything random (synthetic calibration data)."""
    warn: Callable[[str], None] = lambda message: None
    """Where passes report things the user should know."""
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None
    """Where long steps (calibration) report how far they are."""
    device: str | None = None
    """Target device name (nnfpga.devices); passes that size hardware fit its budget."""
    report: list[dict] = field(default_factory=list)
    """Records passes leave for the build's manifest (`pass_reports`), each naming its pass."""
    fixed_quant: Any = None
    """A quantized model's own quantization (frontend.onnx_quantized.FixedQuant); quantize
    takes it instead of calibrating."""


@dataclass(frozen=True)
class Option:
    type: type
    """int, float, bool or str."""
    default: Any
    """Value used when the pipeline string omits the option."""
    help: str
    """One line for `nnfpga passes` and the README."""


@dataclass(frozen=True)
class PassInfo:
    name: str
    """Name used in pipeline strings."""
    run: Callable[..., bool]
    """The pass function."""
    options: dict[str, Option] = field(default_factory=dict)
    """Accepted options."""
    doc: str = ""
    """First line of the pass docstring."""


PASSES: dict[str, PassInfo] = {}


def register(name: str, **options: Option):
    def wrap(fn):
        if name in PASSES:
            raise ValueError(f"pass {name} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        PASSES[name] = PassInfo(name, fn, dict(options), doc[0] if doc else "")
        return fn
    return wrap


def lookup(name: str) -> PassInfo:
    if name not in PASSES:
        raise PipelineError(f"unknown pass '{name}'; known passes: {', '.join(sorted(PASSES))}")
    return PASSES[name]

