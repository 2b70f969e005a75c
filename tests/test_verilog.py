"""Verilog emitter, without a simulator: ROM layouts, names, determinism, folding checks, a text golden.

Chains of layer records go through the one lowering (`chain_design`, the stream design
`lower_stream` makes of an MLP) and the one emitter (`emit_stream_verilog`). The hardware
itself is checked bit for bit in hw_tests/test_rtl_dense.py.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from nnfpga.backends.rtl_layers import DenseLayer, LayerConfigError
from nnfpga.backends.stream_graph import chain_design
from nnfpga.backends.verilog import emit_stream_verilog, hw_identifier
from nnfpga.hardware import MULT_BITS, param_fields, param_words, weight_fields, weight_words

GOLDEN_RTL = Path(__file__).parent / "golden" / "rtl_tiny"


def dense(rng, name, k, n, pe=1, simd=1, in_signed=False, wbits=8):
    w_max = (1 << (wbits - 1)) - 1
    return DenseLayer(name=name, weights=rng.integers(-w_max, w_max + 1, (k, n)),
                      bias=rng.integers(-500, 500, n), wbits=wbits, in_bits=8, in_signed=in_signed,
                      acc_bits=24, mult=rng.integers(0, 1 << MULT_BITS, n), shift=20, out_zp=-3,
                      lo=-3, hi=127, out_bits=8, out_signed=True, pe=pe, simd=simd)


def chain(pe_simd, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [16, 12, 6]
    return [dense(rng, f"fc{i}", k, n, pe, simd, in_signed=i > 0)
            for i, ((k, n), (pe, simd)) in enumerate(zip(zip(sizes, sizes[1:]), pe_simd))]


def emit(layers, out_dir, in_par=None, **kwargs):
    return emit_stream_verilog(chain_design(layers, in_par), out_dir, **kwargs)


def unpack(word: int, bits: int, count: int, signed: bool = True) -> list[int]:
    out = []
    for i in range(count):
        v = (word >> (i * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if signed and v >> (bits - 1) else v)
    return out


@pytest.mark.parametrize("pe, simd, wbits", [(1, 1, 8), (3, 4, 8), (6, 16, 4), (2, 8, 2)])
def test_weight_rom_holds_every_weight_where_the_module_reads_it(pe, simd, wbits):
    l = dense(np.random.default_rng(pe * simd), "w", 16, 6, pe, simd, wbits=wbits)
    words = weight_words(l)
    sf_count = l.k // simd
    assert len(words) == (l.n // pe) * sf_count
    for addr, word in enumerate(words):
        nf, sf = divmod(addr, sf_count)
        lanes = unpack(word, wbits, pe * simd)
        for p in range(pe):
            for s in range(simd):
                assert lanes[p * simd + s] == l.weights[sf * simd + s, nf * pe + p]


def test_parameter_rom_holds_bias_and_multiplier_per_lane():
    l = dense(np.random.default_rng(3), "p", 8, 6, pe=3)
    lane = l.mult_bits + l.acc_bits
    for nf, word in enumerate(param_words(l)):
        for p in range(3):
            field = (word >> (p * lane)) & ((1 << lane) - 1)
            bias = unpack(field, l.acc_bits, 1)[0]
            assert bias == l.bias[nf * 3 + p]
            assert field >> l.acc_bits == l.mult[nf * 3 + p]


def test_output_is_byte_identical_across_runs(tmp_path):
    a = emit(chain([(2, 4), (3, 6)]), tmp_path / "a")
    b = emit(chain([(2, 4), (3, 6)]), tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_hostile_names_never_reach_the_verilog(tmp_path):
    layers = chain([(1, 1), (1, 1)])
    layers[0] = DenseLayer(**{**layers[0].__dict__, "name": "x; $finish; //"})
    layers[1] = DenseLayer(**{**layers[1].__dict__, "name": "module"})
    files = emit(layers, tmp_path, top="top\n`define")
    text = "".join(p.read_text() for p in files if p.suffix == ".sv")
    assert "$finish" not in text and "`define" not in text
    assert re.search(r"\bu0_x_finish\b", text)
    assert (tmp_path / "top_define.sv").is_file()
    for name in ["x; $finish; //", "module", "", "9lives", "a" * 200, "Ünïcode"]:
        ident = hw_identifier(name)
        assert re.fullmatch(r"[a-z][a-z0-9_]{0,47}", ident), ident
        assert ident not in ("module", "input", "logic")


def test_design_json_describes_the_streams_and_the_interval(tmp_path):
    layers = chain([(4, 8), (2, 3)])
    emit(layers, tmp_path, in_par=4)
    design = json.loads((tmp_path / "design.json").read_text())
    assert design["input"] == {"elements": 16, "bits": 8, "signed": False, "par": 4, "beats": 4}
    assert design["output"] == {"elements": 6, "bits": 8, "signed": True, "par": 2, "beats": 3}
    # layer 0: (12/4)*(16/8) = 6 cycles, fill 4 beats; layer 1: (6/2)*(12/3) = 12, fill 12/4 = 3
    assert [l["cycles"] for l in design["layers"]] == [6, 12]
    assert design["predicted_cycles_per_inference"] == 12 == chain_design(layers, 4).interval
    for name in design["sources"] + design["mem_files"]:
        assert (tmp_path / name).is_file()


def test_a_slow_input_stream_sets_the_interval():
    layers = chain([(12, 16), (6, 12)])  # both layers take one cycle per vector
    assert chain_design(layers, 1).interval == 16  # sixteen one-element input beats


@pytest.mark.parametrize("pe_simd, in_par, message", [
    ([(5, 1), (1, 1)], None, "pe=5 must divide N=12"),
    ([(1, 3), (1, 1)], None, "simd=3 must divide K=16"),
    ([(1, 1), (1, 1)], 5, "in_par=5 must divide"),
])
def test_impossible_foldings_are_refused_with_the_fix(tmp_path, pe_simd, in_par, message):
    with pytest.raises(LayerConfigError, match=re.escape(message)):
        emit(chain(pe_simd), tmp_path, in_par=in_par)


def test_golden_rtl_text(tmp_path):
    """The emitted text for a tiny design, whitespace-normalised; NNFPGA_REGEN_GOLDENS=1 rewrites it."""
    files = emit(chain([(2, 4), (3, 2)]), tmp_path)
    if os.environ.get("NNFPGA_REGEN_GOLDENS"):
        GOLDEN_RTL.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN_RTL.iterdir():
            old.unlink()
        for p in files:
            (GOLDEN_RTL / p.name).write_text(p.read_text())
    expected = sorted(p.name for p in GOLDEN_RTL.iterdir())
    assert sorted(p.name for p in files) == expected
    for p in files:
        normalise = lambda t: [" ".join(line.split()) for line in t.splitlines() if line.strip()]
        assert normalise(p.read_text()) == normalise((GOLDEN_RTL / p.name).read_text()), p.name


@pytest.mark.parametrize("wbits, acc_bits, pe, simd", [(8, 20, 4, 8), (6, 19, 3, 5), (3, 31, 1, 1), (2, 17, 6, 10)])
def test_numpy_rom_text_equals_the_packed_words(wbits, acc_bits, pe, simd):
    from nnfpga.backends.verilog import _mem_lines, mem_text

    rng = np.random.default_rng(wbits)
    k, n = simd * 3, pe * 2
    top = 2 ** (wbits - 1) - 1
    l = DenseLayer("x", rng.integers(-top, top + 1, (k, n)), rng.integers(-1000, 1000, n), wbits, 8, False,
                   acc_bits, rng.integers(0, 2**MULT_BITS, n), 10, 0, 0, 255, 8, False, pe, simd)
    assert mem_text(weight_fields(l), wbits) == _mem_lines(weight_words(l), pe * simd * wbits)
    l.mult[0] = 2**MULT_BITS - 1
    assert l.mult_bits == MULT_BITS  # M's high bits, from fabric, are in the ROM too
    lane = l.mult_bits + acc_bits
    assert mem_text(param_fields(l), lane) == _mem_lines(param_words(l), pe * lane)
