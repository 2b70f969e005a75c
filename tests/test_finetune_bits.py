"""finetune_bitslices: the weights' bits trained under the tile group Lasso, written as a float
model that quantizes to exactly the trained integers, with more zero slices than before."""
from pathlib import Path

import numpy as np
import pytest

from nnfpga.bitslices import sign_magnitude_slices
from nnfpga.errors import ModelError, NnfpgaError
from nnfpga.frontend import load_onnx
from nnfpga.passes import PassContext, run_pipeline

pytest.importorskip("torch")
from nnfpga.finetune_bits import finetune_bitslices, integer_grid  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp"
CNN = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn"


def _quantized_weights(model: Path, wbits: int) -> list[np.ndarray]:
    g = run_pipeline(load_onnx(model), f"canonicalize,quantize{{wbits={wbits},abits=8}}", PassContext())
    return [g.const_data(n.inputs[1]).astype(np.int64) for n in g.nodes if n.op == "qmatmul"]


def _zero_slices(weights, wbits: int, s: int) -> float:
    return float(np.mean(np.concatenate([(sign_magnitude_slices(w, wbits, s) == 0).ravel() for w in weights])))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = np.load(DIGITS / "test.npz")
    out = tmp_path_factory.mktemp("bsq") / "digits_bsq.onnx"
    result = finetune_bitslices(DIGITS / "model.onnx", out, data["input"], data["label"], wbits=6, s=2,
                                strength=0.2, epochs=20, seed=0)
    return out, result


def test_the_written_model_quantizes_to_the_trained_grid(trained):
    out, _ = trained
    g = run_pipeline(load_onnx(out), "canonicalize", PassContext())
    for node in (n for n in g.nodes if n.op == "dense"):
        w = g.const_data(node.inputs[1]).astype(np.float64)
        scale, mag, _ = integer_grid(w, 6)
        assert np.abs(np.abs(w) - scale * mag).max() <= 1e-5 * np.abs(w).max()  # on the grid, not near it


def test_the_penalty_zeroes_slices_at_a_bounded_cost(trained):
    out, result = trained
    before = _zero_slices(_quantized_weights(DIGITS / "model.onnx", 6), 6, 2)
    assert _zero_slices(_quantized_weights(out, 6), 6, 2) > before + 0.1  # measured: 0.53 -> 0.76
    assert len(result["penalties"]) == 20 and result["penalties"][-1] < result["penalties"][0]
    assert result["finetuned_accuracy"] >= result["teacher_accuracy"] - 0.03


def test_bad_arguments_are_refused(tmp_path):
    x, y = np.zeros((4, 64), np.float32), np.zeros(4, np.int64)
    with pytest.raises(NnfpgaError, match="slice width"):
        finetune_bitslices(DIGITS / "model.onnx", tmp_path / "a.onnx", x, y, s=3)
    with pytest.raises(NnfpgaError, match="2..8"):
        finetune_bitslices(DIGITS / "model.onnx", tmp_path / "a.onnx", x, y, wbits=9)
    with pytest.raises(ModelError, match="MLP"):
        finetune_bitslices(CNN / "model.onnx", tmp_path / "a.onnx", np.zeros((4, 1, 8, 8), np.float32), y)
