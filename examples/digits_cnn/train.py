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

import inspect
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
CALIB_SAMPLES = 200
EPOCHS = 60
BATCH = 32
LEARNING_RATE = 3e-3


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


def train(torch, x_train: np.ndarray, y_train: np.ndarray):
    torch.manual_seed(SEED)
    net = make_net(torch)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    order = torch.Generator().manual_seed(SEED)
    net.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(xs), generator=order).split(BATCH):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
        sched.step()
    return net.eval()


def to_onnx(torch, net) -> onnx.ModelProto:
    # The classic (TorchScript) exporter at opset 13, as nnfpga.frontend.from_torch uses it:
    # torch >= 2.9 defaults to the torch.export-based one, which writes opset >= 18.
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice of the classic exporter
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), buf, opset_version=13,
                          input_names=["input"], output_names=["logits"], **options)
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = 8  # onnx writes a newer IR version than onnxruntime reads
    # Not torch's name and version, so the bytes do not change with the torch release.
    model.producer_name, model.producer_version = "nnfpga-examples", ""
    model.graph.name = "digits_cnn"
    onnx.checker.check_model(model, full_check=True)
    return model


def main(out_dir: Path) -> float:
    try:
        import torch
    except ImportError:
        print("this example needs PyTorch: pip install 'nnfpga[torch]'", file=sys.stderr)
        raise SystemExit(1) from None
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # reductions then run in the same order on any core count

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=SEED)

    net = train(torch, x_train, y_train)
    with torch.no_grad():
        accuracy = float((net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(to_onnx(torch, net).SerializeToString())
    calib = np.random.default_rng(SEED).choice(len(x_train), CALIB_SAMPLES, replace=False)
    np.savez(out_dir / "calib.npz", input=x_train[np.sort(calib)])
    np.savez(out_dir / "test.npz", input=x_test, label=y_test)
    print(f"float test accuracy: {accuracy:.4f} ({len(y_test)} test images); wrote {out_dir}")
    return accuracy


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
