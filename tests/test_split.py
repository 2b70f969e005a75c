"""split: the float rewrite keeps the model's meaning, the LUT part takes the channels that lose
least, lut_bits=8 gives the unsplit model's integers, the permutation folds through channel-wise
ops into the next layer, and bad options or layers are refused with a clear message."""

import numpy as np
import pytest

from nnfpga.cli import main
from nnfpga.errors import PipelineError
from nnfpga.ir import run_batch
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.split import auto_ratio, channel_errors

from ir_graphs import seeded_calib, seeded_graph
from onnx_models import mlp, save

MLP = """graph @mlp(%x: tensor<1x12xf32>) {
  const %w0 : tensor<12x10xf32> = @w0
  const %b0 : tensor<10xf32> = @b0
  const %w1 : tensor<10x8xf32> = @w1
  const %b1 : tensor<8xf32> = @b1
  const %w2 : tensor<8x4xf32> = @w2
  const %b2 : tensor<4xf32> = @b2
  %h0 = dense(%x, %w0, %b0) {relu = true} : tensor<1x10xf32>
  %h1 = dense(%h0, %w1, %b1) {relu = true} : tensor<1x8xf32>
  %y = dense(%h1, %w2, %b2) : tensor<1x4xf32>
  return %y
}
"""

# conv -> relu -> max pool -> pad -> conv -> relu -> average pool -> flatten -> dense
CNN = """graph @cnn(%x: tensor<1x2x8x8xf32>) {
  const %w0 : tensor<6x2x3x3xf32> = @w0
  const %b0 : tensor<6xf32> = @b0
  const %w1 : tensor<5x6x3x3xf32> = @w1
  const %b1 : tensor<5xf32> = @b1
  const %w2 : tensor<20x3xf32> = @w2
  const %b2 : tensor<3xf32> = @b2
  %c0 = conv(%x, %w0, %b0) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x6x8x8xf32>
  %r0 = relu(%c0) : tensor<1x6x8x8xf32>
  %p0 = maxpool(%r0) {dilations = [1, 1], kernel = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x6x4x4xf32>
  %d0 = pad(%p0) {pads = [0, 0, 1, 1, 0, 0, 1, 1]} : tensor<1x6x6x6xf32>
  %c1 = conv(%d0, %w1, %b1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x5x4x4xf32>
  %r1 = relu(%c1) : tensor<1x5x4x4xf32>
  %a1 = avgpool(%r1) {kernel = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x5x2x2xf32>
  %f = reshape(%a1) {shape = [1, 20]} : tensor<1x20xf32>
  %y = dense(%f, %w2, %b2) : tensor<1x3xf32>
  return %y
}
"""

RESIDUAL = """graph @res(%x: tensor<1x3x6x6xf32>) {
  const %w0 : tensor<3x3x3x3xf32> = @w0
  const %b0 : tensor<3xf32> = @b0
  %c0 = conv(%x, %w0, %b0) {dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x3x6x6xf32>
  %s = add(%c0, %x) : tensor<1x3x6x6xf32>
  return %s
}
"""


def _run(g, pipeline, calib):
    ctx = PassContext(calib=calib)
    return run_pipeline(g, pipeline, ctx), {r["layer"]: r for r in ctx.report if r["pass"] == "split"}


def _out(g, feeds):
    return next(iter(run_batch(g, feeds).values()))


