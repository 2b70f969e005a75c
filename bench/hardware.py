"""Section 3 — hardware quality per model and folding: cycles per inference measured in
simulation next to the prediction, latency, MACs, multipliers, and (when nnfpga's synthesis
backend exists) LUT/FF/DSP/BRAM and Fmax, throughput and the multiplier roofline.

    throughput      = Fmax / cycles                       inferences per second
    roofline        = device multipliers × Fmax / MACs     inferences per second if every
                                                           multiplier did one MAC per cycle
    achieved/roof   = MACs / (cycles × device multipliers) (Fmax cancels out)
"""
from __future__ import annotations

from bench.common import AUTOFOLD, CNN_WORKLOADS, DEFAULT_FOLD, FULLY_PARALLEL, WORKLOADS, fmt_rate, fold_label

QUICK_FOLDS = [{"pe": 1, "simd": 1}, DEFAULT_FOLD, AUTOFOLD, FULLY_PARALLEL]
FULL_FOLDS = [{"pe": 1, "simd": 1}, {"pe": 2, "simd": 4}, DEFAULT_FOLD, {"pe": 16, "simd": 16}, AUTOFOLD,
              FULLY_PARALLEL]
CNN_FOLDS = [{"pe": 2, "simd": 4}, DEFAULT_FOLD, AUTOFOLD]
"""A convolution's window feeds one pixel's taps per beat, so full parallelism buys nothing there."""


def macs(build) -> int:
    """Multiply-accumulates per inference: K·N per dense layer, times its vectors (a conv's pixels)."""
    return sum(l["k"] * l["n"] * l.get("vectors", 1) for l in build.manifest["layers"])


def run(ctx) -> dict:
    from bench.verification import quantized_inputs_and_golden
    from nnfpga.devices import device
    from nnfpga.hw_tests.sim import simulate

    dev = device(ctx.target)
    rows = []
    plan = [(w, QUICK_FOLDS if ctx.quick else FULL_FOLDS) for w in WORKLOADS.values()]
    plan += [(w, CNN_FOLDS[1:] if ctx.quick else CNN_FOLDS) for w in CNN_WORKLOADS.values()]
    for w, folds in plan:
        x, _ = w.inputs(ctx.hw_samples, seed=ctx.seed)
        for fold in folds:
            build = ctx.build(w, fold)
            layers = build.manifest["layers"]
            x_q, expected = quantized_inputs_and_golden(build, x)
            ctx.say(f"simulate {w.name} {fold_label(fold)} ({len(x)} inferences)")
            sim = simulate(build.out_dir / "rtl", x_q, expected, work_dir=ctx.work / "hw" / w.name,
                           seed=ctx.seed)
            total_macs = macs(build)
            cycles = sim.cycles_per_inference
            row = {
                "model": w.name, "fold": fold, "fold_label": fold_label(fold),
                "layers": [{k: l[k] for k in ("k", "n", "pe", "simd")} for l in layers],
                "multipliers": sum(l["pe"] * l["simd"] for l in layers),
                "macs": total_macs,
                "predicted_cycles_per_inference": build.manifest["predicted_cycles_per_inference"],
                "cycles_per_inference": cycles,
                "latency_cycles": sim.latency_cycles,
                "mismatches": sim.mismatches, "samples": len(x),
                "verilator_build_seconds": sim.build_seconds, "build_cached": sim.build_cached,
                "device": dev.name, "device_multipliers": dev.dsps,
                "achieved_over_roofline": total_macs / (cycles * dev.dsps) if cycles else None,
            }
            # --pnr places the compiler's default design of each model and the pe=4, simd=8 one
            # (the timing table's rows; nextpnr takes minutes each)
            timed = fold in (DEFAULT_FOLD, AUTOFOLD)
            synth = ctx.synthesize(build.out_dir / "rtl", f"{w.name}-pe{fold['pe']}-simd{fold['simd']}" if fold != AUTOFOLD else f"{w.name}-autofold",
                                   important=timed, place=timed)
            if synth is not None:
                row["synth"] = synth
                fmax = synth.get("fmax_mhz")
                if fmax and cycles:
                    row["throughput_per_second"] = fmax * 1e6 / cycles
                    row["roofline_per_second"] = dev.dsps * fmax * 1e6 / total_macs
            rows.append(row)
    return {"device": {"name": dev.name, "multipliers": dev.dsps, "multiplier_shape": list(dev.dsp_shape)},
            "synth": ctx.synth_note, "rows": rows}


def _ratio(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.1%}" if v < 1 else f"{v:.1f}×"


def _pe_simd(row: dict) -> str:
    return " ".join(f"{l['pe']}×{l['simd']}" for l in row["layers"])


