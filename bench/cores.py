"""`python -m bench.cores [--family ecp5|xc7] [--quick]`: the product cores against yosys.

Synthesizes single-layer designs (one nnfpga_dense and its requantizer) on the lut core at
weight widths 2..8 and on the packed dsp core, and prints for each the hard multipliers
yosys used against nnfpga.hardware.product_multipliers plus the requantizer's, and the LUTs
it used against nnfpga.cost. The LUT-product factor of nnfpga/calibration.py
(`lut_per_product_bit`) is the least-squares fit printed at the end: the LUTs of a lut
layer beyond those of the same layer on DSPs, per product feature bit.
bench/results/cores-20261207.json holds the rows the factors were fitted on (cells left out).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.synth import synthesize
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.cost import estimate, lut_product_bits, stream_inputs
from nnfpga.devices import DEVICES
from nnfpga.hardware import pack_lane_bits
from nnfpga.ir import parse
from nnfpga.ir.ops import accumulator_bounds
from nnfpga.ir.types import int_type_for_range

FAMILY_DEVICE = {"ecp5": "ecp5-85k", "xc7": "xc7z020"}

# (input element, wbits, core, pack, K, N, pe, simd)
LUT_INSTANCES = [("!q<u8, 0.05, 3>", wb, "lut", 1, 32, 8, 2, 4) for wb in range(2, 9)] + [
    ("!q<i8, 0.05>", 4, "lut", 1, 64, 16, 4, 8),
    ("!q<u4, 0.1, 1>", 3, "lut", 1, 32, 16, 8, 2),
    ("!q<i8, 0.05>", 8, "lut", 1, 16, 8, 1, 8),
]
PACK_INSTANCES = {
    "ecp5": [("!q<u8, 0.05, 3>", 5, "dsp", 2, 32, 8, 4, 4), ("!q<i4, 0.1>", 2, "dsp", 3, 16, 6, 6, 2),
             ("!q<u8, 0.05, 3>", 5, "dsp", 1, 32, 8, 4, 4)],
    "xc7": [("!q<i8, 0.05>", 8, "dsp", 2, 32, 8, 4, 4), ("!q<i4, 0.1>", 4, "dsp", 3, 16, 6, 6, 2),
            ("!q<i8, 0.05>", 8, "dsp", 1, 32, 8, 4, 4)],
}


def layer_design(x_type: str, wbits: int, core: str, pack: int, k: int, n: int, pe: int, simd: int, seed: int = 0):
    """The stream design of one random integer layer with the given core, as IR text lowers it."""
    rng = np.random.default_rng(seed)
    x = parse(f"graph @e(%v: tensor<1x{x_type}>) {{\n  return %v\n}}").inputs[0].type.element
    top = (1 << (wbits - 1)) - 1
    w = rng.integers(-top, top + 1, size=(k, n)).astype(np.int8)
    b = rng.integers(-100, 100, size=n).astype(np.int32)
    acc = int_type_for_range(*accumulator_bounds(x, w, b))
    arrays = {"w": w, "b": b, "ws": np.full(n, 0.01), "m": rng.integers(2**14, 2**15, size=n)}
    text = (f"graph @layer(%x: tensor<1x{k}x{x_type}>) {{\n"
            f"  const %w : tensor<{k}x{n}x!q<i{wbits}, @ws, axis=1>> = @w\n"
            f"  const %b : tensor<{n}xi32> = @b\n"
            f"  %a = qmatmul(%x, %w, %b) {{core = \"{core}\", pack = {pack}, pe = {pe}, simd = {simd}}} : "
            f"tensor<1x{n}x{acc!r}>\n"
            f"  %y = requant(%a) {{hi = 127, lo = -128, mult = @m, shift = 22}} : tensor<1x{n}x!q<i8, 0.1>>\n"
            "  return %y\n}")
    g = parse(text, arrays)
    return lower_stream(g, region_input(g))


def measure(instance: tuple, family: str, work: Path) -> dict:
    dev = DEVICES[FAMILY_DEVICE[family]]
    design = layer_design(*instance)
    name = "_".join(str(v) for v in instance[1:]) + "_" + ("u" if "<u" in instance[0] else "i") + instance[0][4]
    rtl = work / family / name / "rtl"
    emit_stream_verilog(design, rtl)
    result = synthesize(rtl, rtl.parent / "synth", dev)
    predicted = estimate(device=dev, **stream_inputs(design))
    layer = predicted["layers"][0]
    return {"instance": name, "family": family, "core": instance[2], "pack": instance[3],
            "measured": {"luts": result.luts, "ffs": result.ffs, "dsps": result.dsps},
            "predicted": {"luts": predicted["total"]["luts"], "ffs": predicted["total"]["ffs"],
                          "dsps": predicted["total"]["dsps"]},
            "lut_products": layer["luts_breakdown"]["products"],
            "products": design.layers[0].pe * design.layers[0].simd,
            "product_bits": lut_product_bits(design.layers[0]),
            "lane_bits": pack_lane_bits(design.layers[0].in_bits, design.layers[0].wbits),
            "cells": result.cells}


def fit(rows: list[dict]) -> dict:
    """Least-squares LUT-product factors per family from measured rows: the LUTs yosys used
    beyond the model's LUTs for everything but the products, against
    lut core: products x [1, (wb-1)(ib+1)]  -> lut_per_product, lut_per_product_bit
    packed:   products x L                   -> lut_per_pack_bit
    and each row's LUT error with the fitted factors."""
    out = {}
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family]
        rest = lambda r: r["measured"]["luts"] - (r["predicted"]["luts"] - r["lut_products"])
        lut = [r for r in mine if r["core"] == "lut"]
        packed = [r for r in mine if r["core"] == "dsp" and r["pack"] > 1]
        a = np.array([[r["products"], r["products"] * r["product_bits"]] for r in lut], float)
        (per_product, per_bit), *_ = np.linalg.lstsq(a, np.array([rest(r) for r in lut], float), rcond=None)
        per_pack_bit = (sum(rest(r) for r in packed) / sum(r["products"] * r["lane_bits"] for r in packed)
                        if packed else None)
        errors = {}
        for r in lut + packed:
            model = (r["products"] * (per_product + per_bit * r["product_bits"]) if r["core"] == "lut"
                     else r["products"] * per_pack_bit * r["lane_bits"])
            predicted = r["predicted"]["luts"] - r["lut_products"] + model
            errors[r["instance"]] = (predicted - r["measured"]["luts"]) / r["measured"]["luts"]
        out[family] = {"lut_per_product": round(float(per_product), 2), "lut_per_product_bit": round(float(per_bit), 3),
                       "lut_per_pack_bit": None if per_pack_bit is None else round(float(per_pack_bit), 3),
                       "errors": errors}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILY_DEVICE), action="append")
    parser.add_argument("--quick", action="store_true", help="three lut instances and the packed ones")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.family or sorted(FAMILY_DEVICE):
            lut = LUT_INSTANCES[::3] if args.quick else LUT_INSTANCES
            for inst in lut + PACK_INSTANCES[family]:
                row = measure(inst, family, Path(tmp))
                rows.append(row)
                m, p = row["measured"], row["predicted"]
                print(f"{family:5} {row['instance']:28} DSPs {m['dsps']:4} / {p['dsps']:4}   "
                      f"LUTs {m['luts']:6} / {p['luts']:6} ({(p['luts'] - m['luts']) / m['luts']:+.0%})   "
                      f"FFs {m['ffs']:6} / {p['ffs']:6}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    for family, f in fit(rows).items():
        worst = max(f["errors"].values(), key=abs)
        print(f"{family}: lut_per_product {f['lut_per_product']}, lut_per_product_bit {f['lut_per_product_bit']}, "
              f"lut_per_pack_bit {f['lut_per_pack_bit']}; LUT errors with these: "
              + ", ".join(f"{e:+.0%}" for e in f["errors"].values()) + f" (worst {worst:+.0%})")


if __name__ == "__main__":
    main()
