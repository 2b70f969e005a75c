"""ONNX ops of convolutional networks -> IR ops (ir/spatial.py), NCHW with a batch of one.

    Conv                  -> conv {strides, pads, dilations, group}   weights [O, C/g, kh, kw] constant
    BatchNormalization    -> add(mul(x, a), c), a = γ/√(σ²+ε), c = β − μ·a, both [1, C, 1, 1]
    MaxPool               -> maxpool {kernel, strides, pads, dilations}
    AveragePool           -> avgpool {kernel, strides, pads, count_include_pad}
                             (with dilations: a depthwise conv of weights 1/(kh·kw))
    GlobalAveragePool, GlobalMaxPool, ReduceMean over the spatial axes
                          -> avgpool / maxpool with kernel = [H, W] (ReduceMean keepdims=0: + reshape)
    Concat                -> concat {axis}
    Clip                  -> clip {lo, hi}          constant bounds (run-time bounds: host node)
    Pad (constant mode)   -> pad {pads, value}
    Sum                   -> add(add(x0, x1), x2) ...
    Mul, Div              -> mul (one constant operand; Div: the divisor, x/c = x·(1/c); otherwise host)
    Transpose             -> transpose {perm}
    Squeeze, Unsqueeze    -> reshape (constant axes)
    ConstantOfShape       -> a constant (constant shape)

A 1-D op over [1, C, L] is the 2-D op over [1, C, 1, L]: reshape, op, reshape back.

Windows: `auto_pad` (NOTSET, VALID, SAME_UPPER, SAME_LOWER) becomes explicit pads, ONNX's
`[x1_begin, x2_begin, x1_end, x2_end]` the IR's `[top, left, bottom, right]`. `ceil_mode = 1`
adds the padding its last window reaches past the input at the bottom/right; it is taken
only when that window starts inside the image or the left padding (onnxruntime drops a
window starting in the right padding, and ONNX shape inference has not always agreed), and
AveragePool counts that extension never (as onnxruntime does), so with count_include_pad the
explicit padding becomes a `pad` node. The IR has no -inf or +inf: a Clip without a bound
or a Pad with an infinite value takes ±(largest float32) instead, equal on every finite input.
MaxPool's `storage_order` only orders the Indices output, which is refused when used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from nnfpga.errors import ModelError
from nnfpga.frontend.onnx_common import (Unsupported, constant_axes, describe, node_attrs, normalised_axes,
                                         optional_input)
from nnfpga.frontend.onnx_guards import check_shape_fits
from nnfpga.ir.spatial import SpatialError, window_output

FLOAT_MAX = float(np.finfo(np.float32).max)
"""Stands for infinity in clip bounds and pad values (IR floats are finite)."""


def _bad(node: onnx.NodeProto, rule: str) -> ModelError:
    return ModelError(f"{node.op_type} ({describe(node)}): {rule}")


# -- windows ----------------------------------------------------------------------------------

@dataclass
class _Window:
    """A window resolved to explicit numbers, one entry per spatial axis (1 or 2)."""

    kernel: list[int]
    """Kernel size."""
    strides: list[int]
    """Step between windows."""
    dilations: list[int]
    """Step between taps."""
    begins: list[int]
    """Explicit padding before (top, left)."""
    ends: list[int]
    """Explicit padding after (bottom, right)."""
    extra: list[int]
    """Padding ceil_mode adds after the explicit padding."""

    def ir_attrs(self, explicit: bool = True) -> dict:
        """kernel, strides, dilations and pads as the 2-D IR op reads them (a 1-D window is 1×L);
        pads without the explicit padding when not `explicit` (a `pad` node holds it)."""
        ends = [e + x for e, x in zip(self.ends, self.extra)] if explicit else list(self.extra)
        begins = self.begins if explicit else [0] * len(self.begins)
        return {"kernel": self._2d(self.kernel), "strides": self._2d(self.strides),
                "dilations": self._2d(self.dilations), "pads": self._2d(begins, 0) + self._2d(ends, 0)}

    def explicit_pads(self) -> list[int]:
        """The explicit padding alone, [top, left, bottom, right]."""
        return self._2d(self.begins, 0) + self._2d(self.ends, 0)

    @staticmethod
    def _2d(values: list[int], filler: int = 1) -> list[int]:
        return [filler, values[0]] if len(values) == 1 else list(values)


def _ints(node, at, key, default, count) -> list[int]:
    values = [int(v) for v in at.get(key, default)]
    if len(values) != count:
        raise _bad(node, f"{key} {values} must have {count} entries, one per spatial axis")
    return values


def _window(node: onnx.NodeProto, spatial, kernel: list[int], at: dict) -> _Window:
    """Resolve auto_pad, pads and ceil_mode for a window over the spatial dims `spatial`."""
    n = len(spatial)
    kernel = [int(k) for k in kernel]
    if len(kernel) != n:
        raise _bad(node, f"kernel_shape {kernel} must have {n} entries, one per spatial axis")
    strides = _ints(node, at, "strides", [1] * n, n)
    dilations = _ints(node, at, "dilations", [1] * n, n)
    if min(kernel + strides + dilations) < 1:
        raise _bad(node, f"kernel {kernel}, strides {strides} and dilations {dilations} must be positive")
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    auto_pad = at.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and max(dilations) > 1:
        raise Unsupported(f"auto_pad {auto_pad} with dilations {dilations}: onnxruntime, the reference nnfpga "
                          "checks against, does not run it; export explicit pads")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # output = ceil(input / stride); the padding that needs, the odd one at the end (UPPER) or begin (LOWER)
        total = [(-(-i // s) - 1) * s + e - i for i, s, e in zip(spatial, strides, span)]
        if min(total) < 0 and node.op_type != "Conv":
            # The stride skips input past the last window: onnxruntime's Conv starts at 0, its pools
            # refuse the negative padding or crop the input.
            raise Unsupported(f"auto_pad {auto_pad} with a stride longer than the window leaves input "
                              f"unread (padding {total}); export explicit pads")
        total = [max(0, t) for t in total]
        begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        ends = [t - b for t, b in zip(total, begins)]
    elif auto_pad == "VALID":
        begins, ends = [0] * n, [0] * n
    elif auto_pad == "NOTSET":
        pads = _ints(node, at, "pads", [0] * (2 * n), 2 * n)
        if min(pads) < 0:
            raise Unsupported(f"its pads {pads} are negative (cropping); only padding is supported")
        begins, ends = pads[:n], pads[n:]
    else:
        raise _bad(node, f"auto_pad '{auto_pad}' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    extra = [0] * n
    for axis, (size, s, e, b, end) in enumerate(zip(spatial, strides, span, begins, ends)):
        padded = size + b + end
        if e > padded:
            raise _bad(node, f"its window spans {e} on spatial axis {axis} (kernel {kernel[axis]}, dilation "
                       f"{dilations[axis]}), more than the padded input ({size} + pads {b} + {end}); the kernel "
                       "must not be larger than the input")
        if at.get("ceil_mode", 0) and (padded - e) % s:
            start = ((padded - e) // s + 1) * s  # where the window ceil_mode adds starts
            if auto_pad != "NOTSET":
                raise Unsupported(f"ceil_mode=1 with auto_pad {auto_pad} would add a window on spatial axis "
                                  f"{axis} that runtimes do not agree on; export explicit pads")
            if start >= b + size:
                raise Unsupported(f"ceil_mode=1: the last window on spatial axis {axis} would start in the right "
                                  f"padding (at {start}, the input ends at {b + size}); such a window is not "
                                  "taken: export with ceil_mode=0 or other pads")
            extra[axis] = start + e - padded
        if node.op_type != "Conv" and dilations[axis] > 1:
            # A pool window whose taps all land in padding has no input to pool (runtimes fill
            # it with the lowest float, or divide by zero).
            for o in range((padded + extra[axis] - e) // s + 1):
                if not any(b <= o * s + j * dilations[axis] < b + size for j in range(kernel[axis])):
                    raise Unsupported(f"window {o} on spatial axis {axis} sees padding only (dilation "
                                      f"{dilations[axis]} steps over the input); export other pads")
    return _Window(kernel, strides, dilations, begins, ends, extra)


def _output_hw(node, image, attrs: dict) -> tuple[int, int]:
    """(OH, OW) of a 2-D IR window op; Unsupported naming the rule the IR sets."""
    _, _, h, w = image.type.shape
    try:
        return window_output(h, w, attrs["kernel"], attrs["strides"], attrs["pads"], attrs["dilations"])
    except SpatialError as e:
        raise Unsupported(str(e)) from None


# -- images -----------------------------------------------------------------------------------

def _image(imp, node: onnx.NodeProto, name: str):
    """The operand as a [1, C, H, W] value: a 1-D [1, C, L] one is reshaped to [1, C, 1, L]."""
    x = imp.operand(name)
    shape = x.type.shape
    if len(shape) not in (3, 4):
        raise Unsupported(f"its input is {len(shape)}-D {list(shape)}; only 1-D [N, C, L] and 2-D "
                          "[N, C, H, W] inputs are supported")
    if shape[0] != 1:
        raise Unsupported(f"its input has batch {shape[0]}; convolutional ops take one sample at a time: "
                          "compile with batch 1 (--input-shape)")
    if len(shape) == 4:
        return x
    image = (1, shape[1], 1, shape[2])
    return imp.add_op("reshape", [x], image, {"shape": list(image)}, hint=f"{node.output[0]}_in")


def _finish(imp, node: onnx.NodeProto, rank: int, op: str, inputs, shape, attrs) -> None:
    """Emit the 2-D op computing the node's result, reshaped back to 1-D when the input was."""
    out = node.output[0]
    if rank == 4:
        imp.emit(node, op, inputs, shape, attrs)
    else:
        y = imp.add_op(op, inputs, shape, attrs, hint=f"{out}_2d")
        line = [1, shape[1], shape[3]]
        imp.emit(node, "reshape", [y], line, {"shape": line})
    imp.check_inferred(node, imp.values[out].type.shape)


