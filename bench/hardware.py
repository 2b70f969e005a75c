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
            # --pnr places the compiler's default design of each model (nextpnr takes minutes each)
            synth = ctx.synthesize(build.out_dir / "rtl", f"{w.name}-pe{fold['pe']}-simd{fold['simd']}" if fold != AUTOFOLD else f"{w.name}-autofold",
                                   important=fold in (DEFAULT_FOLD, AUTOFOLD), place=fold == AUTOFOLD)
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
