"""backends/ecp5_outreg.py: a block RAM's output register moves into the DP16KD only where
the flip-flops after it are its whole, plain, same-clock readers."""
import json

from nnfpga.backends.ecp5_outreg import absorb_output_registers

CLK = 2


def _bram(width: int, first_bit: int) -> dict:
    ports = {f"DO{s}{i}": [first_bit + (18 if s == "B" else 0) + i] for s in "AB" for i in range(18)}
    ports.update(CLKA=["0"] if width == 36 else [CLK], CLKB=[CLK], OCEA=["0"], OCEB=["1"], RSTA=["0"], RSTB=["0"])
    return {"type": "DP16KD",
            "parameters": {"DATA_WIDTH_A": format(width, "032b"), "DATA_WIDTH_B": format(width, "032b"),
                           "REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA", "CLKBMUX": "CLKB"},
            "port_directions": {p: "output" if p.startswith("DO") else "input" for p in ports},
            "connections": ports}


def _ff(d: int, q: int, lsr="0") -> dict:
    return {"type": "TRELLIS_FF",
            "parameters": {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET"},
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "Q": "output"},
            "connections": {"CLK": [CLK], "DI": [d], "LSR": [lsr], "Q": [q]}}


def _design(tmp_path, width: int, read_bits: range, extra: dict | None = None):
    tmp_path.mkdir(exist_ok=True)
    cells = {"rom": _bram(width, 100)}
    cells.update({f"ff{b}": _ff(b, 1000 + b) for b in read_bits})
    cells.update(extra or {})
    path = tmp_path / "netlist.json"
    path.write_text(json.dumps({"modules": {"top": {"ports": {}, "cells": cells}}}))
    return path


def _cells(path):
    return json.loads(path.read_text())["modules"]["top"]["cells"]


def test_a_pseudo_dual_port_rom_takes_its_read_register(tmp_path):
    path = _design(tmp_path, 36, range(100, 136))
    assert absorb_output_registers(path) == {"brams": 1, "ffs": 36}
    cells = _cells(path)
    rom = cells["rom"]
    assert list(cells) == ["rom"]  # every flip-flop gone
    assert rom["parameters"]["REGMODE_A"] == rom["parameters"]["REGMODE_B"] == "OUTREG"
    assert rom["connections"]["DOA0"] == [1100] and rom["connections"]["DOB17"] == [1135]  # drives the Qs
    assert rom["connections"]["CLKA"] == rom["connections"]["CLKB"] == [CLK]
    assert rom["connections"]["OCEA"] == rom["connections"]["OCEB"] == ["1"]


def test_an_18_bit_read_port_alone_takes_it(tmp_path):
    path = _design(tmp_path, 18, range(118, 136))  # port B's bits only
    assert absorb_output_registers(path) == {"brams": 1, "ffs": 18}
    rom = _cells(path)["rom"]
    assert rom["parameters"]["REGMODE_B"] == "OUTREG" and rom["parameters"]["REGMODE_A"] == "NOREG"


def test_anything_but_plain_sole_readers_leaves_the_netlist_alone(tmp_path):
    lut = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
           "connections": {"A": [105], "Z": [2000]}}
    cases = {"a bit also read by a LUT": _design(tmp_path / "lut", 36, range(100, 136), {"lut": lut}),
             "a flip-flop with a reset": _design(tmp_path / "rst", 36, range(100, 135), {"ff135": _ff(135, 1135, 7)})}
    for why, path in cases.items():
        before = path.read_text()
        assert absorb_output_registers(path) == {"brams": 0, "ffs": 0}, why
        assert path.read_text() == before, why
