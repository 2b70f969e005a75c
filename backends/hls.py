"""Vitis HLS C++ backend: the shared parts, and the C simulation.

    backends/hls_graph.py emit_hls_graph(design, build_dir)   writes build_dir/hls/* and
                                                              build_dir/project/vitis_hls.tcl
    csim(build_dir / "hls", x)      compiles the design with g++ and runs it (C simulation)

This module holds what every design shares: names, integer types, the dense layer's
context (its ROMs in the RTL's layout, nnfpga.hardware), the ports, the test vectors, the
rendering of the files and the C simulation.

Interface: the top function `void top(hls::stream<top_in_t>& in, hls::stream<top_out_t>& out)`
(AXI4-Stream ports, no side channels) carries one vector element per transfer, element 0
first; one call consumes K0 inputs and produces N_last outputs. Layers talk through the
same one-element streams. Inside a layer the matrix-vector unit does pe x simd products per
cycle (NF x SF cycles, PIPELINE II=1 on the synapse fold), after reading the whole input
vector and before writing the output vector, so a layer takes about K + NF*SF + N cycles.

Files in hls/ (all generated from templates/hls/*.j2, byte-identical for the same input):
    nnfpga_int.h        nn_int<W>/nn_uint<W>: smallest standard type in plain C++, ap_int<W>
                        under __SYNTHESIS__ or NNFPGA_USE_AP_INT; wrap/sign-extension helpers
    hls_stream.h        std::queue stand-in for Xilinx's hls::stream, used only when
                        <hls_stream.h> is not on the include path
    nnfpga_params.h     per-layer types, constants, weight/bias/mult ROMs (static const)
    nnfpga_design.h     top-level types and the top function's declaration
    nnfpga_design.cpp   one process per module instance, the DATAFLOW top
    nnfpga_tb.cpp       testbench: text files in, text file out, exit 1 on mismatch
    tb_input.txt, tb_expected.txt   only when given test vectors

Exactness: acc = x.W + bias lives in nn_int<acc_bits> (the record guarantees it fits; the
emitter re-checks from the weights and the input range); acc*M and the rounding shift use 64
bits, exact because |acc*M| < 2^53 (also re-checked). In plain C++ each accumulator is
range-checked at run time, so g++ C simulation and ap_int synthesis compute the same numbers.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import jinja2
import numpy as np

from nnfpga import processes
from nnfpga.errors import BuildError, CalibrationError
from nnfpga.hardware import weight_fields

DEFAULT_TOP = "nnfpga_top"
DEFAULT_PART = "xczu3eg-sbva484-1-e"
DEFAULT_CLOCK_NS = 5.0
CORES = {"dsp": "dsp", "lut": "fabric", "bitserial": "fabric", "const": "fabric"}
"""Layer core -> Vitis BIND_OP implementation of its multipliers. A const layer's products
are plain products by its weights here (Vitis folds the constants into shift-adds in
fabric); the shared adder graph is the RTL's (backends/const_graph.py). A packed dsp layer
(`pack` > 1) stays a plain product per weight here: the integers are the same, and the
packing of several products into one multiplier is the RTL's (nnfpga_mul_pack). So does a
bitserial layer: the sum of its slice products, each shifted, is the plain product sum, and
walking only the non-zero weight slices is the RTL's (nnfpga_dense's bitserial core)."""

HLS_SOURCES = ("nnfpga_design.cpp", "nnfpga_tb.cpp")
"""Translation units of the C simulation (the headers sit beside them)."""
GXX_FLAGS = ("-std=c++17", "-O2")

_STATIC_FILES = ("nnfpga_int.h", "hls_stream.h")
"""Templates rendered without parameters."""
_MAX_EXACT = 2**53
_MAX_SHIFT = 62
"""Largest shift emitted; beyond 53 the rounded term is 0 whenever |acc*M| < 2^53."""

_CPP_RESERVED = frozenset("""
    alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
    char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
    co_return co_yield decltype default delete do double dynamic_cast else enum explicit export
    extern false float for friend goto if inline int long mutable namespace new noexcept not
    not_eq nullptr operator or or_eq private protected public register reinterpret_cast requires
    return short signed sizeof static static_assert static_cast struct switch template this
    thread_local throw true try typedef typeid typename union unsigned using virtual void
    volatile wchar_t while xor xor_eq
    main hls std NULL EOF errno stdin stdout stderr assert abort exit printf fprintf fopen fclose
    strtoll strcmp malloc free memcpy memset read write in out
