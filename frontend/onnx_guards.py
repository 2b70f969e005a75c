"""Checks on a model's data and sizes, made before anything large is allocated.

    declared sizes   every tensor whose static shape shape inference gives (inputs, results,
                     initializers) must fit nnfpga.limits' per-tensor budget: a 200-byte model
                     can declare a 6 GiB input or ConstantOfShape result
    finite data      float constants the model computes with (weights and biases: initializers,
                     Constant nodes, constants folded from them) hold no NaN or ±Inf, and float
                     attributes (Gemm's alpha, an epsilon) none either: quantization would turn
                     them into garbage integers. Clip's bounds may be infinite (no bound).

Each error names the tensor.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from nnfpga.errors import ModelError
from nnfpga.limits import check_tensor_size


def _itemsize(elem_type: int) -> int:
    try:
        return max(1, np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4  # types numpy has no name for (bfloat16, float8, string): count 4 bytes


def _static_elements(dims) -> int | None:
    count = 1
    for d in dims:
        if d < 0:
            return None
        count *= int(d)
    return count


def check_declared_sizes(model: onnx.ModelProto, where: str) -> None:
    """Refuse a tensor whose declared (or inferred) shape would not fit in memory."""
    graph = model.graph
    for init in graph.initializer:
        elements = _static_elements(init.dims)
        if elements is not None:
            check_tensor_size(elements, _itemsize(init.data_type), f"initializer '{init.name}' of {where}", ModelError)
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]
        elements = _static_elements(dims)
        if elements is not None:
            shape = "x".join(map(str, dims)) or "scalar"
            check_tensor_size(elements, _itemsize(info.type.tensor_type.elem_type),
                              f"tensor '{info.name}' ({shape}) of {where}", ModelError)


def check_shape_fits(shape: list[int], dtype, name: str, where: str) -> None:
    """Refuse a constant of `shape` about to be made (ConstantOfShape) that would not fit."""
    if any(d < 0 for d in shape):
        raise ModelError(f"{where}: tensor '{name}' would have a negative dimension {list(shape)}")
    check_tensor_size(_static_elements(shape), np.dtype(dtype).itemsize,
                      f"tensor '{name}' ({'x'.join(map(str, shape)) or 'scalar'}) of {where}", ModelError)


def check_finite(name: str, data: np.ndarray, where: str, what: str = "constant") -> None:
    """Refuse a float constant holding NaN or ±Inf, naming it."""
    if not np.issubdtype(data.dtype, np.floating) or data.size == 0:
        return
    bad = ~np.isfinite(data)
    if bad.any():
        first = [int(i) for i in np.argwhere(bad)[0]]
        raise ModelError(f"{where}: {what} '{name}' holds {int(bad.sum())} NaN or infinite value(s) "
                         f"(the first at index {first}); nnfpga cannot quantize such a model — fix or "
                         "retrain it")


INFINITE_ALLOWED = {("Clip", "min"), ("Clip", "max")}
"""Float attributes that may be ±Inf (old opsets' Clip: an infinite bound is no bound)."""


def check_float_attributes(model: onnx.ModelProto, where: str) -> None:
    """Refuse NaN in any float attribute and ±Inf outside INFINITE_ALLOWED, naming the node."""
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.FLOAT:
                values = [attr.f]
            elif attr.type == onnx.AttributeProto.FLOATS:
                values = list(attr.floats)
            else:
                continue
            bad = [v for v in values if np.isnan(v) or (np.isinf(v) and (node.op_type, attr.name) not in INFINITE_ALLOWED)]
            if bad:
                who = f"node '{node.name}'" if node.name else f"the node producing '{node.output[0] if node.output else '?'}'"
                raise ModelError(f"{where}: attribute '{attr.name}' of {node.op_type} ({who}) is {bad[0]}; "
                                 "nnfpga needs finite numbers")
