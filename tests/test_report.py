"""`build_report`: manifest + cost estimate + verify.json + synth/synth.json -> report.json and
a self-contained report.html (rendered in headless Chromium when it is installed)."""
import json
import shutil
import struct
import subprocess
import zlib

import pytest

from onnx_models import mlp, save
from nnfpga.build import CompileOptions, compile_model
from nnfpga.errors import BuildError
from nnfpga.hardware import dense_pipeline_stages
from nnfpga.report import REPORT_HTML, REPORT_JSON, build_report, format_text, render_html


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    model = save(mlp((16, 12, 5), seed=3), root / "mlp.onnx")
    out = root / "build"
    compile_model(model, out, CompileOptions(pipeline="canonicalize,quantize,fold{pe=2,simd=4}"))
    return out


@pytest.fixture
def build(compiled, tmp_path):
    """A fresh copy per test, so fake result files never leak between tests."""
    copy = tmp_path / "build"
    shutil.copytree(compiled, copy)
    return copy


VERIFY = {"bit_exact": True, "samples": 50, "mismatches": 0, "ir_vs_reference_mismatches": 0,
          "cycles_per_inference": 25.0, "latency_cycles": 58, "predicted_cycles_per_inference": 24,
          "float_max_abs_err": 0.12, "top1_agreement": 0.96, "float_accuracy": 0.9, "quantized_accuracy": 0.88}
SYNTH = {"target": "ecp5-85k", "luts": 1500, "ffs": 900, "dsps": 30, "brams": 0, "fmax_mhz": 125.0}


def test_report_without_verify_or_synth(build):
    report = build_report(build)
    assert (build / REPORT_JSON).is_file() and (build / REPORT_HTML).is_file()
    assert json.loads((build / REPORT_JSON).read_text()) == json.loads(json.dumps(report))
    assert [l["name"] for l in report["layers"]] == [l["name"] for l in
                                                     json.loads((build / "manifest.json").read_text())["layers"]]
    # fold{pe=2,simd=4} on 16-12-5: layer 0 folds (12/2)(16/4) = 24, layer 1 (5/1)(12/4) = 15.
    assert [l["folds"] for l in report["layers"]] == [24, 15]
    assert report["estimate"]["total"]["interval_cycles"] == report["predicted_cycles_per_inference"] == 24
    # latency = (fill 4 - 1) + (24 + D0) + (15 + D1), D the layers' pipeline stages
    stages = [dense_pipeline_stages(l["simd"], l["acc_bits"]) for l in report["layers"]]
    assert stages == [13, 12]  # simd 4: one tree stage; accumulators of 19 and 18 bits
    assert report["estimate"]["total"]["latency_cycles"] == 3 + 24 + stages[0] + 15 + stages[1]
    assert report["verify"] is None and report["synth"] is None and report["throughput"] is None
    assert all(row["measured"] is None and row["ratio"] is None
               for row in report["comparison"]["resources"].values())
    assert any("not verified" in n for n in report["notes"])
    assert any("not synthesized" in n for n in report["notes"])
    text = (build / REPORT_HTML).read_text()
    assert "not verified" in text and "not synthesized" in text


def test_report_merges_verify_and_synth(build):
    (build / "verify.json").write_text(json.dumps(VERIFY))
    (build / "synth").mkdir()
    (build / "synth" / "synth.json").write_text(json.dumps(SYNTH))
    report = build_report(build)
    assert report["verify"] == VERIFY and report["synth"] == SYNTH
    comp = report["comparison"]
    assert comp["interval_cycles"] == {"estimate": 24, "measured": 25.0, "ratio": 25 / 24}
    assert comp["latency_cycles"]["measured"] == 58
    luts = comp["resources"]["luts"]
    assert luts["measured"] == 1500 and luts["ratio"] == pytest.approx(1500 / luts["estimate"])
    assert comp["resources"]["dsps"]["budget"] == 156
    thr = report["throughput"]
    assert thr["cycles_source"] == "measured"
    assert thr["inferences_per_second"] == pytest.approx(125e6 / 25)
    assert thr["latency_us"] == pytest.approx(58 / 125)
    assert report["notes"] == []
    text = (build / REPORT_HTML).read_text()
    assert "bit-exact" in text and "5,000,000/s" in text and "88.00%" in text


def test_text_summary(build):
    report = build_report(build, write=False)
    text = format_text(report)
    assert report["layers"][0]["name"] in text and "cycles/inference" in text and "not verified" in text
    (build / "verify.json").write_text(json.dumps(VERIFY))
    (build / "synth").mkdir()
    (build / "synth" / "synth.json").write_text(json.dumps(SYNTH))
    text = format_text(build_report(build, write=False))
    assert "bit-exact: True" in text and "5,000,000 inferences/s at Fmax 125.0 MHz" in text


