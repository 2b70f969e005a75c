"""precision: the greedy search lowers the request with the least error per cost saved, its
requests become quantize's types, a target rate is reached (or refused naming the closest
feasible one), max_err bounds the error, and bad options are refused with a clear message."""
import math
import re

import pytest

from nnfpga.cli import main
from nnfpga.cost import device_budget, layer_shapes
from nnfpga.devices import DEVICES, pass_device
from nnfpga.errors import PipelineError
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.autofold_plan import plan
from nnfpga.passes.precision import greedy_step, measure, raise_back
from nnfpga.passes.precision_cost import Assignment, Layer

from ir_graphs import seeded_calib, seeded_graph
from onnx_models import mlp, save

MLP = """graph @mlp(%x: tensor<1x32xf32>) {
  const %w0 : tensor<32x24xf32> = @w0
  const %b0 : tensor<24xf32> = @b0
  const %w1 : tensor<24x16xf32> = @w1
  const %b1 : tensor<16xf32> = @b1
  const %w2 : tensor<16x4xf32> = @w2
  const %b2 : tensor<4xf32> = @b2
  %h0 = dense(%x, %w0, %b0) {relu = true} : tensor<1x24xf32>
  %h1 = dense(%h0, %w1, %b1) {relu = true} : tensor<1x16xf32>
  %y = dense(%h1, %w2, %b2) : tensor<1x4xf32>
  return %y
}
"""
DEVICE = "ecp5-25k"


def _ctx(g, count=64, seed=1):
    return PassContext(calib=seeded_calib(g, count, seed), device=DEVICE)


def _run(pipeline):
    g = seeded_graph(MLP)
    ctx = _ctx(g)
    return run_pipeline(g, pipeline, ctx), {r["layer"]: r for r in ctx.report if r["pass"] == "precision"}


class _TableCost:
    """A layer's cost per weight width, summed: a pricer whose answer the test knows."""

    def __init__(self, costs):
        self.costs = costs

    def cost(self, a):
        return sum(table[w] for table, w in zip(self.costs, a.wbits))


def test_greedy_lowers_the_layer_with_least_error_per_cost_saved():
    g = seeded_graph(MLP)
    layers = measure(g, _ctx(g), range(7, 9))
    for l in layers:  # activations: lowering them would cost much error and save nothing
        l.act_error = {7: 100.0, 8: 0.0}
    layers[0].weight_error = {8: 0.0, 7: 1.0}   # +1.0 error for 10 cost saved: 0.1 per unit
    layers[1].weight_error = {8: 0.0, 7: 0.1}   # +0.1 error for 0.5 saved: 0.2 per unit
    layers[2].weight_error = {8: 0.0, 7: 0.01}  # +0.01 error, nothing saved: never chosen
    pricer = _TableCost([{8: 20.0, 7: 10.0}, {8: 1.0, 7: 0.5}, {8: 1.0, 7: 1.0}])
    start = Assignment([8, 8, 8], [8, 8, 8])
    first = greedy_step(start, layers, pricer, range(7, 9))
    assert first.wbits == [7, 8, 8] and first.abits == [8, 8, 8]
    second = greedy_step(first, layers, pricer, range(7, 9))
    assert second.wbits == [7, 7, 8]
    assert greedy_step(second, layers, pricer, range(7, 9)) is None  # only cost-free or costly moves left
    assert greedy_step(start, layers, pricer, range(7, 9), max_err=0.5).wbits == [8, 7, 8]  # 1.0 is over


