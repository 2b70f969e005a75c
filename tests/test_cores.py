"""Product cores as annotations: `core` (dsp|lut) and `pack` on qmatmul/qconv, checked by
the verifier (a known core, pack only on the dsp core, packed products that fit the
target's multiplier) and set by `fold{core=..,pack=..}`, one value or one per layer."""
import numpy as np
import pytest

from nnfpga.backends.lower import dense_layer
from nnfpga.backends.rtl_layers import LayerConfigError, check
from nnfpga.devices import DEVICES
from nnfpga.errors import IRError, PipelineError
from nnfpga.hardware import max_pack, pack_fits, packed_weight_bits, product_multipliers
from nnfpga.ir import parse, verify
from nnfpga.passes import PassContext, run_pipeline

LAYER = """graph @q(%x: tensor<1x4x!q<{x}, 0.05>>) {{
  const %w : tensor<4x4x!q<{w}, @w.scale, axis=1>> = @w
  const %b : tensor<4xi32> = @b
  %acc = qmatmul(%x, %w, %b){attrs} : tensor<1x4xi20>
  %y = requant(%acc) {{hi = 127, lo = -128, mult = @m, shift = 8}} : tensor<1x4x!q<i8, 0.1>>
  return %y
}}
"""


def graph(attrs: str, x="u8", w="i8"):
    arrays = {"w": np.array([[3, -3, 1, 0]] * 4, np.int64), "w.scale": np.full(4, 0.1),
              "b": np.zeros(4, np.int32), "m": np.full(4, 300, np.int64)}
    return parse(LAYER.format(x=x, w=w, attrs=f" {{{attrs}}}" if attrs else ""), arrays)


def test_the_fit_condition_is_the_packed_operand_against_the_port():
    # (lanes-1)*(ib+wb) + wb bits on the wide port: 2 x (u8 x i5) = 18 fits an ECP5 18x18,
    # 2 x (u8 x i6) = 20 does not; 2 int8 products fit a DSP48E1's 25-bit port (24 bits).
    ecp5, xc7 = DEVICES["ecp5-85k"].dsp_shape, DEVICES["xc7z020"].dsp_shape
    assert packed_weight_bits(2, 8, 5) == 18 and pack_fits(2, 8, False, 5, ecp5)
    assert not pack_fits(2, 8, False, 6, ecp5)
    assert max_pack(8, True, 8, ecp5) == 1 and max_pack(8, True, 8, xc7) == 2
    assert max_pack(4, True, 4, xc7) == 3 and max_pack(2, False, 2, ecp5) == 5  # 4*4 + 2 = 18
    # an unsigned input needs its zero sign bit on the narrow port
    assert pack_fits(1, 17, True, 2, ecp5) and not pack_fits(1, 18, False, 2, ecp5)
    assert product_multipliers("lut", 1, 4, 8) == 0
    assert product_multipliers("dsp", 3, 4, 8) == 2 * 8 and product_multipliers("dsp", 1, 4, 8) == 32


def test_cores_verify_and_reach_the_layer_record():
    g = graph('core = "lut", pe = 2, simd = 2')
    verify(g)
    layer = dense_layer(g, *g.nodes, "l")
    assert (layer.core, layer.pack) == ("lut", 1)
    g = graph('core = "dsp", pack = 2, pe = 4, simd = 2', w="i5")
    verify(g, DEVICES["ecp5-85k"].dsp_shape)
    layer = dense_layer(g, *g.nodes, "l")
    check([layer])
    assert (layer.core, layer.pack) == ("dsp", 2)


@pytest.mark.parametrize("attrs, shape, message", [
    ('core = "bram"', None, r"qmatmul node defining %acc: unknown core 'bram' \(accepted: dsp, lut, .*const"),
    ('core = "lut", pack = 2', None, "pack=2 packs products into DSP multipliers; core 'lut' has none"),
    ("pack = 0", None, "pack=0 must be at least 1"),
    ("pack = 2", (18, 18), r"pack=2 does not fit a 18x18 multiplier: .* need a 24-bit operand .* "
                           "at most pack=1 fits"),
])
def test_the_verifier_names_the_node_and_the_rule(attrs, shape, message):
    g = graph(attrs)
    with pytest.raises(IRError, match=message):
        verify(g, shape)


def test_pack_fit_needs_the_target_and_core_needs_a_layer():
    g = graph("pack = 2")
    verify(g)  # no device: the fit is not known
    verify(g, DEVICES["xc7z020"].dsp_shape)  # 24 bits on a 25-bit port
    bad = graph("").clone()
    bad.nodes[1].attrs["core"] = "lut"
    with pytest.raises(IRError, match="requant node defining %y: core describes a layer's products"):
        verify(bad)