""".split())
"""C++ keywords and names the generated sources or the C library use unqualified."""
_SUFFIXES = ("_in_t", "_out_t", "_w_t", "_prod_t", "_acc_t", "_mult_t", "_K", "_N", "_PE",
             "_SIMD", "_NF", "_SF", "_SHIFT", "_OUT_ZP", "_LO", "_HI", "_w", "_bias", "_mult",
             "_layer")
"""Every global identifier a layer named `base` defines is `base + suffix`."""
_TOP_SUFFIXES = ("", "_in_t", "_out_t", "_in_len", "_out_len", "_in_bits", "_in_signed",
                 "_out_bits", "_out_signed")


def c_identifier(raw: str, fallback: str = "layer") -> str:
    """A C++ identifier made from `raw`: [A-Za-z0-9_] only, a letter first, no `__`, not reserved."""
    s = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", str(raw))).strip("_")[:48].strip("_")
    if not s:
        s = fallback
    if not s[0].isalpha():
        s = "n" + s
    if s in _CPP_RESERVED or s == "nn" or s.startswith("nn_"):
        s = "n_" + s
    return s


def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("nnfpga.templates", ""),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


def _int_type(bits: int, signed: bool) -> str:
    return f"nn_int<{bits}>" if signed else f"nn_uint<{bits}>"


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _literal(v: int) -> str:
    v = int(v)
    return f"{v}LL" if abs(v) > 2**31 - 1 else str(v)


def _c_array(a: np.ndarray, indent: int = 0, per_line: int = 24, fmt=None) -> str:
    """A brace initializer for `a`, innermost rows wrapped at `per_line` numbers."""
    if fmt is None:  # str() is _literal() when nothing needs LL, and far faster on big layers
        small = a.size == 0 or max(abs(int(a.min())), abs(int(a.max()))) <= 2**31 - 1
        fmt = str if small else _literal
    pad = "    " * (indent + 1)
    if a.ndim == 1:
        items = list(map(fmt, a.tolist()))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        if len(lines) <= 1:
            return "{" + (lines[0] if lines else "") + "}"
        return "{\n" + ",\n".join(pad + line for line in lines) + "\n" + "    " * indent + "}"
    inner = [pad + _c_array(sub, indent + 1, per_line, fmt) for sub in a]
    return "{\n" + ",\n".join(inner) + "\n" + "    " * indent + "}"


def _accumulator_bounds(layer, in_lo: int, in_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, min and max of x.W + bias over every input in [in_lo, in_hi]^K."""
    w = np.asarray(layer.weights)
    # int64 is exact while K·max|w|·max|x| < 2^62 (8-bit weights, inputs within 32 bits: K < 2^23);
    # beyond that Python integers. The bias (up to 64 bits) is added as Python integers.
    exact = w.shape[0] * int(np.abs(w).max(initial=0)) * max(abs(in_lo), abs(in_hi)) < 2**62
    w = w.astype(np.int64 if exact else object)
    bias = np.asarray(layer.bias).astype(object)
    lo = np.minimum(w * in_lo, w * in_hi).sum(axis=0).astype(object) + bias
    hi = np.maximum(w * in_lo, w * in_hi).sum(axis=0).astype(object) + bias
    return lo, hi


