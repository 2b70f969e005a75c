"""nnfpga: compile ONNX neural networks to bit-exact FPGA hardware.

    import nnfpga
    build = nnfpga.compile("model.onnx", "build/", calib="calib.npz")
    result = nnfpga.verify("build/", inputs="test.npz")   # result["bit_exact"]
"""
from __future__ import annotations

from nnfpga.errors import NnfpgaError

__version__ = "0.1.0"


def compile(model, out_dir, *, pipeline=None, calib=None, force=False, input_shapes=None, seed=0):
    """Compile an ONNX file to a build directory; returns a BuildResult (graph, manifest)."""
    from nnfpga.build import compile_model
    from nnfpga.passes import DEFAULT_PIPELINE

    return compile_model(model, out_dir, pipeline=pipeline or DEFAULT_PIPELINE, calib_path=calib,
                         force=force, input_shapes=input_shapes, seed=seed)


def verify(build_dir, *, samples=None, inputs=None, seed=0):
    """Simulate a build's RTL against onnxruntime; returns the dict `nnfpga verify --json` prints."""
    from nnfpga.verify import verify_build

    return verify_build(build_dir, samples=samples, inputs_path=inputs, seed=seed)


__all__ = ["compile", "verify", "NnfpgaError", "__version__"]
