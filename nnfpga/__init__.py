"""nnfpga: compile ONNX neural networks to bit-exact FPGA hardware.

    import nnfpga
    build = nnfpga.compile("model.onnx", "build/", calib="calib.npz")
    result = nnfpga.verify("build/", inputs="test.npz")   # result["bit_exact"]
    y = build.predict(x)        # host prefix (TVM) -> RTL (Verilator) -> host suffix (TVM)
"""
from __future__ import annotations

from nnfpga.errors import NnfpgaError

from nnfpga.version import __version__


def compile(model, out_dir=None, *, pipeline=None, calib=None, force=False, input_shapes=None, seed=0,
            host_ops=None, host_target="llvm", target=None, target_fps=None, freq_mhz=100.0):
    """Compile an ONNX model to a build directory; returns a BuildResult (graph, manifest) whose
    `.predict(x)` runs the build end to end.

    `model` is a path or an onnx.ModelProto; `calib` a path to an .npz, an array (a
    single-input model) or a dict of arrays; without `out_dir` the build goes to a new
    temporary directory. `host_ops` and `host_target` are the CLI's --host-ops (a list or a
    comma-separated string) and --host-target; `target`, `target_fps` and `freq_mhz` the
    CLI's --target, --target-fps and --freq."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnx

    # This file runs first in every process that imports any nnfpga module, the simulator's
    # testbench (hw_tests/axis_tb.py) included: the compiler loads on first use, not then.
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.devices import DEFAULT_DEVICE
    from nnfpga.passes import DEFAULT_PIPELINE

    scratch = None
    if isinstance(model, onnx.ModelProto) or out_dir is None or (calib is not None and not isinstance(calib, (str, Path))):
        scratch = Path(tempfile.mkdtemp(prefix="nnfpga-"))
    if isinstance(model, onnx.ModelProto):
        path = scratch / "model.onnx"
        onnx.save(model, str(path))
        model = path
    if calib is not None and not isinstance(calib, (str, Path)):
        arrays = calib if isinstance(calib, dict) else {"input": np.asarray(calib)}
        np.savez(scratch / "calib.npz", **arrays)
        calib = scratch / "calib.npz"
    if out_dir is None:
        out_dir = scratch / "build"
    if not isinstance(host_ops, (str, type(None))):
        host_ops = ",".join(host_ops)
    options = CompileOptions(pipeline=pipeline or DEFAULT_PIPELINE, calib_path=calib, force=force,
                             input_shapes=input_shapes, seed=seed, target=target or DEFAULT_DEVICE,
                             host_ops=host_ops, host_target=host_target, target_fps=target_fps, freq_mhz=freq_mhz)
    return compile_model(model, out_dir, options)


def verify(build_dir, *, samples=None, inputs=None, seed=0):
    """Simulate a build's RTL against onnxruntime; returns the dict `nnfpga verify --json` prints."""
    from nnfpga.verify import verify_build  # on first use: see compile

    return verify_build(build_dir, samples=samples, inputs_path=inputs, seed=seed)


__all__ = ["compile", "verify", "NnfpgaError", "__version__"]