def _const_array(imp, node: onnx.NodeProto, name: str, what: str) -> np.ndarray:
    if not imp.is_const(name):
        raise Unsupported(f"its {what} is computed at run time; only a constant {what} is supported")
    data = imp.consts[name]
    if data.dtype != np.float32:
        raise Unsupported(f"its {what} '{name}' is {data.dtype}; only float32 is supported")
    return data


# -- handlers ---------------------------------------------------------------------------------

def _conv(imp, node: onnx.NodeProto) -> None:
    at = node_attrs(node)
    rank = len(imp.shape_of(node.input[0]))
    x = _image(imp, node, node.input[0])
    w = _const_array(imp, node, node.input[1], "weight")
    c = x.type.shape[1]
    if w.ndim != rank:
        raise _bad(node, f"weight of shape {list(w.shape)} must have {rank} dimensions like the input")
    o, cg, kernel = w.shape[0], w.shape[1], [int(k) for k in w.shape[2:]]
    if "kernel_shape" in at and [int(k) for k in at["kernel_shape"]] != kernel:
        raise _bad(node, f"kernel_shape {list(at['kernel_shape'])} differs from the weight's {kernel}")
    group = int(at.get("group", 1))
    if group < 1 or c % group or o % group or cg != c // group:
        raise _bad(node, f"group {group} must divide the {c} input and {o} output channels, and the weight must "
                   f"have {c // max(group, 1)} input channels per group (it has {cg})")
    win = _window(node, imp.shape_of(node.input[0])[2:], kernel, at)
    weight = imp.operand(node.input[1]) if rank == 4 else imp.const(f"{node.input[1]}_2d", w.reshape(o, cg, 1, -1))
    bias_name = optional_input(node, 2)
    if bias_name is not None:
        b = _const_array(imp, node, bias_name, "bias")
        if b.shape != (o,):
            raise _bad(node, f"bias of shape {list(b.shape)} must be [{o}]")
        bias = imp.operand(bias_name)
    else:
        bias = imp.const(f"{node.output[0]}_bias", np.zeros(o, np.float32))
    attrs = win.ir_attrs()
    kernel = attrs.pop("kernel")
    attrs["group"] = group
    try:
        oh, ow = window_output(*x.type.shape[2:], kernel, attrs["strides"], attrs["pads"], attrs["dilations"])
    except SpatialError:
        # Pads as wide as the window: some outputs see padding only. Pad first, then convolve.
        top, left, bottom, right = attrs["pads"]
        _, _, h, wd = x.type.shape
        x = imp.add_op("pad", [x], (1, c, h + top + bottom, wd + left + right),
                       {"pads": [0, 0, top, left, 0, 0, bottom, right]}, hint=f"{node.output[0]}_padded")
        attrs["pads"] = [0, 0, 0, 0]
        oh, ow = _output_hw(node, x, {**attrs, "kernel": kernel})
    _finish(imp, node, rank, "conv", [x, weight, bias], (1, o, oh, ow), attrs)


