"""Child-process entry points: `python -m bench._child KIND ARGS.json`.

Each writes one JSON object to ARGS["result"]; the parent adds the peak memory. Kept in a
child so memory figures are per job and chatty peer tools stay out of the tables.
"""
from __future__ import annotations

import json
import re
import sys
import time
import traceback
from pathlib import Path


def compile_job(args: dict) -> dict:
    """Time `compile_model` (frontend -> RTL, no simulation) `repeat` times, then once more
    under tracemalloc for the peak Python heap. An unsupported model is a result, not a crash."""
    t0 = time.perf_counter()
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.errors import NnfpgaError
    import_seconds = time.perf_counter() - t0

    model = Path(args["model"])
    calib = Path(args["calib"]) if args.get("calib") else None
    out = Path(args["work"]) / "build"
    if args.get("light_calib"):  # made here, not in the parent, whose memory the child's RSS would inherit
        from bench.common import light_calib

        calib = light_calib(model, Path(args["work"]))

    def once():
        return compile_model(model, out, CompileOptions(pipeline=args["pipeline"], calib_path=calib, force=True))

    times = []
    try:
        for _ in range(args["repeat"]):
            start = time.perf_counter()
            result = once()
            times.append(time.perf_counter() - start)
    except NnfpgaError as e:
        return {"status": "unsupported", "seconds_to_reject": time.perf_counter() - start,
                "import_seconds": import_seconds, **unsupported_ops(str(e), model)}
    peak = None
    if args.get("tracemalloc"):
        import tracemalloc

        tracemalloc.start()
        once()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    layers = result.manifest["layers"]
    return {"status": "ok", "import_seconds": import_seconds, "seconds": times,
            "tracemalloc_peak_bytes": peak, "layers": len(layers),
            "macs": sum(l["k"] * l["n"] * l.get("vectors", 1) for l in layers),
            "predicted_cycles_per_inference": result.manifest["predicted_cycles_per_inference"]}


_PROBLEM_LINE = re.compile(r"^\s+([A-Za-z_][\w.]*) \((?:node '.*'|unnamed node.*)\): (.*)$")


def unsupported_ops(message: str, model: Path) -> dict:
    """The op types named in nnfpga's error; when the message lists only the first nodes
    ('... and N more'), the rest come from scanning the model with the frontend's own list."""
    ops: list[str] = []
    for line in message.splitlines():
        m = _PROBLEM_LINE.match(line)
        if m and m.group(1) not in ops:
            ops.append(m.group(1))
    header = re.search(r"(\d+) node\(s\) cannot be compiled", message)
    truncated = re.search(r"\.\.\. and (\d+) more", message) is not None
    from_scan: list[str] = []
    if truncated:
        import onnx

        from nnfpga.frontend.onnx_import import SUPPORTED_OPS

        for node in onnx.load(str(model), load_external_data=False).graph.node:
            if (node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx")) \
                    and node.op_type not in ops + from_scan:
                from_scan.append(node.op_type)
    return {"unsupported_ops": ops + from_scan, "ops_in_message": ops, "ops_from_model_scan": from_scan,
            "unsupported_nodes": int(header.group(1)) if header else None,
            "message_first_line": message.splitlines()[0] if message else ""}


# -- hls4ml ---------------------------------------------------------------------------------

def torch_mlp_from_onnx(model: Path):
    """The float MLP as torch.nn.Sequential, weights read through nnfpga's canonicalize
    (Gemm/MatMul+Add+Relu become `dense` nodes with W [K, N], bias and a relu flag)."""
    import torch

    from nnfpga.frontend import load_onnx
    from nnfpga.passes import run_pipeline

    g = run_pipeline(load_onnx(model), "canonicalize")
    layers = []
    for node in g.nodes:
        if node.op == "reshape":
            continue
        if node.op != "dense":
            raise ValueError(f"cannot rebuild op '{node.op}' in torch")
        w = g.const_data(node.inputs[1])
        b = g.const_data(node.inputs[2]) if len(node.inputs) > 2 else None
        lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=b is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(w.T.copy()))
            if b is not None:
                lin.bias.copy_(torch.tensor(b))
        layers.append(lin)
        if node.attrs.get("relu"):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval(), int(g.inputs[0].type.shape[-1])


