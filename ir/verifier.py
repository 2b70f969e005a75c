"""Graph verifier: structure (SSA, order, use-lists), attribute schemas, per-op type rules.

Every message names the node and the broken rule, so a pass author or user can act on it.
"""
from __future__ import annotations

import numpy as np

from nnfpga.errors import IRError
from nnfpga.bitslices import SLICE_WIDTHS
from nnfpga.hardware import CORES, legal_taps, max_pack, pack_fits, packed_weight_bits
from nnfpga.ir.graph import ArrayRef, Graph, Node
from nnfpga.ir.annotations import ANNOTATIONS, PLACES
from nnfpga.ir.ops import OPS, OpCheckError
from nnfpga.ir.types import FloatType, IntType, QuantType, TensorType


def _check_window_taps(node: Node, taps: int) -> None:
    """`window` (taps per beat of a convolution's window) only on qconv, and only a count its window can emit."""
    if node.op != "qconv":
        raise IRError(f"{_where(node)}: 'window' (window taps per beat) applies to qconv only")
    kh, kw = node.inputs[1].type.shape[2:]
    if taps not in legal_taps(kh, kw):
        raise IRError(f"{_where(node)}: window={taps} taps per beat; a {kh}x{kw} window emits "
                      f"{', '.join(map(str, legal_taps(kh, kw)))} (part of one kernel row or whole rows)")


def _where(node: Node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs) or "(no results)"
    return f"{node.op} node defining {outs}"