def _batch_norm(imp, node: onnx.NodeProto) -> None:
    # y = (x − μ)/√(σ² + ε)·γ + β = x·a + c
    at = node_attrs(node)
    if int(at.get("training_mode", 0)):
        raise Unsupported("training-mode BatchNormalization (training_mode = 1) is not supported; "
                          "export the model in eval mode")
    if any(name and name in imp.read for name in node.output[1:]):
        raise Unsupported("its running mean/variance outputs (training mode) are used; only the inference "
                          "form is supported: export the model in eval mode")
    shape = imp.shape_of(node.input[0])
    if len(shape) < 2:
        raise _bad(node, f"input of shape {list(shape)} has no channel axis")
    channels = shape[1]
    gamma, beta, mean, var = (_const_array(imp, node, name, what).astype(np.float64)
                              for name, what in zip(node.input[1:5], ("scale", "bias", "mean", "variance")))
    for what, p in zip(("scale", "bias", "mean", "variance"), (gamma, beta, mean, var)):
        if p.shape != (channels,):
            raise _bad(node, f"{what} of shape {list(p.shape)} must hold one value per channel ({channels})")
    a = gamma / np.sqrt(var + float(at.get("epsilon", 1e-5)))
    per_channel = (1, channels) + (1,) * (len(shape) - 2)
    x = imp.operand(node.input[0])
    scale = imp.const(f"{node.output[0]}_scale", a.reshape(per_channel))
    shift = imp.const(f"{node.output[0]}_shift", (beta - mean * a).reshape(per_channel))
    scaled = imp.add_op("mul", [x, scale], shape, hint=f"{node.output[0]}_scaled")
    imp.emit(node, "add", [scaled, shift], shape)


