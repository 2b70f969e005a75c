"""A float IR graph as a PyTorch module (for fine-tuning): an op table like the interpreter's.

Dense and conv weights and biases become trainable parameters, every other constant a
buffer; forward runs the nodes in order on a batch [B, ...] where the IR has a batch of one.
Ops written so that torch's ONNX export gives back what the frontend reads: dense as
MatMul + Add, conv as Conv (symmetric padding inside it, asymmetric as a Pad before it).
torch is passed in by the caller (nnfpga.finetune), which imports it.
"""
from __future__ import annotations

import numpy as np

from nnfpga.errors import ModelError
from nnfpga.ir import Graph

TRAINABLE = ("dense", "conv")
"""Ops whose weight and bias operands are trained."""


def _padded(torch, x, pads, value: float):
    """x with [top, left, bottom, right] padding, and the symmetric (h, w) padding left for the op."""
    top, left, bottom, right = pads
    if top == bottom and left == right:
        return x, (top, left)
    return torch.nn.functional.pad(x, (left, right, top, bottom), value=value), (0, 0)


def _dense(torch, node, x, w, b):
    y = x @ w + b
    return torch.relu(y) if node.attrs.get("relu") else y


def _conv(torch, node, x, w, b):
    x, padding = _padded(torch, x, node.attrs["pads"], 0.0)
    return torch.nn.functional.conv2d(x, w, b, stride=tuple(node.attrs["strides"]), padding=padding,
                                      dilation=tuple(node.attrs["dilations"]), groups=node.attrs["group"])


def _maxpool(torch, node, x):
    x, padding = _padded(torch, x, node.attrs["pads"], float("-inf"))
    return torch.nn.functional.max_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["strides"]), padding,
                                          tuple(node.attrs.get("dilations", [1, 1])))


def _avgpool(torch, node, x):
    pads, include = node.attrs["pads"], bool(node.attrs.get("count_include_pad"))
    if include:
        x, padding = _padded(torch, x, pads, 0.0)
    elif pads[0] == pads[2] and pads[1] == pads[3]:
        padding = (pads[0], pads[1])
    else:
        raise ModelError(f"finetune: avgpool %{node.output.name} has asymmetric padding not counted in the mean")
    return torch.nn.functional.avg_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["strides"]), padding,
                                          count_include_pad=include)


def _batch_shape(shape):
    return (-1,) + tuple(shape[1:])


OPS = {
    "dense": _dense,
    "conv": _conv,
    "relu": lambda torch, node, x: torch.relu(x),
    "clip": lambda torch, node, x: torch.clamp(x, node.attrs["lo"], node.attrs["hi"]),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "reshape": lambda torch, node, x: x.reshape(_batch_shape(node.attrs["shape"])),
    "transpose": lambda torch, node, x: x.permute(*node.attrs["perm"]),
    "add": lambda torch, node, a, b: a + b,
    "mul": lambda torch, node, a, b: a * b,
    "matmul": lambda torch, node, a, b: a @ b,
    "concat": lambda torch, node, *xs: torch.cat(xs, dim=node.attrs["axis"]),
    "pad": lambda torch, node, x: _pad(torch, node, x),
}


def _pad(torch, node, x):
    pads, rank = node.attrs["pads"], len(node.attrs["pads"]) // 2
    if pads[0] or pads[rank]:
        raise ModelError(f"finetune: pad %{node.output.name} pads the batch axis")
    flat = []
    for axis in reversed(range(1, rank)):  # torch lists the last axis first
        flat += [pads[axis], pads[axis + rank]]
    return torch.nn.functional.pad(x, tuple(flat), value=float(node.attrs.get("value", 0.0)))


def torch_module(torch, g: Graph):
    """The module computing `g` (float ops only) on batches."""
    unsupported = sorted({n.op for n in g.nodes if n.op not in OPS})
    if unsupported:
        raise ModelError(f"finetune: the float graph has ops torch_graph does not run: {', '.join(unsupported)} "
                         f"(it runs {', '.join(sorted(OPS))})")
    trainable = {n.inputs[i].name for n in g.nodes if n.op in TRAINABLE for i in (1, 2)}

    class IRModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.slots: dict[str, str] = {}
            for index, c in enumerate(g.constants):
                data = torch.from_numpy(np.array(g.const_data(c), dtype=np.float32))
                slot = c.name.replace(".", "_")  # torch attribute names cannot hold the IR's dots
                if slot in self.slots.values() or hasattr(self, slot):
                    slot = f"{slot}_{index}"
                if c.name in trainable:
                    self.register_parameter(slot, torch.nn.Parameter(data))
                else:
                    self.register_buffer(slot, data)
                self.slots[c.name] = slot

        def forward(self, x):
            env = {g.inputs[0].name: x}
            for name, slot in self.slots.items():
                env[name] = getattr(self, slot)
            for node in g.nodes:
                env[node.output.name] = OPS[node.op](torch, node, *(env[v.name] for v in node.inputs))
            return env[g.outputs[0].name]

    return IRModule()
