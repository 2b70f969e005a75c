"""quantize{calib=minmax|percentile|mse}: ranges that survive outliers, same integer semantics."""
import numpy as np
import pytest

from nnfpga.backends.reference_onnx import run_reference, to_reference_onnx
from nnfpga.errors import PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.ir import run_batch
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.quantize import activation_type
from nnfpga.passes.quantize_calib import activation_error, activation_range, weight_scale
from onnx_models import mlp


def outlier_data(seed=0, outlier=1000.0):
    x = np.random.default_rng(seed).standard_normal(20_000)
    x[1234] = outlier  # one huge value, as one odd calibration image gives
    return x


def test_percentile_ignores_an_injected_outlier():
    x = outlier_data()
    lo, hi = activation_range(x, "percentile", 0.01, 4, activation_type)
    assert hi < 10 and lo > -10  # the bulk is standard normal: |x| < 5 but for the outlier
    assert hi - lo < (x.max() - x.min()) / 50
    lo, hi = activation_range(x, "minmax", 0.01, 4, activation_type)
    assert hi == 1000.0


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mse_error_is_at_most_minmax_error(bits, seed):
    rng = np.random.default_rng(seed)
    for x in (outlier_data(seed), rng.standard_normal(5000), np.maximum(rng.standard_normal(5000), 0),
              rng.exponential(size=5000) - 0.3):
        mm = activation_type(*activation_range(x, "minmax", 0.01, bits, activation_type), bits)
        mse = activation_type(*activation_range(x, "mse", 0.01, bits, activation_type), bits)
        assert activation_error(x, mse) <= activation_error(x, mm)
    # Clipping a moderate outlier wins by far at low bits (a huge one costs more clipped than kept:
    # its own squared error dominates the mean).
    x = outlier_data(seed, outlier=30.0)
    mm = activation_type(*activation_range(x, "minmax", 0.01, 4, activation_type), 4)
    mse = activation_type(*activation_range(x, "mse", 0.01, 4, activation_type), 4)
    assert activation_error(x, mse) < activation_error(x, mm) / 3


@pytest.mark.parametrize("wbits", [8, 4, 3, 2])
def test_mse_weight_scales_have_at_most_minmax_error(wbits):
    w = np.random.default_rng(wbits).standard_normal((6, 50))
    w[0, 0] = 8.0  # one outlying weight in channel 0
    wmax = (1 << (wbits - 1)) - 1

    def error(scale):
        s = scale[:, None]
        return np.sum((np.clip(np.rint(w / s), -wmax, wmax) * s - w) ** 2, axis=1)

    mm, mse = weight_scale(w, wbits, "minmax"), weight_scale(w, wbits, "mse")
    assert np.array_equal(mm, np.abs(w).max(axis=1) / wmax)
    assert np.array_equal(weight_scale(w, wbits, "percentile"), mm)  # weights stay per-channel max
    assert (error(mse) <= error(mm)).all()
    if wbits in (3, 4):  # few levels: clipping the outlier pays (at 2 bits, with 3 levels, it does not)
        assert error(mse)[0] < error(mm)[0]


def small_mlp():
    g = load_onnx(mlp((16, 12, 5), seed=3))
    calib = np.random.default_rng(5).standard_normal((300, 16)).astype(np.float32)
    calib[7, 3] = 60.0  # an outlier stretches the input's min/max range
    return g, {g.inputs[0].name: calib}


def input_scale(q):
    return next(n for n in q.nodes if n.op == "quantize").output.type.element.scale


def test_minmax_is_the_default_and_percentile_narrows_the_input_range():
    g, calib = small_mlp()
    default = run_pipeline(g.clone(), "canonicalize,quantize{abits=4}", PassContext(calib=calib))
    minmax = run_pipeline(g.clone(), "canonicalize,quantize{abits=4,calib=minmax}", PassContext(calib=calib))
    pct = run_pipeline(g.clone(), "canonicalize,quantize{abits=4,calib=percentile,pct=0.1}", PassContext(calib=calib))
    assert input_scale(default) == input_scale(minmax)
    assert input_scale(pct) < input_scale(minmax) / 5


@pytest.mark.parametrize("pipeline", ["canonicalize,quantize{wbits=4,abits=4,calib=mse}",
                                      "canonicalize,quantize{wbits=3,abits=3,calib=percentile}"])
def test_integer_ir_and_reference_onnx_agree_bit_for_bit(pipeline):
    g, calib = small_mlp()
    q = run_pipeline(g, parse_pipeline(pipeline), PassContext(calib=calib))
    env = run_batch(q, calib, keep_all=True)
    quant = next(n for n in q.nodes if n.op == "quantize")
    golden = run_reference(to_reference_onnx(q), {quant.output.name: env[quant.output.name]})
    assert golden
    for name, value in golden.items():
        assert value.dtype.kind == "i" and np.array_equal(value.astype(np.int64), env[name]), name


@pytest.mark.parametrize("options, words", [
    ("calib=kl", ["calib='kl'", "minmax, percentile, mse"]),
    ("calib=percentile,pct=0", ["pct=0", "(0, 50)"]),
    ("calib=percentile,pct=50", ["pct=50", "(0, 50)"]),
])
def test_bad_calibration_options_are_refused(options, words):
    g, calib = small_mlp()
    with pytest.raises(PipelineError) as err:
        run_pipeline(g, f"canonicalize,quantize{{{options}}}", PassContext(calib=calib))
    for word in words:
        assert word in str(err.value)
