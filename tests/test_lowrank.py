"""lowrank: SVD factors, the energy bound on the reconstruction error, the rewrite against the
interpreter, MACs accounting, rank choice by budget, and bad options."""
from pathlib import Path

import numpy as np
import pytest

from nnfpga.errors import PipelineError
from nnfpga.ir import run_batch, verify
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.lowrank import factor_layer, factors

from ir_graphs import seeded_graph

MLP = """graph @mlp(%x: tensor<1x24xf32>) {
  const %w0 : tensor<24x16xf32> = @w0
  const %b0 : tensor<16xf32> = @b0
  const %w1 : tensor<16x6xf32> = @w1
  const %b1 : tensor<6xf32> = @b1
  %h = dense(%x, %w0, %b0) {relu = true} : tensor<1x16xf32>
  %y = dense(%h, %w1, %b1) : tensor<1x6xf32>
  return %y
}
"""

CNN = """graph @cnn(%x: tensor<1x3x8x8xf32>) {
  const %w0 : tensor<12x3x3x3xf32> = @w0
  const %b0 : tensor<12xf32> = @b0
  const %w1 : tensor<10x12x3x3xf32> = @w1
  const %b1 : tensor<10xf32> = @b1
  %c0 = conv(%x, %w0, %b0) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x12x8x8xf32>
  %r0 = relu(%c0) : tensor<1x12x8x8xf32>
  %c1 = conv(%r0, %w1, %b1) {dilations = [2, 2], group = 1, pads = [1, 2, 1, 0], strides = [2, 1]} : tensor<1x10x3x6xf32>
  return %c1
}
"""


def _feeds(g, count=32, seed=1):
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal((count,) + v.type.shape[1:]).astype(np.float32) for v in g.inputs}


def _lowrank(g, options):
    ctx = PassContext()
    return run_pipeline(g, f"lowrank{{{options}}}", ctx), {r["layer"]: r for r in ctx.report}


def _out(g, feeds):
    return next(iter(run_batch(g, feeds).values()))


@pytest.mark.parametrize("shape", [(24, 16), (7, 40), (64, 64)])
@pytest.mark.parametrize("energy", [0.5, 0.8, 0.95, 0.99])
def test_error_is_bounded_by_energy(shape, energy):
    # Eckart-Young: the rank-r truncation's squared error is the dropped σ², at most (1 - energy)·Σσ².
    text = f"""graph @d(%x: tensor<1x{shape[0]}xf32>) {{
  const %w : tensor<{shape[0]}x{shape[1]}xf32> = @w
  const %b : tensor<{shape[1]}xf32> = @b
  %y = dense(%x, %w, %b) : tensor<1x{shape[1]}xf32>
  return %y
}}
"""
    g = seeded_graph(text, seed=shape[0] + int(energy * 100))
    after, report = _lowrank(g, f"energy={energy}")
    r = report["y"]
    w = g.const_data(g.constants[0]).astype(np.float64)
    sigma = np.linalg.svd(w, compute_uv=False)
    assert r["rank"] >= 1 and (sigma[:r["rank"]] ** 2).sum() >= energy * (sigma ** 2).sum() - 1e-9
    assert r["rank"] == 1 or (sigma[:r["rank"] - 1] ** 2).sum() < energy * (sigma ** 2).sum()  # the fewest
    if r["factored"]:
        assert 0 < r["rel_error"] <= np.sqrt(1 - energy) + 1e-6
        u, v = (after.const_data(c) for c in after.constants if c.name in ("y_u", "y_v"))
        measured = np.linalg.norm(w - u.astype(np.float64) @ v) / np.linalg.norm(w)
        assert measured == pytest.approx(r["rel_error"], rel=1e-4)
    else:
        assert r["rel_error"] == 0 and r["macs_after"] == r["macs_before"]


def test_factors_split_sigma_evenly():
    w = np.random.default_rng(3).standard_normal((20, 9))
    u, v = factors(w, 9)
    np.testing.assert_allclose(u @ v, w, atol=1e-12)
    # sqrt(σ) on each side: the column norms of U equal the row norms of V.
    np.testing.assert_allclose(np.linalg.norm(u, axis=0), np.linalg.norm(v, axis=1), rtol=1e-12)


