"""PyTorch -> IR through the classic (TorchScript) ONNX exporter and `load_onnx`."""
from __future__ import annotations

import inspect
import tempfile
import warnings
from pathlib import Path

import onnx

from nnfpga.errors import ModelError, NnfpgaError
from nnfpga.frontend.onnx_import import load_onnx
from nnfpga.ir import Graph

MAX_IR_VERSION = 10
"""Saved models get at most this ONNX IR version so the installed onnxruntime can read them."""


def from_torch(module, example_input, path=None, opset: int = 13) -> Graph:
    """Export `module` (put in eval mode) with `example_input` (a tensor or a tuple of tensors)
    and import it. With `path`, the exported ONNX model is also saved there."""
    try:
        import torch
    except ImportError:
        raise NnfpgaError("from_torch needs PyTorch: pip install 'nnfpga[torch]'") from None
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    names = ["input"] if len(args) == 1 else [f"input_{k}" for k in range(len(args))]
    options = {}
    # torch >= 2.9 defaults to the torch.export-based exporter, which writes opset >= 18,
    # external data files and optimised graphs; the classic exporter gives plain Gemm/Relu.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the deprecation notice of the classic exporter
                torch.onnx.export(module, args, str(exported), opset_version=opset,
                                  input_names=names, output_names=["output"], **options)
        except Exception as e:
            raise ModelError(f"torch.onnx.export could not export {type(module).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        model = onnx.load(str(exported))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    if path is not None:
        onnx.save(model, str(path))
    return load_onnx(model)
