"""`verify`: the accelerator in Verilator against onnxruntime(reference.onnx), bit for bit.

Checks, on the same quantized inputs:
  integer IR (interpreter)  == onnxruntime(reference.onnx)      compiler consistency
  RTL (Verilator)           == onnxruntime(reference.onnx)      the hardware, with random
                                                                input gaps and backpressure
and reports the accuracy of the dequantized hardware output against the float model.

On a build with host parts (Softmax, Sigmoid, ... placed on the CPU by `partition`), the
bit-exact check is the same, on the accelerator's own input: what the host prefix hands
over, as the interpreter computes it (onnxruntime for host ops). The float figures are for
the whole chain, hardware output -> dequantize -> host suffix (interpreter) against the
float model, so they read like `nnfpga run`'s; verify itself needs no TVM.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from nnfpga.backends.lower import from_stream_order, to_stream_order
from nnfpga.backends.reference_onnx import run_reference
from nnfpga.builddir import (check_sample_shapes, load_build, load_final_ir, load_npz, load_build_model,
                             match_inputs)
from nnfpga.errors import BuildError
from nnfpga.hw_tests.fastsim import simulate_fast
from nnfpga.ir import QuantType, clean_name, run_batch
from nnfpga.ir.interpreter import dequantize_array, quantize_array
from nnfpga.ir.types import IntType

DEFAULT_SAMPLES = 200


def _qtype(record: dict) -> QuantType:
    return QuantType(IntType(record["bits"], record["signed"]), record["scale"], record["zero_point"])


def float_model_outputs(model_path: Path, x: np.ndarray) -> np.ndarray:
    """Run the original float model in onnxruntime, one sample at a time (its batch is 1)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    return np.stack([sess.run(None, {name: xi.reshape(shape).astype(np.float32)})[0] for xi in x])


def float_model_run(model_path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the original float model in onnxruntime, one sample at a time; `feeds` maps
    (sanitised) input names to [N, ...] batches. Returns every output stacked on axis 0."""
    import onnx
    import onnxruntime as ort


    model = onnx.load(str(model_path))
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    by_clean = {clean_name(k): v for k, v in feeds.items()}
    inputs = [(i.name, [d if isinstance(d, int) else 1 for d in i.shape]) for i in sess.get_inputs()]
    count = len(next(iter(feeds.values())))
    results = [sess.run(None, {name: by_clean[clean_name(name)][n].reshape(shape).astype(np.float32)
                               for name, shape in inputs}) for n in range(count)]
    return [np.stack([r[k] for r in results]) for k in range(len(results[0]))]


def verify_build(build_dir: Path, *, samples: int | None = None, inputs_path: Path | None = None,
                 seed: int = 0, gap_prob: float = 0.3, backpressure_prob: float = 0.3,
                 progress: Callable | None = None) -> dict:
    build_dir = Path(build_dir)
    manifest = load_build(build_dir)
    g = load_final_ir(build_dir)
    reference = load_build_model(build_dir)
    load_build_model(build_dir, "model.onnx")  # damaged: say so now, not after the simulation
    host = manifest.get("host")
    labels = None
    if inputs_path is not None:
        arrays = load_npz(Path(inputs_path), "inputs")
        labels = arrays.get("label")
        feeds = match_inputs(g, arrays, "input data")
        check_sample_shapes(g, feeds, "input data")
        x = next(iter(feeds.values()))
        count = len(x) if samples is None else min(samples, len(x))
    else:
        count = samples or DEFAULT_SAMPLES
        rng = np.random.default_rng(seed)
        feeds = {v.name: rng.standard_normal((count,) + tuple(v.type.shape[1:])).astype(np.float32)
                 for v in g.inputs}
        x = feeds[g.inputs[0].name]
    if count < 1:
        raise BuildError("nothing to verify: zero samples")
    x = x[:count].astype(np.float32)
    feeds = {k: np.asarray(v[:count], np.float32) for k, v in feeds.items()}
    labels = None if labels is None else np.asarray(labels[:count]).reshape(-1)

    in_t, out_t = _qtype(manifest["accelerator_input"]), _qtype(manifest["accelerator_output"])
    interp = run_batch(g, feeds if host else {g.inputs[0].name: x}, keep_all=True)
    in_shape, out_shape = manifest["accelerator_input"]["shape"], manifest["accelerator_output"]["shape"]
    if host:  # the accelerator's input is the host prefix's result
        x_q = interp[manifest["accelerator_input"]["name"]].reshape((count, *in_shape))
    else:
        x_q = quantize_array(x.reshape((count, *in_shape)), in_t)
    ir_int = interp[manifest["accelerator_output"]["name"]].reshape(count, -1)

    golden = next(iter(run_reference(reference, {reference.graph.input[0].name: x_q}).values()))
    golden = golden.reshape(count, -1).astype(np.int64)
    ir_mismatches = int(np.any(ir_int != golden, axis=1).sum())


    sim = simulate_fast(build_dir / "rtl", to_stream_order(x_q, in_shape), to_stream_order(golden, out_shape),
                   work_dir=build_dir / "sim", gap_prob=gap_prob, backpressure_prob=backpressure_prob, seed=seed,
                   progress=progress)
    hw = from_stream_order(np.asarray(sim.outputs, np.int64), out_shape).reshape(count, -1)
    # The harness also replays inputs back to back for timing; a fault seen only there counts too.
    mismatches = max(int(np.any(hw != golden, axis=1).sum()), sim.mismatches)

    if host:  # the whole chain: hardware output -> dequantize -> host suffix
        chain = run_batch(g, feeds, given={manifest["accelerator_output"]["name"]: hw.reshape((count, *out_shape))})
        hw_real = chain[g.outputs[0].name].reshape(count, -1)
        float_out = float_model_run(build_dir / "model.onnx", feeds)[0].reshape(count, -1)
    else:
        float_out = float_model_outputs(build_dir / "model.onnx", x).reshape(count, -1)
        hw_real = dequantize_array(hw, out_t).reshape(count, -1)
    result = {
        "bit_exact": mismatches == 0 and ir_mismatches == 0,
        "samples": count,
        "mismatches": mismatches,
        "ir_vs_reference_mismatches": ir_mismatches,
        "cycles_per_inference": sim.cycles_per_inference,
        "latency_cycles": sim.latency_cycles,
        "predicted_cycles_per_inference": manifest["predicted_cycles_per_inference"],
        "predicted_latency_cycles": manifest.get("predicted_latency_cycles"),
        "float_max_abs_err": float(np.abs(float_out - hw_real).max()),
        "top1_agreement": float(np.mean(float_out.argmax(1) == hw_real.argmax(1))) if hw_real.shape[1] > 1 else None,
    }
    if labels is not None and hw_real.shape[1] > 1:
        result["float_accuracy"] = float(np.mean(float_out.argmax(1) == labels))
        result["quantized_accuracy"] = float(np.mean(hw_real.argmax(1) == labels))
    return result
