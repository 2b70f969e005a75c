"""Host backend: the nodes `partition` placed on the host, compiled for the CPU by Apache TVM.

    host/prefix.onnx   the host nodes before the accelerator, as a float ONNX model
    host/prefix.so     that model compiled by TVM (Relax) for the host target
    host/prefix.json   its inputs and outputs (IR value names, shapes, dtypes), ops, target
    host/suffix.*      the same for the host nodes after the accelerator
    host/build_host.py for a cross target: compiles the .onnx files where a toolchain is

The prefix holds every host node that does not depend on the accelerator's result, the
suffix every one that does. Each part's inputs and outputs are named after IR values, so a
runner keeps one table of named tensors: graph inputs -> prefix -> quantize -> accelerator
-> dequantize -> suffix -> graph outputs (nnfpga/run.py).

Shapes are the IR's (batch 1): TVM compiles static shapes, and the runner calls the host
code once per sample, as the accelerator streams one sample at a time.

Targets: `--host-target` takes TVM's JSON form ({"kind": "llvm", "mtriple": ...}) or the
older command-line form ("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a53"), which TVM
0.27 no longer parses itself. A target whose triple names another architecture is a cross
target: its libraries are built only if `<triple>-gcc` is on PATH; otherwise the ONNX
files and the build script are written and the skip is explained.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nnfpga.errors import BuildError
from nnfpga.ir import Graph, Node, Value
from nnfpga.ir.host import HOST_OPSET, ONNX_IR_VERSION, make_onnx_node, numpy_dtype, onnx_element

DEFAULT_TARGET = "llvm"
"""The local CPU."""
TVM_REQUIREMENT = "apache-tvm==0.27.0.post1"
"""The version the host fallback is tested with (pyproject.toml's `host` extra says the same)."""
INSTALL_HINT = f"pip install '{TVM_REQUIREMENT}' (or pip install -e '.[host]')"
_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


@dataclass
class HostPart:
    name: str
    """'prefix' or 'suffix'."""
    nodes: list[Node]
    """The host nodes, in graph order."""
    inputs: list[Value]
    """Values the part reads from outside (graph inputs, the prefix, the dequantized output)."""
    outputs: list[Value]
    """Values the part computes that something outside it (or the graph's result) reads."""


def host_parts(g: Graph) -> list[HostPart]:
    """The prefix and suffix of a partitioned graph (either may be missing)."""
    host = [n for n in g.nodes if n.attrs.get("place") == "host"]
    if not host:
        return []
    accel = {id(n) for n in g.nodes if n.attrs.get("place") != "host"}
    after: set[int] = set()  # host nodes fed, directly or not, by the accelerator
    for node in host:
        if any(v.producer is not None and (id(v.producer) in accel or id(v.producer) in after)
               for v in node.inputs):
            after.add(id(node))
    parts = []
    for name, nodes in (("prefix", [n for n in host if id(n) not in after]),
                        ("suffix", [n for n in host if id(n) in after])):
        if not nodes:
            continue
        inside = {id(n) for n in nodes}
        inputs: list[Value] = []
        for node in nodes:
            for v in node.inputs:
                if not v.is_const and (v.producer is None or id(v.producer) not in inside) \
                        and all(v is not i for i in inputs):
                    inputs.append(v)
        outputs = [v for node in nodes for v in node.outputs
                   if v in g.outputs or any(id(reader) not in inside for reader, _ in v.uses)]
        parts.append(HostPart(name, nodes, inputs, outputs))
    return parts


def describe_ops(nodes: list[Node]) -> list[str]:
    """'Softmax (%y)'-style names of what runs on the host, for messages."""
    return [f"{n.attrs['op_type'] if n.op == 'host' else n.op} (%{n.outputs[0].name})" for n in nodes]


# -- ONNX export --------------------------------------------------------------------------------

class _Exporter:
    def __init__(self, g: Graph):
        self.g = g
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}

    def name(self, v: Value) -> str:
        if v.is_const and v.name not in self.inits:
            data = np.asarray(self.g.const_data(v)).astype(numpy_dtype(v.type))
            self.inits[v.name] = numpy_helper.from_array(data, v.name)
        return v.name

    def const(self, name: str, data: np.ndarray) -> str:
        self.inits[name] = numpy_helper.from_array(np.asarray(data), name)
        return name

    def add(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output + "/" + op, **attrs))
        return output

    def node(self, n: Node) -> None:
        ins = [self.name(v) for v in n.inputs]
        out = n.outputs[0].name
        if n.op == "host":
            self.nodes.append(make_onnx_node(n, ins, [v.name for v in n.outputs], name=out + "/host"))
        elif n.op == "dense":  # x·W + b, then ReLU
            y = self.add("Add", [self.add("MatMul", ins[:2], out + "/matmul"), ins[2]],
                         out + "/add" if n.attrs.get("relu") else out)
            if n.attrs.get("relu"):
                self.add("Relu", [y], out)
        elif n.op == "reshape":
            self.add("Reshape", [ins[0], self.const(out + "/shape", np.array(n.attrs["shape"], np.int64))], out)
        elif n.op == "transpose":
            self.add("Transpose", ins, out, perm=list(n.attrs["perm"]))
        elif n.op == "gemm":
            attrs = {"alpha": float(n.attrs.get("alpha", 1.0)), "beta": float(n.attrs.get("beta", 1.0)),
                     "transA": int(bool(n.attrs.get("trans_a"))), "transB": int(bool(n.attrs.get("trans_b")))}
            self.add("Gemm", ins, out, **attrs)
        elif n.op == "conv":
            a = n.attrs
            self.add("Conv", ins, out, strides=a["strides"], pads=a["pads"],
                     dilations=a["dilations"], group=a["group"])
        elif n.op in ("maxpool", "avgpool"):
            a = n.attrs
            extra = ({"dilations": a["dilations"]} if n.op == "maxpool"
                     else {"count_include_pad": int(bool(a.get("count_include_pad")))})
            self.add("MaxPool" if n.op == "maxpool" else "AveragePool", ins, out, kernel_shape=a["kernel"],
                     strides=a["strides"], pads=a["pads"], **extra)
        elif n.op == "concat":
            self.add("Concat", ins, out, axis=n.attrs["axis"])
        elif n.op == "clip":
            self.add("Clip", [ins[0], self.const(out + "/lo", np.array(n.attrs["lo"], np.float32)),
                              self.const(out + "/hi", np.array(n.attrs["hi"], np.float32))], out)
        elif n.op == "pad":
            self.add("Pad", [ins[0], self.const(out + "/pads", np.array(n.attrs["pads"], np.int64)),
                             self.const(out + "/value", np.array(n.attrs.get("value", 0.0), np.float32))], out)
        elif n.op in ("matmul", "add", "mul", "relu"):
            self.add({"matmul": "MatMul", "add": "Add", "mul": "Mul", "relu": "Relu"}[n.op], ins, out)
        else:
            raise BuildError(f"the host backend cannot export the {n.op} node defining %{out}; "
                             "only float ops run on the host")


