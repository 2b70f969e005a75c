"""`report`: what a build is, what the cost model expects of it, and what was measured.

    build_report(build_dir) -> dict      also writes build_dir/report.json and report.html

Sources, each optional but the first:
  manifest.json        layers, folding, predicted cycles (written by compile)
  ir/final.ir + .npz   the layers' widths for the cost model (nnfpga.cost)
  rtl/design.json      the input beat width (in_par)
  verify.json          measured cycles per inference, latency, accuracy, bit_exact
  synth/synth.json     measured luts, ffs, dsps, brams, fmax_mhz (written by synthesis)
Throughput = Fmax / cycles per inference (measured if verified, else predicted) when an
Fmax exists. report.html is one self-contained page: inline CSS and SVG, no script, no
network.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

from nnfpga.backends.lower import region_input
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.synth import describe_critical_path
from nnfpga.backends.verilog import hw_identifier
from nnfpga.builddir import load_build
from nnfpga.cost import RESOURCES, LayerShape, estimate, stream_inputs
from nnfpga.errors import BuildError
from nnfpga.ir.textio import load_ir

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
VERIFY_JSON = "verify.json"
SYNTH_JSON = Path("synth") / "synth.json"

RESOURCE_LABELS = {"luts": "LUTs", "ffs": "FFs", "dsps": "DSPs", "brams": "BRAM blocks"}


def _read_json(path: Path, notes: list[str], what: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{what} ({path.name}) could not be read and is left out: {e}")
        return None
    if not isinstance(data, dict):
        notes.append(f"{what} ({path.name}) is not a JSON object and is left out")
        return None
    return data


def cost_inputs(build_dir: Path, manifest: dict, design: dict, notes: list[str]) -> dict:
    """What nnfpga.cost.estimate needs for this build: its layers as built (DenseLayer records,
    with their ROMs), and for a convolutional build each layer's input beat width, its vectors
    per inference and the other stream modules. Falls back to the manifest's shapes (8-bit
    assumed) when ir/final cannot be loaded."""
    try:
        g = load_ir(build_dir / "ir" / "final")
        return stream_inputs(lower_stream(g, region_input(g)))
    except Exception as e:  # a damaged or missing IR still leaves the manifest to report on
        notes.append(f"ir/final could not be loaded ({e}); the cost model assumes 8-bit activations"
                     + (" and leaves out windows, pools and FIFOs" if design.get("instances") else ""))
        layers = [LayerShape(l["name"], l["k"], l["n"], l["pe"], l["simd"], 8, l["wbits"], l["acc_bits"], 8,
                             vectors=l.get("vectors", 1)) for l in manifest["layers"]]
        return {"layers": layers, "in_par": (design.get("input") or {}).get("par") or layers[0].simd}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def build_report(build_dir: Path | str, *, write: bool = True) -> dict:
    """Gather the build's manifest, cost estimate, verification and synthesis results.

    Writes build_dir/report.json and build_dir/report.html unless `write` is False.
    Raises BuildError if build_dir is not a build directory."""
    build_dir = Path(build_dir)
    manifest = load_build(build_dir)
    notes: list[str] = []
    design = _read_json(build_dir / "rtl" / "design.json", notes, "the RTL description") or {}
    inputs = cost_inputs(build_dir, manifest, design, notes)
    target = manifest.get("target", "ecp5-85k")
    est = estimate(device=target, **inputs)
    if design.get("instances") is not None:
        # Windows, pools and joins run at their own rates and a window waits for kernel rows:
        # the module graph's own predictions hold (None from a build made before they existed).
        est["total"]["interval_cycles"] = manifest["predicted_cycles_per_inference"]
        est["total"]["latency_cycles"] = design.get("predicted_latency_cycles")

    verify = _read_json(build_dir / VERIFY_JSON, notes, "the verification result")
    synth = _read_json(build_dir / SYNTH_JSON, notes, "the synthesis result")
    if verify is None:
        notes.append("not verified yet: run 'nnfpga verify DIR' for measured cycles and accuracy")
    if synth is None:
        notes.append("not synthesized yet: no synth/synth.json, so resources are estimates only")

    # Compare with the device synthesis actually targeted (it may differ from the build's).
    synth_target = (synth or {}).get("target") or target
    est_synth = est if synth_target == target else _estimate_or_none(inputs, synth_target, notes)

    measured_interval = _number((verify or {}).get("cycles_per_inference"))
    measured_latency = _number((verify or {}).get("latency_cycles"))
    fmax = _number((synth or {}).get("fmax_mhz"))
    comparison = {
        "device": synth_target,
        "resources": {r: {"estimate": est_synth["total"][r] if est_synth else None,
                          "measured": _number((synth or {}).get(r)),
                          "budget": est_synth["budget"][r] if est_synth else None}
                      for r in RESOURCES},
        "interval_cycles": {"estimate": est["total"]["interval_cycles"], "measured": measured_interval},
        "latency_cycles": {"estimate": est["total"]["latency_cycles"], "measured": measured_latency},
    }
    for row in [*comparison["resources"].values(), comparison["interval_cycles"], comparison["latency_cycles"]]:
        row["ratio"] = row["measured"] / row["estimate"] if row["measured"] is not None and row["estimate"] else None

    throughput = None
    if fmax:
        cycles = measured_interval or est["total"]["interval_cycles"]
        latency = measured_latency or est["total"]["latency_cycles"]
        throughput = {"fmax_mhz": fmax, "cycles_per_inference": cycles,
                      "cycles_source": "measured" if measured_interval else "predicted",
                      "inferences_per_second": fmax * 1e6 / cycles,
                      "latency_us": latency / fmax if latency else None,
                      "timing_met": synth.get("timing_met"), "target_mhz": synth.get("freq_mhz"),
                      "critical_path": synth.get("critical_path")}
        if synth.get("timing_met") is False and synth.get("critical_path"):
            notes.append(f"timing not met at {synth.get('freq_mhz'):g} MHz (Fmax {fmax:.1f} MHz); critical path "
                         + describe_critical_path(synth["critical_path"]))

    per_layer = []
    for m, e in zip(manifest["layers"], est["layers"]):
        per_layer.append({**e, "name": m["name"], "predicted_cycles": m["cycles"]})
    report = {
        "build_dir": str(build_dir),
        "model": manifest.get("model"),
        "pipeline": manifest.get("pipeline"),
        "target": target,
        "accelerator_input": manifest.get("accelerator_input"),
        "accelerator_output": manifest.get("accelerator_output"),
        "predicted_cycles_per_inference": manifest.get("predicted_cycles_per_inference"),
        "layers": per_layer,
        "modules": _modules_with_cost(design.get("instances", []), est["modules"]),
        "fifos": design.get("fifos", []),
        "estimate": {k: est[k] for k in ("device", "family", "budget", "total", "utilization", "fits", "over")},
        "verify": verify,
        "synth": synth,
        "comparison": comparison,
        "throughput": throughput,
        "notes": notes,
    }
    if write:
        (build_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (build_dir / REPORT_HTML).write_text(render_html(report))
    return report


def format_text(report: dict) -> str:
    """A plain-text summary of a report (for `nnfpga report DIR` without --json)."""
    est, comp, thr = report["estimate"], report["comparison"], report["throughput"]
    lines = [f'{report["model"]} on {report["target"]}, pipeline {report["pipeline"]}',
             f'{"layer":<20}{"K":>6}{"N":>6}{"pe":>5}{"simd":>6}{"folds":>7}{"latency":>9}'
             f'{"DSPs":>6}{"LUTs":>8}{"FFs":>8}{"BRAM":>6}']
    for l in report["layers"]:
        lines.append(f'{l["name"][:19]:<20}{l["k"]:>6}{l["n"]:>6}{l["pe"]:>5}{l["simd"]:>6}{l["folds"]:>7}'
                     f'{l["latency_cycles"]:>9}{l["dsps"]:>6}{l["luts"]:>8}{l["ffs"]:>8}{_fmt(l["brams"]):>6}')
    for m in report.get("modules", []):
        if "estimate" in m:
            e = m["estimate"]
            lines.append(f'{m["name"][:19]:<20}{m["module"].removeprefix("nnfpga_"):>33}'
                         f'{e["dsps"]:>6}{e["luts"]:>8}{e["ffs"]:>8}{_fmt(e["brams"]):>6}')
    lines.append(f'{"":<20}{"estimate":>14}{"measured":>12}   (measured on {comp["device"]})')
    for key, label in (("interval_cycles", "cycles/inference"), ("latency_cycles", "latency cycles")):
        lines.append(f'{label:<20}{_fmt(comp[key]["estimate"]):>14}{_fmt(comp[key]["measured"]):>12}')
    for r, row in comp["resources"].items():
        lines.append(f'{RESOURCE_LABELS[r]:<20}{_fmt(row["estimate"]):>14}{_fmt(row["measured"]):>12}'
                     f'   of {_fmt(row["budget"])}')
    lines.append(f'fits {est["device"]} (estimate): {"yes" if est["fits"] else "no, over in " + ", ".join(est["over"])}')
    if report["verify"] is not None:
        v = report["verify"]
        lines.append(f'bit-exact: {v.get("bit_exact")} ({v.get("samples")} samples, {v.get("mismatches")} mismatches)')
    for f in report.get("fifos", []):
        lines.append(f'skip FIFO {f["instance"]} (depth {f["depth"]}) for {f["join"]}: {f["derivation"]}')
    if thr:
        lines.append(f'throughput {thr["inferences_per_second"]:,.0f} inferences/s at Fmax {thr["fmax_mhz"]:.1f} MHz '
                     f'({thr["cycles_source"]} cycles), latency {_fmt(thr["latency_us"], 2)} us')
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _modules_with_cost(instances: list[dict], costs: list[dict]) -> list[dict]:
    """design.json's instances, the non-dense ones with their estimated resources."""
    by_name = {hw_identifier(c["name"]): c for c in costs}
    return [{**m, "estimate": {r: by_name[m["name"]][r] for r in RESOURCES}} if m["name"] in by_name else m
            for m in instances]


