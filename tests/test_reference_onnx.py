"""The reference ONNX model runs bit-exactly with the IR interpreter in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from nnfpga.backends.reference_onnx import make_session, run_reference, to_reference_onnx
from nnfpga.errors import NnfpgaError
from nnfpga.ir import parse, run_batch
from nnfpga.ir.ops import OPS, OpDef, accumulator_bounds
from nnfpga.ir.types import IntType, int_type_for_range

MODES = ["double", "integer"]


def _cpu_has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def skip_saturating_matmulinteger(matmul: str, x_unsigned: bool) -> None:
    """onnxruntime's MatMulInteger saturates u8·s8 product pairs at 16 bits on x86 without
    VNNI (backends/reference_onnx.py); extreme u8 inputs then come out wrong there, which is
    why "double" is the reference's default."""
    if matmul == "integer" and x_unsigned and not _cpu_has_vnni():
        pytest.skip("MatMulInteger u8·s8 is inexact on this CPU (no VNNI); the 'double' mode is exact")


# -- building quantized IR graphs as text ---------------------------------------------------
def _storage(text: str) -> IntType:
    return IntType(int(text[1:]), text[0] == "i")


def chain(x_type: str, layers: list[dict], rng, in_shape=None, float_io=False, tail_reshape=None):
    """IR text + arrays for quantize? -> (reshape? -> qmatmul -> requant)* -> reshape? -> dequantize?.

    `x_type` is the input's quantized element (e.g. "!q<i8, 0.05, -3>"); each layer gives
    k, n, wbits, out (output element), mult (array), shift, relu, pre_reshape (shape list)."""
    arrays: dict[str, np.ndarray] = {}
    k0 = layers[0]["k"]
    shape = in_shape or [1, k0]
    dims = "x".join(map(str, shape))
    if float_io:
        head = f"graph @t(%x: tensor<{dims}xf32>) {{"
        body = [f"  %a_in = quantize(%x) : tensor<{dims}x{x_type}>"]
    else:
        head = f"graph @t(%a_in: tensor<{dims}x{x_type}>) {{"
        body = []
    consts = []
    cur, cur_elem = "a_in", x_type
    cur_q = _parse_elem(x_type)
    for idx, L in enumerate(layers):
        k, n, wbits = L["k"], L["n"], L["wbits"]
        if L.get("pre_reshape"):
            for j, s in enumerate(L["pre_reshape"]):
                nm = f"r{idx}_{j}"
                body.append(f"  %{nm} = reshape(%{cur}) {{shape = [{', '.join(map(str, s))}]}} : "
                            f"tensor<{'x'.join(map(str, s))}x{cur_elem}>")
                cur = nm
        wmax = 2 ** (wbits - 1) - 1
        w = rng.integers(-wmax, wmax + 1, size=(k, n)).astype(np.int8)
        w[0, :] = wmax  # make every column reach the extremes
        w[1, :] = -wmax
        b = rng.integers(-5000, 5000, size=n).astype(np.int32) - cur_q.zero_point * w.astype(np.int32).sum(0)
        arrays[f"w{idx}"], arrays[f"b{idx}"] = w, b.astype(np.int32)
        arrays[f"w{idx}_scale"] = rng.uniform(0.01, 0.1, size=n)
        lo, hi = accumulator_bounds(cur_q, w, b)
        acc = int_type_for_range(lo, hi)  # the tightest accumulator: extreme inputs reach its bounds
        consts.append(f"  const %w{idx} : tensor<{k}x{n}x!q<i{wbits}, @w{idx}_scale, axis=1>> = @w{idx}")
        consts.append(f"  const %b{idx} : tensor<{n}xi32> = @b{idx}")
        body.append(f"  %acc{idx} = qmatmul(%{cur}, %w{idx}, %b{idx}) : tensor<1x{n}x{acc!r}>")
        out = _parse_elem(L["out"])
        arrays[f"m{idx}"] = np.asarray(L["mult"], np.int64)
        lo_y = out.zero_point if L.get("relu") else out.min
        body.append(f"  %y{idx} = requant(%acc{idx}) {{hi = {out.max}, lo = {lo_y}, mult = @m{idx}, "
                    f"shift = {L['shift']}}} : tensor<1x{n}x{L['out']}>")
        cur, cur_elem, cur_q = f"y{idx}", L["out"], out
    if tail_reshape:
        body.append(f"  %y = reshape(%{cur}) {{shape = [{', '.join(map(str, tail_reshape))}]}} : "
                    f"tensor<{'x'.join(map(str, tail_reshape))}x{cur_elem}>")
        cur = "y"
    else:
        body = [line.replace(f"%{cur} =", "%y =") for line in body]
        cur = "y"
    if float_io:
        out_dims = "x".join(map(str, tail_reshape or [1, layers[-1]["n"]]))
        body.append(f"  %z = dequantize(%y) : tensor<{out_dims}xf32>")
        body.append("  return %z")
    else:
        body.append("  return %y")
    text = "\n".join([head] + consts + body + ["}"])
    return parse(text, arrays)


