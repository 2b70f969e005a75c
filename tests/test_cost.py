"""Cost model (nnfpga.cost) and the autofold pass.

The measured figures asserted here come from Verilator (latency, interval) and yosys 0.70
synth_ecp5 (DSP and block RAM counts) on the designs named; see nnfpga/cost.py."""
import re
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.lower import region_input
from nnfpga.backends.rtl_layers import DenseLayer
from nnfpga.backends.stream_graph import chain_design, lower_stream
from nnfpga.builddir import load_npz, match_inputs
from nnfpga.calibration import CALIBRATION
from nnfpga.cost import RESOURCES, LayerShape, device_budget, estimate, layer_cost, layer_shapes, rom_placement, stream_inputs
from nnfpga.devices import DEVICES
from nnfpga.errors import PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.hardware import dsp_tiles
from nnfpga.ir import parse
from nnfpga.passes import PassContext, run_pipeline
from nnfpga.passes.autofold_plan import plan

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp"


def digits_layers(pe=4, simd=8):
    """The digits MLP 64-64-32-10 as `fold{pe,simd}` builds it (widths from its final IR)."""
    def cap(n, c):
        return max(d for d in range(1, min(n, c) + 1) if n % d == 0)
    dims, accs, shifts = [(64, 64), (64, 32), (32, 10)], [23, 20, 20], [25, 24, 24]
    return [LayerShape(f"l{i}", k, n, cap(n, pe), cap(k, simd), 8, 8, a, 8, s)
            for i, ((k, n), a, s) in enumerate(zip(dims, accs, shifts))]


@pytest.fixture(scope="module")
def digits_graph():
    g = load_onnx(DIGITS / "model.onnx")
    calib = match_inputs(g, load_npz(DIGITS / "calib.npz", "calibration"), "calibration data")
    return g, calib


def autofolded(digits_graph, options: str, ctx_device=None):
    g, calib = digits_graph
    return run_pipeline(g, f"canonicalize,quantize,autofold{{{options}}}",
                        PassContext(calib=calib, device=ctx_device))


# ---- time -------------------------------------------------------------------------------

@pytest.mark.parametrize("pe, simd, latency", [(4, 8, 261), (2, 16, 247)])
def test_digits_interval_and_latency_are_the_measured_ones(pe, simd, latency):
    """Verilator measured interval 128 for both, latency 261 and 247 cycles."""
    est = estimate(digits_layers(pe, simd), device="ecp5-85k")
    assert est["total"]["interval_cycles"] == 128
    assert est["total"]["latency_cycles"] == latency
    assert sum(l["latency_cycles"] for l in est["layers"]) == latency


@pytest.mark.parametrize("seed", range(5))
def test_interval_equals_the_backend_prediction(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.choice([6, 8, 12, 16, 24, 32], size=4)]
    layers = []
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        pe = int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))
        simd = int(rng.choice([d for d in range(1, k + 1) if k % d == 0]))
        layers.append(DenseLayer(f"l{i}", np.zeros((k, n), np.int64), np.zeros(n, np.int64), 8, 8, False, 20,
                                 np.ones(n, np.int64), 16, 0, 0, 255, 8, False, pe, simd))
    in_par = layers[0].simd
    assert estimate(layers, in_par)["total"]["interval_cycles"] == chain_design(layers, in_par).interval


# ---- resources --------------------------------------------------------------------------

def test_more_parallelism_means_fewer_cycles_and_more_dsps():
    dev = DEVICES["ecp5-85k"]
    base = LayerShape("l", 64, 64, 1, 1, 8, 8, 22, 8, 24)
    previous = None
    for pe, simd in [(1, 1), (1, 2), (2, 2), (2, 8), (4, 8), (8, 8), (8, 16), (16, 64)]:
        c = layer_cost(LayerShape(**{**base.__dict__, "pe": pe, "simd": simd}), simd, dev)
        if previous is not None:
            assert c["folds"] < previous["folds"]
            assert c["dsps"] > previous["dsps"]
            assert c["ffs"] > previous["ffs"]
        previous = c