def _check_attr(node: Node, key: str, value, expected: type) -> None:
    ok = isinstance(value, expected)
    if expected is int or expected is float:
        ok = isinstance(value, expected) and not isinstance(value, bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if expected is list:
        ok = isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    if not ok:
        raise IRError(f"{_where(node)}: attribute '{key}' must be {expected.__name__}, got {value!r}")


def _check_const(g: Graph, value) -> None:
    if value.array not in g.arrays:
        raise IRError(f"constant %{value.name} refers to @{value.array}, which is not in the array table")
    data = g.arrays[value.array]
    if tuple(data.shape) != value.type.shape:
        raise IRError(f"constant %{value.name}: data shape {list(data.shape)} differs from its type "
                      f"{value.type!r}")
    element = value.type.element
    if isinstance(element, FloatType) and not np.issubdtype(data.dtype, np.floating):
        raise IRError(f"constant %{value.name} is typed float but holds {data.dtype} data")
    if isinstance(element, (IntType, QuantType)):
        if not np.issubdtype(data.dtype, np.integer):
            raise IRError(f"constant %{value.name} is typed integer but holds {data.dtype} data")
        if data.size and (data.min() < element.min or data.max() > element.max):
            raise IRError(f"constant %{value.name} holds values outside {element!r}")


def _check_type_refs(g: Graph, v) -> None:
    element = v.type.element
    if isinstance(element, QuantType) and isinstance(element.scale, str):
        scales = g.arrays.get(element.scale)
        if scales is None:
            raise IRError(f"%{v.name}: per-channel scale @{element.scale} is not in the array table")
        if element.axis >= v.type.rank or scales.shape != (v.type.shape[element.axis],):
            raise IRError(f"%{v.name}: @{element.scale} must hold one scale per channel of axis "
                          f"{element.axis} ({v.type!r})")


def _check_core(node: Node, dsp_shape: tuple[int, int] | None) -> None:
    """`core` and `pack` of a layer: a known core, pack only on the dsp core, and with the
    device's multiplier shape known, packed products that fit one multiplier. A float dense
    or conv may carry a `core` and `pack` request (split, precision leave them) that quantize hands on."""
    core = node.attrs.get("core", "dsp")
    pack = node.attrs.get("pack", 1)
    if "core" in node.attrs and node.op not in ("qmatmul", "qconv", "dense", "conv"):
        raise IRError(f"{_where(node)}: core describes a layer's products; only dense, conv, qmatmul and "
                      "qconv take it")
    if "pack" in node.attrs and node.op not in ("qmatmul", "qconv", "dense", "conv"):
        raise IRError(f"{_where(node)}: pack describes a layer's products; only dense, conv, qmatmul and qconv "
                      "take it")
    if core not in CORES:
        raise IRError(f"{_where(node)}: unknown core {core!r} (accepted: {', '.join(CORES)})")
    if pack < 1:
        raise IRError(f"{_where(node)}: pack={pack} must be at least 1 (products per multiplier)")
    if pack > 1 and core != "dsp":
        raise IRError(f"{_where(node)}: pack={pack} packs products into DSP multipliers; core {core!r} "
                      "has none (use pack=1 or core dsp)")
    _check_slices(node, core)
    if pack == 1 or dsp_shape is None or node.op not in ("qmatmul", "qconv"):
        return
    x, w = node.inputs[0].type.element, node.inputs[1].type.element
    if not pack_fits(pack, x.bits, x.signed, w.bits, dsp_shape):
        a, b = dsp_shape
        raise IRError(f"{_where(node)}: pack={pack} does not fit a {a}x{b} multiplier: {pack} products of "
                      f"{x.bits}-bit inputs and {w.bits}-bit weights need a "
                      f"{packed_weight_bits(pack, x.bits, w.bits)}-bit operand ((pack-1)*(ib+wb)+wb); "
                      f"at most pack={max_pack(x.bits, x.signed, w.bits, dsp_shape)} fits")


def _check_slices(node: Node, core: str) -> None:
    """`slice` and `skip` of a bit-serial layer: a quantized layer on the bitserial core
    names its slice width; neither annotation appears on another core."""
    for key in ("slice", "skip"):
        if key in node.attrs and core != "bitserial":
            raise IRError(f"{_where(node)}: {key} describes the bitserial core's weight slices; this "
                          f"layer's core is {core!r} (set core = bitserial or drop {key})")
    if core != "bitserial" or node.op not in ("qmatmul", "qconv"):
        return
    s = node.attrs.get("slice")
    if s not in SLICE_WIDTHS:
        raise IRError(f"{_where(node)}: the bitserial core needs slice = {' or '.join(map(str, SLICE_WIDTHS))} "
                      f"(magnitude bits per weight slice), got {s}")
    if node.attrs.get("skip", 1) not in (0, 1):
        raise IRError(f"{_where(node)}: skip = {node.attrs['skip']} must be 0 (every tile) or 1 "
                      "(leave out all-zero tiles)")


def verify(g: Graph, dsp_shape: tuple[int, int] | None = None) -> None:
    """Raise IRError describing the first broken rule; return None for a valid graph.

    `dsp_shape`: the target's multiplier (nnfpga.devices.Device.dsp_shape); with it, packed
    layers are checked to fit one multiplier per group."""
    defined: set[int] = set()
    names: set[str] = set()

    def define(v) -> None:
        if v.name in names:
            raise IRError(f"value %{v.name} is defined twice")
        names.add(v.name)
        defined.add(id(v))
        if not isinstance(v.type, TensorType):
            raise IRError(f"%{v.name} has no tensor type")
        _check_type_refs(g, v)

    for v in g.inputs:
        if v.producer is not None or v.is_const:
            raise IRError(f"graph input %{v.name} must not have a producer or data")
        define(v)
    for c in g.constants:
        define(c)
        _check_const(g, c)

    expected_uses: dict[int, list] = {}
    for node in g.nodes:
        opdef = OPS.get(node.op)
        if opdef is None:
            raise IRError(f"{_where(node)}: unknown op '{node.op}' (known: {', '.join(sorted(OPS))})")
        lo, hi = opdef.arity
        if not lo <= len(node.inputs) <= hi:
            raise IRError(f"{_where(node)}: takes {lo}..{hi} operands, has {len(node.inputs)}")
        wrong_count = not node.outputs if opdef.results is None else len(node.outputs) != opdef.results
        if wrong_count:
            raise IRError(f"{_where(node)}: must have {opdef.results or 'at least 1'} result(s)")
        for idx, v in enumerate(node.inputs):
            if id(v) not in defined:
                raise IRError(f"{_where(node)}: operand {idx} %{v.name} is used before it is defined "
                              "(nodes must be in topological order)")
            expected_uses.setdefault(id(v), []).append((node, idx))
        for key, value in node.attrs.items():
            if key in opdef.attrs:
                _check_attr(node, key, value, opdef.attrs[key][0])
            elif key in ANNOTATIONS:
                _check_attr(node, key, value, ANNOTATIONS[key])
                if key == "place" and value not in PLACES:
                    raise IRError(f"{_where(node)}: place must be one of {', '.join(PLACES)}, got {value!r}")
                if key == "window":
                    _check_window_taps(node, value)
            elif not opdef.open_attrs:
                raise IRError(f"{_where(node)}: unknown attribute '{key}' "
                              f"(allowed: {', '.join(sorted(set(opdef.attrs) | set(ANNOTATIONS)))})")
            if isinstance(value, ArrayRef) and value.name not in g.arrays:
                raise IRError(f"{_where(node)}: attribute '{key}' refers to missing array @{value.name}")
        for key, (_, required) in opdef.attrs.items():
            if required and key not in node.attrs:
                raise IRError(f"{_where(node)}: missing required attribute '{key}'")
        for v in node.outputs:
            if v.producer is not node:
                raise IRError(f"{_where(node)}: result %{v.name} does not point back to its node")
            define(v)
        try:
            if opdef.check:
                opdef.check(g, node)
        except OpCheckError as e:
            raise IRError(f"{_where(node)}: {e}") from None
        if any(key in node.attrs for key in ("core", "pack", "slice", "skip")):
            _check_core(node, dsp_shape)

    for v in g.outputs:
        if id(v) not in defined:
            raise IRError(f"graph output %{v.name} is not defined")
    for v in g.values():
        want = sorted(expected_uses.get(id(v), []), key=lambda u: (id(u[0]), u[1]))
        have = sorted(v.uses, key=lambda u: (id(u[0]), u[1]))
        if want != have:
            raise IRError(f"use-list of %{v.name} is out of date (a pass edited inputs directly; "
                          "use Node.set_input or Graph.replace_all_uses)")