def _parse_elem(text: str):
    g = parse(f"graph @e(%v: tensor<1x{text}>) {{\n  return %v\n}}")
    return g.inputs[0].type.element


def random_inputs(g, count, rng, extremes=True):
    """Uniform samples over the input's whole storage range, plus the per-column extremes."""
    v = g.inputs[0]
    q = v.type.element
    x = rng.integers(q.min, q.max + 1, size=(count,) + v.type.shape, dtype=np.int64)
    if extremes:
        first = next(n for n in g.nodes if n.op == "qmatmul")
        w = g.const_data(first.inputs[1]).astype(np.int64)
        rows = [np.full(v.type.size, q.min), np.full(v.type.size, q.max)]
        if v.type.size == w.shape[0]:
            for col in range(w.shape[1]):
                rows.append(np.where(w[:, col] > 0, q.max, q.min))  # acc at its upper bound
                rows.append(np.where(w[:, col] > 0, q.min, q.max))  # ... at its lower bound
        x = np.concatenate([np.stack(rows).reshape((-1,) + v.type.shape), x])
    return x


def assert_bitexact(g, feeds, matmul="double", optimize=False):
    model = to_reference_onnx(g, matmul=matmul)
    got = run_reference(model, feeds, optimize=optimize)
    want = run_batch(g, feeds)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape
        assert got[name].dtype == np.int64
        mismatch = np.argwhere(got[name] != want[name])
        assert mismatch.size == 0, f"{name}: {len(mismatch)} mismatches, first at {mismatch[0]}"
    return model, got


# -- the 3-layer chain ----------------------------------------------------------------------
def three_layers(rng, big_mult=True, **kw):
    layers = [
        # i8 input with a nonzero zero point -> u8 with ReLU (lo == zp), large multipliers.
        dict(k=16, n=12, wbits=8, out="!q<u8, 0.1, 7>", relu=True, shift=24,
             mult=rng.integers(2**15, 2**16, 12) if big_mult else rng.integers(1, 4, 12)),
        # u8 input -> i8 without ReLU, 4-bit weights, small multipliers and shift, via reshapes.
        dict(k=12, n=10, wbits=4, out="!q<i8, 0.2, -5>", shift=3, mult=rng.integers(1, 4, 10),
             pre_reshape=[[2, 6], [1, 12]]),
        # i8 -> a 4-bit signed output (stored in int8), ReLU at zp = 1.
        dict(k=10, n=8, wbits=8, out="!q<i4, 0.3, 1>", relu=True, shift=12,
             mult=rng.integers(100, 2000, 8)),
    ]
    return chain("!q<i8, 0.05, -3>", layers, rng, tail_reshape=[2, 4], **kw)


