"""Training and ONNX export for the PyTorch examples `digits_cnn`, `mnist_mlp` and `mnist_cnn`:
each script says what model, what data and how many epochs; this module holds how they train
and export, which is the same for all of them.

Same machine, same bytes: the initialisation and the batches are seeded, torch runs
deterministic algorithms on one thread, and the exported model carries neither torch's name
nor its version. Needs numpy, onnx and PyTorch (pip install 'nnfpga[torch]'); torch is
imported only by `import_torch`, so a script without it can say so.
"""
from __future__ import annotations

import inspect
import io
import sys
import warnings

import numpy as np
import onnx


def import_torch():
    """torch, set to run deterministic algorithms on one thread; exit with a hint without it."""
    try:
        import torch
    except ImportError:
        print("this example needs PyTorch: pip install 'nnfpga[torch]'", file=sys.stderr)
        raise SystemExit(1) from None
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # reductions then run in the same order on any core count
    return torch


def train(torch, make_net, x_train: np.ndarray, y_train: np.ndarray, *, seed: int, epochs: int,
          batch: int, learning_rate: float, weight_decay: float):
    """`make_net(torch)` trained with Adam, a cosine learning rate and cross entropy over
    shuffled batches; returned in eval mode."""
    torch.manual_seed(seed)  # before make_net: the initialisation is seeded too
    net = make_net(torch)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    order = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=order).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
        sched.step()
    return net.eval()


def accuracy(torch, net, x: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of `x` whose largest logit is at its label."""
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == labels).mean())


def to_onnx(torch, net, input_shape: tuple[int, ...], graph_name: str) -> onnx.ModelProto:
    """`net` as ONNX, input `input` of `input_shape` (batch included), output `logits`."""
    # The classic (TorchScript) exporter at opset 13, as nnfpga.frontend.from_torch uses it:
    # torch >= 2.9 defaults to the torch.export-based one, which writes opset >= 18.
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice of the classic exporter
        torch.onnx.export(net, (torch.zeros(*input_shape),), buf, opset_version=13,
                          input_names=["input"], output_names=["logits"], **options)
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = 8  # onnx writes a newer IR version than onnxruntime reads
    # Not torch's name and version, so the bytes do not change with the torch release.
    model.producer_name, model.producer_version = "nnfpga-examples", ""
    model.graph.name = graph_name
    onnx.checker.check_model(model, full_check=True)
    return model
