"""Fine-tune an MLP's weight bits with a BSQ-style bit-level group-Lasso penalty (PyTorch).

    finetune_bitslices(model.onnx, out.onnx, x, labels, wbits=8, s=2, strength=..)

Each dense layer's weights are held as their integer grid, the one `quantize` (minmax) gives:
    W[k,n] = s_w[n] · sign[k,n] · Σ_b 2^b · bit_b[k,n],   s_w[n] = max_k |W[k,n]| / (2^(wbits-1) - 1)
with every magnitude bit a trainable variable β_b in [0, 1] (BSQ, Yang et al. 2021): the
forward pass takes bit_b = [β_b >= 0.5], the backward pass the straight-through gradient.
The penalty is a group Lasso over the (nf, sf, slice) tiles the bit-serial core skips
(nnfpga.bitslices; tiles of pe x simd weights as fold{pe=..,simd=..} makes them, slices of s bits):
    strength · Σ_layers mean_tiles sqrt(Σ_{w in tile, b in slice} β_b²)
so whole tiles' slices go to zero. The loss adds it to the distillation loss nnfpga.finetune
uses (α·T²·KL to the original model + (1 - α)·cross entropy).

The signs come from the float weights and stay; each channel's largest weight keeps all its
bits, so `quantize` finds the same s_w and the written model's weights quantize to exactly the
trained integers (a channel whose scale quantize floors keeps its weights free). The result is
an ordinary float ONNX model: `quantize{wbits=..}` then `bitplane` reports its zero slices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from nnfpga.errors import BuildError, ModelError, NnfpgaError
from nnfpga.bitslices import check_slice_width, magnitude_bits
from nnfpga.builddir import write_atomically
from nnfpga.finetune import _accuracy, _import_torch, _outputs, _to_onnx, distillation_loss
from nnfpga.frontend import load_onnx
from nnfpga.hardware import largest_divisor_at_most
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.quantize_weights import SCALE_FLOOR_BITS
from nnfpga.torch_graph import torch_module


def integer_grid(w: np.ndarray, wbits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s_w [N], integer magnitudes [K, N], floored [N]) of a float [K, N] matrix, as quantize
    (minmax, with its scale floor) would quantize it."""
    wmax = (1 << (wbits - 1)) - 1
    peak = np.abs(w).max(axis=0).astype(np.float64)
    scale = peak / wmax
    floor = scale.max() / 2**SCALE_FLOOR_BITS
    floored = scale < floor
    scale = np.maximum(scale, floor)
    return scale, np.clip(np.rint(np.abs(w) / scale), 0, wmax).astype(np.int64), floored


