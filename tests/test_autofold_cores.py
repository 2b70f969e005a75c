"""autofold's choice of core and pack per layer (cores=dsp+lut+bitserial+const, pack=1|N|auto).

Every figure here is the cost model's (nnfpga.cost); bench/cores_table.py holds the designs
to Verilator's cycles and yosys's resources."""
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import predicted_timing
from nnfpga.bitslices import nonzero_tiles
from nnfpga.ir import verify
from onnx_models import mlp

from nnfpga.builddir import load_npz, match_inputs
from nnfpga.cost import estimate, layer_shapes
from nnfpga.devices import DEVICES
from nnfpga.errors import PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.autofold import _whole_design
from nnfpga.passes.autofold_plan import plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def quantized():
    """model folder -> its quantized, channels-last IR (before any folding)."""
    cache = {}

    def get(model: str):
        if model not in cache:
            g = load_onnx(EXAMPLES / model / "model.onnx")
            calib = match_inputs(g, load_npz(EXAMPLES / model / "calib.npz", "calibration"), "calibration data")
            cache[model] = run_pipeline(g, "canonicalize,quantize,channels_last", PassContext(calib=calib))
        return cache[model]
    return get


def autofolded(graph, options: str):
    return run_pipeline(graph, f"autofold{{{options}}}", PassContext())


def whole(g, device: str) -> dict:
    """The estimate of the whole design the folded graph lowers to."""
    return _whole_design(g)(layer_shapes(g), DEVICES[device])


def folding(g) -> list[tuple]:
    return [(l.pe, l.simd, l.window, l.core, l.pack) for l in layer_shapes(g)]


def test_cores_dsp_is_the_folding_without_cores(quantized):
    g = quantized("digits_mlp")
    default = autofolded(g, "device=ecp5-85k")
    explicit = autofolded(g, "device=ecp5-85k,cores=dsp,pack=1")
    assert folding(default) == folding(explicit) == [(1, 64, 1, "dsp", 1), (1, 32, 1, "dsp", 1), (1, 8, 1, "dsp", 1)]
    # plan without choices (each layer's own core) is the same search
    g = g.clone()
    chosen, _ = plan(layer_shapes(g), DEVICES["ecp5-85k"], whole=_whole_design(g))
    assert [(l.pe, l.simd) for l in chosen] == [(1, 64), (1, 32), (1, 8)]


def test_mnist_mlp_dsp_only_keeps_its_interval(quantized):
    g = autofolded(quantized("mnist_mlp"), "device=ecp5-85k,cores=dsp")
    assert whole(g, "ecp5-85k")["total"]["interval_cycles"] == 2048
    assert {l.core for l in layer_shapes(g)} == {"dsp"}


@pytest.mark.parametrize("model,device", [("digits_mlp", "ecp5-25k"), ("mnist_mlp", "ecp5-85k"),
                                          ("mnist_mlp", "xc7z020")])
def test_dsp_plus_lut_is_faster_where_dsps_bind(quantized, model, device):
    g = quantized(model)
    dsp = whole(autofolded(g, f"device={device},cores=dsp"), device)
    mixed_graph = autofolded(g, f"device={device},cores=dsp+lut")
    mixed = whole(mixed_graph, device)
    assert dsp["utilization"]["dsps"] > 0.5  # the DSP-only design is held back by its DSPs ...
    assert mixed["total"]["interval_cycles"] < dsp["total"]["interval_cycles"]  # ... and LUT products go faster
    assert mixed["fits"], mixed["over"]
    assert "lut" in {l.core for l in layer_shapes(mixed_graph)}


@pytest.mark.parametrize("options", ["cores=lut", "cores=dsp+lut", "cores=dsp+lut,pack=auto", "cores=dsp,pack=auto",
                                     "cores=dsp,pack=2"])
@pytest.mark.parametrize("device", ["ecp5-85k", "xc7z020"])
def test_the_chosen_design_fits(quantized, options, device):
    est = whole(autofolded(quantized("digits_mlp"), f"device={device},{options}"), device)
    assert est["fits"], est["over"]
    assert all(est["total"][r] <= est["budget"][r] for r in ("luts", "ffs", "dsps", "brams"))


def test_lut_only_uses_no_product_multipliers(quantized):
    g = autofolded(quantized("digits_mlp"), "device=ecp5-85k,cores=lut")
    est = estimate(layer_shapes(g), device="ecp5-85k")
    assert {l.core for l in layer_shapes(g)} == {"lut"}
    assert sum(l["dsps_breakdown"]["products"] for l in est["layers"]) == 0


def test_pack_auto_packs_where_the_multiplier_is_wide_enough(quantized):
    g = quantized("mnist_mlp")
    # xc7's 25x18 DSP48E1 holds two 8-bit products; ECP5's 18x18 holds one
    xc7 = autofolded(g, "device=xc7z020,cores=dsp,pack=auto")
    assert max(l.pack for l in layer_shapes(xc7)) == 2
    unpacked = whole(autofolded(g, "device=xc7z020,cores=dsp"), "xc7z020")
    assert whole(xc7, "xc7z020")["total"]["interval_cycles"] < unpacked["total"]["interval_cycles"]
    ecp5 = autofolded(quantized("digits_mlp"), "device=ecp5-85k,cores=dsp,pack=auto")
    assert {l.pack for l in layer_shapes(ecp5)} == {1}