def _maxpool(imp, node: onnx.NodeProto) -> None:
    at = node_attrs(node)
    if len(node.output) > 1 and node.output[1] and node.output[1] in imp.read:
        raise Unsupported("its Indices output is used; only the pooled values are supported")
    if "kernel_shape" not in at:
        raise _bad(node, "kernel_shape is required")
    rank = len(imp.shape_of(node.input[0]))
    x = _image(imp, node, node.input[0])
    win = _window(node, imp.shape_of(node.input[0])[2:], list(at["kernel_shape"]), at)
    attrs = win.ir_attrs()
    oh, ow = _output_hw(node, x, attrs)
    _finish(imp, node, rank, "maxpool", [x], (1, x.type.shape[1], oh, ow), attrs)


def _avgpool(imp, node: onnx.NodeProto) -> None:
    at = node_attrs(node)
    if "kernel_shape" not in at:
        raise _bad(node, "kernel_shape is required")
    rank = len(imp.shape_of(node.input[0]))
    x = _image(imp, node, node.input[0])
    c = x.type.shape[1]
    win = _window(node, imp.shape_of(node.input[0])[2:], list(at["kernel_shape"]), at)
    count_pad = bool(at.get("count_include_pad", 0))
    padded = any(win.begins + win.ends)
    if max(win.dilations) > 1:
        # mean over a dilated window = depthwise conv with weights 1/(kh·kw), padding counted as zeros
        if any(win.extra) or (padded and not count_pad):
            raise Unsupported("AveragePool with dilations counts only the input under each window here "
                              "(count_include_pad=0 with pads, or ceil_mode); nnfpga takes dilated average "
                              "pools without padding or with count_include_pad=1")
        attrs = win.ir_attrs()
        kernel = attrs.pop("kernel")
        weight = imp.const(f"{node.output[0]}_weight", np.full((c, 1, *kernel), 1.0 / (kernel[0] * kernel[1])))
        bias = imp.const(f"{node.output[0]}_bias", np.zeros(c, np.float32))
        attrs["group"] = c
        oh, ow = _output_hw(node, x, {**attrs, "kernel": kernel})
        _finish(imp, node, rank, "conv", [x, weight, bias], (1, c, oh, ow), attrs)
        return
    explicit = True
    if count_pad and any(win.extra):
        # onnxruntime counts the explicit padding but not what ceil_mode adds: pad explicitly with
        # zeros, then count only what lies under the window.
        if padded:
            t, l, b, r = win.explicit_pads()
            _, _, h, w = x.type.shape
            x = imp.add_op("pad", [x], (1, c, h + t + b, w + l + r), {"pads": [0, 0, t, l, 0, 0, b, r]},
                           hint=f"{node.output[0]}_padded")
        explicit, count_pad = False, False
    attrs = win.ir_attrs(explicit)
    oh, ow = _output_hw(node, x, attrs)
    del attrs["dilations"]
    if count_pad:
        attrs["count_include_pad"] = True
    _finish(imp, node, rank, "avgpool", [x], (1, c, oh, ow), attrs)