def _tile_groups(torch, beta, s: int, pe: int, simd: int):
    """Σ over (nf, sf, slice) groups of the L2 norm of their β, averaged over the groups."""
    k, n, bits = beta.shape
    slices = -(-bits // s)
    padded = torch.nn.functional.pad(beta, (0, slices * s - bits))
    tiles = padded.reshape(k // simd, simd, n // pe, pe, slices, s)
    norms = torch.sqrt((tiles ** 2).sum(dim=(1, 3, 5)) + 1e-12)
    return norms.mean()


def finetune_bitslices(model_path: Path, out_path: Path, x: np.ndarray, labels: np.ndarray, *, wbits: int = 8,
                       s: int = 2, pe: int = 4, simd: int = 8, strength: float = 0.2, epochs: int = 1,
                       seed: int = 0, batch_size: int = 128, learning_rate: float = 0.02,
                       temperature: float = 4.0, alpha: float = 0.5, force: bool = False,
                       progress: Callable[[str, int, int], None] = lambda stage, done, total: None) -> dict:
    """Train the bits of every dense layer of a classifier MLP (`x` [N, *input], integer
    `labels` [N]) under the tile group Lasso and write a float ONNX model. Returns the
    training-data accuracies (original, on the integer grid before and after) and losses."""
    model_path, out_path = Path(model_path), Path(out_path)
    check_slice_width(s)
    if not 2 <= wbits <= 8 or epochs < 0 or batch_size < 1 or strength < 0:
        raise NnfpgaError(f"finetune_bitslices: wbits {wbits} must be in 2..8, epochs ({epochs}) and strength "
                          f"({strength}) at least 0, batch size ({batch_size}) at least 1")
    if out_path.exists() and not force:
        raise BuildError(f"{out_path} already exists; pass force=True to replace it")
    torch = _import_torch()
    g = run_pipeline(load_onnx(model_path), "canonicalize", PassContext(seed=seed))
    layers = [n for n in g.nodes if n.op == "dense"]
    if not layers or any(n.op == "conv" for n in g.nodes):
        raise ModelError("finetune_bitslices takes an MLP: dense layers (and relu, reshape), no convolutions")

    torch.manual_seed(seed)
    teacher, student = torch_module(torch, g), torch_module(torch, g)
    bits = magnitude_bits(wbits)
    powers = torch.tensor([float(1 << b) for b in range(bits)])
    trained = []  # (slot, scale, sign, beta, frozen, (pe, simd))
    for node in layers:
        k, n = node.inputs[1].type.shape
        fold = (largest_divisor_at_most(n, pe), largest_divisor_at_most(k, simd))  # as fold{pe=..,simd=..}
        w = g.const_data(node.inputs[1]).astype(np.float64)
        scale, mag, floored = integer_grid(w, wbits)
        beta = torch.tensor(((mag[..., None] >> np.arange(bits)) & 1).astype(np.float32), requires_grad=True)
        frozen = np.zeros(w.shape, bool)
        columns = np.flatnonzero(~floored)
        frozen[np.abs(w)[:, columns].argmax(axis=0), columns] = True  # the channel's largest weight
        sign = torch.from_numpy(np.where(w < 0, -1.0, 1.0).astype(np.float32))
        trained.append((student.slots[node.inputs[1].name], torch.from_numpy(scale.astype(np.float32)), sign,
                        beta, torch.from_numpy(frozen), fold))
        getattr(student, trained[-1][0]).requires_grad_(False)

    def weights(hard_only: bool = False):
        out = {}
        for slot, scale, sign, beta, *_ in trained:
            hard = (beta >= 0.5).float()
            bit = hard if hard_only else hard + beta - beta.detach()  # straight-through
            out[slot] = scale * sign * (bit * powers).sum(dim=-1)
        return out

    def run(xs):
        return torch.func.functional_call(student, weights(), (xs,))

    xs, ys = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))
    soft = _outputs(torch, teacher, xs, batch_size)
    with torch.no_grad():
        before = _accuracy(torch.cat([run(xs[i:i + batch_size]) for i in range(0, len(xs), batch_size)]), ys)
    result = {"samples": len(x), "epochs": epochs, "wbits": wbits, "s": s, "pe": pe, "simd": simd,
              "strength": strength, "teacher_accuracy": _accuracy(soft, ys), "grid_accuracy": before,
              "losses": [], "penalties": []}
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": [t[3] for t in trained], "lr": learning_rate},
                            {"params": params, "lr": 1e-3}])
    order = torch.Generator().manual_seed(seed)
    batches = (len(x) + batch_size - 1) // batch_size
    for epoch in range(epochs):
        student.train()
        total = penalty_total = 0.0
        for step, idx in enumerate(torch.randperm(len(x), generator=order).split(batch_size)):
            opt.zero_grad()
            logits = run(xs[idx])
            loss = distillation_loss(torch, logits, soft[idx], ys[idx], temperature, alpha)
            penalty = sum(_tile_groups(torch, t[3], s, *t[5]) for t in trained)
            (loss + strength * penalty).backward()
            for _, _, _, beta, frozen, _ in trained:
                beta.grad[frozen] = 0.0
            opt.step()
            with torch.no_grad():
                for _, _, _, beta, _, _ in trained:
                    beta.clamp_(0.0, 1.0)
            total += float(loss.detach()) * len(idx)
            penalty_total += float(penalty.detach()) * len(idx)
            progress(f"bit fine-tuning epoch {epoch + 1}/{epochs}", step + 1, batches)
        result["losses"].append(total / len(x))
        result["penalties"].append(penalty_total / len(x))
    student.eval()
    with torch.no_grad():
        final = weights(hard_only=True)
        result["finetuned_accuracy"] = _accuracy(
            torch.cat([torch.func.functional_call(student, final, (xs[i:i + batch_size],))
                       for i in range(0, len(xs), batch_size)]), ys)
        for slot, w in final.items():
            getattr(student, slot).copy_(w)
    write_atomically(out_path, _to_onnx(torch, student, g, model_path.stem))
    return result
