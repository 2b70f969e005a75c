"""`compile`: model -> passes -> build directory (IR dumps, RTL, reference ONNX, manifest).

The directory is written to a temporary sibling and moved into place at the end, so a
failure never leaves a half-written build and an existing build is replaced only on `force`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nnfpga.backends.hls import DEFAULT_PART as HLS_DEFAULT_PART
from nnfpga.backends.hls_graph import emit_hls_graph
from nnfpga.backends.host import emit_host
from nnfpga.backends.lower import region_input, to_stream_order
from nnfpga.backends.reference_onnx import to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.builddir import (MANIFEST, check_sample_shapes, commit_out_dir, load_npz, match_inputs,  # noqa: F401
                             prepare_out_dir)
from nnfpga.devices import DEFAULT_DEVICE, device
from nnfpga.errors import BuildError, ModelError
from nnfpga.frontend import load_onnx
from nnfpga.ir import Graph, Value, run_batch
from nnfpga.ir.textio import save_ir
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.autofold import with_target_fps
from nnfpga.passes.partition import pipeline_text, with_partition
from nnfpga.run import predict


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
        feeds = match_inputs(self.graph, x if isinstance(x, dict) else {"x": np.asarray(x)}, "predict input")
        check_sample_shapes(self.graph, feeds, "predict input")
        outputs, _ = predict(self.out_dir, feeds, accelerator=accelerator, seed=seed)
        outputs = {k: y[:, 0] if y.ndim > 1 and y.shape[1] == 1 else y for k, y in outputs.items()}
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs


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


def _stream_test_vectors(g: Graph, x: Value, y: Value, calib: dict | None, seed: int,
                         count: int = TEST_VECTORS) -> tuple[np.ndarray, np.ndarray]:
    """`count` accelerator inputs and their exact outputs as the integer IR computes them, in
    stream order (images channels-last), from calibration data if given."""
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
        final = run_pipeline(g, steps, PassContext(calib=calib, seed=seed, warn=warn, progress=progress,
                                                   device=dev.name),
                             dump_after="all", dump_to=ir_dir,
                             on_dump=(lambda name, text: on_dump(name, text)
                                      if on_dump and dump_after in (name, "all") else None))
        save_ir(final, ir_dir / "final")
        timings: dict = {}
        host = emit_host(final, tmp / "host", target=host_target, warn=warn, timings=timings)
        hls_part = dev.part if dev.family in ("xc7", "xcup") else HLS_DEFAULT_PART
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
        if host is not None:
            dequantize = next(n for n, _ in region_out.uses if n.op == "dequantize")
            manifest["host"] = {**host, "accelerator_float_input": region_in.producer.inputs[0].name,
                                "accelerator_float_output": dequantize.output.name,
                                "graph_outputs": [v.name for v in final.outputs]}
        design = json.loads((tmp / "rtl" / "design.json").read_text())
        manifest["predicted_cycles_per_inference"] = design["predicted_cycles_per_inference"]
        manifest["predicted_latency_cycles"] = design["predicted_latency_cycles"]
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        commit_out_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out_dir, final, manifest, timings)
