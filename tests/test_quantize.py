"""quantize on weights that trained models really have: dead channels next to live ones."""
import numpy as np
from onnx import numpy_helper

from nnfpga.frontend import load_onnx
from nnfpga.ir import run_batch
from nnfpga.passes import PassContext, run_pipeline
from onnx_models import mlp


def test_a_dead_channel_keeps_bias_and_multiplier_in_range():
    model = mlp((8, 6, 3), seed=4)
    w0 = numpy_helper.to_array(model.graph.initializer[0]).copy()  # [N, K] (Gemm transB=1)
    w0[2] *= 1e-9  # channel 2 of layer 0 is dead, as weight decay leaves unused ReLU units
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w0, model.graph.initializer[0].name))
    g = load_onnx(model)
    calib = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    q = run_pipeline(g, "canonicalize,quantize", PassContext(calib={g.inputs[0].name: calib}))

    biases = [q.const_data(n.inputs[2]) for n in q.nodes if n.op == "qmatmul"]
    assert max(np.abs(b).max() for b in biases) < 2**24
    mults = [q.arrays[n.attrs["mult"].name] for n in q.nodes if n.op == "requant"]
    assert mults[0].min() >= 2**7  # no channel's multiplier collapses to a few bits

    (yq,) = run_batch(q, {q.inputs[0].name: calib}).values()
    (yf,) = run_batch(g, {g.inputs[0].name: calib}).values()
    assert np.abs(yq - yf).max() < 0.05 * np.abs(yf).max()


def test_calibration_reports_progress_per_sample():
    g = load_onnx(mlp((4, 3), seed=1))
    calls = []
    calib = {g.inputs[0].name: np.zeros((10, 4), np.float32)}
    run_pipeline(g, "canonicalize,quantize", PassContext(calib=calib, progress=lambda *a: calls.append(a)))
    assert calls[0] == ("calibration", 1, 10) and calls[-1] == ("calibration", 10, 10)
