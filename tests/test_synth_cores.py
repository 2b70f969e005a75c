"""yosys confirms the product cores: a packed layer takes ceil(pe/pack) multipliers per
SIMD lane, a lut layer none for its products (only its requantizer's), and the cost
model's DSP count is yosys's, on ECP5 (MULT18X18D) and 7-series (DSP48E1)."""
import json

import pytest

from onnx_models import mlp, save
from nnfpga.backends.synth import synthesize
from nnfpga.build import CompileOptions, compile_model
from nnfpga.cost import estimate
from nnfpga.devices import device
from nnfpga.hardware import DSP_MULT_BITS, DSP_SIGNED_BITS, dsp_tiles, product_multipliers, requant_pieces
from nnfpga.report import cost_inputs


@pytest.mark.parametrize("target, pipeline, cores", [
    # 2 products of 8-bit inputs and 5-bit weights fit one 18x18 multiplier
    ("ecp5-85k", "canonicalize,quantize{wbits=5},fold{pe=4,simd=4,core=h0_r:lut,pack=h1:2}", [("lut", 1), ("dsp", 2)]),
    # 2 int8 products fit a DSP48E1's 25-bit port
    ("xc7z020", "canonicalize,quantize,fold{pe=4,simd=4,core=h1:lut,pack=h0_r:2}", [("dsp", 2), ("lut", 1)]),
])
def test_yosys_uses_the_multipliers_the_cores_promise(tmp_path, target, pipeline, cores):
    model = save(mlp((16, 12, 8)), tmp_path / "m.onnx")
    build = tmp_path / "b"
    compile_model(model, build, CompileOptions(target=target, pipeline=pipeline))
    design = json.loads((build / "rtl" / "design.json").read_text())
    layers = design["layers"]
    assert [(l["core"], l["pack"]) for l in layers] == cores
    dev = device(target)
    requant = sum(l["pe"] * requant_pieces(l["acc_bits"]) * dsp_tiles(DSP_SIGNED_BITS, DSP_MULT_BITS + 1, dev.dsp_shape)
                  for l in layers)
    products = [product_multipliers(l["core"], l["pack"], l["pe"], l["simd"]) for l in layers]
    assert products == ([0, 8] if cores[0][0] == "lut" else [8, 0])  # 4 x 4 products, 2 per multiplier
    result = synthesize(build / "rtl", tmp_path / "synth", dev)
    print(f"{target}: {result.dsps} multipliers ({sum(products)} for products, {requant} for requant), "
          f"{result.luts} LUTs, {result.ffs} FFs")
    assert result.dsps == sum(products) + requant
    manifest = json.loads((build / "manifest.json").read_text())
    assert estimate(device=dev, **cost_inputs(build, manifest, design, []))["total"]["dsps"] == result.dsps
