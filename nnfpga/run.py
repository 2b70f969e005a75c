"""`nnfpga run`: a build end to end, as it is deployed, against the float model.

    graph inputs -> host prefix (TVM) -> quantize -> accelerator -> dequantize
                 -> host suffix (TVM) -> graph outputs

The accelerator is the Verilated RTL (hw_tests.fastsim.simulate_fast, inputs back to back: no gaps,
no backpressure), or with accelerator="reference" onnxruntime on reference.onnx, which is
bit-exact with it and much faster. The host parts are the libraries TVM compiled into
host/ (backends/host.py). All tensors travel by IR value name, in one table per sample.
`verify` is the bit-exact check of the accelerator; `run` measures what the user gets:
max abs error and top-1 agreement against onnxruntime on the original float model.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from nnfpga.backends.host import _import_tvm
from nnfpga.backends.lower import from_stream_order, to_stream_order
from nnfpga.backends.reference_onnx import run_reference
from nnfpga.builddir import (check_sample_shapes, load_build, load_final_ir, load_npz, load_build_model,
                             match_inputs)
from nnfpga.errors import BuildError, CalibrationError
from nnfpga.hw_tests.fastsim import simulate_fast
from nnfpga.ir.interpreter import dequantize_array, quantize_array
from nnfpga.verify import _qtype, float_model_run

ACCELERATORS = ("rtl", "reference")


class HostLibrary:
    """One TVM-compiled host part (host/<part>.so), called once per sample."""

    def __init__(self, build_dir: Path, record: dict, host: dict):
        self.record = record
        """The part's manifest record: inputs, outputs, ops, library."""
        if record["library"] is None:
            raise BuildError(f"the host {record['name']} of {build_dir} was not compiled (target "
                             f"{host['target']}, cross compiler {host['cross_compiler']} missing); run "
                             f"{build_dir}/host/build_host.py on a machine with it, or compile again with "
                             "--host-target llvm to run here")
        if not host.get("local", True):
            raise BuildError(f"the host code of {build_dir} is built for {host['target']}, not for this "
                             "CPU; compile again with --host-target llvm to run it here")
        tvm, _ = _import_tvm(record["ops"])
        from tvm import relax

        self._tvm = tvm
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(Path(build_dir) / record["library"])),
                                        tvm.cpu())

    def __call__(self, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self._tvm.runtime.tensor(np.asarray(env[i["name"]], dtype=i["dtype"], order="C"))
                for i in self.record["inputs"]]
        result = self._vm["main"](*args)
        results = [result] if len(self.record["outputs"]) == 1 else list(result)
        return {o["name"]: r.numpy() for o, r in zip(self.record["outputs"], results)}


def _sample_feeds(g, feeds: dict[str, np.ndarray]) -> tuple[list[dict], int]:
    """Per-sample tables {input name: array of the input's exact shape}."""
    count = None
    shaped = {}
    for v in g.inputs:
        x = np.asarray(feeds[v.name], np.float32)
        shape = v.type.shape
        if x.shape[1:] != shape:
            x = x.reshape((x.shape[0],) + shape)
        if count is not None and len(x) != count:
            raise CalibrationError(f"inputs have different sample counts: {count} and {len(x)}")
        count = len(x)
        shaped[v.name] = x
    return [{k: x[n] for k, x in shaped.items()} for n in range(count)], count


