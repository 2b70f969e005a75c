"""Models that arrive quantized: agreement with onnxruntime running the quantized model itself.

For each form tests/test_quantized_models.py builds (onnxruntime's quantize_static in QDQ per
channel and per tensor, QOperator, 4-bit QDQ; QONNX; the residual and concat blocks), the
model is compiled with its own scales and its integer IR is run on the example's test set
(the blocks: 300 seeded normal inputs): the fraction of output integers identical to
onnxruntime's, the largest difference in LSBs and top-1 accuracy, with the requant
multiplier a model's own quantization gets (nnfpga.hardware.MULT_BITS) and, for comparison,
with the DSP's 17 bits a calibrated layer gets.

    python -m bench --only quantized        (about 3 minutes on 2 cores)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from bench.common import EXAMPLES

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _forms():
    """(label, model path or ONNX model, inputs, labels or None, onnxruntime's outputs as integers)."""
    sys.path.insert(0, str(TESTS))
    import test_quantized_models as tq

    work = Path(tempfile.mkdtemp(prefix="nnfpga-bench-quantized-"))
    for example, fmt, per_channel in tq.CASES:
        path = tq.quantize_example(example, fmt, per_channel, work)
        test = np.load(EXAMPLES / example / "test.npz")
        yield (f"{example} {fmt} {'per channel' if per_channel else 'per tensor'}", path,
               test[test.files[0]].astype(np.float32), test["label"], None)
    for wbits, abits, _, _ in tq.QONNX_CASES:
        bipolar = 1 if wbits[1] == 2 else None
        model, out_scale, out_zero = tq.qonnx_mlp(False, wbits, abits, bipolar)
        test = np.load(EXAMPLES / "digits_mlp" / "test.npz")
        x = test[test.files[0]].astype(np.float32).reshape(-1, 64)
        session = tq.make_session(tq.qonnx_mlp(True, wbits, abits, bipolar)[0])
        theirs = np.concatenate([session.run(None, {"x": s[None]})[0] for s in x])
        yield (f"QONNX digits MLP w{wbits} a{abits}", model, x, test["label"],
               np.rint(theirs / out_scale).astype(np.int64) + out_zero)
    for builder, fmt, _, _ in tq.BLOCKS:
        path = tq.quantize_block(builder, fmt, work)
        yield f"{builder} {fmt}", path, None, None, None


def measure(model, x, labels, theirs_int) -> dict:
    sys.path.insert(0, str(TESTS))
    import test_quantized_models as tq
    from nnfpga.frontend import load_onnx_quantized
    from nnfpga.hardware import mult_bits
    from nnfpga.passes import PassContext, run_pipeline

    g, fixed = load_onnx_quantized(model)
    final = run_pipeline(g, tq.PIPELINE, PassContext(fixed_quant=fixed))
    shape = tuple(final.inputs[0].type.shape[1:])
    if x is None:  # a block: seeded normal inputs, as the test draws them
        x = np.random.default_rng(1).standard_normal((300, *shape)).astype(np.float32)
    x = x.reshape((len(x),) + shape)
    ours, out_t = tq.accelerator_integers(final, x)
    if theirs_int is None:
        theirs = tq.onnxruntime_outputs(model, x).reshape(len(x), -1)
        theirs_int = np.rint(theirs / out_t.scale).astype(np.int64) + out_t.zero_point
    diff = np.abs(ours - theirs_int.reshape(ours.shape))
    widths = [mult_bits(final.arrays[n.attrs["mult"].name]) for n in final.nodes if n.op == "requant"]
    row = {"outputs": int(ours.size), "identical": float(np.mean(diff == 0)), "max_lsb": int(diff.max()),
           "mult_bits": max(widths)}
    if labels is not None:
        row["top1_ours"] = float(np.mean(ours.argmax(1) == labels))
        row["top1_onnxruntime"] = float(np.mean(theirs_int.reshape(ours.shape).argmax(1) == labels))
    return row


def run(ctx) -> dict:
    from nnfpga.hardware import DSP_MULT_BITS
    from nnfpga.passes import quantize

    rows = []
    for label, model, x, labels, theirs in _forms():
        ctx.say(f"quantized model: {label}")
        row = {"form": label, "wide": measure(model, x, labels, theirs)}
        with mock.patch.object(quantize, "requant_width", lambda model_quantized: DSP_MULT_BITS):
            row["dsp_only"] = measure(model, x, labels, theirs)
        rows.append(row)
    return {"rows": rows}


def table(result: dict):
    from rich.table import Table

    t = Table(title="Models that arrive quantized — output integers against onnxruntime on the quantized model")
    t.caption = ("identical: share of output integers equal to onnxruntime's (float32 ratio, round half to even); "
                 "max: largest difference in LSBs; top-1 on the example's test set (ours / onnxruntime); "
                 "M bits: widest requant multiplier, its bits above 17 from fabric adders")
    for col in ("form", "outputs", "M bits", "identical", "max", "top-1", "with M of 17 bits: identical", "max "):
        t.add_column(col, justify="left" if col == "form" else "right")
    for r in result["rows"]:
        w, d = r["wide"], r["dsp_only"]
        top1 = f"{100 * w['top1_ours']:.2f}% / {100 * w['top1_onnxruntime']:.2f}%" if "top1_ours" in w else "—"
        t.add_row(r["form"], f"{w['outputs']:,}", str(w["mult_bits"]), f"{100 * w['identical']:.3f}%",
                  str(w["max_lsb"]), top1, f"{100 * d['identical']:.3f}%", str(d["max_lsb"]))
    return t
