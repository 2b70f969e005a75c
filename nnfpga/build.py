"""`compile`: model -> passes -> build directory (IR dumps, RTL, reference ONNX, manifest).

The directory is written to a temporary sibling and moved into place at the end, so a
failure never leaves a half-written build and an existing build is replaced only on `force`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nnfpga.devices import DEFAULT_DEVICE, device
from nnfpga.errors import BuildError, CalibrationError, ModelError
from nnfpga.ir import Graph, Value, clean_name
from nnfpga.ir.textio import save_ir
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.autofold import with_target_fps
from nnfpga.passes.partition import pipeline_text, with_partition

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    """The finished build directory."""
    graph: Graph
    """The final (integer, annotated) IR."""
    manifest: dict
    """What `verify` and `report` need to know about the build."""
    timings: dict = field(default_factory=dict)
    """Seconds spent in steps worth reporting (TVM compiling host parts); not in the manifest,
    which stays byte-identical from run to run."""

    def predict(self, x, *, accelerator: str = "rtl", seed: int = 0):
        """Run the build end to end on a batch (nnfpga/run.py): host prefix (TVM), the accelerator
        (accelerator="rtl": Verilated RTL; "reference": onnxruntime on reference.onnx, bit-exact
        and faster), host suffix (TVM). `x` is [N, ...] for a single-input model, else a dict of
        such arrays by input name; returns [N, *sample shape] (the output's shape less its
        batch-of-one axis, as the .npz convention has it), or a dict for several outputs."""
        from nnfpga.run import predict

        feeds = match_inputs(self.graph, x if isinstance(x, dict) else {"x": np.asarray(x)}, "predict input")
        check_sample_shapes(self.graph, feeds, "predict input")
        outputs, _ = predict(self.out_dir, feeds, accelerator=accelerator, seed=seed)
        outputs = {k: y[:, 0] if y.ndim > 1 and y.shape[1] == 1 else y for k, y in outputs.items()}
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as e:
        raise CalibrationError(f"cannot read {what} file {path}: {e}") from None


def match_inputs(g: Graph, arrays: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Map npz arrays to graph inputs by (sanitised) name; a lone array feeds a lone input."""
    data = {k: v for k, v in arrays.items() if k != "label"}
    if len(g.inputs) == 1 and len(data) == 1:
        return {g.inputs[0].name: next(iter(data.values()))}
    by_clean = {clean_name(k): v for k, v in data.items()}
    missing = [v.name for v in g.inputs if v.name not in by_clean]
    if missing:
        raise CalibrationError(f"{what} has no array for model input(s) {', '.join(missing)} "
                               f"(arrays in the file: {', '.join(sorted(data)) or 'none'})")
    return {v.name: by_clean[v.name] for v in g.inputs}


def check_sample_shapes(g: Graph, feeds: dict[str, np.ndarray], what: str) -> None:
    for v in g.inputs:
        x = feeds[v.name]
        sample = v.type.shape[1:] if v.type.shape and v.type.shape[0] == 1 else v.type.shape
        if x.ndim == 0 or (tuple(x.shape[1:]) != tuple(sample) and tuple(x.shape[1:]) != v.type.shape):
            raise CalibrationError(
                f"{what} for input '{v.name}' has shape {list(x.shape)}, but the model takes "
                f"{list(v.type.shape)}: expected [N, {', '.join(map(str, sample))}] (N samples)")
        if not np.issubdtype(x.dtype, np.number):
            raise CalibrationError(f"{what} for input '{v.name}' holds {x.dtype}, not numbers")


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Refuse to overwrite without force; return a fresh temporary sibling to build in."""
    if out_dir.exists() and not force:
        raise BuildError(f"output directory {out_dir} already exists; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise BuildError(f"{out_dir} exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))


def commit_out_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(trash / "old")
        tmp.rename(out_dir)
        shutil.rmtree(trash)
    else:
        tmp.rename(out_dir)


def _qtype_record(value) -> dict:
    q = value.type.element
    return {"name": value.name, "shape": list(value.type.shape), "bits": q.bits,
            "signed": q.signed, "scale": q.scale, "zero_point": q.zero_point}


TEST_VECTORS = 16
"""Samples written as the HLS testbench's vectors (tb_input.txt / tb_expected.txt)."""
TEST_VECTOR_MACS = 10**8
"""A convolutional build's vectors come from running the integer IR in the interpreter, which
is slow on large networks: their count keeps that work near 10^8 MACs (the digits CNN gets
16, ResNet-50 at 4·10^9 MACs per inference one)."""