def test_dsp_and_block_ram_counts_match_synth_ecp5():
    """yosys 0.68 synth_ecp5 (nnfpga build's pinned version) on the digits design: 100 MULT18X18D, 8 DP16KD."""
    est = estimate(digits_layers(), device="ecp5-85k")
    assert est["total"]["dsps"] == 100
    assert est["total"]["brams"] == 8
    assert [l["weight_rom"]["placement"] for l in est["layers"]] == ["bram", "logic", "logic"]
    # Measured 5623 LUT4 (counting CCU2C and TRELLIS_DPR16X4 twice) and 5901 FFs (nnfpga_mult's
    # registers inside the MULT18X18Ds, the block RAM's S1b in its DP16KDs): the model stays within 10%.
    assert abs(est["total"]["luts"] / 5623 - 1) < 0.10
    assert abs(est["total"]["ffs"] / 5901 - 1) < 0.10


def test_requant_multiplier_split_matches_synth_ecp5():
    """yosys's own split of a product: a 19-bit operand times a 17-bit one took one MULT18X18D, a
    20-bit one two. The requantizer splits acc*M itself (nnfpga_requant: one multiplier while acc
    fits 18 signed bits, else a 17-bit unsigned low piece and a signed high piece): the 16-12-5
    MLP at fold{pe=2,simd=4} with accumulators of 19 bits took 12 + 3*2 = 18 (yosys 0.68)."""
    assert dsp_tiles(19, 17, (18, 18)) == 1
    assert dsp_tiles(20, 17, (18, 18)) == 2
    assert dsp_tiles(23, 17, (25, 18)) == 1
    assert dsp_tiles(9, 8, (18, 18)) == 1
    small = [LayerShape("l0", 16, 12, 2, 4, 8, 8, 19, 8, 22), LayerShape("l1", 12, 5, 1, 4, 8, 8, 19, 8, 24)]
    assert estimate(small, device="ecp5-85k")["total"]["dsps"] == 18
    small[1] = LayerShape("l1", 12, 5, 1, 4, 8, 8, 18, 8, 24)  # one multiplier for an 18-bit accumulator
    assert estimate(small, device="ecp5-85k")["total"]["dsps"] == 17


