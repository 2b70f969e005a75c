"""The digits MLP with a Softmax on its logits: a model whose last op runs on the host CPU.

    python examples/digits_softmax/make_model.py [OUT_DIR]   # default: this script's folder

Reads ../digits_mlp/model.onnx and writes model.onnx (input `input` [1,64], output `probs`
[1,10] = Softmax(logits)). The three layers become the accelerator; `partition` places the
Softmax on the host, where TVM compiles it. Calibration and test data are the digits
example's (../digits_mlp/calib.npz, test.npz). Same input, same bytes. Needs onnx.
"""
from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

DIGITS = Path(__file__).resolve().parent.parent / "digits_mlp" / "model.onnx"


def make_model(digits: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(digits)
    graph = model.graph
    (logits,) = graph.output
    graph.node.append(helper.make_node("Softmax", [logits.name], ["probs"], name="softmax", axis=-1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10]))
    graph.name = "digits_softmax"
    onnx.checker.check_model(model)
    return model


def main(out_dir: Path) -> None:
    model = make_model(onnx.load(str(DIGITS)))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(model.SerializeToString())
    print(f"wrote {out_dir / 'model.onnx'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
