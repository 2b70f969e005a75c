"""The requantizer (nnfpga_requant inside nnfpga_dense) in Verilator at its corners, bit for
bit against onnxruntime.

One integer layer written as IR text, `y = clamp(zp + ((acc·M + 2^(s-1)) >> s), lo, hi)`,
with inputs that drive every accumulator to both of its bounds: outputs clamp at both
ends, rounding meets its ties, zero points are negative and positive, the shift ranges
from 1 to beyond the product's width, and the output is as narrow as 2 bits. The
accumulator is as narrow as one 18x18 multiplier takes and wider (acc·M split into a low
17-bit unsigned and a signed high piece), up to 30 bits, with M up to 2^16 - 1 and up to
2^21 - 1 (its bits above the 17 a multiplier port takes are added in fabric).
"""
from __future__ import annotations

import numpy as np
import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.hardware import requant_pieces
from nnfpga.hw_tests.sim import simulate
from nnfpga.ir import parse
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range

K, N = 12, 4

CASES = {
    # name: (input element, output element, fused relu, multiplier range, shift, |weight| max,
    #        |bias| max, multipliers per lane for acc·M (nnfpga.hardware.requant_pieces))
    "u8-relu-wide-range": ("!q<i8, 0.05, -3>", "!q<u8, 0.1, 7>", True, (2**15, 2**16), 21, 127, 25 * 127, 1),
    "i8-negative-zp": ("!q<u8, 0.02, 17>", "!q<i8, 0.2, -100>", False, (2**14, 2**16), 22, 127, 25 * 127, 2),
    # small products: most outputs inside the clamp, every odd acc·M a tie that rounds up
    "shift-1-ties": ("!q<i4, 0.3, 1>", "!q<i8, 0.3, -3>", False, (1, 6), 1, 1, 25, 1),
    "u2-relu": ("!q<i8, 0.05>", "!q<u2, 0.5, 1>", True, (100, 2000), 14, 127, 25 * 127, 2),
    "shift-beyond-product": ("!q<u4, 0.1, 2>", "!q<i8, 0.1, 5>", False, (1, 3), 40, 127, 25 * 127, 1),
    # one multiplier at its widest: acc of 18 bits times M up to 2^16 - 1
    "acc-18-one-multiplier": ("!q<i4, 0.1, -2>", "!q<i8, 0.1, 3>", False, (2**15, 2**16), 23, 7, 2**16, 1),
    # acc of 30 bits: a 13-bit signed high piece; large and small shifts; relu at a negative zero point
    "acc-30-split-large-shift": ("!q<i8, 0.05>", "!q<i8, 0.1, -20>", True, (2**16 - 64, 2**16), 36, 127, 2**28, 2),
    "acc-30-split-small-shift": ("!q<u8, 0.05, 3>", "!q<i8, 0.1, -7>", False, (1, 2**16), 2, 127, 2**28, 2),
    # M of 21 bits: its top 4 bits multiplied in fabric, beside one multiplier and beside a split;
    # outputs inside the clamp as well as at both of its ends
    "wide-m-one-multiplier": ("!q<i8, 0.1, -2>", "!q<i8, 0.1, 3>", False, (2**20 - 2**18, 2**21), 28, 60, 3000, 1),
    "wide-m-acc-30-split": ("!q<u8, 0.05, 3>", "!q<i8, 0.1, -7>", False, (1, 2**21), 40, 127, 2**28, 2),
}


def element(text: str):
    """The quantized element type written as `text`, e.g. "!q<u8, 0.1, 7>"."""
    return parse(f"graph @e(%v: tensor<1x{text}>) {{\n  return %v\n}}").inputs[0].type.element


def layer_graph(x_type: str, out_type: str, relu: bool, mult_range: tuple[int, int], shift: int, wmax: int,
                bias: int, rng):
    x_elem, out = element(x_type), element(out_type)
    w = rng.integers(-wmax, wmax + 1, size=(K, N)).astype(np.int8)
    w[0], w[1] = wmax, -wmax
    b = rng.integers(-bias, bias, size=N)
    b[0], b[1] = bias, -bias
    b = (b - x_elem.zero_point * w.astype(np.int64).sum(0)).astype(np.int32)
    acc = int_type_for_range(*accumulator_bounds(x_elem, w, b))
    arrays = {"w": w, "b": b, "ws": np.full(N, 0.01), "m": rng.integers(*mult_range, size=N)}
    lo = out.zero_point if relu else out.min
    text = (f"graph @rq(%x: tensor<1x{K}x{x_type}>) {{\n"
            f"  const %w : tensor<{K}x{N}x!q<i8, @ws, axis=1>> = @w\n"
            f"  const %b : tensor<{N}xi32> = @b\n"
            f"  %a = qmatmul(%x, %w, %b) {{pe = 2, simd = 4}} : tensor<1x{N}x{acc!r}>\n"
            f"  %y = requant(%a) {{hi = {out.max}, lo = {lo}, mult = @m, shift = {shift}}} : "
            f"tensor<1x{N}x{out_type}>\n"
            "  return %y\n}")
    return parse(text, arrays), x_elem, w


def corner_inputs(x_elem, w, count: int, rng) -> np.ndarray:
    """All-min, all-max, each column's accumulator at its upper and lower bound, then random."""
    rows = [np.full(K, x_elem.min), np.full(K, x_elem.max)]
    for col in range(N):
        rows.append(np.where(w[:, col] > 0, x_elem.max, x_elem.min))
        rows.append(np.where(w[:, col] > 0, x_elem.min, x_elem.max))
    rows += list(rng.integers(x_elem.min, x_elem.max + 1, size=(count, K)))
    return np.stack(rows).astype(np.int64)


@pytest.mark.parametrize("case", list(CASES))
def test_requantizer_corners_are_bit_exact(tmp_path, case):
    rng = np.random.default_rng(sorted(CASES).index(case))
    *params, pieces = CASES[case]
    g, x_elem, w = layer_graph(*params, rng)
    x = corner_inputs(x_elem, w, 120, rng)
    golden = run_reference(to_reference_onnx(g), {"x": x})["y"].reshape(len(x), N)
    design = lower_stream(g, region_input(g))
    layers = design.layers
    assert requant_pieces(layers[0].acc_bits) == pieces, layers[0].acc_bits
    if case == "acc-18-one-multiplier":
        assert layers[0].acc_bits == 18 and layers[0].mult.max() >= 2**16 - 2**12
    if case.startswith("wide-m"):
        assert layers[0].mult_bits == 21
    emit_stream_verilog(design, tmp_path / "rtl")
    result = simulate(tmp_path / "rtl", x, golden, work_dir=tmp_path / "sim", seed=3)
    assert result.mismatches == 0
    assert np.array_equal(result.outputs, golden)
    out = g.outputs[0].type.element
    if case == "shift-beyond-product":
        assert set(golden.ravel().tolist()) == {out.zero_point}
    else:  # the corners reach both ends of the clamp
        assert golden.min() == (out.zero_point if CASES[case][2] else out.min) and golden.max() == out.max
    if case == "shift-1-ties":  # and most outputs are rounded, not clamped
        assert np.mean((golden > out.min) & (golden < out.max)) > 0.5
    if case.startswith("wide-m"):  # the fabric rows reach outputs inside the clamp
        assert np.mean((golden > out.min) & (golden < out.max)) > 0.2