def _check_layer(i: int, layer) -> None:
    """Guard: the record obeys the integer semantics the generated C++ relies on."""
    where = f"layer {i} ({c_identifier(layer.name)})"
    w, b, m = np.asarray(layer.weights), np.asarray(layer.bias), np.asarray(layer.mult)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer) or 0 in w.shape:
        raise BuildError(f"{where}: weights must be a non-empty integer matrix [K, N], got "
                         f"{w.dtype} {list(w.shape)}")
    k, n = w.shape
    for label, arr in (("bias", b), ("mult", m)):
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise BuildError(f"{where}: {label} must be an integer vector of length N={n}, got "
                             f"{arr.dtype} {list(arr.shape)}")
    if not 2 <= layer.wbits <= 8:
        raise BuildError(f"{where}: wbits={layer.wbits}; weights must have 2..8 bits")
    wmax = (1 << (layer.wbits - 1)) - 1
    if np.abs(w).max() > wmax:
        raise BuildError(f"{where}: a weight of magnitude {int(np.abs(w).max())} does not fit "
                         f"symmetric {layer.wbits}-bit weights (|w| <= {wmax})")
    for label, bits in (("in_bits", layer.in_bits), ("out_bits", layer.out_bits)):
        if not 1 <= bits <= 32:
            raise BuildError(f"{where}: {label}={bits}; activations must have 1..32 bits")
    if not 2 <= layer.acc_bits <= 64:
        raise BuildError(f"{where}: acc_bits={layer.acc_bits}; the accumulator must have 2..64 bits")
    if layer.pe < 1 or n % layer.pe or layer.simd < 1 or k % layer.simd:
        raise BuildError(f"{where}: pe={layer.pe} must divide N={n} and simd={layer.simd} must "
                         f"divide K={k}")
    if layer.shift < 1:
        raise BuildError(f"{where}: shift={layer.shift}; the requant shift must be >= 1")
    if m.min() < 0 or m.max() >= 2**32:
        raise BuildError(f"{where}: multipliers must lie in [0, 2^32), got {int(m.min())}..{int(m.max())}")
    out_lo, out_hi = _range(layer.out_bits, layer.out_signed)
    if not out_lo <= layer.lo <= layer.hi <= out_hi:
        raise BuildError(f"{where}: clamp [{layer.lo}, {layer.hi}] must be a non-empty range inside "
                         f"the {layer.out_bits}-bit output [{out_lo}, {out_hi}]")
    if abs(layer.out_zp) >= 2**32:
        raise BuildError(f"{where}: output zero point {layer.out_zp} is out of range")
    acc_lo, acc_hi = _accumulator_bounds(layer, *_range(layer.in_bits, layer.in_signed))
    type_lo, type_hi = _range(layer.acc_bits, True)
    if min(acc_lo) < type_lo or max(acc_hi) > type_hi:
        raise BuildError(f"{where}: x.W + bias reaches [{min(acc_lo)}, {max(acc_hi)}], outside the "
                         f"{layer.acc_bits}-bit accumulator [{type_lo}, {type_hi}]")
    worst = max(max(-lo, hi) * int(mm) for lo, hi, mm in zip(acc_lo, acc_hi, m.tolist()))
    if worst >= _MAX_EXACT:
        raise BuildError(f"{where}: |acc*M| can reach {worst} >= 2^53; the requant product must "
                         "stay below 2^53")


def _layer_names(layers: Sequence, top: str) -> list[str]:
    """Unique sanitised bases; no identifier derived from one collides with another or the top's."""
    used = {top + s for s in _TOP_SUFFIXES}
    names = []
    for i, layer in enumerate(layers):
        base = c_identifier(layer.name)
        candidate = base
        while any(candidate + s in used for s in _SUFFIXES) or candidate.startswith("stream_"):
            candidate = f"{base}_{i}" if candidate == base else candidate + "_"
        used.update(candidate + s for s in _SUFFIXES)
        names.append(candidate)
    return names


def _core(layer, cores: Mapping[str, str] | None) -> str:
    core = (cores or {}).get(layer.name) or getattr(layer, "core", None) or "dsp"
    if core not in CORES:
        raise BuildError(f"core {core!r} for layer {c_identifier(layer.name)}: expected one of "
                         f"{', '.join(sorted(CORES))}")
    return CORES[core]


def _layer_context(layer, name: str, impl: str, vectors: int = 1) -> dict:
    """Everything the templates need about one layer, with the ROM layouts computed here."""
    k, n = layer.weights.shape
    pe, simd = layer.pe, layer.simd
    nf, sf = n // pe, k // simd
    # The RTL's weight ROM (nnfpga.hardware) as w[p][s][word]: w[p][s][f*SF + g] = W[g*SIMD + s, f*PE + p]
    rom = weight_fields(layer).astype(np.int64).reshape(nf * sf, pe, simd).transpose(1, 2, 0)
    mult = np.asarray(layer.mult, dtype=np.int64)
    shift = int(layer.shift)
    if shift > _MAX_SHIFT:
        # floor((acc*M + 2^(s-1)) / 2^s) = 0 for s >= 54 when |acc*M| < 2^53: same as M = 0, s = 1
        mult, shift = np.zeros_like(mult), 1
    return {
        "name": name, "K": k, "N": n, "pe": pe, "simd": simd, "nf": nf, "sf": sf,
        "wbits": int(layer.wbits), "acc_bits": int(layer.acc_bits),
        "prod_bits": int(layer.in_bits) + int(layer.wbits),
        "mult_bits": max(1, int(mult.max()).bit_length()),
        "in_type": _int_type(layer.in_bits, layer.in_signed),
        "out_type": _int_type(layer.out_bits, layer.out_signed),
        "out_bits": int(layer.out_bits),
        "out_wrap": "nn_wrap" if layer.out_signed else "nn_uwrap",
        "shift": shift, "out_zp": _literal(layer.out_zp), "lo": _literal(layer.lo),
        "hi": _literal(layer.hi), "impl": impl, "vectors": int(vectors),
        "core": str(getattr(layer, "core", "dsp")),
        "w_init": _c_array(rom),
        "bias_init": _c_array(np.asarray(layer.bias, dtype=np.int64).reshape(nf, pe)),
        "mult_init": _c_array(mult.reshape(nf, pe)),
    }


