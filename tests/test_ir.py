"""IR core: types, text round trip, verifier messages, graph editing, exact integer kernels."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from nnfpga.errors import IRError
from nnfpga.ir import F32, Graph, IntType, QuantType, TensorType, parse, print_graph, run, verify
from nnfpga.ir.interpreter import quantize_array, requantize_array

QGRAPH = """graph @q(%x: tensor<1x4x!q<u8, 0.05>>) {{
  const %w : tensor<4x3x!q<i8, @w.scale, axis=1>> = @w
  const %b : tensor<3xi32> = @b
  %acc = qmatmul(%x, %w, %b) : tensor<1x3xi{acc}>
  %y = requant(%acc) {{hi = 127, lo = -128, mult = @m, shift = 8}} : tensor<1x3x!q<i8, 0.1, -2>>
  return %y
}}
"""


def qarrays():
    return {"w": np.array([[127, -127, 1], [5, 6, 7], [-1, -2, -3], [0, 0, 127]], np.int8),
            "w.scale": np.array([0.1, 0.2, 0.3]), "b": np.array([100, -5, 0], np.int32),
            "m": np.array([300, 17, 65535])}


def test_types_print_as_their_syntax():
    assert repr(TensorType((1, 64), F32)) == "tensor<1x64xf32>"
    assert repr(IntType(24, True)) == "i24" and repr(IntType(4, False)) == "u4"
    assert repr(QuantType(IntType(8, True), 0.05, -3)) == "!q<i8, 0.05, -3>"
    assert repr(QuantType(IntType(8, True), "w.scale", 0, 1)) == "!q<i8, @w.scale, axis=1>"


def test_quant_type_invariants():
    with pytest.raises(IRError, match="zero point"):
        QuantType(IntType(8, False), 0.1, 300)
    with pytest.raises(IRError, match="positive"):
        QuantType(IntType(8, True), 0.0)


def test_round_trip_and_verify():
    text = QGRAPH.format(acc=20)
    g = parse(text, qarrays())
    verify(g)
    assert print_graph(g) == text
    assert print_graph(g.clone()) == text


def test_accumulator_too_narrow_is_named():
    g = parse(QGRAPH.format(acc=8), qarrays())
    with pytest.raises(IRError, match=r"qmatmul node defining %acc: accumulator i8 cannot hold"):
        verify(g)


def test_acc_times_mult_beyond_float64_exactness():
    arrays = qarrays()
    arrays["m"] = np.array([2**16 - 1, 1, 1])  # the largest multiplier; the accumulator type decides
    g = parse(QGRAPH.format(acc=40), arrays)
    with pytest.raises(IRError, match="2\\^53"):
        verify(g)


@pytest.mark.parametrize("text, message", [
    ("graph @g(%x: tensor<1x4xf32>) {\n  %y = relu(%z) : tensor<1x4xf32>\n  return %y\n}\n", "%z is not defined"),
    ("graph @g(%x: tensor<1x4xf32>) {\n  %y = frob(%x) : tensor<1x4xf32>\n  return %y\n}\n", "unknown op 'frob'"),
    ("graph @g(%x: tensor<1x4xf32>) {\n  %y = relu(%x) : tensor<1x5xf32>\n  return %y\n}\n", "result shape"),
    ("graph @g(%x: tensor<1x4xf32>) {\n  %y = relu(%x) {perm = [1]} : tensor<1x4xf32>\n  return %y\n}\n", "unknown attribute 'perm'"),
    ("graph @g(%x: tensor<1x4xf32>) {\n  %y = relu(%x) : tensor<1x4xf32>\n  return %y\n", "closing"),
    ("graph @g(%x: tensor<1x4xq32>) {\n}\n", "element type"),
])
def test_bad_ir_gets_actionable_errors(text, message):
    with pytest.raises(IRError, match=message):
        verify(parse(text))


def test_graph_editing_keeps_use_lists():
    g = Graph("g")
    x = g.add_input("x", TensorType((1, 4), F32))
    a = g.add_node("relu", [x], [x.type]).output
    b = g.add_node("relu", [a], [x.type]).output
    g.outputs = [b]
    verify(g)
    g.replace_all_uses(a, x)
    with pytest.raises(IRError, match="still used"):
        g.remove_node(b.producer)
    g.remove_node(a.producer)
    verify(g)
    assert x.uses == [(b.producer, 0)]
    b.producer.inputs[0] = b  # editing inputs directly leaves the use-lists stale
    with pytest.raises(IRError):
        verify(g)


def test_requant_rounds_half_up_with_floor_shift():
    # (acc·M + 2^(s-1)) >> s with M = 1, s = 1: acc/2 rounded half up, negative ties toward +inf.
    acc = np.array([3, 1, -1, -3, 5, -5])
    assert requantize_array(acc, np.ones(6, np.int64), 1, 0, -100, 100).tolist() == [2, 1, 0, -1, 3, -2]
    assert requantize_array(np.array([10**6]), np.array([1]), 1, 5, -128, 127).tolist() == [127]


@given(st.lists(st.integers(-2**24, 2**24), min_size=1, max_size=16),
       st.integers(0, 2**16 - 1), st.integers(1, 30))
def test_requant_matches_exact_rational_rounding(accs, mult, shift):
    from fractions import Fraction
    import math
    got = requantize_array(np.array(accs), np.full(len(accs), mult), shift, 0, -2**40, 2**40)
    want = [math.floor(Fraction(a * mult, 2**shift) + Fraction(1, 2)) for a in accs]
    assert got.tolist() == want


def test_quantize_rounds_half_to_even_and_clamps():
    q = QuantType(IntType(8, True), 0.5, 3)
    assert quantize_array(np.array([0.25, 0.75, -1000.0, 1000.0]), q).tolist() == [3, 5, -128, 127]


def test_interpreter_runs_integer_graph_exactly():
    g = parse(QGRAPH.format(acc=20), qarrays())
    x = np.array([[255, 0, 17, 255]])
    y = run(g, {"x": x})["y"]
    acc = x @ qarrays()["w"].astype(np.int64) + qarrays()["b"]
    want = np.clip(-2 + ((acc * qarrays()["m"] + 128) >> 8), -128, 127)
    assert np.array_equal(y, want)
