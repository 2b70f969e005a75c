"""The const core's adder graph (backends/const_graph.py) and its annotation: CSD digits,
exact sums at the input extremes, sharing that saves adders, node widths that hold every
value, and fold{core=const} making a layer fully parallel."""
import numpy as np
import pytest

from nnfpga.backends.const_graph import adder_graph, csd_digits, evaluate
from nnfpga.backends.rtl_layers import DenseLayer, LayerConfigError, check
from nnfpga.hardware import product_multipliers
from nnfpga.frontend import load_onnx
from nnfpga.passes import PassContext, run_pipeline
from onnx_models import mlp


def test_csd_digits_sum_to_the_weight_and_are_never_adjacent():
    for w in range(-255, 256):
        digits = csd_digits(w)
        assert sum(sign << shift for shift, sign in digits) == w
        shifts = [s for s, _ in digits]
        assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:]))
    assert csd_digits(7) == [(0, -1), (3, 1)] and csd_digits(0) == []


@pytest.mark.parametrize("lo, hi", [(-128, 127), (0, 255), (-8, 7)])
def test_the_graph_is_exact_and_its_widths_hold_every_value(lo, hi):
    rng = np.random.default_rng(hi)
    w = np.clip(np.round(rng.normal(0, 30, (12, 10))), -127, 127).astype(np.int64)
    w[3] = 0
    w[:, 4] = 0
    w[5, 6] = -127
    g = adder_graph(w, lo, hi)
    x = rng.integers(lo, hi + 1, (300, 12))
    x[0], x[1] = lo, hi
    x[2] = np.where(w[:, 0] > 0, hi, lo)
    x[3] = np.where(w[:, 0] > 0, lo, hi)
    assert np.array_equal(evaluate(g, x).astype(np.int64), x @ w)
    assert g.outputs[4].node is None
    # every node's value over these inputs lies in its interval, so fits its width
    values = [x[:, k] for k in range(12)]
    for a in g.adders:
        values.append(a.sign_a * values[a.a] + a.sign_b * (values[a.b] << a.shift))
    for node, v in enumerate(values):
        assert g.lo[node] <= v.min() and v.max() <= g.hi[node]
        assert -(1 << (g.width(node) - 1)) <= g.lo[node] and g.hi[node] < (1 << (g.width(node) - 1))


def test_sharing_takes_fewer_adders_than_the_digits_and_is_deterministic():
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (16, 32))
    digits = sum(len(csd_digits(int(v))) for v in w.ravel())
    g = adder_graph(w, -128, 127)
    unshared = digits - sum(1 for col in w.T if any(col))  # one adder fewer than terms per output
    assert len(g.adders) < 0.8 * unshared
    again = adder_graph(w.copy(order="F"), -128, 127)
    assert again.adders == g.adders and again.outputs == g.outputs


def test_fold_core_const_makes_every_layer_fully_parallel():
    g = load_onnx(mlp((6, 4, 3), seed=1))
    calib = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    q = run_pipeline(g, "canonicalize,quantize,fold{pe=1,simd=1,core=const}",
                     PassContext(calib={g.inputs[0].name: calib}))
    layers = [(n.attrs["core"], n.attrs["pe"], n.attrs["simd"]) for n in q.nodes if n.op == "qmatmul"]
    assert layers == [("const", 4, 6), ("const", 3, 4)]
    assert product_multipliers("const", 1, 4, 6) == 0


def test_a_folded_const_layer_is_refused():
    layer = DenseLayer("l", np.ones((4, 2), np.int64), np.zeros(2, np.int64), 8, 8, True, 20,
                       np.ones(2, np.int64), 1, 0, -128, 127, 8, True, pe=1, simd=4, core="const")
    with pytest.raises(LayerConfigError, match="pe=N=2 and simd=K=4"):
        check([layer])