@pytest.mark.parametrize("matmul", MODES)
def test_three_layer_chain_bitexact(matmul):
    rng = np.random.default_rng(1)
    g = three_layers(rng)
    x = random_inputs(g, 1000, rng)
    model, got = assert_bitexact(g, {"a_in": x}, matmul)
    assert got["y"].shape == (len(x), 2, 4)
    # The outputs use the whole clamp range, the ReLU floor included.
    assert got["y"].min() == 1 and got["y"].max() == 7
    assert [i.name for i in model.graph.input] == ["a_in"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8


def test_three_layer_chain_small_multipliers():
    rng = np.random.default_rng(2)
    g = three_layers(rng, big_mult=False)
    assert_bitexact(g, {"a_in": random_inputs(g, 1000, rng)})


@pytest.mark.parametrize("matmul", MODES)
@pytest.mark.parametrize("x_type", ["!q<u8, 0.02, 17>", "!q<i8, 0.05, -128>", "!q<u4, 0.3, 3>",
                                    "!q<i8, 0.05>"])
def test_single_layer_accumulator_bounds(matmul, x_type):
    """All-min / all-max / per-column extreme inputs drive the tightest accumulator to both bounds."""
    skip_saturating_matmulinteger(matmul, x_type.startswith("!q<u8"))
    rng = np.random.default_rng(3)
    g = chain(x_type, [dict(k=64, n=6, wbits=8, out="!q<i8, 0.5, 3>", shift=30,
                            mult=rng.integers(2**15, 2**16, 6))], rng)
    x = random_inputs(g, 1000, rng)
    assert_bitexact(g, {"a_in": x}, matmul)
    node = g.nodes[0]
    lo, hi = accumulator_bounds(node.inputs[0].type.element, g.const_data(node.inputs[1]),
                                g.const_data(node.inputs[2]))
    acc = run_batch(g, {"a_in": x}, keep_all=True)["acc0"]
    assert (acc.min(), acc.max()) == (lo, hi)  # the exact accumulator range is reached


@pytest.mark.parametrize("matmul", MODES)
def test_int32_accumulator_at_its_limit(matmul):
    """K = 66000 u8 inputs at 255 times weights at ±127, biased to int32's very ends."""
    skip_saturating_matmulinteger(matmul, x_unsigned=True)
    k = 66000
    w = np.empty((k, 2), np.int8)
    w[:, 0], w[:, 1] = 127, -127
    top = 255 * 127 * k
    b = np.array([2**31 - 1 - top, -(2**31) + top], np.int32)
    arrays = {"w": w, "b": b, "ws": np.ones(2), "m": np.array([2**16 - 1, 2**16 - 3])}
    g = parse("graph @big(%x: tensor<1x66000x!q<u8, 0.1>>) {\n"
              "  const %w : tensor<66000x2x!q<i8, @ws, axis=1>> = @w\n"
              "  const %b : tensor<2xi32> = @b\n"
              "  %a = qmatmul(%x, %w, %b) : tensor<1x2xi32>\n"
              "  %y = requant(%a) {hi = 32767, lo = -32768, mult = @m, shift = 33} : tensor<1x2x!q<i16, 0.1>>\n"
              "  return %a, %y\n}", arrays)
    rng = np.random.default_rng(12)
    x = np.concatenate([np.full((1, 1, k), 255), np.zeros((1, 1, k)), rng.integers(0, 256, (20, 1, k))])
    _, got = assert_bitexact(g, {"x": x}, matmul)
    assert got["a"][0, 0].tolist() == [2**31 - 1, -(2**31)]


def test_batch_of_one_axis_may_be_dropped():
    rng = np.random.default_rng(4)
    g = three_layers(rng)
    x = random_inputs(g, 50, rng)
    model = to_reference_onnx(g)
    a = run_reference(model, {"a_in": x})            # [B, 1, 16]
    b = run_reference(model, {"a_in": x[:, 0, :]})   # [B, 16]
    assert np.array_equal(a["y"], b["y"])
    session = make_session(model)
    assert np.array_equal(run_reference(session, {"a_in": x})["y"], a["y"])


@pytest.mark.parametrize("optimize", [False, True])
def test_optimisation_level_does_not_change_results(optimize):
    rng = np.random.default_rng(5)
    g = three_layers(rng)
    assert_bitexact(g, {"a_in": random_inputs(g, 300, rng)}, optimize=optimize)


def test_float_graph_with_quantize_and_dequantize():
    """Reference input = the quantize result, output = what feeds dequantize."""
    rng = np.random.default_rng(6)
    g = three_layers(rng, float_io=True)
    model = to_reference_onnx(g)
    assert [v.name for v in model.graph.input] == ["a_in"]
    assert [v.name for v in model.graph.output] == ["y"]
    x = rng.normal(0, 3, size=(500, 1, 16)).astype(np.float32)
    env = run_batch(g, {"x": x}, keep_all=True)
    got = run_reference(model, {"a_in": env["a_in"]})
    assert np.array_equal(got["y"], env["y"])


@pytest.mark.parametrize("matmul", MODES)
def test_transpose_and_reshape_before_qmatmul(matmul):
    rng = np.random.default_rng(13)
    arrays = {"w": rng.integers(-127, 128, (6, 5)).astype(np.int8),
              "b": rng.integers(-999, 999, 5).astype(np.int32), "ws": np.ones(5), "m": np.arange(1, 6) * 999}
    g = parse("graph @tr(%x: tensor<2x3x!q<i8, 0.1, 4>>) {\n"
              "  const %w : tensor<6x5x!q<i8, @ws, axis=1>> = @w\n"
              "  const %b : tensor<5xi32> = @b\n"
              "  %t = transpose(%x) {perm = [1, 0]} : tensor<3x2x!q<i8, 0.1, 4>>\n"
              "  %r = reshape(%t) {shape = [1, 6]} : tensor<1x6x!q<i8, 0.1, 4>>\n"
              "  %a = qmatmul(%r, %w, %b) : tensor<1x5xi20>\n"
              "  %y = requant(%a) {hi = 255, lo = 9, mult = @m, shift = 16} : tensor<1x5x!q<u8, 0.1, 9>>\n"
              "  return %y\n}", arrays)
    assert_bitexact(g, {"x": rng.integers(-128, 128, (1000, 2, 3))}, matmul)


def test_accumulator_as_output_is_cast_to_its_storage():
    rng = np.random.default_rng(7)
    arrays = {"w": rng.integers(-7, 8, (8, 4)).astype(np.int8), "b": np.arange(4, dtype=np.int32),
              "ws": np.ones(4)}
    g = parse("graph @acc(%x: tensor<1x8x!q<u4, 0.1>>) {\n"
              "  const %w : tensor<8x4x!q<i4, @ws, axis=1>> = @w\n"
              "  const %b : tensor<4xi32> = @b\n"
              "  %a = qmatmul(%x, %w, %b) : tensor<1x4xi12>\n"
              "  return %a\n}", arrays)
    for matmul in MODES:
        model, _ = assert_bitexact(g, {"x": rng.integers(0, 16, (200, 1, 8))}, matmul)
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT16


# -- requantization: ties, extremes, the 2^53 limit -------------------------------------------
def requant_graph(acc_bits, mult, shift, out="!q<i8, 0.1>", lo=None, hi=None):
    q = _parse_elem(out)
    n = len(mult)
    lo = q.min if lo is None else lo
    hi = q.max if hi is None else hi
    return parse(f"graph @r(%a: tensor<1x{n}xi{acc_bits}>) {{\n"
                 f"  %y = requant(%a) {{hi = {hi}, lo = {lo}, mult = @m, shift = {shift}}} : "
                 f"tensor<1x{n}x{out}>\n  return %y\n}}", {"m": np.asarray(mult, np.int64)})


@pytest.mark.parametrize("matmul", MODES)
def test_rounding_is_half_up_at_ties(matmul):
    """acc·M + 2^(s-1) exactly a multiple of 2^s: x.5 rounds up, also for negative x.5."""
    g = requant_graph(16, [1, 3, 5], 1)  # acc·M/2: ties at every odd acc·M
    acc = np.array([[-3, -1, 1], [3, -3, -1], [-1, 1, 3]])
    want = np.floor(acc * np.array([1, 3, 5]) / 2 + 0.5).astype(np.int64)
    assert want.tolist() == [[-1, -1, 3], [2, -4, -2], [0, 2, 8]]  # -1.5 -> -1, -4.5 -> -4, 0.5 -> 1
    model, got = assert_bitexact(g, {"a": acc}, matmul)
    assert np.array_equal(got["y"][:, 0, :], want)

    # Ties with a large shift: M = odd·2^e and acc = odd'·2^(s-1-e) make acc·M = odd''·2^(s-1)
    # exactly; one below and one above each tie too.
    s = 20
    m = np.array([2**15 + 1, 3 * 2**10, 2**16 - 1])
    e = np.array([0, 10, 0])
    odd = np.arange(-15, 16, 2).reshape(-1, 1)
    ties = odd * 2 ** (s - 1 - e)
    acc = np.concatenate([ties, ties - 1, ties + 1])
    assert np.all(((acc[: len(odd)] * m) + 2 ** (s - 1)) % 2**s == 0)
    g = requant_graph(24, m, s, out="!q<i16, 0.1>")
    assert_bitexact(g, {"a": acc}, matmul)


def test_ties_exactly_at_every_residue():
    """M = 1: acc/2^s + 0.5 hits every residue mod 2^s, ties included, for both signs."""
    for s in (1, 2, 5, 8):
        acc = np.arange(-3 * 2**s, 3 * 2**s + 1).reshape(-1, 1)
        g = requant_graph(16, [1], s, out="!q<i16, 0.1>")
        _, got = assert_bitexact(g, {"a": acc})
        assert np.array_equal(got["y"][:, 0, 0], (acc[:, 0] + 2 ** (s - 1)) >> s)


@pytest.mark.parametrize("s", [1, 20, 33, 40, 52, 53, 54, 55, 62])
def test_products_near_two_to_the_53(s):
    """|acc·M| up to just below 2^53 (the verifier's limit), any shift: a 38-bit accumulator
    times the largest multiplier the hardware takes (2^16 - 1)."""
    bits = 38
    m_max = (2**53 - 1) // 2 ** (bits - 1)  # largest M with 2^37·M < 2^53
    assert m_max == 2**16 - 1
    mult = [m_max, m_max - 1, 40961, 1, 7]
    g = requant_graph(bits, mult, s, out="!q<i8, 0.1, 3>", lo=-100)
    rng = np.random.default_rng(s)
    acc = rng.integers(-(2**37), 2**37, (2000, 5))
    acc[:4] = [[-(2**37)] * 5, [2**37 - 1] * 5, [-1] * 5, [1] * 5]
    assert_bitexact(g, {"a": acc})


def test_products_beyond_two_to_the_53_are_refused():
    with pytest.raises(NnfpgaError, match="2\\^53"):
        to_reference_onnx(requant_graph(40, [2**15], 40))


def test_property_requant_matches_interpreter():
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hyp.settings(max_examples=40, deadline=None)
    @hyp.given(bits=st.integers(2, 38), shift=st.integers(1, 62), zp=st.integers(-128, 127),
               data=st.data())
    def prop(bits, shift, zp, data):
        m_max = min((2**53 - 1) // 2 ** (bits - 1), 2**16 - 1)
        mult = data.draw(st.lists(st.integers(0, m_max), min_size=1, max_size=4))
        lo = data.draw(st.integers(-128, 127))
        hi = data.draw(st.integers(lo, 127))
        g = requant_graph(bits, mult, shift, out=f"!q<i8, 0.1, {zp}>", lo=lo, hi=hi)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        acc = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (64, len(mult)))
        acc[0], acc[1] = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        assert_bitexact(g, {"a": acc})

    prop()


# -- the model itself -------------------------------------------------------------------------
def test_model_is_valid_deterministic_and_readable():
    g1 = three_layers(np.random.default_rng(9))
    g2 = three_layers(np.random.default_rng(9))
    m1, m2 = to_reference_onnx(g1), to_reference_onnx(g2)
    assert m1.SerializeToString() == m2.SerializeToString()
    onnx.checker.check_model(m1, full_check=True)
    assert m1.ir_version <= 10 and m1.opset_import[0].version == 13
    ops = [n.op_type for n in m1.graph.node]
    assert ops.count("MatMul") == 3 and ops.count("Floor") == 3 and ops.count("Reshape") == 3
    assert "MatMulInteger" in [n.op_type for n in to_reference_onnx(g1, matmul="integer").graph.node]
    names = {t for n in m1.graph.node for t in n.output}
    assert {"y0", "y1", "y2", "y"} <= names
    dim = m1.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"
    assert m1.graph.input[0].doc_string == "tensor<1x16x!q<i8, 0.05, -3>>"


# -- errors -------------------------------------------------------------------------------------
def test_float_op_between_dequantize_and_quantize_is_refused():
    rng = np.random.default_rng(10)
    g = three_layers(rng, float_io=True)
    text = ("graph @split(%x: tensor<1x4xf32>) {\n"
            "  %q = quantize(%x) : tensor<1x4x!q<i8, 0.1>>\n"
            "  %r = reshape(%q) {shape = [4, 1]} : tensor<4x1x!q<i8, 0.1>>\n"
            "  %d = dequantize(%r) : tensor<4x1xf32>\n"
            "  %f = relu(%d) : tensor<4x1xf32>\n"
            "  %q2 = quantize(%f) : tensor<4x1x!q<u8, 0.1>>\n"
            "  %r2 = reshape(%q2) {shape = [1, 4]} : tensor<1x4x!q<u8, 0.1>>\n"
            "  %z = dequantize(%r2) : tensor<1x4xf32>\n"
            "  return %z\n}")
    with pytest.raises(NnfpgaError, match="float op.*relu node defining %f"):
        to_reference_onnx(parse(text))
    assert to_reference_onnx(g)  # the well-formed graph goes through


def test_unsupported_integer_op_is_refused(monkeypatch):
    monkeypatch.setitem(OPS, "qpool", OpDef("qpool", (1, 1)))
    text = ("graph @p(%x: tensor<1x4x!q<i8, 0.1>>) {\n"
            "  %y = qpool(%x) : tensor<1x4x!q<i8, 0.1>>\n  return %y\n}")
    with pytest.raises(NnfpgaError, match="qpool.*supports only qmatmul, requant, reshape, transpose"):
        to_reference_onnx(parse(text))


def test_unquantized_graph_is_refused():
    text = ("graph @f(%x: tensor<1x4xf32>) {\n"
            "  %y = relu(%x) : tensor<1x4xf32>\n  return %y\n}")
    with pytest.raises(NnfpgaError, match="no integer region"):
        to_reference_onnx(parse(text))


def test_wide_accumulator_is_refused():
    arrays = {"w": np.ones((4, 2), np.int8), "b": np.zeros(2, np.int32), "ws": np.ones(2)}
    g = parse("graph @wide(%x: tensor<1x4x!q<i8, 0.1>>) {\n"
              "  const %w : tensor<4x2x!q<i8, @ws, axis=1>> = @w\n"
              "  const %b : tensor<2xi32> = @b\n"
              "  %a = qmatmul(%x, %w, %b) : tensor<1x2xi40>\n  return %a\n}", arrays)
    with pytest.raises(NnfpgaError, match="wider than 32 bits"):
        to_reference_onnx(g)


def test_integer_matmul_needs_8_bit_inputs():
    arrays = {"w": np.ones((4, 2), np.int8), "b": np.zeros(2, np.int32), "ws": np.ones(2)}
    g = parse("graph @i16(%x: tensor<1x4x!q<i12, 0.1>>) {\n"
              "  const %w : tensor<4x2x!q<i8, @ws, axis=1>> = @w\n"
              "  const %b : tensor<2xi32> = @b\n"
              "  %a = qmatmul(%x, %w, %b) : tensor<1x2xi24>\n  return %a\n}", arrays)
    with pytest.raises(NnfpgaError, match="8-bit inputs"):
        to_reference_onnx(g, matmul="integer")
    rng = np.random.default_rng(11)
    assert_bitexact(g, {"x": rng.integers(-2048, 2048, (300, 1, 4))})  # fine in double


def test_input_outside_storage_is_refused():
    g = requant_graph(8, [3], 2)
    with pytest.raises(NnfpgaError, match="outside"):
        run_reference(to_reference_onnx(g), {"a": np.array([[300]])})
    with pytest.raises(NnfpgaError, match=r"IR type's range \[-128, 127\]"):
        run_reference(to_reference_onnx(g), {"a": np.array([[-129]])})
    g = chain("!q<u4, 0.1>", [dict(k=4, n=2, wbits=4, out="!q<i8, 0.1>", shift=8, mult=[3, 5])],
              np.random.default_rng(0))
    with pytest.raises(NnfpgaError, match=r"\[0, 15\]"):
        run_reference(to_reference_onnx(g), {"a_in": np.array([[16, 0, 0, 0]])})