def predict(build_dir: Path, feeds: dict[str, np.ndarray], *, accelerator: str = "rtl", seed: int = 0,
            progress: Callable | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Run a build on a batch: `feeds` maps graph input names to [N, ...] arrays. Returns the
    graph outputs by name ([N, *output shape]) and facts about the run (seconds, cycles)."""
    if accelerator not in ACCELERATORS:
        raise BuildError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
    build_dir = Path(build_dir)
    manifest = load_build(build_dir)
    g = load_final_ir(build_dir)
    host = manifest.get("host")
    parts = {p["name"]: p for p in (host or {}).get("parts", [])}
    libraries = {name: HostLibrary(build_dir, record, host) for name, record in parts.items()}
    envs, count = _sample_feeds(g, feeds)
    if count < 1:
        raise BuildError("nothing to run: zero samples")
    info: dict = {"samples": count, "accelerator": accelerator, "host_seconds": 0.0}

    def run_host(name: str) -> None:
        if name in libraries:
            start = time.perf_counter()
            for env in envs:
                env.update(libraries[name](env))
            info["host_seconds"] += time.perf_counter() - start

    run_host("prefix")
    acc_in = host["accelerator_float_input"] if host else g.inputs[0].name
    acc_out = host["accelerator_float_output"] if host else g.outputs[0].name
    in_t, out_t = _qtype(manifest["accelerator_input"]), _qtype(manifest["accelerator_output"])
    x_q = quantize_array(np.stack([env[acc_in] for env in envs]).reshape(count, -1), in_t)
    start = time.perf_counter()
    if accelerator == "rtl":
        stream_in = to_stream_order(x_q, manifest["accelerator_input"]["shape"])
        sim = simulate_fast(build_dir / "rtl", stream_in, work_dir=build_dir / "sim", gap_prob=0.0,
                            backpressure_prob=0.0, seed=seed, progress=progress, timing_samples=min(8, count))
        y_q = from_stream_order(np.asarray(sim.outputs, np.int64), manifest["accelerator_output"]["shape"])
        info["cycles_per_inference"] = sim.cycles_per_inference
        info["latency_cycles"] = sim.latency_cycles
    else:
        reference = load_build_model(build_dir)
        y_q = next(iter(run_reference(reference, {reference.graph.input[0].name: x_q.reshape((count,) + tuple(manifest["accelerator_input"]["shape"]))}).values()))
    info["accelerator_seconds"] = time.perf_counter() - start
    shape = tuple(manifest["accelerator_output"]["shape"])
    y = dequantize_array(y_q.reshape((count,) + shape), out_t)
    for env, yi in zip(envs, y):
        env[acc_out] = yi
    run_host("suffix")
    names = host["graph_outputs"] if host else [v.name for v in g.outputs]
    return {name: np.stack([env[name] for env in envs]) for name in names}, info


def run_build(build_dir: Path, inputs_path: Path, *, samples: int | None = None, accelerator: str = "rtl",
              seed: int = 0, progress: Callable | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """`nnfpga run`: predict on the inputs of an .npz and compare with the float model.

    Returns (result, outputs): the JSON-able result and the graph outputs by name."""
    build_dir = Path(build_dir)
    load_build(build_dir)  # a clear message when DIR is not a build
    g = load_final_ir(build_dir)
    load_build_model(build_dir, "model.onnx")  # damaged: say so now, not after the run
    arrays = load_npz(Path(inputs_path), "inputs")
    labels = arrays.get("label")
    feeds = match_inputs(g, arrays, "input data")
    check_sample_shapes(g, feeds, "input data")
    available = len(next(iter(feeds.values())))
    count = available if samples is None else min(samples, available)
    if count < 1:
        raise BuildError("nothing to run: zero samples")
    feeds = {k: np.asarray(v[:count], np.float32) for k, v in feeds.items()}
    outputs, info = predict(build_dir, feeds, accelerator=accelerator, seed=seed, progress=progress)
    got = np.asarray(next(iter(outputs.values())), np.float64).reshape(count, -1)
    expected = np.asarray(float_model_run(build_dir / "model.onnx", feeds)[0], np.float64).reshape(count, -1)
    result = {**info, "float_max_abs_err": float(np.abs(expected - got).max()),
              "top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1))) if got.shape[1] > 1 else None}
    if labels is not None and got.shape[1] > 1:
        labels = np.asarray(labels[:count]).reshape(-1)
        result["float_accuracy"] = float(np.mean(expected.argmax(1) == labels))
        result["accuracy"] = float(np.mean(got.argmax(1) == labels))
    return result, outputs