def _info(v: Value) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, onnx_element(v.type), list(v.type.shape))


def part_to_onnx(g: Graph, part: HostPart) -> onnx.ModelProto:
    """One host part as a float ONNX model (opset HOST_OPSET), inputs and outputs named after IR values."""
    ex = _Exporter(g)
    for node in part.nodes:
        ex.node(node)
    graph = helper.make_graph(ex.nodes, f"{g.name}_{part.name}", [_info(v) for v in part.inputs],
                              [_info(v) for v in part.outputs], list(ex.inits.values()),
                              doc_string=f"Host {part.name} of nnfpga graph @{g.name}.")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", HOST_OPSET)],
                              producer_name="nnfpga")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _record(v: Value) -> dict:
    return {"name": v.name, "shape": list(v.type.shape), "dtype": np.dtype(numpy_dtype(v.type)).name}


# -- targets ------------------------------------------------------------------------------------

def parse_target(text: str) -> dict:
    """TVM target dict from JSON or 'llvm -key=value ...'; BuildError when it is neither."""
    text = (text or DEFAULT_TARGET).strip()
    if text.startswith("{"):
        try:
            target = json.loads(text)
        except json.JSONDecodeError as e:
            raise BuildError(f"--host-target {text!r} is not valid JSON: {e}") from None
        if not isinstance(target, dict) or "kind" not in target:
            raise BuildError(f"--host-target {text!r} needs a \"kind\" (e.g. {{\"kind\": \"llvm\"}})")
        return target
    kind, *flags = text.split()
    target: dict = {"kind": kind}
    for flag in flags:
        key, eq, value = flag.lstrip("-").partition("=")
        if not flag.startswith("-") or not key:
            raise BuildError(f"--host-target {text!r}: cannot read '{flag}' (expected -key=value, "
                             "e.g. llvm -mtriple=aarch64-linux-gnu)")
        target[key] = (value.split(",") if key in ("mattr", "keys", "libs") else value) if eq else True
    if kind != "llvm":
        raise BuildError(f"--host-target {text!r}: the host backend compiles for CPUs, target kind 'llvm'")
    return target


def cross_compiler(target: dict) -> str | None:
    """The C compiler a cross target links with (`<triple>-gcc`), or None for the local CPU."""
    triple = target.get("mtriple")
    if not triple:
        return None
    arch = triple.split("-")[0]
    local = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    if _ARCH.get(arch, arch) == local:
        return None
    return f"{triple}-gcc"


