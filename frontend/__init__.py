"""ONNX (and PyTorch, through torch.onnx.export) -> float IR."""
from nnfpga.frontend.onnx_import import HOST_FALLBACK_NOTE, HOST_OPS, SUPPORTED_OPS, load_onnx, load_onnx_quantized
from nnfpga.frontend.torch_import import from_torch

__all__ = ["HOST_FALLBACK_NOTE", "HOST_OPS", "SUPPORTED_OPS", "load_onnx", "load_onnx_quantized", "from_torch"]