def test_constant_rom_columns_are_left_out():
    """Inputs whose weights are all zero give constant ROM bit columns; yosys drops them."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (64, 64))
    w[:8] = 0                                     # eight dead inputs
    layer = DenseLayer("l0", w, np.zeros(64, np.int64), 8, 8, False, 24, np.ones(64, np.int64), 16, 0, 0,
                       255, 8, False, 1, 64)
    shape = LayerShape.of(layer)
    assert shape.rom_widths[0] == (64 - 8) * 8
    with_weights = estimate([layer], device="ecp5-85k")["layers"][0]["weight_rom"]
    shape_only = estimate([LayerShape("l0", 64, 64, 1, 64, 8, 8, 24, 8, 16)], device="ecp5-85k")["layers"][0]
    assert (with_weights["used_width"], with_weights["blocks"]) == (448, 13)   # ceil(448 / 36)
    assert (shape_only["weight_rom"]["used_width"], shape_only["weight_rom"]["blocks"]) == (512, 15)


def test_rom_placement_follows_the_memory_mapper_costs():
    assert rom_placement(128, 256, "ecp5") == {"depth": 128, "width": 256, "used_width": 256, "bits": 32768,
                                               "used_bits": 32768, "placement": "bram", "blocks": 8}
    assert rom_placement(64, 256, "ecp5")["placement"] == "logic"   # a tie: 16384/16 == 8 * 128
    assert rom_placement(1024, 32, "ecp5")["blocks"] == 2           # 1024 x 18 twice
    assert rom_placement(512, 64, "xc7")["blocks"] == 1             # one RAMB36 as 512 x 72
    assert rom_placement(128, 256, "xc7")["placement"] == "logic"
    assert rom_placement(4, 40, "ecp5")["placement"] == "logic"
    assert rom_placement(64, 512, "ecp5", used_width=474)["blocks"] == 14   # digits, autofolded


def test_estimate_reports_budget_and_overflow():
    est = estimate(digits_layers(), device="ecp5-25k")
    assert not est["fits"] and est["over"] == ["dsps"]
    assert est["budget"] == {"luts": 24288, "ffs": 24288, "dsps": 28, "brams": 56}
    assert set(CALIBRATION) == {d.family for d in DEVICES.values()}
    for name in DEVICES:
        assert estimate(digits_layers(), device=name)["total"]["interval_cycles"] == 128


# ---- autofold ---------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["ecp5-25k", "ecp5-85k"])
def test_autofold_fits_the_device(digits_graph, device):
    est = estimate(layer_shapes(autofolded(digits_graph, f"device={device}")), device=device)
    assert est["fits"], est["over"]


def test_autofold_uses_a_bigger_device_for_speed(digits_graph):
    small = estimate(layer_shapes(autofolded(digits_graph, "device=ecp5-25k")), device="ecp5-25k")
    big = estimate(layer_shapes(autofolded(digits_graph, "device=ecp5-85k")), device="ecp5-85k")
    assert big["total"]["interval_cycles"] < small["total"]["interval_cycles"]
    assert big["total"]["dsps"] > small["total"]["dsps"]
    # Fastest that fits: one step faster overflows the budget (the digits need 202 products at 32 cycles).
    assert big["total"]["interval_cycles"] == 64


def test_autofolded_digits_matches_verilator_and_synth_ecp5(digits_graph):
    """Measured on this design: interval 64, latency 212 (Verilator); 110 MULT18X18D and 14 DP16KD,
    6239 LUTs, 7537 FFs (yosys 0.68 synth_ecp5; nnfpga_mult's registers inside the MULT18X18Ds,
    the block RAMs' S1b in their DP16KDs)."""
    g = autofolded(digits_graph, "device=ecp5-85k")
    layers = lower_stream(g, region_input(g)).layers
    est = estimate(layers, device="ecp5-85k")["total"]
    assert (est["interval_cycles"], est["latency_cycles"], est["dsps"], est["brams"]) == (64, 212, 110, 14)
    assert abs(est["luts"] / 6239 - 1) < 0.10 and abs(est["ffs"] / 7537 - 1) < 0.10


def test_autofold_reads_the_device_from_the_context(digits_graph):
    via_ctx = layer_shapes(autofolded(digits_graph, "", ctx_device="ecp5-25k"))
    via_option = layer_shapes(autofolded(digits_graph, "device=ecp5-25k"))
    assert via_ctx == via_option


@pytest.mark.parametrize("fps, clock", [(250_000, 100.0), (1_000_000, 200.0), (50_000, 50.0)])
def test_target_fps_is_met_by_the_smallest_design(digits_graph, fps, clock):
    g = autofolded(digits_graph, f"device=ecp5-85k,target_fps={fps},clock_mhz={clock}")
    est = estimate(layer_shapes(g), device="ecp5-85k")
    assert est["fits"]
    assert est["total"]["interval_cycles"] <= clock * 1e6 / fps
    fastest = estimate(layer_shapes(autofolded(digits_graph, "device=ecp5-85k")), device="ecp5-85k")
    assert est["total"]["dsps"] <= fastest["total"]["dsps"]


def test_impossible_rate_names_the_feasible_rate_and_a_device(digits_graph):
    with pytest.raises(PipelineError) as e:
        autofolded(digits_graph, "device=ecp5-25k,target_fps=1000000")
    message = str(e.value)
    assert "at most 100 cycles" in message
    assert "interval of 512 cycles" in message and "195312 inferences/s" in message
    assert "smallest device that meets the target is xc7z020" in message
    with pytest.raises(PipelineError, match="no device in the table meets the target"):
        autofolded(digits_graph, "device=ecp5-25k,target_fps=10000000")
    with pytest.raises(PipelineError, match="less than one cycle per inference"):
        autofolded(digits_graph, "device=ecp5-85k,target_fps=200000000")


def test_a_budget_keeps_the_design_within_that_share_of_the_device(digits_graph):
    whole = estimate(layer_shapes(autofolded(digits_graph, "device=ecp5-85k")), device="ecp5-85k")["total"]
    quarter = estimate(layer_shapes(autofolded(digits_graph, "device=ecp5-85k,budget=0.25")), device="ecp5-85k")["total"]
    limits = device_budget(DEVICES["ecp5-85k"])
    assert all(quarter[r] <= 0.25 * limits[r] for r in RESOURCES)
    assert quarter["interval_cycles"] > whole["interval_cycles"]
    with pytest.raises(PipelineError, match=re.escape("budget=0 must be in (0, 1]")):
        autofolded(digits_graph, "device=ecp5-85k,budget=0")


def test_a_layer_too_big_for_the_device_names_one_that_fits():
    big = [LayerShape("big", 512, 512, 1, 1, 8, 8, 26, 8, 24)]   # 2 Mbit of weights
    with pytest.raises(PipelineError, match="no folding fits ecp5-25k.*smallest device that fits it is xc7z020"):
        plan(big, DEVICES["ecp5-25k"])
    huge = [LayerShape("huge", 4096, 4096, 1, 1, 8, 8, 30, 8, 24)]  # 128 Mbit
    with pytest.raises(PipelineError, match="no device in the table fits it"):
        plan(huge, DEVICES["ecp5-85k"])


def test_autofold_needs_a_quantized_graph():
    g = parse("graph @g(%x: tensor<1x4xf32>) {\n  %y = relu(%x) : tensor<1x4xf32>\n  return %y\n}\n", {})
    with pytest.raises(PipelineError, match="run quantize before autofold"):
        run_pipeline(g, "autofold")
    with pytest.raises(PipelineError, match="unknown device 'nope'"):
        run_pipeline(g, "autofold{device=nope}")


# ---- autofold on a convolutional graph: windows, pools and FIFOs count too ---------------

@pytest.fixture(scope="module")
def residual_64px(tmp_path_factory):
    """A residual block of 16 channels over 64×64 pixels, quantized and channels-last: on
    ecp5-25k (28 MULT18X18D) its matrix-vector units' fastest fit leaves no multiplier for
    the global average pool's 4,096-pixel sum and the add."""
    import onnx

    from onnx_models import residual_block

    path = tmp_path_factory.mktemp("residual") / "model.onnx"
    onnx.save(residual_block(c=16, h=64, w=64), path)
    g = load_onnx(path)
    x = g.inputs[0]
    calib = {x.name: np.random.default_rng(0).standard_normal((4,) + x.type.shape[1:]).astype(np.float32)}
    return run_pipeline(g, "canonicalize,quantize,channels_last", PassContext(calib=calib))


def whole_estimate(g, device):
    design = lower_stream(g, region_input(g))
    return estimate(device=device, **stream_inputs(design)), design


def test_autofold_fits_the_whole_convolutional_design(residual_64px):
    from nnfpga.passes.autofold import _whole_design

    dev = DEVICES["ecp5-25k"]
    units_only, _ = plan(layer_shapes(residual_64px), dev)
    over = _whole_design(residual_64px.clone())(units_only, dev)
    assert over["over"] == ["dsps"] and over["total"]["dsps"] > dev.dsps  # what ignoring the modules picks

    est, design = whole_estimate(run_pipeline(residual_64px, "autofold{device=ecp5-25k}"), "ecp5-25k")
    assert est["fits"] and est["total"]["dsps"] <= dev.dsps
    assert design.interval >= over["total"]["interval_cycles"]  # the price: a slower folding
    assert any(m["dsps"] for m in est["modules"])


def test_autofold_target_fps_holds_the_module_graphs_interval(residual_64px):
    fps, clock = 40.0, 100.0
    est, design = whole_estimate(run_pipeline(residual_64px, f"autofold{{device=xc7z020,target_fps={fps}}}"),
                                 "xc7z020")
    assert est["fits"] and design.interval <= clock * 1e6 / fps
    fastest, _ = whole_estimate(run_pipeline(residual_64px, "autofold{device=xc7z020}"), "xc7z020")
    assert est["total"]["dsps"] < fastest["total"]["dsps"]