def table(result: dict):
    from rich.table import Table

    dev = result["device"]
    with_synth = any("synth" in r for r in result["rows"])
    t = Table(title=f"3. Hardware quality — {dev['name']} ({dev['multipliers']} multipliers "
                    f"{dev['multiplier_shape'][0]}×{dev['multiplier_shape'][1]})")
    t.caption = ("achieved/roofline = MACs / (cycles × device multipliers), Fmax cancels; above 1× the "
                 "design multiplies more per cycle than the device has hard multipliers (the rest in LUTs)")
    cols = ["model", "fold", "pe×simd per layer", "mults", "MACs", "cycles/inf (sim)", "predicted",
            "latency", "bit-exact", "achieved/roofline"]
    if with_synth:
        cols += ["LUT", "FF", "DSP", "BRAM", "Fmax MHz", "bitstream", "inf/s", "roofline inf/s"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "fold", "pe×simd per layer") else "right")
    for r in result["rows"]:
        cells = [r["model"], r["fold_label"], _pe_simd(r), f"{r['multipliers']:,}", f"{r['macs']:,}",
                 str(r["cycles_per_inference"]), str(r["predicted_cycles_per_inference"]),
                 str(r["latency_cycles"]),
                 "yes" if r["mismatches"] == 0 else f"[red]{r['mismatches']} mismatches[/red]",
                 _ratio(r["achieved_over_roofline"])]
        if with_synth:
            s = r.get("synth") or {}
            if s.get("error"):
                cells += [f"[red]{s['error'][:60]}[/red]", "—", "—", "—"]
            else:
                cells += [f"{s[k]:,}" if k in s else "—" for k in ("luts", "ffs", "dsps", "brams")]
            cells += [f"{s['fmax_mhz']:.1f}" if s.get("fmax_mhz") else "—",
                      f"{s['bitstream_bytes'] / 1024:.0f} KiB .bit" if s.get("bitstream_bytes") else "—",
                      fmt_rate(r.get("throughput_per_second"), ""), fmt_rate(r.get("roofline_per_second"), "")]
        t.add_row(*cells)
    return t


# Measured before nnfpga_mult put the products' registers into the MULT18X18Ds: `nnfpga build`
# on ecp5-85k, 100 MHz asked, yosys 0.68 / nextpnr 0.11 as pinned (README, 7 December 2026).
# (model, fold) -> Fmax MHz, LUT, FF, DSP, BRAM, cycles per inference
BEFORE = {
    ("jet", "pe4-simd8"): (77.4, 7809, 8648, 130, 0, 64),
    ("digits", "pe4-simd8"): (93.3, 5523, 6465, 100, 8, 128),
    ("digits_cnn", "autofold"): (85.3, 4548, 4666, 66, 3, 576),
}


def _fold_key(fold: dict) -> str:
    return "autofold" if fold == AUTOFOLD else f"pe{fold['pe']}-simd{fold['simd']}"


def _timing_cells(fmax, luts, ffs, dsps, brams, cycles) -> list[str]:
    rate = fmax * 1e6 / cycles if fmax and cycles else None
    return [f"{fmax:.1f}" if fmax else "—"] + [f"{v:,}" if v is not None else "—" for v in (luts, ffs, dsps, brams)] \
        + [str(cycles) if cycles else "—", fmt_rate(rate, "")]


def timing_table(result: dict):
    """Fmax and resources of the placed designs next to their figures before the multipliers'
    own registers were used (BEFORE); a design without an Fmax this run shows only "before"."""
    from rich.table import Table

    t = Table(title=f"3b. Timing closure on {result['device']['name']} (nextpnr, 100 MHz asked): before / this run")
    t.caption = ("before: products and requant partial products through MULT18X18D without its registers "
                 "(fabric flip-flops around it; README, 7 December 2026); this run: the RTL measured now (since "
                 "nnfpga_mult: MULT18X18D with its input and output registers)")
    for c in ("model", "fold", "when", "Fmax MHz", "LUT", "FF", "DSP", "BRAM", "cycles/inf", "inf/s"):
        t.add_column(c, justify="left" if c in ("model", "fold", "when") else "right")
    rows = {(r["model"], _fold_key(r["fold"])): r for r in result["rows"]}
    for key in list(BEFORE) + [k for k, r in rows.items() if k not in BEFORE and (r.get("synth") or {}).get("fmax_mhz")]:
        model, fold = key
        if key in BEFORE:
            t.add_row(model, fold, "before", *_timing_cells(*BEFORE[key]))
        r = rows.get(key)
        s = (r or {}).get("synth") or {}
        if s.get("fmax_mhz"):
            t.add_row(model, fold, "this run", *_timing_cells(s["fmax_mhz"], s.get("luts"), s.get("ffs"), s.get("dsps"),
                                                        s.get("brams"), r["cycles_per_inference"]))
    return t


def tables(result: dict) -> list:
    return [table(result), timing_table(result)]