@pytest.mark.parametrize("text", [MLP, CNN], ids=["dense", "conv"])
def test_full_rank_factorization_is_exact(text):
    g = seeded_graph(text)
    feeds = _feeds(g)
    before = _out(g, feeds)
    after = g.clone()
    for node in [n for n in after.nodes if n.op in ("dense", "conv")]:
        k = node.inputs[1].type.shape
        full = min(k) if node.op == "dense" else min(k[0], int(np.prod(k[1:])))
        factor_layer(after, node, full)
    verify(after)
    assert sum(n.op in ("dense", "conv") for n in after.nodes) == 4
    np.testing.assert_allclose(_out(after, feeds), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("text", [MLP, CNN], ids=["dense", "conv"])
def test_error_shrinks_as_energy_grows(text):
    g = seeded_graph(text)
    feeds = _feeds(g)
    before = _out(g, feeds)
    errors = []
    for energy in (0.3, 0.6, 0.8):
        after, report = _lowrank(g, f"energy={energy}")
        assert any(r["factored"] for r in report.values())
        errors.append(np.linalg.norm(_out(after, feeds) - before) / np.linalg.norm(before))
    assert errors[0] > errors[1] > errors[2] > 0


def test_macs_and_weights_accounting():
    g = seeded_graph(CNN)
    after, report = _lowrank(g, "rank=c0:2+c1:5")
    c0, c1 = report["c0"], report["c1"]
    # c0: K = 3·3·3 = 27, N = 12, 64 output pixels; c1: K = 12·3·3 = 108, N = 10, 3·6 pixels
    assert (c0["k"], c0["n"], c0["vectors"]) == (27, 12, 64)
    assert (c0["macs_before"], c0["macs_after"]) == (27 * 12 * 64, 2 * (27 + 12) * 64)
    assert (c0["weights_before"], c0["weights_after"]) == (27 * 12, 2 * 39)
    assert (c1["macs_before"], c1["macs_after"]) == (108 * 10 * 18, 5 * 118 * 18)
    shapes = {n.output.name: n.output.type.shape for n in after.nodes}
    assert shapes["c0_proj"] == (1, 2, 8, 8) and shapes["c1_proj"] == (1, 5, 3, 6)
    proj = next(n for n in after.nodes if n.output.name == "c1_proj")
    assert proj.attrs == {"dilations": [2, 2], "group": 1, "pads": [1, 2, 1, 0], "strides": [2, 1]}
    second = next(n for n in after.nodes if n.output.name == "c1")
    assert second.inputs[1].type.shape == (10, 5, 1, 1) and second.attrs["strides"] == [1, 1]


def test_layers_that_save_no_macs_are_kept():
    g = seeded_graph(MLP)
    # y is 16x6: factoring saves MACs only for r < 96/22 = 4.36
    after, report = _lowrank(g, "rank=5")
    assert not report["y"]["factored"] and "saves no MACs" in report["y"]["note"]
    assert report["h"]["factored"] and report["h"]["rank"] == 5
    assert [n.output.name for n in after.nodes] == ["h_proj", "h", "y"]


def test_grouped_conv_is_left_alone():
    text = CNN.replace("tensor<10x12x3x3xf32>", "tensor<10x6x3x3xf32>").replace("group = 1, pads = [1, 2", "group = 2, pads = [1, 2")
    g = seeded_graph(text)
    after, report = _lowrank(g, "energy=0.5")
    assert not report["c1"]["factored"] and "group = 2" in report["c1"]["note"]
    assert report["c0"]["factored"]


@pytest.mark.parametrize("fraction", [0.75, 0.5, 0.25])
def test_macs_budget_is_met(fraction):
    g = seeded_graph(CNN)
    after, report = _lowrank(g, f"macs={fraction}")
    before = sum(r["macs_before"] for r in report.values())
    kept = sum(r["macs_after"] for r in report.values())
    assert kept <= fraction * before
    # the least cost within the budget: no rank left one higher would still fit it
    largest_step = max((r["k"] + r["n"]) * r["vectors"] for r in report.values())
    assert kept > fraction * before - max(largest_step, *(r["macs_before"] for r in report.values()))


def test_macs_budget_drops_the_cheapest_singular_values_first():
    # Layer a's weights are nearly rank 2; b's spectrum is flat: a budget both could meet is met on a.
    text = """graph @two(%x: tensor<1x32xf32>) {
  const %wa : tensor<32x32xf32> = @wa
  const %ba : tensor<32xf32> = @ba
  const %wb : tensor<32x32xf32> = @wb
  const %bb : tensor<32xf32> = @bb
  %a = dense(%x, %wa, %ba) : tensor<1x32xf32>
  %b = dense(%a, %wb, %bb) : tensor<1x32xf32>
  return %b
}
"""
    g = seeded_graph(text)
    rng = np.random.default_rng(5)
    low = rng.standard_normal((32, 2)) @ rng.standard_normal((2, 32)) + 1e-3 * rng.standard_normal((32, 32))
    g.arrays["wa"] = low.astype(np.float32)
    g.arrays["wb"] = np.linalg.qr(rng.standard_normal((32, 32)))[0].astype(np.float32)  # all σ = 1
    _, report = _lowrank(g, "macs=0.55")
    assert report["a"]["factored"] and report["a"]["rank"] <= 3
    assert not report["b"]["factored"]


@pytest.mark.parametrize("options, words", [
    ("energy=0", ["energy=0.0", "(0, 1]"]),
    ("energy=1.5", ["energy=1.5", "(0, 1]"]),
    ("macs=1.2", ["macs=1.2", "(0, 1]"]),
    ("macs=-0.5", ["macs=-0.5", "(0, 1]"]),
    ("rank=0", ["rank=0", "at least 1"]),
    ("rank=h:17", ["rank 17", "layer h", "1..16"]),
    ("rank=h:0", ["rank 0", "layer h", "1..16"]),
    ("rank=fc9:3", ["'fc9'", "layers: h, y"]),
    ("rank=h:x", ["rank of layer h", "integer"]),
    ("rank=three", ["rank", "integer"]),
    ("rank=4,macs=0.5", ["rank or macs"]),
    ("rank=4,hw=1,macs=0.5", ["rank or macs"]),
    ("hw=1", ["hw=1 needs one target", "macs=F or cycles=F"]),
    ("hw=1,macs=0.5,cycles=0.5", ["hw=1 needs one target"]),
    ("hw=2,macs=0.5", ["hw=2", "0 or 1"]),
    ("cycles=0.5", ["cycles= is a target of hw=1"]),
    ("hw=1,cycles=1.5", ["cycles=1.5", "(0, 1]"]),
    ("macs=0.01", ["macs=0.01", "out of reach", "allowed"]),
])
def test_bad_options_name_the_problem(options, words):
    g = seeded_graph(MLP)
    with pytest.raises(PipelineError) as e:
        _lowrank(g, options)
    for word in words:
        assert word in str(e.value)


MNIST_MLP = Path(__file__).resolve().parents[1] / "examples" / "mnist_mlp" / "model.onnx"


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _no_idle_lanes(k, n, vectors, interval):
    """Some pe | n, simd | k folds the k->n stage into exactly `interval` cycles (every lane busy)."""
    return any(vectors * (n // pe) * (k // simd) == interval for pe in _divisors(n) for simd in _divisors(k))


def test_hw_ranks_use_every_lane_and_beat_macs_in_predicted_cycles():
    # The MNIST MLP at 75% of the MACs: macs= takes the 784x256 layer to rank 134, which the
    # folding cannot spread over its lanes without waste; hw=1 takes a rank both factored stages
    # fold into the chosen interval exactly, in no more MACs, and the design is predicted faster.
    from nnfpga.devices import DEVICES
    from nnfpga.frontend import load_onnx
    from nnfpga.passes.lowrank_ranks import factorable_layers
    from nnfpga.passes.lowrank_hw import predicted_cycles

    g = run_pipeline(load_onnx(MNIST_MLP), "canonicalize")
    layers, dev = factorable_layers(g), DEVICES["ecp5-85k"]
    _, plain = _lowrank(g, "macs=0.75")
    ctx = PassContext(device="ecp5-85k")
    run_pipeline(g, "lowrank{hw=1,macs=0.75}", ctx)
    hw = {r["layer"]: r for r in ctx.report}
    decided = next(iter(hw.values()))["hw"]
    assert decided["device"] == "ecp5-85k"
    factored = [r for r in hw.values() if r["factored"]]
    assert factored
    for r in factored:
        assert _no_idle_lanes(r["k"], r["rank"], r["vectors"], decided["interval"])
        assert _no_idle_lanes(r["rank"], r["n"], r["vectors"], decided["interval"])

    def cycles(report):
        return predicted_cycles(layers, {name: r["rank"] for name, r in report.items() if r["factored"]}, dev)

    def macs(report):
        return sum(r["macs_after"] for r in report.values())

    total = sum(r["macs_before"] for r in hw.values())
    assert macs(hw) <= 0.75 * total and macs(plain) <= 0.75 * total
    assert cycles(hw) == decided["predicted_cycles"] < cycles(plain) < decided["unfactored_cycles"] + 1


def test_hw_cycles_target_is_met():
    from nnfpga.frontend import load_onnx

    g = run_pipeline(load_onnx(MNIST_MLP), "canonicalize")
    ctx = PassContext(device="ecp5-85k")
    run_pipeline(g, "lowrank{hw=1,cycles=0.5}", ctx)
    decided = ctx.report[0]["hw"]
    assert decided["predicted_cycles"] <= 0.5 * decided["unfactored_cycles"]
    assert any(r["factored"] for r in ctx.report)
