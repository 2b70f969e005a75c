"""HLS C++ backend: g++ C simulation bit-exact against a numpy oracle; determinism; names; tcl.

Chains of layer records go through the one lowering (`chain_design`, the stream design
`lower_stream` makes of an MLP) and the one HLS emitter (`emit_hls_graph`)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.hls import c_identifier, csim
from nnfpga.backends.hls_graph import emit_hls_graph
from nnfpga.backends.rtl_layers import DenseLayer
from nnfpga.backends.stream_graph import chain_design
from nnfpga.errors import BuildError, CalibrationError, NnfpgaError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")

HOSTILE = 'x; system("rm -rf /"); //'


def emit_chain_hls(layers, out_dir, top="nnfpga_top", **kwargs):
    """The HLS design of a chain of layer records."""
    return emit_hls_graph(chain_design(layers), out_dir, top, **kwargs)


def oracle(layers, x: np.ndarray) -> np.ndarray:
    """The integer semantics, in int64: acc = x.W + b; y = clamp(zp + ((acc*M + 2^(s-1)) >> s))."""
    x = np.asarray(x, dtype=np.int64)
    for layer in layers:
        acc = x @ layer.weights.astype(np.int64) + layer.bias
        if layer.shift <= 62:
            t = (acc * layer.mult + (1 << (layer.shift - 1))) >> layer.shift
        else:  # 2^(s-1) leaves int64: exact Python integers
            t = ((acc.astype(object) * layer.mult + (1 << (layer.shift - 1))) >> layer.shift).astype(np.int64)
        x = np.clip(layer.out_zp + t, layer.lo, layer.hi)
    return x


def _acc_bits(w: np.ndarray, b: np.ndarray, lo: int, hi: int) -> int:
    top = np.maximum(w * lo, w * hi).sum(axis=0) + b
    bottom = np.minimum(w * lo, w * hi).sum(axis=0) + b
    return int(max(np.abs(top).max(), np.abs(bottom).max())).bit_length() + 1


def mlp(seed: int, parallel, wbits, names=None):
    """16 -> 64 -> 32 -> 32 -> 5: i8 input with zero point, u8 ReLU hidden layers, i8 output.

    Shifts are calibrated on random inputs so activations spread over their range.
    """
    rng = np.random.default_rng(seed)
    dims = [16, 64, 32, 32, 5]
    names = names or [f"fc{i}" for i in range(4)]
    x = rng.integers(-128, 128, (256, 16))
    layers = []
    for i, (k, n) in enumerate(zip(dims, dims[1:])):
        first, last = i == 0, i == 3
        wb = wbits[i]
        wmax = (1 << (wb - 1)) - 1
        w = rng.integers(-wmax, wmax + 1, (k, n))
        b = rng.integers(-300, 301, n)
        in_lo, in_hi = (-128, 127) if first else (0, 255)
        if first:
            b = b - (-7) * w.sum(axis=0)  # input zero point -7 folded into the bias
        mult = rng.integers(2**15, 2**16, n)
        acc = x @ w + b
        shift = max(1, int(np.round(np.log2(np.percentile(np.abs(acc), 90) * mult.mean() / 90))))
        out_zp, lo, hi = (2, -128, 127) if last else (int(rng.integers(0, 8)), None, 255)
        lo = lo if last else out_zp
        pe, simd = parallel[i]
        layer = DenseLayer(name=names[i], weights=w, bias=b, wbits=wb, in_bits=8, in_signed=first,
                           acc_bits=_acc_bits(w, b, in_lo, in_hi), mult=mult, shift=shift,
                           out_zp=out_zp, lo=lo, hi=hi, out_bits=8, out_signed=last, pe=pe, simd=simd)
        layers.append(layer)
        x = oracle([layer], x)
    return layers


def vectors(seed: int, count: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (count, 16))
    x[0], x[1], x[2] = -128, 127, -7  # extremes and the zero point
    x[3] = np.where(np.arange(16) % 2, 127, -128)
    return x


PARALLEL_A = [(8, 4), (4, 16), (2, 8), (5, 4)]
PARALLEL_B = [(1, 1), (16, 2), (32, 32), (1, 32)]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("csim_cache")


@pytest.mark.parametrize("parallel, wbits", [(PARALLEL_A, [8, 4, 8, 4]), (PARALLEL_B, [4, 8, 4, 8])],
                         ids=["pe-simd-a", "pe-simd-b"])
def test_mlp_csim_matches_oracle(tmp_path, work, parallel, wbits):
    layers = mlp(1, parallel, wbits)
    x = vectors(2)
    expected = oracle(layers, x)
    hidden = oracle(layers[:1], x)
    assert np.unique(expected).size > 20 and 0 < (hidden == layers[0].lo).mean() < 0.9  # not all clamped
    emit_chain_hls(layers, tmp_path)
    got = csim(tmp_path / "hls", x, expected, work, strict=True)
    assert got.dtype == np.int64 and got.shape == (600, 5)
    assert np.array_equal(got, expected)


def test_odd_widths_rounding_and_huge_shift(tmp_path, work):
    """4-bit, 3-bit and 40-bit types, 2-bit weights, rounding of negative halves, shift > 62."""
    l0 = DenseLayer("round", weights=np.array([[1, -1, 3, 1]]), bias=np.array([0, 0, 1, -7]), wbits=3,
                    in_bits=8, in_signed=True, acc_bits=40, mult=np.array([1, 1, 3, 5]), shift=2,
                    out_zp=-1, lo=-8, hi=7, out_bits=4, out_signed=True, pe=4, simd=1)
    l1 = DenseLayer("two_bit", weights=np.array([[1, -1], [0, 1], [-1, -1], [1, 0]]),
                    bias=np.array([3, -2]), wbits=2, in_bits=4, in_signed=True, acc_bits=7,
                    mult=np.array([7, 1]), shift=1, out_zp=1, lo=0, hi=7, out_bits=3,
                    out_signed=False, pe=1, simd=2)
    l2 = DenseLayer("huge_shift", weights=np.array([[1, 1], [1, -1]]), bias=np.array([0, 0]), wbits=2,
                    in_bits=3, in_signed=False, acc_bits=5, mult=np.array([65535, 1]), shift=70,
                    out_zp=1, lo=0, hi=3, out_bits=2, out_signed=False, pe=2, simd=2)
    layers = [l0, l1, l2]
    x = np.arange(-128, 128).reshape(-1, 1)
    emit_chain_hls(layers, tmp_path)
    for depth in (1, 2, 3):  # every prefix, so each layer's own outputs are checked
        emit_chain_hls(layers[:depth], tmp_path / f"d{depth}")
        got = csim(tmp_path / f"d{depth}" / "hls", x, None, work)
        assert np.array_equal(got, oracle(layers[:depth], x)), depth
    assert set(np.unique(oracle(layers[:1], x))) >= {-8, -1, 0, 7}


def test_deterministic_across_runs_and_hash_seeds(tmp_path):
    layers = mlp(3, PARALLEL_A, [8, 4, 8, 4])
    a = emit_chain_hls(layers, tmp_path / "a", cores={"fc1": "lut"})
    b = emit_chain_hls(layers, tmp_path / "b", cores={"fc1": "lut"})
    rel = lambda paths, root: {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}
    assert rel(a, tmp_path / "a") == rel(b, tmp_path / "b")
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "from pathlib import Path; import test_hls as t; "
              f"t.emit_chain_hls(t.mlp(3, t.PARALLEL_A, [8, 4, 8, 4]), Path({str(tmp_path / 'c')!r}), "
              "cores={'fc1': 'lut'})")
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    c = sorted((tmp_path / "c").rglob("*.*"))
    assert rel(c, tmp_path / "c") == rel(a, tmp_path / "a")


def test_pragmas_and_cores(tmp_path):
    layers = mlp(4, PARALLEL_A, [8, 4, 8, 4])
    emit_chain_hls(layers, tmp_path, cores={"fc1": "lut"})
    cpp = (tmp_path / "hls" / "nnfpga_design.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in cpp
    assert cpp.count("#pragma HLS PIPELINE II=1") == 3 * 4
    assert "ARRAY_PARTITION variable=u0_fc0_w complete dim=1" in cpp
    impls = re.findall(r"BIND_OP variable=prod op=mul impl=(\w+)", cpp)
    assert impls == ["dsp", "fabric", "dsp", "dsp"]
    params = (tmp_path / "hls" / "nnfpga_params.h").read_text()
    assert "static const u1_fc1_w_t u1_fc1_w[4][16][32]" in params
    with pytest.raises(BuildError, match="core 'bram'"):
        emit_chain_hls(layers, tmp_path / "bad", cores={"fc0": "bram"})


def test_layer_cores_bind_their_multipliers_and_csim_exactly(tmp_path, work):
    """A layer record's own core: lut products bound to fabric; a packed dsp layer stays a
    plain product in HLS (the same integers; the packing is the RTL's), bit-exact in C."""
    from dataclasses import replace
    layers = mlp(6, PARALLEL_A, [8, 4, 8, 4])
    layers = [replace(layers[0], core="lut"), replace(layers[1], pack=2), layers[2],
              replace(layers[3], core="lut")]
    x = vectors(3)
    expected = oracle(layers, x)
    emit_chain_hls(layers, tmp_path)
    cpp = (tmp_path / "hls" / "nnfpga_design.cpp").read_text()
    assert re.findall(r"BIND_OP variable=prod op=mul impl=(\w+)", cpp) == ["fabric", "dsp", "dsp", "fabric"]
    assert np.array_equal(csim(tmp_path / "hls", x, expected, work, strict=True), expected)


def test_const_layers_csim_exactly(tmp_path, work):
    """The const core in C: plain products by the weights, bound to fabric, named in a comment."""
    from dataclasses import replace
    layers = [replace(l, core="const", pe=l.n, simd=l.k) for l in mlp(9, PARALLEL_A, [8, 4, 8, 4])]
    x = vectors(4)
    expected = oracle(layers, x)
    emit_chain_hls(layers, tmp_path)
    cpp = (tmp_path / "hls" / "nnfpga_design.cpp").read_text()
    assert re.findall(r"BIND_OP variable=prod op=mul impl=(\w+)", cpp) == ["fabric"] * 4
    assert cpp.count("const core: products by hard-wired weights") == 4
    assert np.array_equal(csim(tmp_path / "hls", x, expected, work, strict=True), expected)


def test_hostile_and_clashing_names_compile(tmp_path, work):
    layers = mlp(5, PARALLEL_A, [8, 4, 8, 4], names=[HOSTILE, "int", "fc", "fc"])
    files = emit_chain_hls(layers, tmp_path, top="nnfpga top();")
    for path in files:
        text = path.read_text()
        assert "rm -rf" not in text and "system(" not in text and "top();" not in text, path
    x = vectors(6, 50)
    assert np.array_equal(csim(tmp_path / "hls", x, None, work), oracle(layers, x))
    assert "void nnfpga_top(" in (tmp_path / "hls" / "nnfpga_design.cpp").read_text()


@pytest.mark.parametrize("raw, want", [(HOSTILE, "x_system_rm_rf"), ("int", "n_int"), ("", "layer"),
                                       ("3x3", "n3x3"), ("a__b", "a_b"), ("nn_int", "n_nn_int"),
                                       ("ünï/cöde", "n_c_de")])
def test_c_identifier(raw, want):
    assert c_identifier(raw) == want


def test_csim_errors(tmp_path, work):
    layers = mlp(7, PARALLEL_B, [4, 8, 4, 8])
    emit_chain_hls(layers, tmp_path)
    x = vectors(8, 20)
    expected = oracle(layers, x)
    wrong = expected.copy()
    wrong[3, 2] += 1
    assert np.array_equal(csim(tmp_path / "hls", x, wrong, work), expected)  # not strict: outputs
    with pytest.raises(BuildError, match="MISMATCH vector 3 element 2"):
        csim(tmp_path / "hls", x, wrong, work, strict=True)
    with pytest.raises(CalibrationError, match="outside"):
        csim(tmp_path / "hls", x + 200, None, work)
    with pytest.raises(CalibrationError, match=r"\[B, 16\]"):
        csim(tmp_path / "hls", x[:, :15], None, work)
    with (tmp_path / "hls" / "nnfpga_design.cpp").open("a") as f:
        f.write("\nstatic int broken = undeclared_thing;\n")
    with pytest.raises(BuildError, match=r"error: .undeclared_thing. was not declared"):
        csim(tmp_path / "hls", x, None, work)


def test_bad_records_fail_fast(tmp_path):
    good = mlp(9, PARALLEL_A, [8, 4, 8, 4])
    cases = [
        ([good[0].__class__(**{**good[0].__dict__, "pe": 3})], "pe=3 must divide N=64"),
        ([good[0].__class__(**{**good[0].__dict__, "acc_bits": 12})], "outside the 12-bit accumulator"),
        ([good[0].__class__(**{**good[0].__dict__, "wbits": 2})], "does not fit symmetric 2-bit"),
        ([good[0], good[2]], r"outputs 64 x u8 but layer 1 \('fc2'\) reads 32 x u8"),
        ([good[1], good[0]], r"outputs 32 x u8 but layer 1 \('fc0'\) reads 16 x i8"),
        ([], "no layers"),
    ]
    for layers, message in cases:
        with pytest.raises(NnfpgaError, match=message):
            emit_chain_hls(layers, tmp_path)


TCL_STUBS = """
set calls {}
foreach cmd {open_project set_top add_files open_solution set_part create_clock
             csim_design csynth_design cosim_design export_design} {
    proc $cmd {args} [format {lappend ::calls [list %s {*}$args]} $cmd]
}
rename exit real_exit
proc exit {args} { lappend ::calls exit }
source [lindex $argv 0]
foreach c $calls { puts $c }
"""


@pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed")
def test_vitis_tcl_sequence(tmp_path):
    layers = mlp(10, PARALLEL_A, [8, 4, 8, 4])
    x = vectors(11, 8)
    emit_chain_hls(layers, tmp_path / "build", top="mlp", part="xc7z020clg400-1", clock_ns=4,
             test_inputs=x, test_expected=oracle(layers, x))
    stubs = tmp_path / "stubs.tcl"
    stubs.write_text(TCL_STUBS)
    script = tmp_path / "build" / "project" / "vitis_hls.tcl"
    proc = subprocess.run(["tclsh", str(stubs), str(script)], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    calls = [line.split() for line in proc.stdout.splitlines()]
    assert [c[0] for c in calls] == (["open_project", "set_top"] + ["add_files"] * 7 +
                                     ["open_solution", "set_part", "create_clock", "csim_design",
                                      "csynth_design", "cosim_design", "export_design", "exit"])
    assert calls[1] == ["set_top", "mlp"]
    hls_dir = (tmp_path / "build" / "hls").resolve()
    added = [c for c in calls if c[0] == "add_files"]
    for c in added:
        path = Path(c[2] if c[1] == "-tb" else c[1])
        assert path.parent == hls_dir and path.is_file(), c
    assert [Path(c[2]).name for c in added if c[1] == "-tb"] == ["nnfpga_tb.cpp", "tb_expected.txt",
                                                                 "tb_input.txt"]
    assert calls[-7] == ["set_part", "xc7z020clg400-1"]
    assert calls[-6][:3] == ["create_clock", "-period", "4"]
    assert calls[-2] == ["export_design", "-format", "ip_catalog"]
    # the emitted vectors drive the testbench as Vitis would run it: default file names, cwd
    exe_dir = tmp_path / "run"
    exe_dir.mkdir()
    for name in ("tb_input.txt", "tb_expected.txt"):
        shutil.copy(hls_dir / name, exe_dir / name)
    exe = exe_dir / "tb"
    subprocess.run(["g++", "-std=c++17", "-O2", "-o", str(exe), str(hls_dir / "nnfpga_design.cpp"),
                    str(hls_dir / "nnfpga_tb.cpp")], check=True)
    run = subprocess.run([str(exe)], cwd=exe_dir, capture_output=True, text=True)
    assert run.returncode == 0 and "8 vectors, 0 mismatching" in run.stdout, run.stdout + run.stderr


def test_default_part_and_clock(tmp_path):
    emit_chain_hls(mlp(12, PARALLEL_A, [8, 4, 8, 4]), tmp_path)
    tcl = (tmp_path / "project" / "vitis_hls.tcl").read_text()
    assert "set_part {xczu3eg-sbva484-1-e}" in tcl and "create_clock -period 5 " in tcl
    with pytest.raises(BuildError, match="not a part name"):
        emit_chain_hls(mlp(12, PARALLEL_A, [8, 4, 8, 4]), tmp_path, part="x}; exec rm")


def test_bitserial_layers_are_fabric_products_and_csim_exactly(tmp_path, work):
    """A bitserial layer stays the plain product sum in HLS (its slices add up to the weight;
    walking only non-zero slice tiles is the RTL's), bound to fabric, bit-exact in C."""
    from dataclasses import replace
    layers = mlp(7, PARALLEL_A, [8, 4, 8, 4])
    layers = [replace(layers[0], core="bitserial", slice_bits=2), layers[1],
              replace(layers[2], core="bitserial", slice_bits=1, skip_zero=False), layers[3]]
    x = vectors(4)
    expected = oracle(layers, x)
    emit_chain_hls(layers, tmp_path)
    cpp = (tmp_path / "hls" / "nnfpga_design.cpp").read_text()
    assert re.findall(r"BIND_OP variable=prod op=mul impl=(\w+)", cpp) == ["fabric", "dsp", "fabric", "dsp"]
    assert cpp.count("// bitserial core") == 2
    assert np.array_equal(csim(tmp_path / "hls", x, expected, work, strict=True), expected)
