"""finetune_lowrank and `nnfpga finetune`: the factored model trained by distillation and
written as a float ONNX model the compiler takes; bad training data writes nothing."""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from nnfpga.cli import main
from nnfpga.errors import CalibrationError, NnfpgaError, PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.ir import parse, run_batch, verify
from nnfpga.passes import run_pipeline

pytest.importorskip("torch")
from nnfpga.finetune import finetune_lowrank  # noqa: E402
from nnfpga.torch_graph import torch_module  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp"
PIPELINE = "canonicalize,lowrank{macs=0.5}"


def _accuracy(model: Path, npz: Path) -> float:
    g = run_pipeline(load_onnx(model), "canonicalize")
    data = np.load(npz)
    y = next(iter(run_batch(g, {g.inputs[0].name: data["input"]}).values()))
    return float((y.reshape(len(y), -1).argmax(1) == data["label"]).mean())


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "digits_lowrank.onnx"
    result = finetune_lowrank(DIGITS / "model.onnx", out, DIGITS / "test.npz", pipeline=PIPELINE, epochs=1, seed=0)
    return out, result


def test_written_model_has_the_factored_shapes(finetuned):
    out, result = finetuned
    onnx.checker.check_model(onnx.load(out), full_check=True)
    g = run_pipeline(load_onnx(out), "canonicalize")
    dense = [n for n in g.nodes if n.op == "dense"]
    factored = [r for r in result["lowrank"] if r["factored"]]
    assert factored and len(dense) == 3 + len(factored)
    shapes = [n.inputs[1].type.shape for n in dense]
    for r in factored:
        assert (r["k"], r["rank"]) in shapes and (r["rank"], r["n"]) in shapes
    assert onnx.load(out).ir_version == 8


def test_finetuning_does_not_lose_accuracy(finetuned):
    out, result = finetuned
    assert result["samples"] == 450 and len(result["losses"]) == 1
    assert result["factored_accuracy"] < result["teacher_accuracy"]  # macs=0.5 costs accuracy before training
    assert result["finetuned_accuracy"] >= result["factored_accuracy"]
    # The written model computes what was trained (the IR interpreter on the exported ONNX).
    assert _accuracy(out, DIGITS / "test.npz") == pytest.approx(result["finetuned_accuracy"], abs=1 / 450)


def test_seeded_runs_write_the_same_bytes(finetuned, tmp_path):
    out, _ = finetuned
    again = tmp_path / "again.onnx"
    finetune_lowrank(DIGITS / "model.onnx", again, DIGITS / "test.npz", pipeline=PIPELINE, epochs=1, seed=0)
    assert again.read_bytes() == out.read_bytes()


def test_written_model_compiles(finetuned, tmp_path):
    from nnfpga.build import CompileOptions, compile_model

    out, result = finetuned
    build = compile_model(out, tmp_path / "b", CompileOptions(pipeline="canonicalize,quantize,fold",
                                                              calib_path=DIGITS / "calib.npz"))
    factored = sum(r["factored"] for r in result["lowrank"])
    assert factored and len(build.manifest["layers"]) == 3 + factored


def test_torch_module_matches_the_interpreter():
    torch = pytest.importorskip("torch")
    text = """graph @cnn(%x: tensor<1x2x7x7xf32>) {
  const %w : tensor<4x2x3x3xf32> = @w
  const %b : tensor<4xf32> = @b
  const %w2 : tensor<16x5xf32> = @w2
  const %b2 : tensor<5xf32> = @b2
  %c = conv(%x, %w, %b) {dilations = [1, 1], group = 1, pads = [1, 0, 0, 1], strides = [2, 2]} : tensor<1x4x3x3xf32>
  %p = maxpool(%c) {dilations = [1, 1], kernel = [2, 2], pads = [1, 1, 1, 1], strides = [2, 2]} : tensor<1x4x2x2xf32>
  %r = clip(%p) {hi = 6.0, lo = 0.0} : tensor<1x4x2x2xf32>
  %f = reshape(%r) {shape = [1, 16]} : tensor<1x16xf32>
  %y = dense(%f, %w2, %b2) {relu = true} : tensor<1x5xf32>
  return %y
}
"""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((4, 2, 3, 3)), "b": rng.standard_normal(4), "w2": rng.standard_normal((16, 5)),
              "b2": rng.standard_normal(5)}
    g = parse(text, {k: v.astype(np.float32) for k, v in arrays.items()})
    verify(g)
    x = rng.standard_normal((6, 2, 7, 7)).astype(np.float32)
    expected = run_batch(g, {"x": x})["y"].reshape(6, 5)
    with torch.no_grad():
        got = torch_module(torch, g)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _bad_data(tmp_path, **arrays) -> Path:
    path = tmp_path / "train.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("make, words", [
    (lambda x, y: {"input": x}, ["no 'label' array"]),
    (lambda x, y: {"input": x[:, :60], "label": y}, ["shape [450, 60]", "[N, 64]"]),
    (lambda x, y: {"input": x, "label": y[:100]}, ["'label' has shape [100]", "[450]"]),
    (lambda x, y: {"input": x, "label": y + 5}, ["0..9", "[5, 14]"]),
    (lambda x, y: {"input": x, "label": y.astype(np.float32)}, ["integers in 0..9", "float32"]),
])
def test_bad_training_data_is_refused_and_nothing_written(tmp_path, make, words):
    data = np.load(DIGITS / "test.npz")
    path = _bad_data(tmp_path, **make(data["input"], data["label"]))
    out = tmp_path / "out.onnx"
    with pytest.raises(CalibrationError) as e:
        finetune_lowrank(DIGITS / "model.onnx", out, path, epochs=1)
    for word in words:
        assert word in str(e.value)
    assert list(tmp_path.iterdir()) == [path]


def test_pipeline_without_lowrank_is_refused(tmp_path):
    with pytest.raises(PipelineError, match="no lowrank pass"):
        finetune_lowrank(DIGITS / "model.onnx", tmp_path / "o.onnx", DIGITS / "test.npz", pipeline="canonicalize")


def test_missing_torch_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(NnfpgaError, match=r"pip install 'nnfpga\[torch\]'.*torch==2.13.0"):
        finetune_lowrank(DIGITS / "model.onnx", tmp_path / "o.onnx", DIGITS / "test.npz")
    assert not (tmp_path / "o.onnx").exists()


def test_cli_finetune(tmp_path, capsys):
    out = tmp_path / "ft.onnx"
    args = ["finetune", DIGITS / "model.onnx", "--train", DIGITS / "test.npz", "-o", out,
            "--pipeline", "canonicalize,lowrank{rank=8}", "--epochs", "1", "--seed", "3"]
    assert main([str(a) for a in args]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 1 and out.is_file()
    assert main([str(a) for a in args]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert main([str(a) for a in args + ["--force"]]) == 0
