"""Train a small MLP on scikit-learn's 8x8 digits and export it as ONNX, with calibration
and test data for nnfpga.

    python examples/digits_mlp/train.py [OUT_DIR]      # default: this script's folder

Writes model.onnx (input `input` [1,64] -> Gemm/Relu 64 -> Gemm/Relu 32 -> Gemm `logits`
[1,10]), calib.npz (`input`: 200 training images) and test.npz (`input`, `label`: every
test image). Pixels are scaled to [0, 1]. Same machine, same bytes: the split, the
initialisation and the training are seeded.
Needs numpy, onnx and scikit-learn (no torch).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
HIDDEN = (64, 32)
CALIB_SAMPLES = 200


def to_onnx(clf: MLPClassifier) -> onnx.ModelProto:
    nodes, inits, cur = [], [], "input"
    layers = list(zip(clf.coefs_, clf.intercepts_))
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        # sklearn stores W as [in, out]; Gemm with transB=1 takes [out, in].
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.T, np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(b.astype(np.float32), f"fc{i}.bias")]
        out = "logits" if last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight", f"fc{i}.bias"], [out],
                                      transB=1, name=f"fc{i}"))
        cur = out
        if not last:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}"], name=f"relu{i}"))
            cur = f"relu{i}"
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="nnfpga-examples")
    model.ir_version = 8  # onnx writes a newer IR version than onnxruntime reads
    onnx.checker.check_model(model)
    return model


def main(out_dir: Path) -> float:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=SEED)

    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", solver="adam", alpha=1e-3,
                        batch_size=64, learning_rate_init=1e-3, max_iter=300, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    accuracy = float(np.mean(clf.predict(x_test) == y_test))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(to_onnx(clf).SerializeToString())
    calib = np.random.default_rng(SEED).choice(len(x_train), CALIB_SAMPLES, replace=False)
    np.savez(out_dir / "calib.npz", input=x_train[np.sort(calib)])
    np.savez(out_dir / "test.npz", input=x_test, label=y_test)
    print(f"float test accuracy: {accuracy:.4f} ({len(y_test)} test images); wrote {out_dir}")
    return accuracy


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