def _estimate_or_none(inputs: dict, target, notes) -> dict | None:
    try:
        return estimate(device=target, **inputs)
    except BuildError:
        raise
    except Exception as e:
        notes.append(f"synthesis targeted '{target}', which the cost model cannot estimate ({e})")
        return None


# ---- HTML ----------------------------------------------------------------------------------

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430;margin:0;background:#f5f6f8}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.sub{color:#5b6575;margin:0 0 16px}.sub code{background:#e9ecf1;padding:1px 4px;border-radius:3px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 12px}
.card .k{color:#5b6575;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:20px;font-weight:600;margin-top:2px}.card .d{color:#5b6575;font-size:12px}
.ok{color:#1a7f37}.bad{color:#c62828}.na{color:#8a93a2}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e7;font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
td.wrap{white-space:normal;text-align:left}
th{background:#f0f2f5;font-weight:600}td:first-child,th:first-child{text-align:left}
.fig{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px;margin:8px 0}
.notes li{color:#5b6575}
svg text{font:12px system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;fill:#1d2430}
svg .muted{fill:#5b6575}svg .halo{paint-order:stroke;stroke:#fff;stroke-width:4px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not x.is_integer() or digits:
        return f"{x:,.{digits or 1}f}"
    return f"{int(x):,}"


def _card(title: str, value: str, detail: str = "", cls: str = "") -> str:
    return (f'<div class="card"><div class="k">{_e(title)}</div><div class="v {cls}">{value}</div>'
            f'<div class="d">{detail}</div></div>')


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">' + "".join(body) + "</svg>")


def _resource_bars(report: dict) -> str:
    """One panel per resource: a bar per layer, in units and as a share of the device."""
    layers, budget = report["layers"], report["estimate"]["budget"]
    name_w, bar_w, row_h, panel_w = 130, 250, 20, 500
    body, y = [], 0
    panels = []
    for r in RESOURCES:
        values = [l[r] for l in layers]
        top = max(max(values), 1)
        rows = [f'<text x="0" y="14" font-weight="600">{_e(RESOURCE_LABELS[r])}</text>'
                f'<text x="{panel_w - 8}" y="14" text-anchor="end" class="muted">device: {_fmt(budget[r])}</text>']
        for i, (l, v) in enumerate(zip(layers, values)):
            yy = 22 + i * row_h
            w = bar_w * v / top
            share = v / budget[r] if budget[r] else 0
            rows.append(f'<text x="{name_w - 6}" y="{yy + 13}" text-anchor="end">{_e(l["name"][:18])}</text>'
                        f'<rect x="{name_w}" y="{yy + 2}" width="{w:.1f}" height="{row_h - 6}" rx="2" '
                        f'fill="{PALETTE[i % len(PALETTE)]}"/>'
                        f'<text x="{name_w + w + 6:.1f}" y="{yy + 13}">{_fmt(v)} '
                        f'<tspan class="muted">({share:.1%})</tspan></text>')
        panels.append((rows, 22 + len(layers) * row_h + 10))
    # Two panels per row.
    width = 2 * panel_w + 20
    for idx in range(0, len(panels), 2):
        pair = panels[idx:idx + 2]
        h = max(p[1] for p in pair)
        for col, (rows, _) in enumerate(pair):
            body.append(f'<g transform="translate({col * (panel_w + 20)},{y})">' + "".join(rows) + "</g>")
        y += h
    return _svg(width, y, body, "resources per layer")


def _estimate_vs_measured(report: dict) -> str:
    """Per resource: estimate and measured bars against the device budget (percent of it)."""
    comp = report["comparison"]["resources"]
    label_w, bar_w, group_h = 110, 520, 46
    body = []
    shares = [row[k] / row["budget"] for row in comp.values() for k in ("estimate", "measured")
              if row[k] is not None and row["budget"]]
    peak = max([0.01] + shares) * 1.08
    step = next(s for s in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5) if peak / s <= 5)
    scale_max = step * math.ceil(peak / step)
    height = 30 + group_h * len(comp) + 24
    for i in range(round(scale_max / step) + 1):
        t = i * step
        x = label_w + bar_w * t / scale_max
        body.append(f'<line x1="{x:.1f}" y1="22" x2="{x:.1f}" y2="{height - 22}" stroke="#e3e6eb"/>'
                    f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="muted">{t:.{0 if step >= 0.01 else 1}%}</text>')
    body.append(f'<text x="{label_w}" y="14" class="muted">share of {_e(report["comparison"]["device"])}</text>'
                f'<rect x="{label_w + 200}" y="4" width="12" height="12" fill="#9db7d5"/>'
                f'<text x="{label_w + 216}" y="14">estimate</text>'
                f'<rect x="{label_w + 290}" y="4" width="12" height="12" fill="#2f5d8a"/>'
                f'<text x="{label_w + 306}" y="14">measured (yosys)</text>')
    for i, (r, row) in enumerate(comp.items()):
        y0 = 28 + i * group_h
        body.append(f'<text x="{label_w - 8}" y="{y0 + 20}" text-anchor="end" font-weight="600">'
                    f'{_e(RESOURCE_LABELS[r])}</text>')
        for j, (key, color) in enumerate((("estimate", "#9db7d5"), ("measured", "#2f5d8a"))):
            yy = y0 + j * 18
            v, b = row[key], row["budget"]
            if v is None or not b:
                body.append(f'<text x="{label_w + 4}" y="{yy + 12}" class="muted">'
                            f'{"not synthesized" if key == "measured" else "no estimate"}</text>')
                continue
            w = bar_w * min(v / b, scale_max) / scale_max
            body.append(f'<rect x="{label_w}" y="{yy}" width="{max(w, 1):.1f}" height="15" rx="2" fill="{color}"/>'
                        f'<text x="{label_w + w + 6:.1f}" y="{yy + 12}">{_fmt(v)} of {_fmt(b)}</text>')
    return _svg(label_w + bar_w + 140, height, body, "estimate versus measured resources")


def _latency_chart(report: dict) -> str:
    """The first inference's path through the chain: per layer, input fill, folds, pipeline."""
    layers = report["layers"]
    total = sum(l["latency_cycles"] for l in layers)
    measured = report["comparison"]["latency_cycles"]["measured"]
    span = max(total, measured or 0, 1)
    name_w, bar_w, row_h = 130, 600, 24
    colors = {"fill": "#bab0ac", "folds": "#4e79a7", "pipeline": "#f28e2b"}
    body = [f'<rect x="{name_w}" y="4" width="12" height="12" fill="{colors["fill"]}"/>'
            f'<text x="{name_w + 16}" y="14">input fill</text>'
            f'<rect x="{name_w + 100}" y="4" width="12" height="12" fill="{colors["folds"]}"/>'
            f'<text x="{name_w + 116}" y="14">folds (N/pe)·(K/simd)</text>'
            f'<rect x="{name_w + 280}" y="4" width="12" height="12" fill="{colors["pipeline"]}"/>'
            f'<text x="{name_w + 296}" y="14">pipeline stages</text>']
    start = 0
    for i, l in enumerate(layers):
        y = 26 + i * row_h
        body.append(f'<text x="{name_w - 6}" y="{y + 14}" text-anchor="end">{_e(l["name"][:18])}</text>')
        x = start
        for part in ("fill", "folds", "pipeline"):
            n = l["latency"][part]
            if n:
                body.append(f'<rect x="{name_w + bar_w * x / span:.1f}" y="{y + 3}" '
                            f'width="{max(bar_w * n / span, 1):.1f}" height="{row_h - 8}" fill="{colors[part]}">'
                            f'<title>{_e(l["name"])}: {part} {n} cycles</title></rect>')
            x += n
        body.append(f'<text x="{name_w + bar_w * x / span + 6:.1f}" y="{y + 14}" class="muted halo">'
                    f'+{l["latency_cycles"]} = {x}</text>')
        start = x
    y_end = 26 + len(layers) * row_h
    axis = [f'<line x1="{name_w}" y1="{y_end + 2}" x2="{name_w + bar_w}" y2="{y_end + 2}" stroke="#8a93a2"/>']
    for t in _nice_ticks(span):
        x = name_w + bar_w * t / span
        axis.append(f'<line x1="{x:.1f}" y1="{y_end}" x2="{x:.1f}" y2="{y_end + 6}" stroke="#8a93a2"/>'
                    f'<text x="{x:.1f}" y="{y_end + 19}" text-anchor="middle" class="muted">{t}</text>')
    axis.append(f'<text x="{name_w - 6}" y="{y_end + 19}" text-anchor="end" class="muted">cycles</text>')
    if measured is not None:
        x = name_w + bar_w * measured / span
        axis.append(f'<line x1="{x:.1f}" y1="22" x2="{x:.1f}" y2="{y_end + 2}" stroke="#c62828" '
                    f'stroke-dasharray="4 3"/><text x="{min(x, name_w + bar_w - 60):.1f}" y="{y_end + 34}" '
                    f'fill="#c62828">measured {_fmt(measured)}</text>')
    return _svg(name_w + bar_w + 110, y_end + 42, axis + body, "latency breakdown per layer")


def _nice_ticks(span: float, count: int = 6) -> list[int]:
    raw = span / count
    step = 10 ** math.floor(math.log10(max(raw, 1)))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    step = max(int(step), 1)
    return list(range(0, int(span) + 1, step))


def _interval_chart(report: dict) -> str:
    """Cycles each layer needs per vector; the tallest sets the interval."""
    layers = report["layers"]
    interval = report["estimate"]["total"]["interval_cycles"]
    name_w, bar_w, row_h = 130, 600, 22
    top = max(max(l["stage_cycles"] for l in layers), 1)
    body = []
    for i, l in enumerate(layers):
        y = 4 + i * row_h
        w = bar_w * l["stage_cycles"] / top
        slowest = l["stage_cycles"] == interval
        reason = "folds" if l["folds"] >= l["fill_beats"] else "input fill"
        body.append(f'<text x="{name_w - 6}" y="{y + 14}" text-anchor="end">{_e(l["name"][:18])}</text>'
                    f'<rect x="{name_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 8}" rx="2" '
                    f'fill="{"#e15759" if slowest else "#9db7d5"}"/>'
                    f'<text x="{name_w + w + 6:.1f}" y="{y + 14}">{_fmt(l["stage_cycles"])} cycles '
                    f'<tspan class="muted">({reason}{", sets the interval" if slowest else ""})</tspan></text>')
    return _svg(name_w + bar_w + 240, 8 + len(layers) * row_h, body, "cycles per vector per layer")


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page."""
    est, verify, synth, thr = report["estimate"], report["verify"], report["synth"], report["throughput"]
    comp = report["comparison"]
    cards = []
    if verify is not None:
        ok = bool(verify.get("bit_exact"))
        cards.append(_card("RTL vs onnxruntime", "bit-exact" if ok else "MISMATCH",
                           f'{_fmt(verify.get("samples"))} samples, {_fmt(verify.get("mismatches"))} mismatches',
                           "ok" if ok else "bad"))
    else:
        cards.append(_card("RTL vs onnxruntime", "not verified", "run nnfpga verify DIR", "na"))
    iv = comp["interval_cycles"]
    cards.append(_card("cycles per inference", _fmt(iv["measured"] if iv["measured"] is not None else iv["estimate"]),
                       f'predicted {_fmt(iv["estimate"])}' + (", measured in Verilator" if iv["measured"] is not None
                                                              else ", not measured")))
    lat = comp["latency_cycles"]
    cards.append(_card("latency (cycles)", _fmt(lat["measured"] if lat["measured"] is not None else lat["estimate"]),
                       f'predicted {_fmt(lat["estimate"])}' + (", measured" if lat["measured"] is not None
                                                              else ", not measured")))
    if thr:
        cards.append(_card("throughput", f'{thr["inferences_per_second"]:,.0f}/s',
                           f'Fmax {thr["fmax_mhz"]:.1f} MHz / {_fmt(thr["cycles_per_inference"])} '
                           f'{thr["cycles_source"]} cycles; latency {_fmt(thr["latency_us"], 2)} µs'))
    else:
        cards.append(_card("throughput", "—", "needs Fmax from place and route (synth/synth.json)", "na"))
    if verify is not None and verify.get("quantized_accuracy") is not None:
        cards.append(_card("accuracy", f'{verify["quantized_accuracy"]:.2%}',
                           f'float {verify.get("float_accuracy", 0):.2%}, top-1 agreement '
                           f'{verify.get("top1_agreement") or 0:.2%}'))
    elif verify is not None and verify.get("top1_agreement") is not None:
        cards.append(_card("top-1 agreement", f'{verify["top1_agreement"]:.2%}',
                           f'max abs error {verify.get("float_max_abs_err", 0):.3g}'))
    fits = est["fits"]
    cards.append(_card(f'fits {est["device"]} (estimate)', "yes" if fits else "no",
                       "over: " + ", ".join(est["over"]) if not fits else
                       f'DSPs {est["utilization"]["dsps"]:.0%}, LUTs {est["utilization"]["luts"]:.0%}',
                       "ok" if fits else "bad"))

    head = ["layer", "K", "N", "pe", "simd", "in_par", "folds", "fill", "latency", "DSPs", "LUTs", "FFs",
            "BRAM", "weight ROM", "param ROM"]
    rows = []
    for l in report["layers"]:
        rom = lambda r: f'{r["depth"]}×{r["width"]} {"BRAM" if r["placement"] == "bram" else "logic"}'
        cells = [l["name"], l["k"], l["n"], l["pe"], l["simd"], l["in_par"], l["folds"], l["fill_beats"],
                 l["latency_cycles"], l["dsps"], l["luts"], l["ffs"], l["brams"], rom(l["weight_rom"]),
                 rom(l["param_rom"])]
        rows.append("<tr>" + "".join(f"<td>{_e(_fmt(c) if isinstance(c, (int, float)) else c)}</td>"
                                     for c in cells) + "</tr>")
    t = est["total"]
    rows.append("<tr><th>total</th>" + "<th></th>" * 5 + f'<th>interval {_fmt(t["interval_cycles"])}</th><th></th>'
                f'<th>{_fmt(t["latency_cycles"])}</th><th>{_fmt(t["dsps"])}</th><th>{_fmt(t["luts"])}</th>'
                f'<th>{_fmt(t["ffs"])}</th><th>{_fmt(t["brams"])}</th><th></th><th></th></tr>')
    layer_table = ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")

    comp_rows = []
    for r, row in comp["resources"].items():
        ratio = f'{row["ratio"]:.2f}' if row["ratio"] is not None else "—"
        comp_rows.append(f'<tr><td>{RESOURCE_LABELS[r]}</td><td>{_fmt(row["estimate"])}</td>'
                         f'<td>{_fmt(row["measured"])}</td><td>{ratio}</td><td>{_fmt(row["budget"])}</td></tr>')
    for key, label in (("interval_cycles", "cycles per inference"), ("latency_cycles", "latency (cycles)")):
        row = comp[key]
        ratio = f'{row["ratio"]:.2f}' if row["ratio"] is not None else "—"
        comp_rows.append(f'<tr><td>{label}</td><td>{_fmt(row["estimate"])}</td><td>{_fmt(row["measured"])}</td>'
                         f'<td>{ratio}</td><td></td></tr>')
    comp_table = ("<table><tr><th></th><th>estimate</th><th>measured</th><th>measured / estimate</th>"
                  f'<th>{_e(comp["device"])} has</th></tr>' + "".join(comp_rows) + "</table>")

    notes = "".join(f"<li>{_e(n)}</li>" for n in report["notes"])
    modules = ""
    beyond_dense = any(m["module"] != "nnfpga_dense" for m in report.get("modules", []))
    if beyond_dense:
        rows = "".join(f'<tr><td>{_e(m["name"])}</td><td>{_e(m["module"].removeprefix("nnfpga_"))}</td>'
                       f'<td class="wrap">{_e(m["note"])}</td>'
                       f'<td>{_fmt(m["cycles"])}</td><td>'
                       + (" / ".join(_fmt(m["estimate"][r]) for r in RESOURCES) if "estimate" in m
                          else "in Layers above") + "</td></tr>" for m in report["modules"])
        fifos = "".join(f'<li><b>{_e(f["instance"])}</b>, depth {_fmt(f["depth"])}, for {_e(f["join"])}: '
                        f'{_e(f["derivation"])}</li>' for f in report.get("fifos", []))
        modules = ("<h2>Stream modules</h2><table><tr><th>instance</th><th>module</th><th>computes</th>"
                   "<th>cycles per inference</th>"
                   f"<th>LUT / FF / DSP / BRAM (estimate)</th></tr>{rows}</table>"
                   + (f"<h2>Skip FIFO depths: why the branches cannot deadlock</h2><ul>{fifos}</ul>" if fifos else ""))
    fmax = f' Fmax {synth["fmax_mhz"]} MHz.' if synth and synth.get("fmax_mhz") else ""
    # The per-layer breakdown holds for a design of dense layers alone; a convolutional
    # design's latency is mostly windows waiting for rows.
    latency = ("" if beyond_dense else
               f'<h2>Latency of one inference, layer by layer</h2>\n<div class="fig">{_latency_chart(report)}</div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nnfpga report: {_e(report["model"])}</title>
<style>{CSS}</style></head>
<body><main>
<h1>{_e(report["model"])} on {_e(report["target"])}</h1>
<p class="sub">pipeline <code>{_e(report["pipeline"])}</code> · {len(report["layers"])} layers ·
build <code>{_e(report["build_dir"])}</code>{_e(fmax)}</p>
<div class="cards">{"".join(cards)}</div>
<h2>Layers</h2>
{layer_table}
{modules}
<h2>Resources per layer (cost model)</h2>
<div class="fig">{_resource_bars(report)}</div>
<h2>Estimate vs measured</h2>
<div class="fig">{_estimate_vs_measured(report)}</div>
{comp_table}
{latency}
<h2>Cycles per vector: the slowest layer sets the interval</h2>
<div class="fig">{_interval_chart(report)}</div>
{f'<h2>Notes</h2><ul class="notes">{notes}</ul>' if notes else ""}
<p class="sub">Estimates: nnfpga.cost (formulas and calibration in its docstring). Measured: Verilator
(verify.json) and yosys/nextpnr (synth/synth.json).</p>
</main></body></html>
"""
