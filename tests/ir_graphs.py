"""Small IR graphs for the pass tests: text with seeded standard-normal data for every float
constant, and seeded calibration inputs."""
from __future__ import annotations

import re

import numpy as np

from nnfpga.ir import parse, verify


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
