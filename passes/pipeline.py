"""Pipeline strings and the pass manager.

    canonicalize,quantize{wbits=8,abits=8},fold{pe=4,simd=8}

Every pass is followed by the verifier; `dump_after` writes the IR text after a pass.
A pass that rewrites float layers (lowrank, quantize) refuses a graph whose
accelerator layers are already integer, and one that folds integer layers (fold, autofold)
refuses a graph that still has float ones, so a misordered pipeline is an error, not a
pass that silently does nothing.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nnfpga.devices import DEVICES
from nnfpga.errors import IRError, PipelineError
from nnfpga.ir import Graph, print_graph, verify
from nnfpga.passes.registry import PassContext, lookup

DEFAULT_PIPELINE = "canonicalize,quantize{wbits=8,abits=8},channels_last,autofold"

FLOAT_LAYER_OPS = ("gemm", "matmul", "dense", "conv")
"""Layer ops of the float IR (quantize turns them into qmatmul / qconv)."""
INTEGER_LAYER_OPS = ("qmatmul", "qconv")
NEEDS_FLOAT = ("lowrank", "quantize")
"""Passes that read float layers: they run before quantize."""
NEEDS_INTEGER = ("fold", "autofold")
"""Passes that fold integer layers: they run after quantize."""

_STEP = re.compile(r"\s*([a-z_][a-z0-9_]*)\s*(\{([^{}]*)\})?\s*(,|$)")


@dataclass(frozen=True)
class Step:
    name: str
    """Registered pass name."""
    options: dict[str, Any]
    """Options after defaults and type conversion."""


def _convert(pass_name: str, key: str, text: str, kind: type):
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        value = kind(text)
    except ValueError:
        raise PipelineError(f"option {key} of pass {pass_name} must be {kind.__name__}, got '{text}'") from None
    if kind is float and not math.isfinite(value):
        raise PipelineError(f"option {key} of pass {pass_name} must be a finite number, got '{text}'")
    return value


def parse_pipeline(text: str) -> list[Step]:
    """Check a pipeline string against the registry; raise PipelineError naming the problem."""
    steps, pos = [], 0
    text = text.strip()
    if not text:
        raise PipelineError("empty pipeline")
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(f"cannot read the pipeline at '{text[pos:]}' "
                                "(expected: pass{option=value,...},pass,...)")
        info = lookup(m.group(1))
        options = {k: o.default for k, o in info.options.items()}
        given: set[str] = set()
        for item in filter(None, (s.strip() for s in (m.group(3) or "").split(","))):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq:
                raise PipelineError(f"option '{item}' of pass {info.name} needs a value (key=value)")
            if key not in info.options:
                known = ", ".join(sorted(info.options)) or "none"
                raise PipelineError(f"pass {info.name} has no option '{key}' (its options: {known})")
            if key in given:
                raise PipelineError(f"option '{key}' of pass {info.name} is given twice")
            given.add(key)
            options[key] = _convert(info.name, key, value.strip(), info.options[key].type)
        steps.append(Step(info.name, options))
        pos = m.end()
        if m.group(4) == "," and pos == len(text):
            raise PipelineError("pipeline ends with a comma")
    return steps


def run_pipeline(g: Graph, pipeline: str | list[Step], ctx: PassContext | None = None,
                 dump_after: str | None = None, dump_to: Path | None = None,
                 on_dump: Callable[[str, str], None] | None = None, stop_after: str | None = None) -> Graph:
    """Run the passes in order, verifying after each. The input graph is left untouched.

    `dump_after` names a pass (or 'all'); its IR text goes to `dump_to/<index>-<pass>.ir`
    and/or to `on_dump(pass, text)`. `stop_after` ends the pipeline after that pass."""
    steps = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    names = [s.name for s in steps]
    for wanted in (dump_after, stop_after):
        if wanted not in (None, "all") and wanted not in names:
            raise PipelineError(f"'{wanted}' is not in the pipeline ({', '.join(names)})")
    ctx = ctx or PassContext()
    # With a known target, packed layers are held to its multiplier's width.
    dsp_shape = DEVICES[ctx.device].dsp_shape if ctx.device in DEVICES else None
    g = g.clone()
    verify(g, dsp_shape)
    for index, step in enumerate(steps, start=1):
        _check_stage(g, step.name, names)
        lookup(step.name).run(g, ctx, **step.options)
        g.drop_unreferenced_arrays()
        try:
            verify(g, dsp_shape)
        except IRError as e:
            raise IRError(f"after pass {step.name}: {e}") from None
        if dump_after in ("all", step.name):
            text = print_graph(g)
            if dump_to is not None:
                dump_to.mkdir(parents=True, exist_ok=True)
                (dump_to / f"{index:02d}-{step.name}.ir").write_text(text)
            if on_dump:
                on_dump(step.name, text)
        if step.name == stop_after:
            break
    return g


def _check_stage(g: Graph, pass_name: str, names: list[str]) -> None:
    """Refuse a pass given the wrong kind of IR (float layers where it folds integer ones,
    or the reverse); host-placed layers stay float and do not count."""
    accel = [n for n in g.nodes if n.attrs.get("place", "accel") == "accel"]
    float_layers = [n for n in accel if n.op in FLOAT_LAYER_OPS]
    integer_layers = [n for n in accel if n.op in INTEGER_LAYER_OPS]
    order = ", ".join(names)
    if pass_name in NEEDS_INTEGER and float_layers:
        raise PipelineError(f"{pass_name} needs the integer layers quantize makes (qmatmul, qconv), but the "
                            f"graph still has float {float_layers[0].op} layers: put quantize before {pass_name} "
                            f"(pipeline: {order})")
    if pass_name == "quantize" and integer_layers:
        raise PipelineError(f"quantize runs once: the graph's layers are already integer ({integer_layers[0].op}) "
                            f"(pipeline: {order})")
    if pass_name in NEEDS_FLOAT and integer_layers:
        raise PipelineError(f"{pass_name} works on the float layers, but the graph's layers are already "
                            f"integer ({integer_layers[0].op}): put {pass_name} before quantize "
                            f"(pipeline: {order})")
