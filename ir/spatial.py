"""Spatial ops (convolutional networks): shape rules, type checks and numpy kernels.

Tensors are NCHW with a batch of one; a 1-D convolution is a 2-D one over a 1×L image.
Windows: `kernel = [kh, kw]`, `strides = [sh, sw]`, `dilations = [dh, dw]`,
`pads = [top, left, bottom, right]`; OH = (H + top + bottom − ((kh−1)·dh + 1)) // sh + 1.

    op        operands                 attributes                            result
    conv      x, w[O,C/g,kh,kw], b[O]  strides, pads, dilations, group       float convolution
    qconv     x: !q, w: !q axis 0, b   strides, pads, dilations, group       Σ (x − z_x)·w + b, exact (acc type)
    maxpool   x (float or !q)          kernel, strides, pads, dilations      window max (pads never win)
    avgpool   x: f32                   kernel, strides, pads, count_include_pad   window mean
    sumpool   x: !q                    kernel, strides, pads                 Σ (x − z_x) over the window, exact
    concat    x0, x1, ...              axis                                  joined along axis (same element type)
    clip      x: f32                   lo, hi                                min(max(x, lo), hi)
    pad       x: f32                   pads (begins.., ends..), value        constant padding
    qadd      a: !q, b: !q             ma, mb, shift, lo, hi                 clamp(z + (((a−z_a)·ma + (b−z_b)·mb + 2^(s−1)) >> s), lo, hi)

In qconv the zero point is not subtracted at run time: quantize folds −z_x·Σw into the
bias, and padded positions hold z_x, so Σ x·w + b equals Σ (x − z_x)·w + b_real exactly.
"""
from __future__ import annotations

import numpy as np

from nnfpga.ir.types import IntType, QuantType

WINDOW_ATTRS = ("kernel", "strides", "pads", "dilations")


class SpatialError(Exception):
    """A window that does not fit its input; ops.py turns it into an OpCheckError."""


