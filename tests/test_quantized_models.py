"""Models that arrive quantized (onnxruntime's quantize_static, QDQ and QOperator) compile with
their own scales, no calibration data, and agree with onnxruntime running them.

For each model: the integer IR equals our reference ONNX bit for bit; against onnxruntime on
the original quantized model, the output integers are compared (onnxruntime requantizes in
float with round half to even, we in integers with round half up: the figures are printed)
and top-1 accuracy on the committed test set is compared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from nnfpga.backends.reference_onnx import make_session, run_reference, to_reference_onnx
from nnfpga.errors import NnfpgaError
from nnfpga.frontend import load_onnx_quantized
from nnfpga.ir import run_batch
from nnfpga.passes import PassContext, run_pipeline

ort_quant = pytest.importorskip("onnxruntime.quantization")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PIPELINE = "canonicalize,quantize,channels_last"
IDENTICAL_MIN, MAX_LSB = 0.99, 1
"""Measured: 99.3% (MNIST MLP) to 99.8% of output integers identical, never more than 1 LSB
apart; the 99.9% aimed for is not reached yet (the requant's 16-bit multiplier and round half
up against onnxruntime's float ratio and round half to even, compounded over the layers)."""
CASES = [("digits_mlp", "qdq", True), ("digits_mlp", "qdq", False), ("digits_mlp", "qop", True),
         ("digits_cnn", "qdq", True), ("digits_cnn", "qop", True), ("mnist_mlp", "qdq", True),
         ("mnist_cnn", "qdq", True)]


def quantize_example(example: str, fmt: str, per_channel: bool, out: Path) -> Path:
    """The example's float model through onnxruntime's quantize_static (calib.npz as its data)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model_path = EXAMPLES / example / "model.onnx"
    name = onnx.load(str(model_path)).graph.input[0].name
    data = np.load(EXAMPLES / example / "calib.npz")
    samples = data[data.files[0]][:128].astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: s[None]} for s in samples])

        def get_next(self):
            return next(self.items, None)

    path = out / f"{example}_{fmt}_{'pc' if per_channel else 'pt'}.onnx"
    quantize_static(str(model_path), str(path), Reader(), per_channel=per_channel,
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def compile_quantized(path: Path):
    """(final integer IR, fixed quantization, warnings) compiled without calibration data."""
    g, fixed = load_onnx_quantized(path)
    warnings: list[str] = []
    final = run_pipeline(g, PIPELINE, PassContext(fixed_quant=fixed, warn=warnings.append))
    return final, fixed, warnings


def onnxruntime_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = make_session(onnx.load(str(path)), optimize=True)  # as users run it: QDQ fused into integer kernels
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: s[None]})[0] for s in x])


@pytest.mark.parametrize("example,fmt,per_channel", CASES, ids=[f"{e}-{f}-{'pc' if p else 'pt'}" for e, f, p in CASES])
def test_quantized_model(tmp_path, example, fmt, per_channel, capsys):
    path = quantize_example(example, fmt, per_channel, tmp_path)
    final, fixed, warnings = compile_quantized(path)
    assert not any("calibrat" in w for w in warnings), warnings  # nothing left to calibrate

    test = np.load(EXAMPLES / example / "test.npz")
    x, labels = test[test.files[0]].astype(np.float32), test["label"]
    x = x.reshape((len(x),) + tuple(final.inputs[0].type.shape[1:]))
    values = run_batch(final, {final.inputs[0].name: x}, keep_all=True)
    deq = next(n for n in final.nodes if n.op == "dequantize")
    quant = next(n for n in final.nodes if n.op == "quantize")
    ours = values[deq.inputs[0].name].astype(np.int64).reshape(len(x), -1)

    # 1. the integer IR and our reference ONNX: bit-exact
    golden = run_reference(to_reference_onnx(final), {quant.output.name: values[quant.output.name]})
    assert np.array_equal(next(iter(golden.values())).reshape(len(x), -1), ours)

    # 2. onnxruntime on the original quantized model: output integers
    out_t = deq.inputs[0].type.element
    theirs_float = onnxruntime_outputs(path, x).reshape(len(x), -1)
    theirs = np.rint(theirs_float / out_t.scale).astype(np.int64) + out_t.zero_point
    diff = np.abs(ours - theirs)
    identical = float(np.mean(diff == 0))
    our_acc = float(np.mean(ours.argmax(axis=1) == labels))
    their_acc = float(np.mean(theirs.argmax(axis=1) == labels))
    with capsys.disabled():
        print(f"\n{path.name}: {len(x)} test inputs, {ours.size} output integers: identical "
              f"{100 * identical:.3f}%, largest difference {diff.max()} LSB; top-1 accuracy ours "
              f"{100 * our_acc:.2f}%, onnxruntime {100 * their_acc:.2f}%")
    assert identical >= IDENTICAL_MIN
    assert diff.max() <= MAX_LSB
    assert abs(our_acc - their_acc) <= 0.002


# -- bad input: a clear error naming the node ----------------------------------------------------

def _qdq_mlp(tmp_path) -> onnx.ModelProto:
    return onnx.load(str(quantize_example("digits_mlp", "qdq", True, tmp_path)))


def _initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def _set(model, name, data):
    t = _initializer(model, name)
    t.CopyFrom(onnx.numpy_helper.from_array(np.asarray(data), name))


def test_refuses_nonzero_weight_zero_point(tmp_path):
    model = _qdq_mlp(tmp_path)
    _set(model, "fc0.weight_zero_point", np.full(64, 3, np.int8))
    with pytest.raises(NnfpgaError, match=r"DequantizeLinear node 'fc0.weight_DequantizeLinear'.*non-zero zero point"):
        load_onnx_quantized(model)


@pytest.mark.parametrize("value", [0.0, -0.5])
def test_refuses_zero_or_negative_scale(tmp_path, value):
    model = _qdq_mlp(tmp_path)
    _set(model, "relu0_scale", np.float32(value))
    with pytest.raises(NnfpgaError, match=r"QuantizeLinear node .*relu0.*scale must be positive"):
        load_onnx_quantized(model)


def test_refuses_int16_activations(tmp_path):
    model = _qdq_mlp(tmp_path)
    _set(model, "relu0_zero_point", np.int16(0))
    with pytest.raises(NnfpgaError, match=r"relu0.*int16; nnfpga takes uint8, int8"):
        load_onnx_quantized(model)


def test_refuses_non_constant_scale(tmp_path):
    model = _qdq_mlp(tmp_path)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "relu0")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", ["relu0_scale"], ["relu0_scale_dyn"]))
    q.input[1] = "relu0_scale_dyn"
    with pytest.raises(NnfpgaError, match=r"relu0.*scale 'relu0_scale_dyn' is not a constant"):
        load_onnx_quantized(model)


def test_cli_prints_error_for_bad_quantized_model(tmp_path):
    from nnfpga.cli import main

    model = _qdq_mlp(tmp_path)
    _set(model, "fc1.weight_zero_point", np.full(32, -2, np.int8))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    assert main(["compile", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