def _vectors_text(rows: np.ndarray) -> str:
    return "".join(" ".join(str(v) for v in row) + "\n" for row in rows.tolist())


def check_target(part: str, clock_ns: float) -> None:
    """Guard: the part and clock reach the tcl script only if they are plain values."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part):
        raise BuildError(f"FPGA part {part!r} is not a part name")
    if not (isinstance(clock_ns, (int, float)) and 0 < clock_ns < 1e4):
        raise BuildError(f"clock period {clock_ns!r} ns must be a positive number")


def port_context(top: str, inp: tuple[int, bool, int], out: tuple[int, bool, int], order_note: str = "") -> dict:
    """What nnfpga_design.h and the testbench say about the top's ports: (bits, signed, length)
    each, and a comment on the element order when it is not simply row-major."""
    (in_bits, in_signed, in_len), (out_bits, out_signed, out_len) = inp, out
    return {
        "order_note": order_note,
        "top": top, "in_type": _int_type(in_bits, in_signed), "out_type": _int_type(out_bits, out_signed),
        "in_len": int(in_len), "out_len": int(out_len),
        "in_bits": int(in_bits), "in_signed": "true" if in_signed else "false",
        "out_bits": int(out_bits), "out_signed": "true" if out_signed else "false",
        "in_wrap": "nn_wrap" if in_signed else "nn_uwrap",
    }


def test_vector_files(ports: dict, test_inputs, test_expected) -> dict[str, str]:
    """tb_input.txt (and tb_expected.txt) from integer vectors checked against the ports."""
    data: dict[str, str] = {}
    if test_inputs is not None:
        x = _check_vectors(test_inputs, ports["in_len"], "test_inputs",
                           _range(ports["in_bits"], ports["in_signed"] == "true"))
        data["tb_input.txt"] = _vectors_text(x)
        if test_expected is not None:
            y = _check_vectors(test_expected, ports["out_len"], "test_expected",
                               _range(ports["out_bits"], ports["out_signed"] == "true"))
            if len(y) != len(x):
                raise CalibrationError(f"{len(x)} test inputs but {len(y)} expected outputs")
            data["tb_expected.txt"] = _vectors_text(y)
    elif test_expected is not None:
        raise CalibrationError("test_expected given without test_inputs")
    return data


def render_design(out_dir: Path, design: dict, cpp_template: str, data: dict[str, str], part: str,
                  clock_ns: float) -> list[Path]:
    """Write hls/ (the design source from `cpp_template`, the shared headers and testbench, `data`)
    and project/vitis_hls.tcl; return the files written."""
    top = design["top"]
    env = _templates()
    files: dict[str, str] = {f"hls/{f}": env.get_template(f"hls/{f}.j2").render()
                             for f in _STATIC_FILES}
    for f in ("nnfpga_params.h", "nnfpga_design.h", "nnfpga_design.cpp", "nnfpga_tb.cpp"):
        source = cpp_template if f == "nnfpga_design.cpp" else f"hls/{f}.j2"
        files[f"hls/{f}"] = env.get_template(source).render(**design)
    files.update({f"hls/{f}": text for f, text in data.items()})
    files["project/vitis_hls.tcl"] = env.get_template("project/vitis_hls.tcl.j2").render(
        top=top, project=f"{top}_prj", part=part, clock_ns=f"{clock_ns:g}",
        design_files=["nnfpga_design.cpp", "nnfpga_design.h", "nnfpga_params.h", "nnfpga_int.h"],
        tb_sources=["nnfpga_tb.cpp"], tb_data=sorted(data))

    out_dir = Path(out_dir)
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def _check_vectors(a, length: int, what: str, bounds: tuple[int, int]) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] != length or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise CalibrationError(f"{what} must be integer vectors [B, {length}], got {a.dtype} "
                               f"{list(a.shape)}")
    a = a.astype(np.int64)
    if a.size and (a.min() < bounds[0] or a.max() > bounds[1]):
        raise CalibrationError(f"{what} hold values in [{a.min()}, {a.max()}], outside the "
                               f"design's range [{bounds[0]}, {bounds[1]}]")
    return a


def _design_shape(hls_dir: Path) -> dict[str, int]:
    """in_len, out_len, in_bits, ... as declared by the emitted nnfpga_design.h."""
    header = hls_dir / "nnfpga_design.h"
    if not header.is_file():
        raise BuildError(f"{hls_dir} holds no HLS design (nnfpga_design.h missing); run emit_hls_graph first")
    text = header.read_text(encoding="utf-8")
    found = dict(re.findall(r"^const (?:int|bool) \w+?_(in_len|out_len|in_bits|in_signed|out_bits"
                            r"|out_signed) = (\w+);$", text, re.M))
    return {k: (v == "true") if v in ("true", "false") else int(v) for k, v in found.items()}


def compile_csim(hls_dir: Path, work_dir: Path) -> Path:
    """The C simulation executable of `hls_dir`, built by g++ unless one from identical sources exists."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise BuildError("g++ not found on PATH; the HLS C simulation needs a C++17 compiler")
    digest = hashlib.sha256(" ".join(GXX_FLAGS).encode())
    for path in sorted(hls_dir.iterdir()):
        if path.suffix in (".h", ".cpp"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    work_dir.mkdir(parents=True, exist_ok=True)
    exe = work_dir / f"csim_{digest.hexdigest()[:16]}"
    if exe.is_file():
        return exe
    tmp = work_dir / f"{exe.name}.tmp{os.getpid()}"
    cmd = [gxx, *GXX_FLAGS, "-o", str(tmp), *(str(hls_dir / f) for f in HLS_SOURCES)]
    try:
        proc = processes.run(cmd, capture_output=True, text=True)
    except BaseException:  # interrupted: no half-written executable left behind
        tmp.unlink(missing_ok=True)
        raise
    if proc.returncode != 0:
        lines = proc.stderr.splitlines()
        errors = [ln for ln in lines if "error" in ln] or lines
        raise BuildError(f"g++ could not compile the HLS C simulation in {hls_dir}:\n"
                         + "\n".join(errors[:30]))
    os.replace(tmp, exe)
    return exe


def csim(hls_dir: Path, inputs: np.ndarray, expected: np.ndarray | None = None,
         work_dir: Path | None = None, *, strict: bool = False) -> np.ndarray:
    """Run the design in `hls_dir` on `inputs` [B, K0] with g++; return its outputs [B, N] (int64).

    With `expected` the testbench compares too; mismatches raise BuildError only if `strict`
    (otherwise compare the returned outputs yourself). The executable is cached in `work_dir`
    (default: a `csim` folder beside `hls_dir`) under the hash of the sources.
    """
    hls_dir = Path(hls_dir)
    work_dir = Path(work_dir) if work_dir is not None else hls_dir.parent / "csim"
    shape = _design_shape(hls_dir)
    x = _check_vectors(inputs, shape["in_len"], "inputs", _range(shape["in_bits"], shape["in_signed"]))
    y = None
    if expected is not None:
        y = _check_vectors(expected, shape["out_len"], "expected outputs",
                           (-(2**63), 2**63 - 1))
        if len(y) != len(x):
            raise CalibrationError(f"{len(x)} input vectors but {len(y)} expected vectors")
    exe = compile_csim(hls_dir, work_dir)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="run_") as run:
        run_dir = Path(run)
        (run_dir / "input.txt").write_text(_vectors_text(x))
        if y is not None:
            (run_dir / "expected.txt").write_text(_vectors_text(y))
        args = [str(exe), "input.txt", "expected.txt" if y is not None else "-", "output.txt"]
        proc = processes.run(args, cwd=run_dir, capture_output=True, text=True)
        if proc.returncode not in (0, 1) or (proc.returncode == 1 and y is None):
            raise BuildError(f"HLS C simulation failed (exit {proc.returncode}):\n"
                             + (proc.stderr + proc.stdout).strip()[-3000:])
        if proc.returncode == 1 and strict:
            raise BuildError("HLS C simulation does not match the expected outputs:\n"
                             + proc.stdout.strip()[-3000:])
        lines = (run_dir / "output.txt").read_text().splitlines()
    out = np.array([[int(t) for t in line.split()] for line in lines], dtype=np.int64)
    return out.reshape(len(x), shape["out_len"])