BUILD_SCRIPT = '''#!/usr/bin/env python3
"""Compile this build's host parts for {target_text} (written by nnfpga compile).

Needs apache-tvm ({install}) and the cross compiler {cc} on PATH:
    python host/build_host.py
It writes host/<part>.so beside each host/<part>.onnx.
"""
import json
from pathlib import Path

import onnx
import tvm
from tvm.relax.frontend import onnx as relax_onnx
from tvm.support import cc

TARGET = json.loads({target_json!r})
HERE = Path(__file__).resolve().parent
for part in {parts!r}:
    mod = relax_onnx.from_onnx(onnx.load(str(HERE / (part + ".onnx"))))
    executable = tvm.compile(mod, target=tvm.target.Target(TARGET))
    executable.export_library(str(HERE / (part + ".so")), fcompile=cc.cross_compiler({cc!r}))
    print("wrote", HERE / (part + ".so"))
'''


# -- compiling ---------------------------------------------------------------------------------

def _import_tvm(needed: list[str]):
    try:
        import tvm
        from tvm.relax.frontend import onnx as relax_onnx
    except ImportError as e:
        raise BuildError(f"this model needs the host CPU for {', '.join(needed)}; host code is compiled "
                         f"by Apache TVM, which is not installed ({e}): {INSTALL_HINT}") from None
    return tvm, relax_onnx


def compile_onnx(model: onnx.ModelProto, target: dict, library: Path, cc: str | None = None,
                 needed: list[str] | None = None) -> float:
    """Compile one ONNX model with TVM into `library`; returns the seconds TVM took."""
    tvm, relax_onnx = _import_tvm(needed or [])
    start = time.perf_counter()
    try:
        mod = relax_onnx.from_onnx(model)
        executable = tvm.compile(mod, target=tvm.target.Target(target))
        if cc is None:
            executable.export_library(str(library))
        else:
            from tvm.support import cc as tvm_cc

            executable.export_library(str(library), fcompile=tvm_cc.cross_compiler(cc))
    except Exception as e:
        reason = str(e).strip().splitlines()
        reason = next((line for line in reversed(reason) if line.strip()), type(e).__name__)
        raise BuildError(f"TVM could not compile the host code for {', '.join(needed or ['the host part'])} "
                         f"(target {json.dumps(target, sort_keys=True)}): {reason}") from None
    return time.perf_counter() - start


def emit_host(g: Graph, out_dir: Path, *, target: str = DEFAULT_TARGET,
              warn: Callable[[str], None] = lambda m: None, timings: dict | None = None) -> dict | None:
    """Write host/ for a partitioned graph; returns the manifest's 'host' record (None: no host part).

    `timings` (if given) receives the seconds TVM spent per part."""
    parts = host_parts(g)
    if not parts:
        return None
    needed = describe_ops([n for p in parts for n in p.nodes])
    target_dict = parse_target(target)
    _import_tvm(needed)  # fail before writing anything when TVM is missing
    cc = cross_compiler(target_dict)
    have_cc = cc is None or shutil.which(cc) is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for part in parts:
        model = part_to_onnx(g, part)
        (out_dir / f"{part.name}.onnx").write_bytes(model.SerializeToString())
        library = out_dir / f"{part.name}.so"
        if have_cc:
            seconds = compile_onnx(model, target_dict, library, cc, describe_ops(part.nodes))
            if timings is not None:
                timings[f"tvm_{part.name}_seconds"] = seconds
        record = {"name": part.name, "onnx": f"host/{part.name}.onnx",
                  "library": f"host/{part.name}.so" if have_cc else None,
                  "ops": describe_ops(part.nodes),
                  "inputs": [_record(v) for v in part.inputs], "outputs": [_record(v) for v in part.outputs]}
        (out_dir / f"{part.name}.json").write_text(json.dumps(
            {**record, "target": target_dict, "opset": HOST_OPSET}, indent=2, sort_keys=True) + "\n")
        records.append(record)
    if cc is not None:
        script = out_dir / "build_host.py"
        script.write_text(BUILD_SCRIPT.format(target_text=target, install=INSTALL_HINT, cc=cc,
                                              target_json=json.dumps(target_dict, sort_keys=True),
                                              parts=[p.name for p in parts]))
        if not have_cc:
            warn(f"host code for {target} was not compiled: the cross compiler {cc} is not on PATH "
                 f"(e.g. apt-get install gcc-{cc.removesuffix('-gcc')}); host/*.onnx and "
                 "host/build_host.py are written, run that script where the toolchain is")
    return {"target": target, "target_json": target_dict, "cross_compiler": cc, "compiled": have_cc,
            "local": cc is None, "parts": records}


__all__ = ["host_parts", "part_to_onnx", "emit_host", "compile_onnx", "parse_target", "cross_compiler",
           "describe_ops", "HostPart", "DEFAULT_TARGET", "INSTALL_HINT"]