def hls4ml_job(args: dict) -> dict:
    """Convert the float MLP with hls4ml's PyTorch front end (Vitis backend, io_parallel,
    its default config), build its C simulation with compile(), predict the inputs."""
    import numpy as np

    t0 = time.perf_counter()
    import hls4ml
    import_seconds = time.perf_counter() - t0

    model, k = torch_mlp_from_onnx(Path(args["model"]))
    x = np.load(args["inputs"]).astype(np.float32)
    start = time.perf_counter()
    config = hls4ml.utils.config_from_pytorch_model(model, input_shape=(k,), granularity="name",
                                                    backend="Vitis")
    hls_model = hls4ml.converters.convert_from_pytorch_model(
        model, hls_config=config, output_dir=str(Path(args["work"]) / "hls4ml_prj"),
        backend="Vitis", io_type="io_parallel")
    convert_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hls_model.compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    y = np.asarray(hls_model.predict(np.ascontiguousarray(x)), np.float32).reshape(len(x), -1)
    predict_seconds = time.perf_counter() - start
    np.save(args["outputs"], y)
    return {"status": "ok", "version": hls4ml.__version__, "import_seconds": import_seconds,
            "convert_seconds": convert_seconds, "compile_seconds": compile_seconds,
            "predict_seconds": predict_seconds, "samples": len(x),
            "precision": config["Model"]["Precision"].get("default")
            if isinstance(config["Model"]["Precision"], dict) else config["Model"]["Precision"],
            "strategy": config["Model"].get("Strategy"), "reuse_factor": config["Model"].get("ReuseFactor")}


# -- da4ml ----------------------------------------------------------------------------------

def da4ml_job(args: dict) -> dict:
    """One constant-weight layer y = x @ W (integer W, integer x of the given width) through
    da4ml's CMVM optimizer to pipelined Verilog; checked exactly in da4ml's interpreter."""
    import numpy as np

    t0 = time.perf_counter()
    import da4ml
    from da4ml.codegen import RTLModel
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize
    import_seconds = time.perf_counter() - t0

    data = np.load(args["layer"])
    w = data["weights"].astype(np.float64)
    bits, signed = int(data["in_bits"]), bool(data["in_signed"])
    k, n = w.shape

    start = time.perf_counter()
    inp = FixedVariableArrayInput((k,))
    x = quantize(inp, 1 if signed else 0, bits - (1 if signed else 0), 0)
    comb = comb_trace(inp, x @ w)
    trace_seconds = time.perf_counter() - start

    start = time.perf_counter()
    name = "da4ml_dense"
    rtl = RTLModel(comb, name, Path(args["work"]) / "da4ml_prj", latency_cutoff=args["latency_cutoff"],
                   print_latency=False)
    rtl.write()
    write_seconds = time.perf_counter() - start

    rng = np.random.default_rng(0)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    xs = rng.integers(lo, hi + 1, (256, k)).astype(np.float64)
    exact = bool(np.array_equal(np.asarray(comb.predict(xs)), xs @ w))
    pipe = rtl._pipe
    src = Path(args["work"]) / "da4ml_prj" / "src"
    return {"status": "ok", "version": getattr(da4ml, "__version__", None), "import_seconds": import_seconds,
            "trace_seconds": trace_seconds, "write_seconds": write_seconds, "k": k, "n": n,
            "cost": float(comb.cost), "comb_latency": list(map(float, comb.latency)),
            "pipeline_stages": len(pipe.solutions) if pipe is not None else 0,
            "latency_cutoff": args["latency_cutoff"], "exact_in_interpreter": exact,
            "top": name, "sources": sorted(str(p) for p in src.rglob("*.v"))}


JOBS = {"compile": compile_job, "hls4ml": hls4ml_job, "da4ml": da4ml_job}


def main() -> None:
    kind, arg_path = sys.argv[1], Path(sys.argv[2])
    args = json.loads(arg_path.read_text())
    try:
        result = JOBS[kind](args)
    except Exception as e:
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(e).__name__}: {e}".strip()[:2000]}
    Path(args["result"]).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