def window_output(h: int, w: int, kernel, strides, pads, dilations) -> tuple[int, int]:
    """(OH, OW) of a window sliding over an h×w image, or SpatialError in words."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    top, left, bottom, right = pads
    if min(kh, kw, sh, sw, dh, dw) < 1:
        raise SpatialError(f"kernel {list(kernel)}, strides {list(strides)} and dilations {list(dilations)} "
                           "must be positive")
    if min(pads) < 0:
        raise SpatialError(f"pads {list(pads)} must not be negative")
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if eh > h + top + bottom or ew > w + left + right:
        raise SpatialError(f"the {eh}×{ew} window (kernel {kh}×{kw}, dilation {dh}×{dw}) is larger than "
                           f"the padded {h + top + bottom}×{w + left + right} input")
    if max(top, bottom) >= eh or max(left, right) >= ew:
        raise SpatialError(f"pads {list(pads)} must be smaller than the {eh}×{ew} window, or some outputs "
                           "would see padding only")
    return (h + top + bottom - eh) // sh + 1, (w + left + right - ew) // sw + 1


def windows(x: np.ndarray, kernel, strides, pads, dilations, fill) -> np.ndarray:
    """[C, OH, OW, kh, kw] view of every window of x[1, C, H, W], padded with `fill`."""
    _, c, h, w = x.shape
    oh, ow = window_output(h, w, kernel, strides, pads, dilations)
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    top, left, bottom, right = pads
    padded = np.full((c, h + top + bottom, w + left + right), fill, dtype=x.dtype)
    padded[:, top:top + h, left:left + w] = x[0]
    iy = (np.arange(oh) * sh)[:, None] + np.arange(kh)[None, :] * dh  # [OH, kh]
    ix = (np.arange(ow) * sw)[:, None] + np.arange(kw)[None, :] * dw  # [OW, kw]
    return padded[:, iy[:, None, :, None], ix[None, :, None, :]]


def conv_nchw(x: np.ndarray, w: np.ndarray, b: np.ndarray, attrs: dict, fill=0) -> np.ndarray:
    """Grouped convolution of x[1, C, H, W] with w[O, C/g, kh, kw]; dtype follows x (int64 exact)."""
    o, cg, kh, kw = w.shape
    group = attrs["group"]
    win = windows(x, [kh, kw], attrs["strides"], attrs["pads"], attrs["dilations"], fill)
    _, oh, ow, _, _ = win.shape
    out = np.empty((o, oh, ow), dtype=np.result_type(x.dtype, w.dtype))
    og = o // group
    for gi in range(group):
        patch = win[gi * cg:(gi + 1) * cg]                      # [C/g, OH, OW, kh, kw]
        cols = patch.transpose(1, 2, 0, 3, 4).reshape(oh * ow, -1)
        ws = w[gi * og:(gi + 1) * og].reshape(og, -1)
        out[gi * og:(gi + 1) * og] = (cols @ ws.T).T.reshape(og, oh, ow)
    return (out + b.reshape(o, 1, 1))[None]


def _pool_fill(x: np.ndarray, element) -> float | int:
    """The value padding holds for a max pool: one that never wins."""
    if isinstance(element, (IntType, QuantType)):
        return element.min
    return -np.inf


def maxpool_kernel(g, node, x):
    e = node.inputs[0].type.element
    win = windows(x, node.attrs["kernel"], node.attrs["strides"], node.attrs["pads"],
                  node.attrs["dilations"], _pool_fill(x, e))
    return [win.max(axis=(3, 4))[None].astype(x.dtype)]


def avgpool_kernel(g, node, x):
    a = node.attrs
    win = windows(x.astype(np.float64), a["kernel"], a["strides"], a["pads"], [1, 1], 0.0)
    if a.get("count_include_pad"):
        count = a["kernel"][0] * a["kernel"][1]
    else:
        ones = np.ones((1, 1) + x.shape[2:], np.float64)
        count = windows(ones, a["kernel"], a["strides"], a["pads"], [1, 1], 0.0).sum(axis=(3, 4))
    return [(win.sum(axis=(3, 4)) / count)[None].astype(np.float32)]


def sumpool_kernel(g, node, x):
    z = node.inputs[0].type.element.zero_point
    a = node.attrs
    win = windows(x.astype(np.int64) - z, a["kernel"], a["strides"], a["pads"], [1, 1], 0)
    return [win.sum(axis=(3, 4))[None]]


def conv_kernel(g, node, x, w, b):
    return [conv_nchw(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                      node.attrs).astype(np.float32)]


def qconv_kernel(g, node, x, w, b):
    z = node.inputs[0].type.element.zero_point
    return [conv_nchw(x.astype(np.int64), w.astype(np.int64), b.astype(np.int64), node.attrs, fill=z)]


def pad_kernel(g, node, x):
    pads = node.attrs["pads"]
    r = x.ndim
    return [np.pad(x, list(zip(pads[:r], pads[r:])), constant_values=np.float32(node.attrs.get("value", 0.0)))]


def qadd_kernel(g, node, a, b):
    ta, tb = node.inputs[0].type.element, node.inputs[1].type.element
    y = node.output.type.element
    s = node.attrs["shift"]
    acc = (a.astype(np.int64) - ta.zero_point) * node.attrs["ma"] + (b.astype(np.int64) - tb.zero_point) * node.attrs["mb"]
    return [np.clip(y.zero_point + ((acc + (1 << (s - 1))) >> s), node.attrs["lo"], node.attrs["hi"])]


KERNELS = {
    "conv": conv_kernel,
    "qconv": qconv_kernel,
    "maxpool": maxpool_kernel,
    "avgpool": avgpool_kernel,
    "sumpool": sumpool_kernel,
    "concat": lambda g, n, *xs: [np.concatenate(xs, axis=n.attrs["axis"])],
    "clip": lambda g, n, x: [np.clip(x, np.float32(n.attrs["lo"]), np.float32(n.attrs["hi"])).astype(np.float32)],
    "pad": pad_kernel,
    "qadd": qadd_kernel,
}
