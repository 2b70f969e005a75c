"""`compile`: the compiler's data flow, from an ONNX model to a build directory.

    load -> passes -> lower -> emit RTL, HLS, reference, host -> manifest

`compile_model(model, out_dir, CompileOptions(...), Hooks(...))`: the options decide what
is built (the same options give a byte-identical directory); the hooks only watch (warnings,
progress, IR dumps). The directory is written to a temporary sibling and moved into place at
the end, so a failure never leaves a half-written build and an existing build is replaced
only on `force`.
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
from nnfpga.backends.stream_graph import StreamDesign, lower_stream
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.builddir import (MANIFEST, check_out_dir, check_sample_shapes, commit_out_dir, discard_out_dir,
                             load_npz, match_inputs, prepare_out_dir)
from nnfpga.devices import DEFAULT_DEVICE, Device, device
from nnfpga.errors import BuildError, ModelError, PipelineError
from nnfpga.frontend import load_onnx_quantized
from nnfpga.hardware import folding_cycles
from nnfpga.ir import Graph, Value, run_batch
from nnfpga.ir.textio import save_ir
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.autofold import with_target_fps
from nnfpga.passes.partition import pipeline_text, with_partition
from nnfpga.run import predict


@dataclass(frozen=True)
class CompileOptions:
    """What to build: the `nnfpga compile` options (README "Command line")."""

    pipeline: str = DEFAULT_PIPELINE
    """Pass pipeline (--pipeline)."""
    calib_path: Path | None = None
    """Calibration data .npz (--calib); None: synthetic samples from `seed`."""
    force: bool = False
    """Replace an existing build directory (--force)."""
    input_shapes: dict[str, list[int]] | None = None
    """Shapes fixing dynamic model inputs, by input name (--input-shape)."""
    seed: int = 0
    """Seed of the synthetic calibration data and test vectors (--seed)."""
    target: str = DEFAULT_DEVICE
    """Device whose budget the passes fit (--target)."""
    host_ops: str | None = None
    """Ops also placed on the host, '+'- or ','-separated (--host-ops)."""
    host_target: str = "llvm"
    """TVM target of the host code (--host-target)."""
    target_fps: float | None = None
    """Inferences per second autofold aims at (--target-fps); None: as fast as fits."""
    freq_mhz: float = 100.0
    """Clock the rate is computed at (--freq)."""


def _ignore(*_args) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """How a compile reports while it runs; nothing here changes what it builds, which is why
    these are not CompileOptions (those are plain values: comparable, printable, recorded)."""

    warn: Callable[[str], None] = _ignore
    """Called with each warning (a pass's lossy choice, a host op TVM cannot compile, ...)."""
    progress: Callable[[str, int, int | None], None] = _ignore
    """progress(stage, done, total) during long steps (calibration)."""
    on_dump: Callable[[str, str], None] | None = None
    """on_dump(pass name, IR text) after the pass `dump_after` names (CLI --dump-after)."""
    dump_after: str | None = None
    """The pass whose IR goes to `on_dump`, or "all"."""


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
"""The vectors come from running the integer IR in the interpreter, which is slow on large
networks: their count keeps that work near 10^8 MACs (the digits CNN gets 16, ResNet-50 at
4·10^9 MACs per inference one)."""


def compile_model(model_path: Path, out_dir: Path, options: CompileOptions = CompileOptions(),
                  hooks: Hooks = Hooks()) -> BuildResult:
    """Compile the ONNX model at `model_path` into the build directory `out_dir`."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    keep = (model_path,) + ((Path(options.calib_path),) if options.calib_path is not None else ())
    _check_paths(model_path, out_dir, options.force, keep)
    steps, pipeline = _requested_pipeline(options)
    dev = device(options.target)
    g, fixed_quant = load_onnx_quantized(model_path, options.input_shapes)
    steps, pipeline = _with_host_partition(g, steps, pipeline, options.host_ops)
    _check_dump_after(hooks.dump_after, steps)
    calib = _calibration(g, options.calib_path)

    tmp = prepare_out_dir(out_dir, options.force, keep=keep)
    try:
        ctx = PassContext(calib=calib, seed=options.seed, warn=hooks.warn, progress=hooks.progress,
                          device=dev.name, fixed_quant=fixed_quant)
        final = _run_passes(g, steps, ctx, hooks, tmp / "ir")
        design = lower_stream(final, region_input(final))
        rtl_files = emit_stream_verilog(design, tmp / "rtl")
        _emit_hls(final, design, calib, options.seed, dev, tmp)
        (tmp / "reference.onnx").write_bytes(to_reference_onnx(final).SerializeToString())
        timings: dict = {}
        host = emit_host(final, tmp / "host", target=options.host_target, warn=hooks.warn, timings=timings)
        shutil.copyfile(model_path, tmp / "model.onnx")
        manifest = _manifest(model_path.name, pipeline, dev, final, design, rtl_files, host,
                             json.loads((tmp / "rtl" / "design.json").read_text()))
        if ctx.report:  # what passes such as lowrank measured, per layer
            manifest["pass_reports"] = ctx.report
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        commit_out_dir(tmp, out_dir, options.force)
    except OSError as e:  # a full disk, a directory made read-only meanwhile, ...
        discard_out_dir(tmp)
        raise BuildError(f"cannot write {out_dir}: {e.strerror or e}") from None
    except BaseException:
        discard_out_dir(tmp)
        raise
    return BuildResult(out_dir, final, manifest, timings)


# -- the steps, in the order compile_model takes them ------------------------------------------

def _check_paths(model_path: Path, out_dir: Path, force: bool, keep: tuple[Path, ...]) -> None:
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} does not exist")
    check_out_dir(out_dir, force, keep=keep)  # before the slow part, and again when claiming it


def _check_dump_after(dump_after: str | None, steps: list) -> None:
    names = [step.name for step in steps]
    if dump_after is not None and dump_after != "all" and dump_after not in names:
        raise PipelineError(f"--dump-after {dump_after}: the pipeline has no pass of that name; "
                            f"its passes: {', '.join(names)} (or 'all')")


def _requested_pipeline(options: CompileOptions) -> tuple[list, str]:
    """The pass steps asked for and their text: the user's string, or once --target-fps has
    set autofold's rate, the steps written out."""
    steps = parse_pipeline(options.pipeline)
    if options.target_fps is None:
        return steps, options.pipeline
    steps = with_target_fps(steps, options.target_fps, options.freq_mhz)
    return steps, pipeline_text(steps)


def _with_host_partition(g: Graph, steps: list, pipeline: str, host_ops: str | None) -> tuple[list, str]:
    """The steps with a partition step before quantize when `g` has ops for the host."""
    with_host = with_partition(steps, g, host_ops)
    return (steps, pipeline) if with_host == steps else (with_host, pipeline_text(with_host))


def _calibration(g: Graph, calib_path: Path | None) -> dict[str, np.ndarray] | None:
    if calib_path is None:
        return None
    calib = match_inputs(g, load_npz(Path(calib_path), "calibration"), "calibration data")
    check_sample_shapes(g, calib, "calibration data")
    return calib


def _run_passes(g: Graph, steps: list, ctx: PassContext, hooks: Hooks, ir_dir: Path) -> Graph:
    """Run the pipeline, the IR after import and after each pass saved in `ir_dir`."""
    ir_dir.mkdir()
    save_ir(g, ir_dir / "00-import")
    wanted = (lambda name: hooks.dump_after in (name, "all")) if hooks.on_dump else (lambda name: False)
    final = run_pipeline(g, steps, ctx, dump_after="all", dump_to=ir_dir,
                         on_dump=lambda name, text: hooks.on_dump(name, text) if wanted(name) else None)
    save_ir(final, ir_dir / "final")
    return final


def _emit_hls(final: Graph, design: StreamDesign, calib: dict | None, seed: int, dev: Device, out: Path) -> None:
    """hls/ and project/vitis_hls.tcl, with test vectors the integer IR computes."""
    vectors = [i.vectors for i in design.instances if i.layer is not None]  # a conv: one per pixel
    macs = sum(l.k * l.n * v for l, v in zip(design.layers, vectors))
    count = max(1, min(TEST_VECTORS, TEST_VECTOR_MACS // max(1, macs)))
    x_q, y_q = _test_vectors(final, design.input_value, design.output_value, calib, seed, count)
    part = dev.part if dev.family in ("xc7", "xcup") else HLS_DEFAULT_PART
    emit_hls_graph(design, out, part=part, test_inputs=x_q, test_expected=y_q)


def _test_vectors(g: Graph, x: Value, y: Value, calib: dict | None, seed: int,
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


def _manifest(model_name: str, pipeline: str, dev: Device, final: Graph, design: StreamDesign, rtl_files: list[Path],
              host: dict | None, rtl_design: dict) -> dict:
    """What verify, run and report need to know about the build (manifest.json)."""
    region_in, region_out = design.input_value, design.output_value
    vectors = [i.vectors for i in design.instances if i.layer is not None]
    manifest = {
        "model": model_name,
        "pipeline": pipeline,
        "target": dev.name,
        "float_input": {"name": final.inputs[0].name, "shape": list(final.inputs[0].type.shape)},
        "float_output": {"name": final.outputs[0].name, "shape": list(final.outputs[0].type.shape)},
        "accelerator_input": _qtype_record(region_in),
        "accelerator_output": _qtype_record(region_out),
        "layers": [{"name": l.name, "k": l.k, "n": l.n, "pe": l.pe, "simd": l.simd, "wbits": l.wbits,
                    "acc_bits": l.acc_bits, "cycles": folding_cycles(l), "vectors": v}
                   for l, v in zip(design.layers, vectors)],
        "rtl": sorted(p.name for p in rtl_files),
        "predicted_cycles_per_inference": rtl_design["predicted_cycles_per_inference"],
        "predicted_latency_cycles": rtl_design["predicted_latency_cycles"],
    }
    if design.fifos:
        manifest["fifos"] = design.fifos
    if host is not None:
        dequantize = next(n for n, _ in region_out.uses if n.op == "dequantize")
        manifest["host"] = {**host, "accelerator_float_input": region_in.producer.inputs[0].name,
                            "accelerator_float_output": dequantize.output.name,
                            "graph_outputs": [v.name for v in final.outputs]}
    return manifest