def test_missed_timing_names_the_critical_path(build):
    (build / "synth").mkdir()
    path = {"from": "u_accel.u_l0.s5_prod[1]", "to": "u_accel.u_l0.s6_data", "delay_ns": 13.9,
            "logic_ns": 5.4, "routing_ns": 8.5, "sources": ["nnfpga_dense.sv:215", "nnfpga_dense.sv:242"]}
    (build / "synth" / "synth.json").write_text(json.dumps(
        {**SYNTH, "fmax_mhz": 71.9, "freq_mhz": 100.0, "timing_met": False, "critical_path": path}))
    report = build_report(build, write=False)
    assert report["throughput"]["critical_path"] == path
    text = format_text(report)
    assert ("timing not met at 100 MHz (Fmax 71.9 MHz); critical path 13.9 ns (logic 5.4, routing 8.5): "
            "u_accel.u_l0.s5_prod[1] -> u_accel.u_l0.s6_data through nnfpga_dense.sv:215, 242") in text


def test_throughput_uses_predicted_cycles_without_verification(build):
    (build / "synth").mkdir()
    (build / "synth" / "synth.json").write_text(json.dumps({**SYNTH, "fmax_mhz": 100.0}))
    thr = build_report(build)["throughput"]
    assert thr["cycles_source"] == "predicted" and thr["inferences_per_second"] == pytest.approx(100e6 / 24)


def test_synthesis_without_fmax_or_for_another_device(build):
    """Xilinx synthesis has no Fmax (no place and route); the estimate follows the synthesized device."""
    (build / "synth").mkdir()
    (build / "synth" / "synth.json").write_text(json.dumps(
        {"target": "xc7z020", "luts": 700, "ffs": 800, "dsps": 28, "brams": 0.5, "fmax_mhz": None}))
    report = build_report(build)
    assert report["throughput"] is None
    assert report["comparison"]["device"] == "xc7z020"
    assert report["comparison"]["resources"]["dsps"]["budget"] == 220
    assert report["comparison"]["resources"]["brams"]["measured"] == 0.5
    assert report["estimate"]["device"] == "ecp5-85k"  # the build's own target


def test_unreadable_files_become_notes(build):
    (build / "verify.json").write_text("{not json")
    (build / "synth").mkdir()
    (build / "synth" / "synth.json").write_text("[1, 2]")
    report = build_report(build)
    assert report["verify"] is None and report["synth"] is None
    assert any("verify.json" in n and "could not be read" in n for n in report["notes"])
    assert any("synth.json" in n and "not a JSON object" in n for n in report["notes"])


def test_missing_final_ir_falls_back_to_the_manifest(build):
    (build / "ir" / "final.ir").unlink()
    report = build_report(build, write=False)
    assert [l["folds"] for l in report["layers"]] == [24, 15]
    assert any("ir/final" in n for n in report["notes"])
    assert not (build / REPORT_JSON).exists()


def test_not_a_build_directory(tmp_path):
    with pytest.raises(BuildError, match="not an nnfpga build directory"):
        build_report(tmp_path)


def test_html_is_self_contained_and_escapes_names(build):
    report = build_report(build, write=False)
    report["model"] = "<script>alert(1)</script>.onnx"
    report["layers"][0]["name"] = 'a"<b>&'
    text = render_html(report)
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text and "a&quot;&lt;b&gt;&amp;" in text
    for external in ("src=", "href=", "@import", "url("):
        assert external not in text
    assert text.count("<svg") == 4


# ---- rendering in a real browser ------------------------------------------------------------

def _png_pixels(path):
    """(width, height, raw scanlines) of a PNG, decoded with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(build, tmp_path):
    (build / "verify.json").write_text(json.dumps(VERIFY))
    build_report(build)
    png = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1100,1600", f"--screenshot={png}", (build / REPORT_HTML).as_uri()],
                   check=True, capture_output=True, timeout=120)
    width, height, raw = _png_pixels(png)
    assert (width, height) == (1100, 1600)
    # A page with text, bars and charts: many distinct byte values, not one flat colour.
    assert len(set(raw[::7])) > 50


def test_report_command_prints_a_summary_and_one_json_object(build, capsys):
    from nnfpga.cli import main

    assert main(["report", str(build)]) == 0
    assert "cycles/inference" in capsys.readouterr().out
    assert main(["report", str(build), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"layers", "estimate", "verify", "synth"} <= set(report)
    assert (build / REPORT_HTML).is_file() and (build / REPORT_JSON).is_file()


def test_report_command_on_a_non_build_directory(tmp_path, capsys):
    from nnfpga.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
