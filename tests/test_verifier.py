"""The verifier refuses every value the emitters would refuse, on well-typed layers.

Each case parses IR text with one value just past what backends/rtl_layers.py and
backends/hls.py build and checks the verifier's message; the same graph one step inside the
limit verifies and both emitters' checks accept the layer, so a pass whose output verifies
cannot fail at emission on these values.
"""
import numpy as np
import pytest

from nnfpga.backends import hls, rtl_layers
from nnfpga.backends.lower import dense_layer
from nnfpga.errors import IRError, NnfpgaError
from nnfpga.ir import parse, verify
from nnfpga.ir.ops import ADD_MULT_LIMIT, MULT_LIMIT

LAYER = """graph @q(%x: tensor<1x3x!q<{x}, 0.05>>) {{
  const %w : tensor<3x2x!q<{w}, @w.scale, axis=1>> = @w
  const %b : tensor<2xi32> = @b
  %acc = qmatmul(%x, %w, %b) : tensor<1x2x{acc}>
  %y = requant(%acc) {{hi = {hi}, lo = -128, mult = @m, shift = {shift}}} : tensor<1x2x!q<{y}, 0.1, -2>>
  return %y
}}
"""


def layer_text(x="u8", w="i8", acc="i20", y="i8", hi=127, shift=8) -> str:
    return LAYER.format(x=x, w=w, acc=acc, y=y, hi=hi, shift=shift)


def arrays(w=((127, -127), (5, 6), (-1, -2)), b=(100, -5), m=(300, MULT_LIMIT - 1)) -> dict:
    return {"w": np.array(w, np.int64), "w.scale": np.array([0.1, 0.2]), "b": np.array(b, np.int32),
            "m": np.array(m, np.int64)}


def emitters_accept(g) -> None:
    mm, rq = g.nodes
    layer = dense_layer(g, mm, rq, "layer")
    rtl_layers.check([layer])
    hls._check_layer(0, layer)


def refusing_emitters(g) -> set[str]:
    mm, rq = g.nodes
    layer = dense_layer(g, mm, rq, "layer")
    refused = set()
    for name, check in (("rtl", rtl_layers.check), ("hls", lambda layers: hls._check_layer(0, layers[0]))):
        try:
            check([layer])
        except NnfpgaError:
            refused.add(name)
    return refused


def test_the_verifier_and_the_rtl_emitter_share_the_multiplier_width():
    assert MULT_LIMIT == 1 << rtl_layers.MULT_BITS


def test_values_at_every_limit_verify_and_emit():
    # mult 2^21 - 1, weights ±127 in i8, the accumulator exactly as wide as x·W + b needs.
    g = parse(layer_text(acc="i17"), arrays())
    verify(g)
    emitters_accept(g)


# (what changes, text arguments, array arguments, the verifier's message, the emitters that refuse it)
CASES = [
    ("multiplier 2^21", {}, {"m": (300, MULT_LIMIT)},
     r"requant node defining %y: mult @m holds 2097152, beyond the hardware's \[0, 2\^21\); lower the shift",
     {"rtl"}),  # the HLS core multiplies 32-bit multipliers
    ("shift 0", {"shift": 0}, {}, r"requant node defining %y: shift 0 must be in 1\.\.62", {"rtl", "hls"}),
    ("shift 63", {"shift": 63}, {}, r"requant node defining %y: shift 63 must be in 1\.\.62", {"rtl"}),
    ("clamp above the output type", {"hi": 128}, {},
     r"requant node defining %y: clamp \[-128, 128\] must lie within i8", {"rtl", "hls"}),
    ("weight -128 in i8", {}, {"w": ((127, -128), (5, 6), (-1, -2))},
     r"qmatmul node defining %acc: a weight of magnitude 128 lies outside the symmetric range ±127 of "
     r"8-bit weights", {"rtl", "hls"}),
    ("weight -8 in i4", {"w": "i4"}, {"w": ((7, -8), (5, 6), (-1, -2))},
     r"qmatmul node defining %acc: a weight of magnitude 8 lies outside the symmetric range ±7 of 4-bit", {"rtl", "hls"}),
    ("10-bit weights", {"w": "i10"}, {},
     r"qmatmul node defining %acc: weights are i10; the hardware builds 2\.\.8-bit weights", {"rtl", "hls"}),
    ("accumulator one bit short", {"acc": "i16"}, {},
     r"qmatmul node defining %acc: accumulator i16 cannot hold the exact range \[-32900, 33760\]; widen it",
     {"rtl", "hls"}),
    ("40-bit input", {"x": "u40"}, {},
     r"qmatmul node defining %acc: input !q<u40, 0\.05> has 40 bits; the hardware carries activations of "
     r"1\.\.32 bits", {"rtl", "hls"}),
    ("40-bit result", {"y": "i40"}, {},
     r"requant node defining %y: result !q<i40, 0\.1, -2> has 40 bits; the hardware carries activations", {"rtl", "hls"}),
]