def _global_pool(imp, node: onnx.NodeProto, op: str) -> None:
    rank = len(imp.shape_of(node.input[0]))
    x = _image(imp, node, node.input[0])
    _, c, h, w = x.type.shape
    attrs = {"kernel": [h, w], "strides": [1, 1], "pads": [0, 0, 0, 0]}
    if op == "maxpool":
        attrs["dilations"] = [1, 1]
    _finish(imp, node, rank, op, [x], (1, c, 1, 1), attrs)


def _reduce_mean(imp, node: onnx.NodeProto) -> None:
    at = node_attrs(node)
    shape = imp.shape_of(node.input[0])
    axes = constant_axes(imp, node)
    if axes is None or not axes:
        if at.get("noop_with_empty_axes", 0):
            imp.alias(node.output[0], node.input[0])
            return
        axes = list(range(len(shape)))
    axes = normalised_axes(node, axes, len(shape))
    if len(shape) not in (3, 4) or axes != list(range(2, len(shape))):
        raise Unsupported(f"it averages axes {axes} of a {len(shape)}-D tensor; only the spatial axes of "
                          "[N, C, H, W] ([2, 3]) or [N, C, L] ([2]), a global average pool, are supported")
    x = _image(imp, node, node.input[0])
    c = shape[1]
    attrs = {"kernel": list(x.type.shape[2:]), "strides": [1, 1], "pads": [0, 0, 0, 0]}
    keep = int(at.get("keepdims", 1))
    if keep and len(shape) == 4:
        imp.emit(node, "avgpool", [x], (1, c, 1, 1), attrs)
    else:
        pooled = imp.add_op("avgpool", [x], (1, c, 1, 1), attrs, hint=f"{node.output[0]}_pool")
        result = [1, c] + [1] * (len(shape) - 2) * keep
        imp.emit(node, "reshape", [pooled], result, {"shape": result})
    imp.check_inferred(node, imp.values[node.output[0]].type.shape)


def _concat(imp, node: onnx.NodeProto) -> None:
    values = [imp.operand(name) for name in node.input]
    first = values[0].type.shape
    axis = normalised_axes(node, [int(node_attrs(node).get("axis", 0))], len(first))[0]
    for v in values:
        s = v.type.shape
        if len(s) != len(first) or any(a != b for d, (a, b) in enumerate(zip(s, first)) if d != axis):
            raise _bad(node, f"operand shapes {[list(v.type.shape) for v in values]} differ off axis {axis}")
    if len(values) == 1:
        imp.alias(node.output[0], node.input[0])
        return
    shape = list(first)
    shape[axis] = sum(v.type.shape[axis] for v in values)
    imp.emit(node, "concat", values, shape, {"axis": axis})


