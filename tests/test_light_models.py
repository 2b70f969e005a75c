"""The onnx package's light/ graphs SqueezeNet and AlexNet compile to RTL with their host
ops partitioned off: Softmax (and AlexNet's LRN) on the host, compiled by TVM, the
convolutions around them on the accelerator. No simulation at this size."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from nnfpga.build import CompileOptions, Hooks, compile_model
from nnfpga.frontend import load_onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tvm") is None,
                                reason="Apache TVM is not installed: pip install -e '.[host]'")


@pytest.mark.parametrize("name, host_ops", [
    ("light_squeezenet", {"suffix": {"Softmax"}}),
    ("light_bvlc_alexnet", {"prefix": {"conv", "relu", "LRN", "maxpool"}, "suffix": {"Softmax"}}),
])
def test_light_graph_partitions_and_compiles(tmp_path, name, host_ops):
    model = LIGHT / f"{name}.onnx"
    x = load_onnx(model).inputs[0]
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{x.name: np.random.default_rng(0).standard_normal((2,) + x.type.shape[1:]).astype(np.float32)})
    warnings = []
    options = CompileOptions(calib_path=calib, pipeline="canonicalize,quantize,channels_last,fold{pe=2,simd=4}")
    build = compile_model(model, tmp_path / "build", options, Hooks(warn=warnings.append))
    parts = {p["name"]: {op.split(" ")[0] for op in p["ops"]} for p in build.manifest["host"]["parts"]}
    assert {k: v & {"conv", "relu", "LRN", "maxpool", "Softmax"} for k, v in parts.items()} == host_ops
    for part in parts:
        assert (build.out_dir / "host" / f"{part}.so").is_file()
    final = (build.out_dir / "ir" / "final.ir").read_text()
    assert 'op_type = "Softmax"' in final and "qconv" in final
    design = json.loads((build.out_dir / "rtl" / "design.json").read_text())
    modules = {i["module"] for i in design["instances"]}
    assert {"nnfpga_window", "nnfpga_dense", "nnfpga_pool"} <= modules
    if name == "light_squeezenet":  # fire modules: 1×1 and 3×3 expands joined by concat
        assert {"nnfpga_fork", "nnfpga_concat"} <= modules
    else:
        assert any("run on the host in float" in w for w in warnings)
