"""The product cores of nnfpga_dense in Verilator at their corners, bit for bit against
onnxruntime: `core = "lut"` (shift-add in logic, nnfpga_mul_lut) and `pack` products per
multiplier (nnfpga_mul_pack: weights at lane offsets, each lane's borrow and the
correction for a negative weight read as raw bits).

One integer layer written as IR text with weights at their extremes (±(2^(wb-1) - 1)),
zeros, ±1, and mixed signs in every packed group; inputs at the type's minimum, maximum
and zero point, each column's accumulator driven to both bounds, then random. Signed and
unsigned inputs, 2- to 8-bit weights, a ragged last group (pe not a multiple of pack).
The requant multiplier is 1 with shift 1 and a wide output clamp, so most outputs carry
the accumulator nearly whole: a product off by one shows.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.bitslices import slice_count
from nnfpga.hardware import folding_cycles
from nnfpga.hw_tests.sim import lint, simulate
from nnfpga.ir import parse
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range

K = 12

CASES = {
    # name: (input element, weight bits, core, pack, pe, N)
    "lut-i8-w8": ("!q<i8, 0.05>", 8, "lut", 1, 2, 4),
    "lut-u8-w2": ("!q<u8, 0.05, 3>", 2, "lut", 1, 4, 4),
    "lut-i4-w5": ("!q<i4, 0.1, -1>", 5, "lut", 1, 1, 3),
    "pack2-u8-w5": ("!q<u8, 0.05, 7>", 5, "dsp", 2, 4, 8),
    "pack2-i8-w8": ("!q<i8, 0.05, -2>", 8, "dsp", 2, 2, 4),
    "pack3-i4-w4-ragged": ("!q<i4, 0.1>", 4, "dsp", 3, 4, 8),
    "pack4-u2-w2": ("!q<u2, 0.5, 1>", 2, "dsp", 4, 4, 4),
}


def element(text: str):
    return parse(f"graph @e(%v: tensor<1x{text}>) {{\n  return %v\n}}").inputs[0].type.element


def corner_weights(wbits: int, n: int, rng) -> np.ndarray:
    """[K, n] weights: every row a mix of the extremes, zero and ±1, the first rows the
    all-max, all-min, alternating and all-zero patterns, so every packed group sees each
    sign combination of its lanes."""
    top = (1 << (wbits - 1)) - 1
    picks = np.array(sorted({top, -top, 0, 1, -1}))
    w = rng.choice(picks, size=(K, n))
    w[0], w[1], w[2] = top, -top, 0
    w[3] = np.where(np.arange(n) % 2, top, -top)
    w[4] = np.where(np.arange(n) % 2, -top, top)
    w[5] = rng.integers(-top, top + 1, size=n)
    return w.astype(np.int8)


def layer_graph(x_type: str, wbits: int, core: str, pack: int, pe: int, n: int, rng, w=None, extra: str = ""):
    x_elem = element(x_type)
    w = corner_weights(wbits, n, rng) if w is None else w
    b = (rng.integers(-50, 50, size=n) - x_elem.zero_point * w.astype(np.int64).sum(0)).astype(np.int32)
    acc = int_type_for_range(*accumulator_bounds(x_elem, w, b))
    arrays = {"w": w, "b": b, "ws": np.full(n, 0.01), "m": np.ones(n, np.int64)}
    text = (f"graph @cores(%x: tensor<1x{K}x{x_type}>) {{\n"
            f"  const %w : tensor<{K}x{n}x!q<i{wbits}, @ws, axis=1>> = @w\n"
            f"  const %b : tensor<{n}xi32> = @b\n"
            f"  %a = qmatmul(%x, %w, %b) {{core = \"{core}\", pack = {pack}, pe = {pe}, simd = 4{extra}}} : "
            f"tensor<1x{n}x{acc!r}>\n"
            f"  %y = requant(%a) {{hi = 32767, lo = -32768, mult = @m, shift = 1}} : tensor<1x{n}x!q<i16, 1.0>>\n"
            "  return %y\n}")
    return parse(text, arrays), x_elem, w


def corner_inputs(x_elem, w, count: int, rng) -> np.ndarray:
    rows = [np.full(K, x_elem.min), np.full(K, x_elem.max), np.full(K, x_elem.zero_point)]
    rows.append(np.where(np.arange(K) % 2, x_elem.min, x_elem.max))
    for col in range(w.shape[1]):
        rows.append(np.where(w[:, col] > 0, x_elem.max, x_elem.min))
        rows.append(np.where(w[:, col] > 0, x_elem.min, x_elem.max))
    rows += list(rng.integers(x_elem.min, x_elem.max + 1, size=(count, K)))
    return np.stack(rows).astype(np.int64)


@pytest.mark.parametrize("case", list(CASES))
def test_product_core_corners_are_bit_exact(tmp_path, case):
    rng = np.random.default_rng(sorted(CASES).index(case))
    x_type, wbits, core, pack, pe, n = CASES[case]
    g, x_elem, w = layer_graph(x_type, wbits, core, pack, pe, n, rng)
    x = corner_inputs(x_elem, w, 100, rng)
    golden = run_reference(to_reference_onnx(g), {"x": x})["y"].reshape(len(x), n)
    design = lower_stream(g, region_input(g))
    layer = design.layers[0]
    assert (layer.core, layer.pack, layer.pe) == (core, pack, pe)
    emit_stream_verilog(design, tmp_path / "rtl")
    top = (tmp_path / "rtl" / "nnfpga_top.sv").read_text()
    assert f'.CORE("{core}")' in top and f".PACK({pack})" in top
    lint(tmp_path / "rtl")  # raises with Verilator's messages on any warning
    result = simulate(tmp_path / "rtl", x, golden, work_dir=tmp_path / "sim", seed=5)
    assert result.mismatches == 0
    assert np.array_equal(result.outputs, golden)
    # the outputs are not clamped flat: the accumulators spread over both signs
    assert golden.min() < 0 < golden.max() and len(np.unique(golden)) > 20


BITSERIAL_CASES = {
    # name: (input element, weight bits, slice bits, skip, pe, N)
    "bitserial-i8-w8-s1": ("!q<i8, 0.05>", 8, 1, 1, 2, 6),
    "bitserial-u8-w5-s2": ("!q<u8, 0.05, 3>", 5, 2, 1, 3, 6),
    "bitserial-i4-w8-s4": ("!q<i4, 0.1, -1>", 8, 4, 1, 1, 3),
    "bitserial-u4-w3-s2-noskip": ("!q<u4, 0.1, 2>", 3, 2, 0, 2, 4),
}


def sparse_corner_weights(wbits: int, n: int, pe: int, rng) -> np.ndarray:
    """The corner weights with an all-zero output fold (the second one), an all-zero input
    fold (inputs 4..7) in the first, and elsewhere only small magnitudes in some columns, so
    whole tiles and the high slices of tiles are zero."""
    w = corner_weights(wbits, n, rng).astype(np.int64)
    w[:, pe:2 * pe] = 0
    w[4:8, :pe] = 0
    w[8:, -1] = np.clip(w[8:, -1], -1, 1)
    return w.astype(np.int8)


@pytest.mark.parametrize("case", list(BITSERIAL_CASES))
def test_bitserial_core_corners_are_bit_exact(tmp_path, case):
    rng = np.random.default_rng(sorted(BITSERIAL_CASES).index(case))
    x_type, wbits, slice_bits, skip, pe, n = BITSERIAL_CASES[case]
    w = sparse_corner_weights(wbits, n, pe, rng)
    g, x_elem, w = layer_graph(x_type, wbits, "bitserial", 1, pe, n, rng, w=w,
                               extra=f", slice = {slice_bits}, skip = {skip}")
    x = corner_inputs(x_elem, w, 100, rng)
    golden = run_reference(to_reference_onnx(g), {"x": x})["y"].reshape(len(x), n)
    design = lower_stream(g, region_input(g))
    layer = design.layers[0]
    assert (layer.core, layer.slice_bits, layer.skip_zero) == ("bitserial", slice_bits, bool(skip))
    tiles = folding_cycles(layer)
    every = (n // pe) * (K // 4) * slice_count(wbits, slice_bits)
    assert tiles == every if not skip else tiles < every
    emit_stream_verilog(design, tmp_path / "rtl")
    top = (tmp_path / "rtl" / "nnfpga_top.sv").read_text()
    assert '.CORE("bitserial")' in top and f".TILES({tiles})" in top
    lint(tmp_path / "rtl")  # raises with Verilator's messages on any warning
    result = simulate(tmp_path / "rtl", x, golden, work_dir=tmp_path / "sim", seed=5)
    assert result.mismatches == 0
    assert np.array_equal(result.outputs, golden)
    # one layer: an inference takes the tiles the schedule lists, or the input's beats
    assert result.cycles_per_inference == design.interval == max(tiles, K // design.input.par)
    assert golden.min() < 0 < golden.max() and len(np.unique(golden)) > 20