def test_fold_sets_cores_for_all_or_per_layer():
    g = graph("", w="i5")
    out = run_pipeline(g, "fold{pe=4,simd=2,core=dsp,pack=2}", PassContext(device="ecp5-85k"))
    assert {k: out.nodes[0].attrs[k] for k in ("core", "pack", "pe", "simd")} == \
        {"core": "dsp", "pack": 2, "pe": 4, "simd": 2}
    out = run_pipeline(out, "fold{core=lut,pack=1}")
    assert (out.nodes[0].attrs["core"], out.nodes[0].attrs["pack"]) == ("lut", 1)
    out = run_pipeline(out, "fold")  # left out: unchanged
    assert out.nodes[0].attrs["core"] == "lut"
    out = run_pipeline(g, "fold{core=lut}")  # one value for every layer
    assert out.nodes[0].attrs["core"] == "lut" and "pack" not in out.nodes[0].attrs


@pytest.mark.parametrize("pipeline, message", [
    ("fold{core=bram}", r"fold: unknown core 'bram' \(accepted: dsp, lut, .*const"),
    ("fold{core=nosuch:lut}", "fold: core names layer 'nosuch', which is not a qmatmul or qconv"),
    ("fold{pack=two}", "fold: pack must be a whole number, got 'two'"),
    ("fold{pack=0}", "fold: pack=0 must be at least 1"),
])
def test_fold_refuses_bad_core_options(pipeline, message):
    with pytest.raises(PipelineError, match=message):
        run_pipeline(graph(""), pipeline)


def test_a_pack_over_the_target_multiplier_is_refused_after_fold():
    with pytest.raises(IRError, match="after pass fold: .*pack=2 does not fit a 18x18 multiplier"):
        run_pipeline(graph(""), "fold{pack=2}", PassContext(device="ecp5-25k"))
    run_pipeline(graph(""), "fold{pack=2}", PassContext(device="xc7z020"))


def test_the_rtl_layer_check_refuses_unknown_cores():
    g = graph("")
    layer = dense_layer(g, *g.nodes, "l")
    from dataclasses import replace
    with pytest.raises(LayerConfigError, match="unknown core 'bram'"):
        check([replace(layer, core="bram")])
    with pytest.raises(LayerConfigError, match="above 1 only on the dsp core"):
        check([replace(layer, core="lut", pack=2)])


def test_the_cost_model_counts_the_cores():
    from nnfpga.cost import LayerShape, layer_cost, layer_shapes
    ecp5 = DEVICES["ecp5-85k"]
    shapes = layer_shapes(graph('core = "dsp", pack = 2, pe = 4, simd = 2', w="i5"))
    assert (shapes[0].core, shapes[0].pack) == ("dsp", 2)

    def cost(**kw):
        return layer_cost(LayerShape("l", 32, 8, 4, 4, in_bits=8, acc_bits=18, **kw), 4, ecp5)
    dsp, lut, packed = cost(wbits=5), cost(wbits=5, core="lut"), cost(wbits=5, pack=2)
    # yosys (bench/cores.py): 4 x 4 products on 16, 0 and 8 MULT18X18D, plus 4 for requant
    assert [c["dsps_breakdown"]["products"] for c in (dsp, lut, packed)] == [16, 0, 8]
    assert lut["dsps_breakdown"]["requant"] == 4
    assert dsp["luts_breakdown"]["products"] == 0 < packed["luts_breakdown"]["products"]
    luts = [cost(wbits=wb, core="lut")["luts_breakdown"]["products"] for wb in range(2, 9)]
    assert luts == sorted(luts) and luts[-1] > 5 * luts[0]
    assert cost(wbits=5, pack=3)["dsps_breakdown"]["products"] == 2 * 4  # groups of 3 and 1


def test_the_cli_names_a_pack_that_does_not_fit_and_writes_nothing(tmp_path, capsys):
    from pathlib import Path
    from nnfpga.cli import main
    digits = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp"
    code = main(["compile", str(digits / "model.onnx"), "--calib", str(digits / "calib.npz"), "-o",
                 str(tmp_path / "b"), "--pipeline", "canonicalize,quantize,fold{pack=2}"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "b").exists()
    assert err.strip().startswith("error: after pass fold: qmatmul node defining %") and "at most pack=1 fits" in err
