"""Numpy interpreter: runs a graph at any stage. Integer ops are exact (int64 throughout;
the verifier guarantees every accumulator and |acc·M| fits), float ops run in float32,
and `host` nodes run through onnxruntime on a one-node ONNX model (ir/host.py).

A renderer-style table: op -> function(graph, node, operand arrays) -> result arrays.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from nnfpga.errors import CalibrationError, IRError
from nnfpga.ir.graph import Graph, Node
from nnfpga.ir.host import run_host_node
from nnfpga.ir.spatial import KERNELS as SPATIAL_KERNELS
from nnfpga.ir.types import QuantType


def quantize_array(x: np.ndarray, q: QuantType) -> np.ndarray:
    """clamp(round_half_even(x / scale) + zero_point) in float64, as int64."""
    r = np.rint(np.asarray(x, np.float64) / q.scale) + q.zero_point
    return np.clip(r, q.min, q.max).astype(np.int64)


def dequantize_array(x: np.ndarray, q: QuantType) -> np.ndarray:
    return ((np.asarray(x, np.float64) - q.zero_point) * q.scale).astype(np.float32)


def requantize_array(acc: np.ndarray, mult: np.ndarray, shift: int, zero_point: int,
                     lo: int, hi: int) -> np.ndarray:
    """clamp(zp + ((acc·M + 2^(s-1)) >> s), lo, hi) with an arithmetic (floor) shift."""
    acc = np.asarray(acc, np.int64)
    rounded = (acc * np.asarray(mult, np.int64) + (1 << (shift - 1))) >> shift
    return np.clip(rounded + zero_point, lo, hi)


def _matmul64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64. A float32 product's rounding depends on the BLAS kernel the CPU
    selects, and calibration ranges (so scales, so every golden) inherited it; rounded back
    to float32, the float64 product is the same on every machine."""
    return a.astype(np.float64) @ b.astype(np.float64)


def _gemm(g, node, a, b, c=None):
    alpha = np.float32(node.attrs.get("alpha", 1.0))
    beta = np.float32(node.attrs.get("beta", 1.0))
    a = a.T if node.attrs.get("trans_a") else a
    b = b.T if node.attrs.get("trans_b") else b
    y = alpha * _matmul64(a, b)
    if c is not None:
        y = y + beta * c
    return [y.astype(np.float32)]


def _dense(g, node, x, w, b):
    y = (_matmul64(x, w) + b).astype(np.float32)
    return [np.maximum(y, np.float32(0)) if node.attrs.get("relu") else y]


def _requant(g, node, acc):
    q = node.output.type.element
    mult = g.arrays[node.attrs["mult"].name]
    if acc.ndim > 2:  # per channel on axis 1: [C] -> [C, 1, 1] against [1, C, H, W]
        mult = mult.reshape((-1,) + (1,) * (acc.ndim - 2))
    return [requantize_array(acc, mult, node.attrs["shift"], q.zero_point,
                             node.attrs["lo"], node.attrs["hi"])]


def _host(g, node, *operands):
    return run_host_node(g, node, list(operands))


KERNELS = {
    "gemm": _gemm,
    "matmul": lambda g, n, a, b: [_matmul64(a, b).astype(np.float32)],
    "add": lambda g, n, a, b: [(a + b).astype(np.float32)],
    "mul": lambda g, n, a, b: [(a * b).astype(np.float32)],
    "relu": lambda g, n, x: [np.maximum(x, np.float32(0))],
    "transpose": lambda g, n, x: [np.transpose(x, n.attrs["perm"])],
    "reshape": lambda g, n, x: [np.reshape(x, n.attrs["shape"])],
    "dense": _dense,
    "quantize": lambda g, n, x: [quantize_array(x, n.output.type.element)],
    "dequantize": lambda g, n, x: [dequantize_array(x, n.inputs[0].type.element)],
    "qmatmul": lambda g, n, x, w, b: [x.astype(np.int64) @ w.astype(np.int64) + b.astype(np.int64)],
    "requant": _requant,
    "host": _host,
    **SPATIAL_KERNELS,
}


def _as_operand(g: Graph, v) -> np.ndarray:
    data = g.const_data(v)
    return data.astype(np.float32) if v.type.is_float else data.astype(np.int64)


def run(g: Graph, feeds: dict[str, np.ndarray], keep_all: bool = False,
        given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run one sample. `feeds` maps input names to arrays of exactly the input's shape.

    `given` maps node results to values taken as computed (a node whose results are all
    given is skipped): e.g. the hardware's output, to run the host suffix on it.
    Returns the graph outputs by name (or every value when `keep_all`)."""
    env: dict[str, np.ndarray] = {}
    for v in g.inputs:
        if v.name not in feeds:
            raise CalibrationError(f"no data for graph input %{v.name}")
        x = np.asarray(feeds[v.name])
        if x.shape != v.type.shape:
            raise CalibrationError(f"input %{v.name} must have shape {list(v.type.shape)}, got {list(x.shape)}")
        env[v.name] = x.astype(np.float32) if v.type.is_float else x.astype(np.int64)
    for c in g.constants:
        env[c.name] = _as_operand(g, c)
    given = given or {}
    env.update({k: np.asarray(v) for k, v in given.items()})
    for node in g.nodes:
        if node.outputs and all(v.name in given for v in node.outputs):
            continue
        kernel = KERNELS.get(node.op)
        if kernel is None:
            raise IRError(f"the interpreter has no kernel for op '{node.op}'")
        results = kernel(g, node, *[env[v.name] for v in node.inputs])
        for v, r in zip(node.outputs, results):
            if r.shape != v.type.shape:
                raise IRError(f"{node.op} produced shape {list(r.shape)} for %{v.name} typed {v.type!r}")
            env[v.name] = r
    if keep_all:
        return env
    return {v.name: env[v.name] for v in g.outputs}


def run_batch(g: Graph, feeds: dict[str, np.ndarray], keep_all: bool = False,
              progress: Callable[[int, int], None] | None = None,
              given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run B samples: each feed is [B, *sample shape] where the input's shape is [1, *sample
    shape] (the batch-of-one axis dropped), or [B, *input shape]. Results stack on axis 0.
    `given` (see `run`) holds [B, *value shape] arrays.
    `progress(done, total)` is called after every sample."""
    batches = {}
    for v in g.inputs:
        x = np.asarray(feeds.get(v.name)) if v.name in feeds else None
        if x is None:
            raise CalibrationError(f"no data for graph input %{v.name}")
        shape = v.type.shape
        if x.shape[1:] == shape:
            batches[v.name] = x
        elif shape and shape[0] == 1 and x.shape[1:] == shape[1:]:
            batches[v.name] = x.reshape((x.shape[0],) + shape)
        else:
            raise CalibrationError(f"data for input %{v.name} has shape {list(x.shape)}; expected "
                                   f"[N, {', '.join(map(str, shape[1:] if shape and shape[0] == 1 else shape))}]"
                                   f" (a batch of samples of the input {list(shape)})")
    sizes = {x.shape[0] for x in batches.values()}
    if len(sizes) != 1:
        raise CalibrationError(f"inputs have different sample counts: {sorted(sizes)}")
    count = sizes.pop()
    outs = []
    for i in range(count):
        outs.append(run(g, {k: x[i] for k, x in batches.items()}, keep_all,
                        {k: x[i] for k, x in (given or {}).items()}))
        if progress:
            progress(i + 1, count)
    return {k: np.stack([o[k] for o in outs]) for k in outs[0]} if outs else {}
