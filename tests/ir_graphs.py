"""Small IR graphs for the pass tests: text with seeded standard-normal data for every float
constant, seeded calibration inputs, and one quantized layer."""
from __future__ import annotations

import re

import numpy as np

from nnfpga.ir import parse, verify

QUANTIZED_LAYER = """graph @g(%x: tensor<1x8xf32>) {
  const %w : tensor<8x6x!q<i8, @w.scale, axis=1>> = @w
  const %b : tensor<6xi32> = @b
  %x_q = quantize(%x) : tensor<1x8x!q<i8, 0.05, 3>>
  %acc = qmatmul(%x_q, %w, %b) : tensor<1x6xi20>
  %y = requant(%acc) {hi = 127, lo = -128, mult = @m, shift = 20} : tensor<1x6x!q<i8, 0.1, 0>>
  %y_dq = dequantize(%y) : tensor<1x6xf32>
  return %y_dq
}
"""
"""One quantized dense layer 8 -> 6 after `quantize`; its weights, bias and requant multipliers
(@w, @w.scale, @b, @m) are the test's to give."""


def seeded_graph(text: str, seed: int = 0):
    """The verified graph of `text`, every `const %v : tensor<AxBxf32> = @name` filled with
    standard-normal data drawn from `seed`."""
    rng = np.random.default_rng(seed)
    arrays = {m.group(2): rng.standard_normal([int(d) for d in m.group(1).split("x")]).astype(np.float32)
              for m in re.finditer(r"const %\S+ : tensor<([0-9x]+)xf32> = @(\S+)", text)}
    g = parse(text, arrays)
    verify(g)
    return g


def seeded_calib(g, count: int = 64, seed: int = 1) -> dict:
    """`count` standard-normal calibration inputs for the graph's input, drawn from `seed`."""
    x = g.inputs[0]
    return {x.name: np.random.default_rng(seed).standard_normal((count,) + x.type.shape[1:]).astype(np.float32)}