def _test_vectors(g: Graph, region, calib: dict | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantized accelerator inputs and their exact outputs, from calibration data if given."""
    from nnfpga.backends.rtl_layers import reference_forward
    from nnfpga.ir.interpreter import quantize_array

    if calib is not None:
        x = next(iter(calib.values()))[:TEST_VECTORS]
    else:
        x = np.random.default_rng(seed).standard_normal((TEST_VECTORS,) + tuple(g.inputs[0].type.shape[1:]))
    if region.input.producer is not None and region.input.producer.inputs[0] not in g.inputs:
        # A host prefix computes what the accelerator takes: run it (the interpreter runs host ops).
        from nnfpga.ir import run_batch

        feeds = {k: v[:TEST_VECTORS] for k, v in calib.items()} if calib is not None else {g.inputs[0].name: x}
        x_q = run_batch(g, feeds, keep_all=True)[region.input.name].reshape(len(x), -1)
        return x_q, reference_forward(region.layers, x_q)[-1]
    x_q = quantize_array(np.asarray(x, np.float64).reshape(len(x), -1), region.input.type.element)
    return x_q, reference_forward(region.layers, x_q)[-1]


def _stream_test_vectors(g: Graph, x: Value, y: Value, calib: dict | None, seed: int,
                         count: int = TEST_VECTORS) -> tuple[np.ndarray, np.ndarray]:
    """`count` accelerator inputs and their exact outputs as the integer IR computes them, in
    stream order (images channels-last), from calibration data if given."""
    from nnfpga.backends.lower import to_stream_order
    from nnfpga.ir import run_batch

    if calib is not None:
        feeds = {k: v[:count] for k, v in calib.items()}
    else:
        rng = np.random.default_rng(seed)
        feeds = {v.name: rng.standard_normal((count,) + tuple(v.type.shape[1:])) for v in g.inputs}
    env = run_batch(g, feeds, keep_all=True)
    return to_stream_order(env[x.name], x.type.shape), to_stream_order(env[y.name], y.type.shape)


def compile_model(model_path: Path, out_dir: Path, *, pipeline: str = DEFAULT_PIPELINE,
                  calib_path: Path | None = None, force: bool = False,
                  input_shapes: dict[str, list[int]] | None = None, seed: int = 0,
                  target: str = DEFAULT_DEVICE,
                  warn: Callable[[str], None] = lambda m: None,
                  on_dump: Callable[[str, str], None] | None = None,
                  dump_after: str | None = None,
                  progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
                  host_ops: str | None = None, host_target: str = "llvm",
                  target_fps: float | None = None, freq_mhz: float = 100.0) -> BuildResult:
    from nnfpga.backends.hls import DEFAULT_PART as HLS_DEFAULT_PART, emit_hls
    from nnfpga.backends.hls_graph import emit_hls_graph
    from nnfpga.backends.host import emit_host
    from nnfpga.backends.lower import integer_region, is_dense_chain, region_input
    from nnfpga.backends.stream_graph import lower_stream
    from nnfpga.backends.verilog_graph import emit_stream_verilog
    from nnfpga.backends.reference_onnx import to_reference_onnx
    from nnfpga.backends.verilog import emit_verilog
    from nnfpga.frontend import load_onnx

    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} does not exist")
    if out_dir.exists() and not force:
        raise BuildError(f"output directory {out_dir} already exists; pass --force to replace it")
    steps = parse_pipeline(pipeline)
    if target_fps is not None:
        steps = with_target_fps(steps, target_fps, freq_mhz)
        pipeline = pipeline_text(steps)
    dev = device(target)
    g = load_onnx(model_path, input_shapes)
    with_host = with_partition(steps, g, host_ops)  # ops for the host: a partition step before quantize
    if with_host != steps:
        steps, pipeline = with_host, pipeline_text(with_host)
    calib = None
    if calib_path is not None:
        calib = match_inputs(g, load_npz(Path(calib_path), "calibration"), "calibration data")
        check_sample_shapes(g, calib, "calibration data")

    tmp = prepare_out_dir(out_dir, force)
    try:
        ir_dir = tmp / "ir"
        ir_dir.mkdir()
        save_ir(g, ir_dir / "00-import")
        ctx = PassContext(calib=calib, seed=seed, warn=warn, progress=progress, device=dev.name)
        final = run_pipeline(g, steps, ctx,
                             dump_after="all", dump_to=ir_dir,
                             on_dump=(lambda name, text: on_dump(name, text)
                                      if on_dump and dump_after in (name, "all") else None))
        save_ir(final, ir_dir / "final")
        timings: dict = {}
        host = emit_host(final, tmp / "host", target=host_target, warn=warn, timings=timings)
        hls_part = dev.part if dev.family in ("xc7", "xcup") else HLS_DEFAULT_PART
        if is_dense_chain(final):
            region = integer_region(final)
            rtl_files = emit_verilog(region.layers, tmp / "rtl", in_par=region.layers[0].simd)
            x_q, y_q = _test_vectors(final, region, calib, seed)
            emit_hls(region.layers, tmp, part=hls_part, test_inputs=x_q, test_expected=y_q)
            region_in, region_out, layers, fifos = region.input, region.output, region.layers, []
            vectors = [1] * len(layers)
        else:
            stream = lower_stream(final, region_input(final))
            rtl_files = emit_stream_verilog(stream, tmp / "rtl")
            region_in, region_out, layers, fifos = stream.input_value, stream.output_value, stream.layers, stream.fifos
            vectors = [i.vectors for i in stream.instances if i.layer is not None]  # a conv: one per pixel
            macs = sum(l.k * l.n * v for l, v in zip(layers, vectors))
            count = max(1, min(TEST_VECTORS, TEST_VECTOR_MACS // max(1, macs)))
            x_q, y_q = _stream_test_vectors(final, region_in, region_out, calib, seed, count)
            emit_hls_graph(stream, tmp, part=hls_part, test_inputs=x_q, test_expected=y_q)
        (tmp / "reference.onnx").write_bytes(to_reference_onnx(final).SerializeToString())
        shutil.copyfile(model_path, tmp / "model.onnx")
        manifest = {
            "model": model_path.name,
            "pipeline": pipeline,
            "target": dev.name,
            "float_input": {"name": final.inputs[0].name, "shape": list(final.inputs[0].type.shape)},
            "float_output": {"name": final.outputs[0].name, "shape": list(final.outputs[0].type.shape)},
            "accelerator_input": _qtype_record(region_in),
            "accelerator_output": _qtype_record(region_out),
            "layers": [{"name": l.name, "k": int(l.weights.shape[0]), "n": int(l.weights.shape[1]),
                        "pe": l.pe, "simd": l.simd, "wbits": l.wbits, "acc_bits": l.acc_bits,
                        "cycles": (l.weights.shape[1] // l.pe) * (l.weights.shape[0] // l.simd),
                        "vectors": v}
                       for l, v in zip(layers, vectors)],
            "rtl": sorted(p.name for p in rtl_files),
        }
        if fifos:
            manifest["fifos"] = fifos
        if ctx.report:  # what passes such as lowrank measured, per layer
            manifest["pass_reports"] = ctx.report
        if host is not None:
            dequantize = next(n for n, _ in region_out.uses if n.op == "dequantize")
            manifest["host"] = {**host, "accelerator_float_input": region_in.producer.inputs[0].name,
                                "accelerator_float_output": dequantize.output.name,
                                "graph_outputs": [v.name for v in final.outputs]}
        design = json.loads((tmp / "rtl" / "design.json").read_text())
        manifest["predicted_cycles_per_inference"] = design["predicted_cycles_per_inference"]
        if "predicted_latency_cycles" in design:  # stream designs; a dense chain's is in nnfpga.cost
            manifest["predicted_latency_cycles"] = design["predicted_latency_cycles"]
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        commit_out_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out_dir, final, manifest, timings)
