"""Move a block RAM's output register into the DP16KD (REGMODE OUTREG), in yosys's JSON netlist.

yosys 0.68 maps every ECP5 memory to DP16KD with REGMODE NOREG, so a register after the
read (nnfpga_dense's S1b, templates/verilog/nnfpga_dense.sv.j2) stays in fabric, and the
path from the block RAM's own read register to it starts with NOREG's 5.6 ns clock-to-out.
The DP16KD has an output register for exactly that; this rewrite uses it:

    DO[i] -> TRELLIS_FF(DI, Q = q[i], CLK = the port's clock, always enabled, no reset)
        =>  DO[i] = q[i], REGMODE = OUTREG, output clock enable 1          (the FF is removed)

A port is rewritten only when every output bit that is read at all is read by exactly one
such flip-flop and the port has no reset, so the function is the same cycle for cycle. In
36-bit pseudo-dual-port mode (yosys's $__PDPW16KD_) both halves of the word are read on port
B's clock, and Lattice's PDPW16KD with REGMODE OUTREG sets REGMODE_A and REGMODE_B: both are
set, and port A's clock and output enable are tied to port B's so the register runs on
either reading of the mode.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

PORT_BITS = 18


def _int(value) -> int:
    return int(value, 2) if isinstance(value, str) else int(value)


def _param(cell: dict, name: str) -> str:
    return str(cell["parameters"].get(name, "")).strip()


def _plain_ff(cell: dict, clock: list) -> bool:
    """A rising-edge flip-flop on `clock`, always enabled, never reset."""
    c = cell["connections"]
    return (cell["type"] == "TRELLIS_FF" and _param(cell, "CLKMUX") == "CLK" and c.get("CLK") == clock
            and (_param(cell, "CEMUX") == "1" or c.get("CE") == ["1"])
            and c.get("LSR", ["0"]) == ["0"] and _param(cell, "LSRMUX") == "LSR")


def _readers(module: dict) -> dict:
    """Net bit -> the (cell, port) inputs and module outputs that read it."""
    readers = defaultdict(list)
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "input":
                for b in bits:
                    readers[b].append((name, port))
    for name, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for b in port["bits"]:
                readers[b].append((None, name))
    return readers


def _sole_ff_readers(module: dict, cell: dict, out_sides: list[str], clock: list, readers: dict) -> list | None:
    """(DO port, flip-flop) for every read output bit of `out_sides`, each read by exactly one
    plain flip-flop on `clock`; None if any bit is read otherwise."""
    pairs = []
    for s in out_sides:
        for i in range(PORT_BITS):
            bits = cell["connections"].get(f"DO{s}{i}")
            if not bits or not readers.get(bits[0]):
                continue
            (name, port), *others = readers[bits[0]]
            ff = module["cells"].get(name) if name is not None else None
            if others or port != "DI" or ff is None or not _plain_ff(ff, clock):
                return None
            pairs.append((f"DO{s}{i}", name))
    return pairs


def _absorb_cell(module: dict, cell: dict, readers: dict) -> int:
    """Rewrite one DP16KD if its read side qualifies; the flip-flops removed."""
    c = cell["connections"]
    pdp = PORT_BITS * 2 in (_int(cell["parameters"]["DATA_WIDTH_A"]), _int(cell["parameters"]["DATA_WIDTH_B"]))
    # (the read clock's side, the sides whose outputs it registers)
    sides = [("B", ["A", "B"])] if pdp else [("A", ["A"]), ("B", ["B"])]
    removed = 0
    for clock_side, out_sides in sides:
        clock = c.get(f"CLK{clock_side}")
        if not clock or not isinstance(clock[0], int) or _param(cell, f"CLK{clock_side}MUX") != f"CLK{clock_side}":
            continue
        if any(_param(cell, f"REGMODE_{s}") != "NOREG" or c.get(f"RST{s}", ["0"]) != ["0"] for s in out_sides):
            continue
        pairs = _sole_ff_readers(module, cell, out_sides, clock, readers)
        if not pairs:
            continue
        for port, ff_name in pairs:
            c[port] = module["cells"].pop(ff_name)["connections"]["Q"]
        for s in out_sides:
            cell["parameters"][f"REGMODE_{s}"] = "OUTREG"
            c[f"OCE{s}"] = ["1"]
        if pdp:
            c["CLKA"] = clock
            cell["parameters"]["CLKAMUX"] = "CLKA"
        removed += len(pairs)
    return removed


def absorb_output_registers(netlist: Path) -> dict:
    """Rewrite yosys's JSON netlist in place; {'brams': DP16KDs changed, 'ffs': flip-flops removed}."""
    design = json.loads(Path(netlist).read_text())
    brams = ffs = 0
    for module in design["modules"].values():
        cells = [cell for cell in module.get("cells", {}).values() if cell["type"] == "DP16KD"]
        if not cells:
            continue
        readers = _readers(module)
        for cell in cells:
            removed = _absorb_cell(module, cell, readers)
            brams += removed > 0
            ffs += removed
    if ffs:
        Path(netlist).write_text(json.dumps(design))
    return {"brams": brams, "ffs": ffs}
