"""A jet-tagging-shaped MLP (16 -> 64 -> 32 -> 32 -> 5, the hls4ml benchmark's shape) with
seeded random weights, as ONNX MatMul + Add (+ Relu) nodes, plus calibration data.

    python examples/jet_mlp/make_model.py [OUT_DIR]      # default: this script's folder

Writes model.onnx (input `x` [1,16], output `y` [1,5]) and calib.npz (`x`: 256 seeded
standard-normal samples). The weights are untrained: the model is for compiling and for
bit-exact checks, not for accuracy. Same machine, same bytes. Needs numpy and onnx.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 0
SIZES = (16, 64, 32, 32, 5)
CALIB_SAMPLES = 256


def make_model(rng: np.random.Generator) -> onnx.ModelProto:
    nodes, inits, cur = [], [], "x"
    layers = list(zip(SIZES, SIZES[1:]))
    for i, (k, n) in enumerate(layers):
        last = i == len(layers) - 1
        # He scaling (std sqrt(2/k)) keeps ReLU activations at about unit size layer after layer.
        w = (rng.standard_normal((k, n)) * np.sqrt(2.0 / k)).astype(np.float32)
        b = (0.1 * rng.standard_normal(n)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"dense{i}.weight"), numpy_helper.from_array(b, f"dense{i}.bias")]
        nodes.append(helper.make_node("MatMul", [cur, f"dense{i}.weight"], [f"matmul{i}"], name=f"matmul{i}"))
        out = "y" if last else f"add{i}"
        nodes.append(helper.make_node("Add", [f"matmul{i}", f"dense{i}.bias"], [out], name=f"add{i}"))
        cur = out
        if not last:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}"], name=f"relu{i}"))
            cur = f"relu{i}"
    graph = helper.make_graph(
        nodes, "jet_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZES[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SIZES[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="nnfpga-examples")
    model.ir_version = 8  # onnx writes a newer IR version than onnxruntime reads
    onnx.checker.check_model(model)
    return model


def main(out_dir: Path) -> None:
    rng = np.random.default_rng(SEED)
    model = make_model(rng)
    calib = rng.standard_normal((CALIB_SAMPLES, SIZES[0])).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(model.SerializeToString())
    np.savez(out_dir / "calib.npz", x=calib)
    print(f"wrote {out_dir / 'model.onnx'} and {out_dir / 'calib.npz'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
