"""The const core (weights hard-wired as a shared shift-add graph, one vector per cycle) in
Verilator at its corners, bit for bit against onnxruntime, with the cycle model's
interval and latency equal to the measured ones.

Weights at their extremes (±(2^(wb-1) - 1)), ±1, powers of two, an all-zero row and an
all-zero column (an output that is its bias alone), so the graph has shared terms, negative
outputs and empty ones; inputs at the type's minimum, maximum and zero point, each column's
accumulator driven to both bounds, then random. The requant multiplier is 1 with shift 1
and a wide clamp, so an adder off by one shows.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnfpga.backends.const_graph import const_graph
from nnfpga.backends.lower import region_input
from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import emit_stream_verilog, predicted_timing
from nnfpga.hw_tests.sim import lint, simulate
from nnfpga.ir import parse
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range

CASES = {
    # name: (input element, weight bits, K, N)
    "i8-w8": ("!q<i8, 0.05>", 8, 12, 6),
    "u8-w5-zp": ("!q<u8, 0.05, 7>", 5, 10, 5),
    "i4-w3": ("!q<i4, 0.1, -1>", 3, 8, 4),
}


def element(text: str):
    return parse(f"graph @e(%v: tensor<1x{text}>) {{\n  return %v\n}}").inputs[0].type.element


def corner_weights(wbits: int, k: int, n: int, rng) -> np.ndarray:
    top = (1 << (wbits - 1)) - 1
    picks = np.array(sorted({top, -top, 0, 1, -1, 2, -(1 << (wbits - 2))}))
    w = rng.choice(picks, size=(k, n))
    w[0], w[1] = top, -top
    w[2] = 0
    w[3] = rng.integers(-top, top + 1, size=n)
    w[:, n - 1] = 0   # an output with no term: its bias alone
    return w.astype(np.int8)


def layer_graph(x_type: str, wbits: int, k: int, n: int, rng):
    x_elem = element(x_type)
    w = corner_weights(wbits, k, n, rng)
    b = (rng.integers(-50, 50, size=n) - x_elem.zero_point * w.astype(np.int64).sum(0)).astype(np.int32)
    acc = int_type_for_range(*accumulator_bounds(x_elem, w, b))
    arrays = {"w": w, "b": b, "ws": np.full(n, 0.01), "m": np.ones(n, np.int64)}
    text = (f"graph @cores(%x: tensor<1x{k}x{x_type}>) {{\n"
            f"  const %w : tensor<{k}x{n}x!q<i{wbits}, @ws, axis=1>> = @w\n"
            f"  const %b : tensor<{n}xi32> = @b\n"
            f"  %a = qmatmul(%x, %w, %b) {{core = \"const\", pe = {n}, simd = {k}}} : tensor<1x{n}x{acc!r}>\n"
            f"  %y = requant(%a) {{hi = 32767, lo = -32768, mult = @m, shift = 1}} : tensor<1x{n}x!q<i16, 1.0>>\n"
            "  return %y\n}")
    return parse(text, arrays), x_elem, w


def corner_inputs(x_elem, w, count: int, rng) -> np.ndarray:
    k = w.shape[0]
    rows = [np.full(k, x_elem.min), np.full(k, x_elem.max), np.full(k, x_elem.zero_point)]
    rows.append(np.where(np.arange(k) % 2, x_elem.min, x_elem.max))
    for col in range(w.shape[1]):
        rows.append(np.where(w[:, col] > 0, x_elem.max, x_elem.min))
        rows.append(np.where(w[:, col] > 0, x_elem.min, x_elem.max))
    rows += list(rng.integers(x_elem.min, x_elem.max + 1, size=(count, k)))
    return np.stack(rows).astype(np.int64)


@pytest.mark.parametrize("case", list(CASES))
def test_const_core_corners_are_bit_exact_and_timed(tmp_path, case):
    rng = np.random.default_rng(sorted(CASES).index(case))
    x_type, wbits, k, n = CASES[case]
    g, x_elem, w = layer_graph(x_type, wbits, k, n, rng)
    x = corner_inputs(x_elem, w, 100, rng)
    golden = run_reference(to_reference_onnx(g), {"x": x})["y"].reshape(len(x), n)
    design = lower_stream(g, region_input(g))
    (layer,) = design.layers
    assert (layer.core, layer.pe, layer.simd) == ("const", n, k)
    graph = const_graph(layer)
    assert graph.outputs[n - 1].node is None and len(graph.adders) > 0
    emit_stream_verilog(design, tmp_path / "rtl")
    lint(tmp_path / "rtl")  # raises with Verilator's messages on any warning
    result = simulate(tmp_path / "rtl", x, golden, work_dir=tmp_path / "sim", seed=5)
    assert result.mismatches == 0
    assert np.array_equal(result.outputs, golden)
    assert golden.min() < 0 < golden.max() and len(np.unique(golden)) > 20
    latency, interval = predicted_timing(design)
    assert (result.latency_cycles, result.cycles_per_inference) == (latency, interval)
    assert interval == k // design.input.par  # one vector per cycle once the input is in
