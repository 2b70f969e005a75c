"""Fine-tune a factored (lowrank) model with PyTorch and write it as a float ONNX model.

    finetune_lowrank(model.onnx, out.onnx, train.npz, pipeline="canonicalize,lowrank{macs=0.5}")

The model is imported, its pipeline run up to and including `lowrank`, and the factored IR
turned into a torch module op by op (dense -> x @ W + b, conv -> conv2d, ...), its weights
the SVD factors. Built straight from the IR rather than through onnx2torch: the factored
graph exists only as IR, the IR has a dozen float ops with exact semantics, and the module
then exports back to the ONNX ops the frontend reads (MatMul + Add, Conv, Relu, MaxPool,
Reshape). The original model, canonicalized the same way, is the teacher: the loss is
alpha·T²·KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha)·cross entropy on the
labels. Seeded, CPU. The result is an ordinary float ONNX model for `nnfpga compile`.

Torch is imported here only; without it the error says how to install it.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np

from nnfpga.builddir import check_sample_shapes, load_npz, match_inputs, write_atomically
from nnfpga.errors import BuildError, CalibrationError, ModelError, NnfpgaError, PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.ir import Graph
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline
from nnfpga.torch_graph import torch_module

INSTALL_TORCH = "pip install 'nnfpga[torch]' (or: pip install torch==2.13.0)"
ONNX_IR_VERSION = 8
"""onnx writes a newer IR version than onnxruntime 1.32 reads; 8 is what the examples write."""


def _import_torch():
    try:
        import torch
    except ImportError:
        raise NnfpgaError(f"fine-tuning needs PyTorch, which is not installed: {INSTALL_TORCH}") from None
    return torch


def _training_data(g: Graph, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [N, *model input shape], labels [N]) from an npz with one input array and `label`."""
    arrays = load_npz(path, "training data")
    if "label" not in arrays:
        raise CalibrationError(f"training data {path} has no 'label' array (arrays: {', '.join(sorted(arrays))}); "
                               "it needs the input array and integer class labels named 'label'")
    feeds = match_inputs(g, arrays, "training data")
    check_sample_shapes(g, feeds, "training data")
    x = next(iter(feeds.values()))
    labels, classes = arrays["label"], g.outputs[0].type.shape[-1]
    if labels.ndim != 1 or len(labels) != len(x):
        raise CalibrationError(f"training data: 'label' has shape {list(labels.shape)}, expected [{len(x)}] "
                               "(one class index per input sample)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= classes:
        raise CalibrationError(f"training data: labels must be integers in 0..{classes - 1} (the model has "
                               f"{classes} outputs), got {labels.dtype} in [{labels.min()}, {labels.max()}]")
    return x.astype(np.float32).reshape((len(x),) + g.inputs[0].type.shape[1:]), labels.astype(np.int64)


def _lowrank_steps(pipeline: str):
    steps = parse_pipeline(pipeline)
    names = [s.name for s in steps]
    if "lowrank" not in names:
        raise PipelineError(f"finetune: the pipeline '{pipeline}' has no lowrank pass "
                            "(e.g. canonicalize,lowrank{macs=0.5})")
    return steps[:names.index("lowrank") + 1]


def finetune_lowrank(model_path: Path, out_path: Path, train_npz: Path, *,
                     pipeline: str | None = None, ranks: str | None = None, epochs: int = 3, seed: int = 0,
                     batch_size: int = 128, learning_rate: float = 1e-3, temperature: float = 4.0,
                     alpha: float = 0.5, force: bool = False,
                     progress: Callable[[str, int, int], None] = lambda stage, done, total: None) -> dict:
    """Factor the model (`pipeline` up to its lowrank pass, or `ranks` as lowrank's rank option),
    fine-tune the factors by distillation from the original and write a float ONNX model.
    Returns the accuracies on the training data (teacher, factored before and after) and the
    per-layer lowrank report."""
    model_path, out_path, train_npz = Path(model_path), Path(out_path), Path(train_npz)
    if pipeline is not None and ranks is not None:
        raise PipelineError("finetune: give a pipeline or ranks, not both")
    if ranks is not None:
        pipeline = f"canonicalize,lowrank{{rank={ranks}}}"
    steps = _lowrank_steps(pipeline or "canonicalize,lowrank")
    if epochs < 0 or batch_size < 1:
        raise NnfpgaError(f"finetune: epochs ({epochs}) must be at least 0 and batch size ({batch_size}) at least 1")
    if out_path.exists() and not force:
        raise BuildError(f"{out_path} already exists; pass --force to replace it")
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} does not exist")
    torch = _import_torch()
    g = load_onnx(model_path)
    if len(g.inputs) != 1 or len(g.outputs) != 1 or len(g.outputs[0].type.shape) != 2:
        raise ModelError("finetune takes a classifier: one input and one output of logits [1, classes]")
    x, labels = _training_data(g, train_npz)

    teacher_ir = run_pipeline(g, steps[:[s.name for s in steps].index("lowrank")], PassContext(seed=seed))
    ctx = PassContext(seed=seed)
    student_ir = run_pipeline(g, steps, ctx)
    torch.manual_seed(seed)
    teacher, student = torch_module(torch, teacher_ir), torch_module(torch, student_ir)
    xs, ys = torch.from_numpy(x), torch.from_numpy(labels)
    soft = _outputs(torch, teacher, xs, batch_size)
    result = {"samples": len(x), "epochs": epochs, "pipeline": pipeline or "canonicalize,lowrank",
              "teacher_accuracy": _accuracy(soft, ys), "factored_accuracy": _accuracy(_outputs(torch, student, xs, batch_size), ys),
              "losses": [], "lowrank": ctx.report}

    opt = torch.optim.Adam(student.parameters(), lr=learning_rate)
    order = torch.Generator().manual_seed(seed)
    batches = (len(x) + batch_size - 1) // batch_size
    for epoch in range(epochs):
        student.train()
        total = 0.0
        for step, idx in enumerate(torch.randperm(len(x), generator=order).split(batch_size)):
            opt.zero_grad()
            logits = student(xs[idx])
            loss = distillation_loss(torch, logits, soft[idx], ys[idx], temperature, alpha)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            progress(f"fine-tuning epoch {epoch + 1}/{epochs}", step + 1, batches)
        result["losses"].append(total / len(x))
    student.eval()
    result["finetuned_accuracy"] = _accuracy(_outputs(torch, student, xs, batch_size), ys)
    write_atomically(out_path, _to_onnx(torch, student, student_ir, model_path.stem))
    return result


def distillation_loss(torch, logits, teacher_logits, labels, temperature: float, alpha: float):
    """Hinton's distillation: alpha·T²·KL(teacher ‖ student) at temperature T, plus (1 − alpha)
    of the cross entropy with the labels."""
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits / temperature, dim=1),
                                    torch.log_softmax(teacher_logits / temperature, dim=1),
                                    reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * kl + (1 - alpha) * torch.nn.functional.cross_entropy(logits, labels)


def _outputs(torch, module, xs, batch_size: int):
    module.eval()
    with torch.no_grad():
        return torch.cat([module(xs[i:i + batch_size]) for i in range(0, len(xs), batch_size)])


def _accuracy(logits, labels) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def _to_onnx(torch, module, g: Graph, name: str) -> bytes:
    import inspect
    import warnings

    import onnx

    # The classic (TorchScript) exporter at opset 13, as the examples' train.py use it.
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(g.inputs[0].type.shape),), buf, opset_version=13,
                          input_names=[g.inputs[0].name], output_names=[g.outputs[0].name], **options)
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = ONNX_IR_VERSION
    model.producer_name, model.producer_version = "nnfpga-finetune", ""
    model.graph.name = name
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