def test_requests_are_honoured_by_quantize_and_autofold_reaches_the_target():
    fastest = _run("precision{target_fps=1}")[1]["y"]["interval_cycles"]  # every layer at 8 bits
    target = 100e6 / (fastest // 2)  # twice as fast as 8 bits everywhere allows
    q, report = _run(f"precision{{target_fps={target:g}}},quantize,autofold")
    assert max(r["interval_cycles"] for r in report.values()) <= math.floor(100e6 / target)
    assert any(r["wbits"] < 8 or r["abits"] < 8 for r in report.values())
    for node, r in zip((n for n in q.nodes if n.op == "qmatmul"), report.values(), strict=True):  # graph order
        rq = node.output.uses[0][0]
        assert node.inputs[1].type.element.bits == r["wbits"]
        assert rq.output.type.element.bits == r["abits"]
        assert node.attrs.get("core", "dsp") == r["core"] and node.attrs.get("pack", 1) == r["pack"]
    _, est = plan(layer_shapes(q), DEVICES[DEVICE])
    assert est["total"]["interval_cycles"] <= math.floor(100e6 / target)


class _SumOfBitsPricer:
    """A design whose interval is the sum of the layers' weight bits."""

    clock_mhz = 100.0

    def design(self, a):
        return sum(a.wbits), None, None


def test_raise_back_undoes_what_a_lowering_step_overshot():
    errors = {b: 2.0 ** (8 - b) - 1 for b in range(2, 9)}  # 63 at 2 bits .. 0 at 8
    layers = [Layer(None, None, None, False, 1, dict(errors), {b: 0.0 for b in errors}) for _ in range(2)]
    lowered = Assignment([2, 8], [8, 8])  # a step to 2 bits where 4 would have met interval 12
    a, design = raise_back(lowered, (10, None, None), layers, _SumOfBitsPricer(), range(2, 9), 12)
    assert a.wbits == [4, 8] and design[0] == 12
    a, _ = raise_back(lowered, (10, None, None), layers, _SumOfBitsPricer(), range(2, 9), 10)
    assert a.wbits == [2, 8]  # nothing higher meets 10


def test_a_resource_budget_is_met_with_lower_bits():
    whole = _run("precision{target_fps=1}")[1]["y"]["interval_cycles"]  # 8 bits on the whole device
    target = 100e6 / whole
    _, full = _run(f"precision{{target_fps={target:g}}}")
    q, half = _run(f"precision{{target_fps={target:g},budget=0.5}},quantize,autofold{{budget=0.5}}")
    assert all(r["wbits"] == 8 and r["abits"] == 8 for r in full.values())
    assert any(r["wbits"] < 8 or r["abits"] < 8 for r in half.values())
    _, est = plan(layer_shapes(q), pass_device("test", DEVICE, 0.5))
    assert est["total"]["interval_cycles"] <= whole
    for resource, used in est["total"].items():
        if resource in ("luts", "ffs", "dsps", "brams"):
            assert used <= 0.5 * device_budget(DEVICES[DEVICE])[resource], resource


def test_max_err_gives_the_cheapest_found_within_it():
    _, loose = _run("precision{max_err=0.5}")
    _, tight = _run("precision{max_err=0.05}")
    for report, bound in ((loose, 0.5), (tight, 0.05)):
        total = sum(r["error"] for r in report.values())
        assert total <= bound and math.isclose(total, next(iter(report.values()))["total_error"])
    assert sum(r["cost"] for r in loose.values()) < sum(r["cost"] for r in tight.values())
    assert loose["y"]["abits"] == 8  # no layer reads the output: lowering it saves nothing


def test_an_unreachable_target_names_the_closest_feasible_one():
    with pytest.raises(PipelineError) as e:
        _run("precision{target_fps=1e9}")
    closest = re.search(r"precision\{target_fps=(\d+)\}", str(e.value))
    assert closest and "closest feasible" in str(e.value)
    _, report = _run(f"precision{{target_fps={closest.group(1)}}}")  # and that one is met
    assert report["y"]["interval_cycles"] <= math.floor(100e6 / int(closest.group(1)))


@pytest.mark.parametrize("options, words", [
    ("min_bits=1,target_fps=1", "min_bits=1 is outside 2..8"),
    ("max_bits=9,target_fps=1", "max_bits=9 is outside 2..8"),
    ("min_bits=6,max_bits=4,target_fps=1", "min_bits=6 is above max_bits=4"),
    ("", "exactly one objective"),
    ("target_fps=1,max_err=0.1", "exactly one objective"),
    ("max_err=1e-12", "closest feasible is precision{max_err="),
    ("target_fps=1,device=nosuch", "unknown device 'nosuch'"),
    ("target_fps=1,budget=0", "budget=0 must be in (0, 1]"),
    ("target_fps=1,budget=1.5", "budget=1.5 must be in (0, 1]"),
])
def test_bad_options_name_the_problem(options, words):
    with pytest.raises(PipelineError, match=re.escape(words)):
        _run(f"precision{{{options}}}")


def test_precision_after_quantize_is_refused():
    with pytest.raises(PipelineError, match="before quantize"):
        _run("quantize,precision{target_fps=1}")


def test_the_cli_refuses_bad_precision_and_writes_nothing(tmp_path, capsys):
    model = save(mlp((16, 12, 5)), tmp_path / "m.onnx")
    code = main(["compile", str(model), "-o", str(tmp_path / "build"), "--pipeline",
                 "canonicalize,precision{max_bits=9,target_fps=1},quantize,autofold"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert any(line.startswith("error:") and "max_bits=9 is outside 2..8" in line for line in err.splitlines()), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


CNN = """graph @cnn(%x: tensor<1x2x8x8xf32>) {
  const %w0 : tensor<6x2x3x3xf32> = @w0
  const %b0 : tensor<6xf32> = @b0
  const %w1 : tensor<24x3xf32> = @w1
  const %b1 : tensor<3xf32> = @b1
  %c0 = conv(%x, %w0, %b0) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x6x8x8xf32>
  %r0 = relu(%c0) : tensor<1x6x8x8xf32>
  %p0 = maxpool(%r0) {dilations = [1, 1], kernel = [4, 4], pads = [0, 0, 0, 0], strides = [4, 4]} : tensor<1x6x2x2xf32>
  %f = reshape(%p0) {shape = [1, 24]} : tensor<1x24xf32>
  %y = dense(%f, %w1, %b1) : tensor<1x3xf32>
  return %y
}
"""


def test_a_convolution_reads_its_relu_output_bits_through_pool_and_flatten():
    g = seeded_graph(CNN)
    ctx = _ctx(g, count=16)
    q = run_pipeline(g, "precision{max_err=1},quantize,channels_last,autofold", ctx)
    report = {r["layer"]: r for r in ctx.report}
    assert report["y"]["in_bits"] == report["c0"]["abits"]  # the dense reads the conv's relu, pooled, flattened
    conv, dense = (n for n in q.nodes if n.op in ("qconv", "qmatmul"))
    assert conv.inputs[1].type.element.bits == report["c0"]["wbits"]
    assert dense.inputs[0].type.element.bits == report["c0"]["abits"]
    assert dense.inputs[1].type.element.bits == report["y"]["wbits"]