@pytest.mark.parametrize("change, text_args, array_args, message, refused", CASES, ids=[c[0] for c in CASES])
def test_a_value_the_emitters_refuse_is_named_by_the_verifier(change, text_args, array_args, message, refused):
    g = parse(layer_text(**text_args), arrays(**array_args))
    with pytest.raises(IRError, match=message):
        verify(g)
    assert refusing_emitters(g) == refused


def test_the_exact_accumulator_bound_uses_the_constant_weights():
    # The same shapes with small weights need far fewer bits than the worst case of i8 weights.
    small = dict(w=((1, -1), (2, 2), (-1, 0)), m=(300, 17))
    g = parse(layer_text(acc="i11"), arrays(**small))
    verify(g)
    emitters_accept(g)
    g = parse(layer_text(acc="i10"), arrays(**small))
    with pytest.raises(IRError, match=r"accumulator i10 cannot hold the exact range \[-260, 865\]"):
        verify(g)
    assert refusing_emitters(g) == {"rtl", "hls"}


QCONV = """graph @c(%x: tensor<1x1x3x3x!q<u8, 0.05>>) {{
  const %w : tensor<2x1x3x3x!q<i8, @w.scale, axis=0>> = @w
  const %b : tensor<2xi32> = @b
  %acc = qconv(%x, %w, %b) {{dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]}} : tensor<1x2x1x1xi20>
  %y = requant(%acc) {{hi = 127, lo = -128, mult = @m, shift = 8}} : tensor<1x2x1x1x!q<i8, 0.1>>
  return %y
}}
"""


def test_qconv_weights_must_be_symmetric():
    w = np.ones((2, 1, 3, 3), np.int64)
    w[1, 0, 2, 2] = -128
    g = parse(QCONV.format(), {"w": w, "w.scale": np.array([0.1, 0.2]), "b": np.zeros(2, np.int32),
                               "m": np.array([1, 2])})
    with pytest.raises(IRError, match=r"qconv node defining %acc: a weight of magnitude 128 lies outside the "
                                      r"symmetric range ±127"):
        verify(g)


QADD = """graph @a(%x: tensor<1x4x!q<{a}, 0.05>>) {{
  %y = qadd(%x, %x) {{hi = 127, lo = -128, ma = {ma}, mb = 3, shift = 4}} : tensor<1x4x!q<i8, 0.1>>
  return %y
}}
"""


@pytest.mark.parametrize("a, ma, message", [
    ("u8", ADD_MULT_LIMIT, r"qadd node defining %y: ma = 65536 must lie in \[0, 2\^16\)"),
    ("u40", 5, r"qadd node defining %y: operand a !q<u40, 0\.05> has 40 bits"),
])
def test_qadd_multipliers_and_widths(a, ma, message):
    verify(parse(QADD.format(a="u8", ma=ADD_MULT_LIMIT - 1)))
    with pytest.raises(IRError, match=message):
        verify(parse(QADD.format(a=a, ma=ma)))


SUMPOOL = """graph @p(%x: tensor<1x2x2x2x!q<{x}, 0.05>>) {{
  %s = sumpool(%x) {{kernel = [2, 2], pads = [0, 0, 0, 0], strides = [1, 1]}} : tensor<1x2x1x1xi44>
  %y = requant(%s) {{hi = 127, lo = -128, mult = @m, shift = 2}} : tensor<1x2x1x1x!q<i8, 0.1>>
  return %y
}}
"""


def test_sumpool_input_width_and_its_requant_multiplier():
    verify(parse(SUMPOOL.format(x="u8"), {"m": np.array([3, 3])}))
    with pytest.raises(IRError, match=r"sumpool node defining %s: input !q<u40, 0\.05> has 40 bits"):
        verify(parse(SUMPOOL.format(x="u40"), {"m": np.array([3, 3])}))
    with pytest.raises(IRError, match=r"requant node defining %y: mult @m holds 2097152"):
        verify(parse(SUMPOOL.format(x="u8"), {"m": np.array([MULT_LIMIT, MULT_LIMIT])}))
