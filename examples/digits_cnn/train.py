"""Train a small CNN on scikit-learn's 8x8 digits and export it as ONNX, with calibration
and test data for nnfpga.

    python examples/digits_cnn/train.py [OUT_DIR]      # default: this script's folder

Writes model.onnx (input `input` [1,1,8,8] -> Conv 3x3 1->8 pad 1 -> Relu -> MaxPool 2x2
-> Conv 3x3 8->16 pad 1 -> Relu -> MaxPool 2x2 -> Flatten -> Gemm 64->10 `logits` [1,10]),
calib.npz (`input`: 200 training images [200,1,8,8]) and test.npz (`input`, `label`: every
test image). Pixels are scaled to [0, 1]; the split is the digits MLP's. Same machine, same
bytes: the split, the initialisation and the training are seeded, torch runs deterministic
algorithms on one thread.
Needs numpy, onnx, scikit-learn and PyTorch (pip install 'nnfpga[torch]').
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from torch_training import accuracy, import_torch, to_onnx, train  # noqa: E402

SEED = 0
CALIB_SAMPLES = 200
EPOCHS = 60
BATCH = 32
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4


def make_net(torch):
    nn = torch.nn

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 2 * 2, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    return DigitsCNN()


def main(out_dir: Path) -> float:
    torch = import_torch()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=SEED)

    net = train(torch, make_net, x_train, y_train, seed=SEED, epochs=EPOCHS, batch=BATCH,
                learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    test_accuracy = accuracy(torch, net, x_test, y_test)

    out_dir.mkdir(parents=True, exist_ok=True)
    model = to_onnx(torch, net, (1, 1, 8, 8), "digits_cnn")
    (out_dir / "model.onnx").write_bytes(model.SerializeToString())
    calib = np.random.default_rng(SEED).choice(len(x_train), CALIB_SAMPLES, replace=False)
    np.savez(out_dir / "calib.npz", input=x_train[np.sort(calib)])
    np.savez(out_dir / "test.npz", input=x_test, label=y_test)
    print(f"float test accuracy: {test_accuracy:.4f} ({len(y_test)} test images); wrote {out_dir}")
    return test_accuracy


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