def _scalar(imp, node, name: str, what: str) -> float:
    data = imp.consts[name]
    if data.size != 1:
        raise _bad(node, f"{what} '{name}' must be a scalar, has shape {list(data.shape)}")
    value = float(data.reshape(-1)[0])
    if np.isnan(value):
        raise Unsupported(f"its {what} is NaN")
    return min(max(value, -FLOAT_MAX), FLOAT_MAX)


def _clip(imp, node: onnx.NodeProto) -> None:
    # min(max(x, lo), hi); lo > hi sets every value to hi (ONNX)
    at = node_attrs(node)
    bounds = [optional_input(node, 1), optional_input(node, 2)]
    if any(name is not None and not imp.is_const(name) for name in bounds):
        imp.host_node(node)  # bounds computed at run time
        return
    lo = _scalar(imp, node, bounds[0], "min") if bounds[0] else max(float(at.get("min", -FLOAT_MAX)), -FLOAT_MAX)
    hi = _scalar(imp, node, bounds[1], "max") if bounds[1] else min(float(at.get("max", FLOAT_MAX)), FLOAT_MAX)
    lo = min(lo, hi)
    if lo == -FLOAT_MAX and hi == FLOAT_MAX:
        imp.alias(node.output[0], node.input[0])
        return
    x = imp.operand(node.input[0])
    imp.emit(node, "clip", [x], x.type.shape, {"lo": lo, "hi": hi})


def _pad(imp, node: onnx.NodeProto) -> None:
    at = node_attrs(node)
    mode = at.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise Unsupported(f"Pad mode '{mode}' is not supported; only constant padding is")
    shape = imp.shape_of(node.input[0])
    rank = len(shape)
    pads_name = optional_input(node, 1)
    if pads_name is not None:
        if not imp.is_const(pads_name):
            raise Unsupported("its pads are computed at run time; only constant pads are supported")
        pads = [int(p) for p in imp.consts[pads_name].reshape(-1)]
    else:
        pads = [int(p) for p in at.get("pads", [])]
    axes_name = optional_input(node, 3)
    if axes_name is not None and not imp.is_const(axes_name):
        raise Unsupported("its axes are computed at run time; only constant axes are supported")
    axes = (list(range(rank)) if axes_name is None
            else normalised_axes(node, [int(a) for a in imp.consts[axes_name].reshape(-1)], rank))
    if len(pads) != 2 * len(axes):
        raise _bad(node, f"pads {pads} must hold 2 entries per padded axis ({len(axes)})")
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[a + rank] = pads[i], pads[i + len(axes)]
    if min(full) < 0:
        raise Unsupported(f"its pads {pads} are negative (cropping); only padding is supported")
    value_name = optional_input(node, 2)
    if value_name is not None and not imp.is_const(value_name):
        raise Unsupported("its padding value is computed at run time; only a constant value is supported")
    value = _scalar(imp, node, value_name, "padding value") if value_name else float(at.get("value", 0.0))
    value = min(max(value, -FLOAT_MAX), FLOAT_MAX)
    if not any(full):
        imp.alias(node.output[0], node.input[0])
        return
    out = [d + full[i] + full[i + rank] for i, d in enumerate(shape)]
    imp.emit(node, "pad", [imp.operand(node.input[0])], out, {"pads": full, **({"value": value} if value else {})})
    imp.check_inferred(node, out)


def _sum(imp, node: onnx.NodeProto) -> None:
    # x0 + x1 + ... + xn-1, added left to right
    names = list(node.input)
    if len(names) == 1:
        imp.alias(node.output[0], names[0])
        return
    acc = imp.operand(names[0])
    for idx, name in enumerate(names[1:], start=1):
        x = imp.operand(name)
        shape = np.broadcast_shapes(acc.type.shape, x.type.shape)
        if idx == len(names) - 1:
            imp.emit(node, "add", [acc, x], shape)
        else:
            acc = imp.add_op("add", [acc, x], shape, hint=f"{node.output[0]}_{idx}")