@pytest.mark.parametrize("text", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("ratio", ["0.3", "0.5", "auto"])
def test_the_float_split_computes_the_same_function(text, ratio):
    g = seeded_graph(text)
    calib = seeded_calib(g)
    s, report = _run(g, f"split{{ratio={ratio}}}", calib)
    assert sum(n.op == "concat" for n in s.nodes) == sum(r["split"] for r in report.values()) >= 1
    np.testing.assert_allclose(_out(s, calib), _out(g, calib), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("ratio", ["0.25", "0.5", "0.75"])
def test_lut_bits_8_gives_the_unsplit_models_integers(text, ratio):
    g = seeded_graph(text)
    calib = seeded_calib(g)
    plain, _ = _run(g, "canonicalize,quantize", calib)  # canonicalize folds the pad into the conv
    split, report = _run(g, f"canonicalize,split{{ratio={ratio},lut_bits=8}},quantize", calib)
    assert any(r["split"] for r in report.values())
    values_plain, values_split = run_batch(plain, calib, keep_all=True), run_batch(split, calib, keep_all=True)
    out = plain.outputs[0].producer.inputs[0].name  # the last requant's integers
    assert split.outputs[0].producer.inputs[0].name == out
    assert values_split[out].dtype.kind == "i" and np.array_equal(values_split[out], values_plain[out])


def test_the_lut_part_takes_the_channels_that_lose_least_at_lut_bits():
    g = seeded_graph(MLP)
    calib = seeded_calib(g)
    node = next(n for n in g.nodes if n.output.name == "h0")
    error = channel_errors(g, node, calib["x"], 3)
    s, report = _run(g, "split{ratio=0.4,lut_bits=3,layers=h0}", calib)
    lut = s.const_data(next(n for n in s.nodes if n.output.name == "h0_lut").inputs[1])
    w = g.const_data(node.inputs[1])
    chosen = [int(np.flatnonzero((w == lut[:, [j]]).all(axis=0))[0]) for j in range(lut.shape[1])]
    assert len(chosen) == report["h0"]["lut_channels"] == 4
    assert max(error[chosen]) <= min(np.delete(error, chosen))
    # the measure: the mean squared difference of the channel's output, weights at 3 bits (±3)
    column = w[:, 7].astype(np.float64)
    step = np.abs(column).max() / 3
    direct = np.mean((calib["x"].astype(np.float64) @ (column - np.rint(column / step) * step)) ** 2)
    assert error[7] == pytest.approx(direct, rel=1e-9)


def test_quantize_makes_the_parts_at_their_bits_and_keeps_their_cores():
    g = seeded_graph(MLP)
    calib = seeded_calib(g)
    q, _ = _run(g, "split{ratio=0.5,lut_bits=4,layers=h0},quantize", calib)
    parts = {n.outputs[0].name: n for n in q.nodes if n.op == "qmatmul"}
    lut, dsp = parts["h0_lut_acc"], parts["h0_dsp_acc"]
    assert (lut.attrs["core"], lut.attrs["part_of"], lut.inputs[1].type.element.storage.bits) == ("lut", "h0", 4)
    assert (dsp.attrs["core"], dsp.attrs["part_of"], dsp.inputs[1].type.element.storage.bits) == ("dsp", "h0", 8)
    assert "core" not in parts["h1_acc"].attrs and "wbits" not in lut.attrs
    err_split = np.abs(_out(q, calib) - _out(g, calib)).max()
    assert err_split < 0.15 * np.abs(_out(g, calib)).max()


@pytest.mark.parametrize("ratio, core, bits", [("0", "dsp", 8), ("1", "lut", 4), ("0.01", "dsp", 8)])
def test_a_ratio_that_leaves_one_core_empty_annotates_the_whole_layer(ratio, core, bits):
    g = seeded_graph(MLP)
    s, report = _run(g, f"split{{ratio={ratio},layers=h0+h1}}", seeded_calib(g))
    assert not any(n.op == "concat" for n in s.nodes)
    for name in ("h0", "h1"):
        node = next(n for n in s.nodes if n.output.name == name)
        assert (node.attrs["core"], node.attrs["wbits"]) == (core, bits)
        assert not report[name]["split"] and core in report[name]["note"]


def test_ratio_1_puts_every_layer_on_the_lut_core_even_the_output_layer():
    g = seeded_graph(MLP)
    s, report = _run(g, "split{ratio=1,lut_bits=4}", seeded_calib(g))
    assert [(n.attrs["core"], n.attrs["wbits"]) for n in s.nodes if n.op == "dense"] == [("lut", 4)] * 3
    assert all(not r["split"] for r in report.values())


def test_auto_ratio_gives_cheaper_lut_products_a_larger_share():
    g = seeded_graph(MLP)
    ratios = [auto_ratio(g, bits, "ecp5-85k") for bits in (2, 4, 8)]
    assert 0 < ratios[2] < ratios[1] < ratios[0] < 1
    # the small part has 28 DSPs for 24k LUTs: its LUTs carry a larger share than the 85k's
    assert auto_ratio(g, 4, "ecp5-25k") > auto_ratio(g, 4, "ecp5-85k")


def test_the_default_leaves_a_layer_whose_order_cannot_be_restored_whole():
    g = seeded_graph(MLP)
    _, report = _run(g, "split{ratio=0.5}", seeded_calib(g))
    assert report["h0"]["split"] and report["h1"]["split"]
    assert not report["y"]["split"] and "model output" in report["y"]["note"]


@pytest.mark.parametrize("text, options, words", [
    (MLP, "lut_bits=1", ["lut_bits=1", "2..8"]),
    (MLP, "lut_bits=9", ["lut_bits=9", "2..8"]),
    (MLP, "ratio=1.5", ["ratio=1.5", "[0, 1]"]),
    (MLP, "ratio=-0.1", ["ratio=-0.1", "[0, 1]"]),
    (MLP, "ratio=half", ["ratio=half", "auto or a number"]),
    (MLP, "layers=fc9", ["'fc9'", "layers: h0, h1, y"]),
    (MLP, "layers=y", ["layer y", "model output"]),
    (RESIDUAL, "layers=c0", ["layer c0", "the add defining %s", "does not treat its channels alike"]),
    (MLP.replace("10", "1").replace("12x1x", "12x1x"), "layers=h0", ["layer h0", "1 output channel"]),
])
def test_bad_options_and_layers_name_the_problem(text, options, words):
    g = seeded_graph(text)
    with pytest.raises(PipelineError) as e:
        run_pipeline(g, f"split{{{options}}}", PassContext(calib=seeded_calib(g)))
    for word in words:
        assert word in str(e.value)


def test_split_after_quantize_is_refused():
    g = seeded_graph(MLP)
    with pytest.raises(PipelineError, match="before quantize"):
        run_pipeline(g, "quantize,split", PassContext(calib=seeded_calib(g)))


@pytest.mark.parametrize("shape, pipeline, message", [
    ((16, 12, 5), "canonicalize,split{lut_bits=9},quantize", "lut_bits=9 is outside 2..8"),
    ((16, 12, 5), "canonicalize,split{ratio=2},quantize", "ratio=2 is outside [0, 1]"),
    ((16, 12, 1), "canonicalize,split{layers=h1},quantize", "1 output channel"),
    ((16, 12, 5), "canonicalize,split{layers=h1},quantize", "model output"),
])
def test_the_cli_refuses_bad_splits_and_writes_nothing(tmp_path, capsys, shape, pipeline, message):
    model = save(mlp(shape), tmp_path / "m.onnx")
    code = main(["compile", str(model), "-o", str(tmp_path / "build"), "--pipeline", pipeline])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert any(line.startswith("error:") and message in line for line in err.splitlines()), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
