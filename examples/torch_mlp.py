"""Compile a PyTorch module: export it to ONNX through nnfpga's frontend, then build it.

    python examples/torch_mlp.py BUILD_DIR

Writes BUILD_DIR.onnx next to the build directory and the build itself (RTL, reference
ONNX, IR dumps, manifest) into BUILD_DIR, replacing an existing build. Then check it with
`nnfpga verify BUILD_DIR`. Needs PyTorch: pip install 'nnfpga[torch]'.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nnfpga
from nnfpga.frontend import from_torch


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/torch_mlp.py BUILD_DIR", file=sys.stderr)
        return 2
    try:
        import torch
        from torch import nn
    except ImportError:
        print("this example needs PyTorch: pip install 'nnfpga[torch]'", file=sys.stderr)
        return 1

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    example = torch.zeros(1, 16)

    build_dir = Path(argv[0])
    onnx_path = build_dir.with_name(build_dir.name + ".onnx")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    graph = from_torch(model, example, path=onnx_path)
    print(f"exported {onnx_path}: inputs {[v.name for v in graph.inputs]}, "
          f"{len(graph.nodes)} ops ({', '.join(sorted({n.op for n in graph.nodes}))})")

    # Calibrate on data shaped like what the deployed model will see (here: standard normal).
    calib_path = build_dir.with_name(build_dir.name + ".calib.npz")
    np.savez(calib_path, input=np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32))
    try:
        build = nnfpga.compile(onnx_path, build_dir, calib=calib_path, force=True)
    except nnfpga.NnfpgaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    layers = ", ".join(f"{l['k']}x{l['n']}" for l in build.manifest["layers"])
    print(f"built {build.out_dir}: layers {layers}, "
          f"~{build.manifest['predicted_cycles_per_inference']} cycles per inference")
    print(f"next: nnfpga verify {build.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