def _one_constant(imp, node: onnx.NodeProto) -> int | None:
    """Index of the float constant operand of a binary node with one data operand."""
    consts = [idx for idx, name in enumerate(node.input[:2]) if imp.is_const(name)]
    if len(consts) != 1 or imp.consts[node.input[consts[0]]].dtype != np.float32:
        return None
    return consts[0]


def _mul(imp, node: onnx.NodeProto) -> None:
    if _one_constant(imp, node) is None:  # two data operands: the host multiplies
        imp.host_node(node)
        return
    a, b = imp.operand(node.input[0]), imp.operand(node.input[1])
    imp.emit(node, "mul", [a, b], np.broadcast_shapes(a.type.shape, b.type.shape))


def _div(imp, node: onnx.NodeProto) -> None:
    # x / c = x · (1/c)
    if _one_constant(imp, node) != 1:  # a data divisor: the host divides
        imp.host_node(node)
        return
    x = imp.operand(node.input[0])
    with np.errstate(divide="ignore"):
        inverse = (1.0 / imp.consts[node.input[1]].astype(np.float64)).astype(np.float32)
    c = imp.const(f"{node.input[1]}_inverse", inverse)
    imp.emit(node, "mul", [x, c], np.broadcast_shapes(x.type.shape, c.type.shape))


def _transpose(imp, node: onnx.NodeProto) -> None:
    shape = imp.shape_of(node.input[0])
    perm = [int(p) for p in node_attrs(node).get("perm", range(len(shape) - 1, -1, -1))]
    if sorted(perm) != list(range(len(shape))):
        raise _bad(node, f"perm {perm} is not a permutation of the {len(shape)} axes of {list(shape)}")
    if perm == list(range(len(shape))):
        imp.alias(node.output[0], node.input[0])
        return
    imp.emit(node, "transpose", [imp.operand(node.input[0])], [shape[p] for p in perm], {"perm": perm})


def _squeeze(imp, node: onnx.NodeProto) -> None:
    shape = imp.shape_of(node.input[0])
    axes = constant_axes(imp, node)
    axes = [a for a, d in enumerate(shape) if d == 1] if axes is None else normalised_axes(node, axes, len(shape))
    if any(shape[a] != 1 for a in axes):
        raise ModelError(f"Squeeze ({describe(node)}): axes {axes} of {list(shape)} are not all of size 1")
    imp.reshape(node, tuple(d for a, d in enumerate(shape) if a not in axes))


def _unsqueeze(imp, node: onnx.NodeProto) -> None:
    shape = list(imp.shape_of(node.input[0]))
    axes = constant_axes(imp, node)
    if not axes:
        raise ModelError(f"Unsqueeze ({describe(node)}): no axes given")
    for a in normalised_axes(node, axes, len(shape) + len(axes)):
        shape.insert(a, 1)
    imp.reshape(node, tuple(shape))


def _constant_of_shape(imp, node: onnx.NodeProto) -> None:
    if not imp.is_const(node.input[0]):
        raise Unsupported("its shape is computed at run time; only a constant shape is supported")
    value = node_attrs(node).get("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    shape = [int(d) for d in imp.consts[node.input[0]].reshape(-1)]
    check_shape_fits(shape, fill.dtype, node.output[0], imp.where)
    imp.consts[node.output[0]] = np.full(shape, fill[0], dtype=fill.dtype)


SPATIAL_HANDLERS = {
    "AveragePool": _avgpool, "BatchNormalization": _batch_norm, "Clip": _clip, "Concat": _concat, "Conv": _conv,
    "Div": _div, "GlobalAveragePool": lambda imp, node: _global_pool(imp, node, "avgpool"),
    "GlobalMaxPool": lambda imp, node: _global_pool(imp, node, "maxpool"), "MaxPool": _maxpool, "Mul": _mul,
    "Pad": _pad, "ReduceMean": _reduce_mean, "Sum": _sum, "Transpose": _transpose,
    "ConstantOfShape": _constant_of_shape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
}
"""ONNX op type -> translator(importer, node)."""