def test_a_layer_with_its_own_core_keeps_it(quantized):
    g = run_pipeline(quantized("digits_mlp"), "fold{core=relu0:lut},autofold{device=ecp5-85k,cores=dsp}",
                     PassContext())
    assert [l.core for l in layer_shapes(g)] == ["lut", "dsp", "dsp"]


def test_core_and_pack_are_left_unsaid_at_their_defaults(quantized):
    g = autofolded(quantized("digits_mlp"), "device=ecp5-85k,cores=dsp+lut")
    for node in g.nodes:
        if node.op == "qmatmul":
            assert node.attrs.get("core", "lut") == "lut" and "pack" not in node.attrs


@pytest.mark.parametrize("options,message", [("cores=fpga", "cores=fpga must name each of dsp, lut, bitserial, const.*unknown: 'fpga'"),
                                             ("cores=dsp+dsp", "at most once"), ("cores=dsp+", "unknown: ''"),
                                             ("cores=dsp+bitserial,slice=3", "slice=3 must be one of 1, 2, 4"),
                                             ("pack=0", "must be at least 1"), ("pack=two", "whole number or auto")])
def test_bad_core_options(quantized, options, message):
    with pytest.raises(PipelineError, match=message):
        autofolded(quantized("digits_mlp"), options)


def sparse_first_layer(g, keep: int = 2):
    """A copy of the quantized graph whose first layer keeps only its first `keep` rows of
    8x8 blocks non-zero: most (nf, sf, slice) tiles at any folding hold only zeros."""
    g = g.clone()
    w = next(n for n in g.nodes if n.op == "qmatmul").inputs[1]
    data = np.array(g.const_data(w))
    data[keep * 8:, :] = 0
    g.arrays[w.array] = data
    return g


def test_bitserial_wins_on_a_layer_of_zero_tiles(quantized):
    g = sparse_first_layer(quantized("digits_mlp"))
    folded = autofolded(g, "device=ecp5-25k,cores=dsp+lut+bitserial")
    verify(folded)
    first = next(n for n in folded.nodes if n.op == "qmatmul")
    assert first.attrs["core"] == "bitserial" and first.attrs["slice"] == 2 and "skip" not in first.attrs
    # the plan's interval is the cycle model's, and the tile count is that of the weights
    est = whole(folded, "ecp5-25k")
    design = lower_stream(folded, region_input(folded))
    _, interval = predicted_timing(design)
    assert est["total"]["interval_cycles"] == design.interval == interval
    shape = layer_shapes(folded)[0]
    nz = nonzero_tiles(folded.const_data(first.inputs[1]), shape.wbits, 2, shape.pe, shape.simd)
    assert shape.tiles == int(nz.sum()) + int((~nz.any(axis=(1, 2))).sum())
    assert est["fits"], est["over"]
    # the same weights without bitserial: slower on the same device
    dsp_lut = whole(autofolded(g, "device=ecp5-25k,cores=dsp+lut"), "ecp5-25k")
    assert interval < dsp_lut["total"]["interval_cycles"]


def test_autofold_slice_option_sets_the_slice(quantized):
    g = sparse_first_layer(quantized("digits_mlp"))
    folded = autofolded(g, "device=ecp5-25k,cores=dsp+lut+bitserial,slice=4")
    assert [n.attrs.get("slice") for n in folded.nodes if n.op == "qmatmul"][0] == 4


def test_const_core_on_small_layers():
    """A tiny MLP fits at one inference per cycle, where a hard-wired shift-add graph costs
    fewer LUTs than the lut core's products: off the DSPs (which autofold fills first while
    they last), autofold puts its layers on the const core."""
    g = load_onnx(mlp((6, 4, 3), seed=1))
    calib = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    q = run_pipeline(g, "canonicalize,quantize", PassContext(calib={g.inputs[0].name: calib}))
    folded = autofolded(q, "device=ecp5-85k,cores=lut+const")
    verify(folded)
    layers = [(n.attrs.get("core"), n.attrs["pe"], n.attrs["simd"]) for n in folded.nodes if n.op == "qmatmul"]
    assert layers == [("const", 4, 6), ("const", 3, 4)]
    design = lower_stream(folded, region_input(folded))
    _, interval = predicted_timing(design)
    est = whole(folded, "ecp5-85k")
    assert est["fits"], est["over"]
    assert est["total"]["interval_cycles"] == design.interval == interval
    assert sum(l["dsps_breakdown"]["products"] for l in est["layers"]) == 0


@pytest.mark.parametrize("options", ["cores=dsp+lut+bitserial+const", "cores=bitserial", "cores=const+lut"])
def test_the_chosen_design_fits_with_every_core(quantized, options):
    g = autofolded(quantized("digits_mlp"), f"device=ecp5-85k,{options}")
    verify(g)
    est = whole(g, "ecp5-85k")
    assert est["fits"], est["over"]
    allowed = set(options.removeprefix("cores=").split("+"))
    assert {l.core for l in layer_shapes(g)} <= allowed
