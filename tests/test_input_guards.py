"""Guards on what users hand the compiler: pipeline strings, calibration and input data,
models. Each mistake is one `error:` line and exit code 2 through the CLI, never a
traceback, and nothing is written; a doubtful but usable input is a warning."""
import io

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_models import mlp, save
from nnfpga import limits
from nnfpga.cli import main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def assert_refused(tmp_path, code, err, *phrases):
    assert code == 2, err
    assert len(error_lines(err)) == 1, err
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    assert not (tmp_path / "build").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.fixture
def model_path(tmp_path):
    return save(mlp(), tmp_path / "mlp.onnx")


# -- pipeline strings -----------------------------------------------------------------------

@pytest.mark.parametrize("pipeline, phrases", [
    ("canonicalize,quantize{wbits=8,wbits=4}", ["'wbits'", "given twice"]),
    ("canonicalize,quantize,channels_last,autofold{target_fps=nan}", ["target_fps", "finite"]),
    ("canonicalize,quantize,channels_last,autofold{target_fps=inf}", ["target_fps", "finite"]),
    ("canonicalize,quantize,channels_last,autofold{clock_mhz=-inf}", ["clock_mhz", "finite"]),
    ("canonicalize,fold,quantize", ["put quantize before fold", "float dense"]),
    ("fold", ["put quantize before fold", "float gemm"]),
    ("canonicalize,autofold,quantize", ["put quantize before autofold"]),
    ("canonicalize,quantize,lowrank", ["put lowrank before quantize"]),
    ("canonicalize,quantize,quantize", ["quantize runs once", "already integer"]),
    ("canonicalize,quantize{wbit=8}", ["no option 'wbit'", "abits, calib, pct, wbits"]),
])
def test_bad_pipelines_are_refused(tmp_path, model_path, capsys, pipeline, phrases):
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", "--pipeline", pipeline)
    assert_refused(tmp_path, code, err, *phrases)


def test_well_ordered_pipelines_still_run(tmp_path, model_path, capsys):
    code, out, err = run_cli(capsys, "ir", model_path, "--after", "fold",
                             "--pipeline", "canonicalize,lowrank,quantize{wbits=4,abits=6},fold{pe=2}")
    assert code == 0, err
    assert "pe = 2" in out


# -- calibration and input data -------------------------------------------------------------

def _calib(n=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 16)).astype(np.float32)


def _with_value(value):
    x = _calib()
    x[3, 5] = value
    return x


def _huge_header_npz(path):
    """An .npz whose one array's header announces 2^40 float32 elements (4 TiB), data absent."""
    import zipfile
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20)}
    body = io.BytesIO()
    np.lib.format.write_array_header_1_0(body, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", body.getvalue() + b"\0" * 64)


def _damaged_member_npz(path):
    """A valid zip whose deflated member is cut: the zip directory reads, the array does not."""
    import zipfile
    good = io.BytesIO()
    np.savez_compressed(good, x=_calib(200))
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as z:
        info = z.infolist()[0]
    data = bytearray(good.getvalue())
    start = info.header_offset + 30 + len(info.filename) + 40
    data[start:start + 40] = bytes(40)  # zero the middle of the compressed stream
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make, phrases", [
    (lambda p: np.savez(p, x=_with_value(np.nan)), ["array 'x'", "NaN or infinite", "sample 3"]),
    (lambda p: np.savez(p, x=_with_value(np.inf)), ["array 'x'", "NaN or infinite"]),
    (lambda p: np.savez(p, x=_with_value(-np.inf)), ["array 'x'", "NaN or infinite"]),
    (lambda p: np.savez(p, x=_calib(0)), ["array 'x'", "no samples"]),
    (lambda p: np.savez(p, x=_calib().astype(np.float64) * 1e300), ["array 'x'", "beyond float32's range"]),
    (lambda p: np.savez(p, x=np.float32(1.0)), ["array 'x'", "single number"]),
    (lambda p: np.savez(p, x=np.array(["a", "b"])), ["array 'x'", "integer or floating-point"]),
    (lambda p: np.savez(p, x=_calib().astype(np.complex64)), ["array 'x'", "complex64"]),
    (lambda p: np.savez(p, x=_calib()[:, :10]), ["input 'x'", "shape [20, 10]", "[N, 16]"]),
    (lambda p: np.save(p, _calib()), [".npy file"]),
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), ["not an .npz file"]),
    (lambda p: p.write_bytes(b""), ["not an .npz file"]),
    (_huge_header_npz, ["array 'x'", "refused before allocating"]),
    (_damaged_member_npz, ["damaged"]),
])
def test_bad_calibration_data_is_refused(tmp_path, model_path, capsys, make, phrases):
    path = tmp_path / "calib.npz"
    make(path)
    if not path.exists():  # np.save appends .npy to a name without it
        path = next(tmp_path.glob("calib.npz*"))
    code, _, err = run_cli(capsys, "compile", model_path, "-o", tmp_path / "build", "--calib", path)
    assert_refused(tmp_path, code, err, *phrases)
    assert path.name in err or "input 'x'" in err


def test_bad_inputs_for_ir_are_refused_too(tmp_path, model_path, capsys):
    np.savez(tmp_path / "calib.npz", x=_with_value(np.nan))
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "quantize", "--calib", tmp_path / "calib.npz")
    assert_refused(tmp_path, code, err, "NaN")


def test_raw_pixel_data_is_a_warning(tmp_path, model_path, capsys):
    np.savez(tmp_path / "u8.npz", x=(_calib() * 255).astype(np.uint8))
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "quantize", "--calib", tmp_path / "u8.npz")
    assert code == 0 and not error_lines(err)
    assert "warning:" in err and "raw 8-bit pixel values" in err and "x / 255" in err
    np.savez(tmp_path / "scaled.npz", x=_calib())
    code, _, err = run_cli(capsys, "ir", model_path, "--after", "quantize", "--calib", tmp_path / "scaled.npz")
    assert code == 0 and "pixel" not in err


# -- models ---------------------------------------------------------------------------------

def _one_node_model(nodes, inputs, output, inits=()):
    graph = helper.make_graph(nodes, "guarded", inputs, [output], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _nan_weight():
    model = mlp()
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[1, 2] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w0"))
    return model


def _inf_constant_node():
    model = mlp()
    b = numpy_helper.to_array(model.graph.initializer[1]).copy()
    b[0] = -np.inf
    del model.graph.initializer[1]
    model.graph.node.insert(0, helper.make_node("Constant", [], ["b0"], value=numpy_helper.from_array(b)))
    return model


def _inf_folded_constant():
    """A bias computed as 1 / 0 from two finite constants: the folded constant is infinite."""
    model = mlp()
    b = numpy_helper.to_array(model.graph.initializer[1])
    del model.graph.initializer[1]
    model.graph.initializer.extend([numpy_helper.from_array(np.ones_like(b), "one"),
                                    numpy_helper.from_array(np.zeros_like(b), "zero")])
    model.graph.node.insert(0, helper.make_node("Div", ["one", "zero"], ["b0"], name="divide_by_zero"))
    return model


def _huge_input():
    """79 bytes declaring a 2^33-element (32 GiB) input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 33])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1 << 33])
    return _one_node_model([helper.make_node("Relu", ["x"], ["y"])], [x], y)


def _huge_constant_of_shape():
    """A 4-element shape makes a 2^34-element (64 GiB) ConstantOfShape result."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1 << 17])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1 << 10, 1 << 7, 1 << 17])
    shape = numpy_helper.from_array(np.array([1, 1 << 10, 1 << 7, 1 << 17], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"], value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("Add", ["x", "c"], ["y"])]
    return _one_node_model(nodes, [x], y, [shape])


def _infinite_alpha():
    model = mlp()
    gemm = model.graph.node[0]
    gemm.attribute.append(helper.make_attribute("alpha", float("inf")))
    return model


def _clip_without_upper_bound(opset=13):
    """Clip(x, 0, +inf): an infinite bound is no bound, a legal model."""
    model = mlp()
    last = model.graph.node[-1]
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                                    numpy_helper.from_array(np.array(np.inf, np.float32), "hi")])
    model.graph.node.append(helper.make_node("Clip", [last.output[0], "lo", "hi"], ["clipped"], name="clip"))
    model.graph.output[0].name = "clipped"
    return model


@pytest.mark.parametrize("make, phrases", [
    (_infinite_alpha, ["attribute 'alpha'", "Gemm", "gemm0", "inf"]),
    (_nan_weight, ["initializer 'w0'", "NaN or infinite", "index [1, 2]"]),
    (_inf_constant_node, ["'b0'", "NaN or infinite"]),
    (_inf_folded_constant, ["'b0'", "divide_by_zero", "NaN or infinite"]),
    (_huge_input, ["tensor 'x'", "refused before allocating"]),
    (_huge_constant_of_shape, ["tensor 'c'", "refused before allocating"]),
])
def test_bad_models_are_refused(tmp_path, capsys, make, phrases):
    path = save(make(), tmp_path / "model.onnx")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert_refused(tmp_path, code, err, *phrases)


def test_the_memory_budget_follows_the_machine(tmp_path, capsys, monkeypatch):
    """A model within the budget compiles; with the machine's memory made 1 MiB, the same
    model's 256 synthetic calibration samples no longer fit and it is refused before calibrating."""
    path = save(mlp(sizes=(512, 16, 4)), tmp_path / "model.onnx")
    assert run_cli(capsys, "ir", path, "--after", "quantize")[0] == 0
    monkeypatch.setattr(limits, "physical_memory", lambda: 1 << 20)
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert_refused(tmp_path, code, err, "calibration on 256 samples", "fewer calibration samples")
    monkeypatch.setattr(limits, "physical_memory", lambda: 1 << 10)
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert_refused(tmp_path, code, err, "refused before allocating")


def test_an_infinite_clip_bound_is_still_legal(tmp_path, capsys):
    path = save(_clip_without_upper_bound(), tmp_path / "model.onnx")
    code, out, err = run_cli(capsys, "ir", path)
    assert code == 0, err
    assert "clip" in out and "inf" not in out


@pytest.mark.parametrize("command", [["verify"], ["run", "--accelerator", "reference"]])
def test_bad_inputs_for_verify_and_run_are_refused(tmp_path, model_path, capsys, command):
    build = tmp_path / "b"
    assert run_cli(capsys, "compile", model_path, "-o", build)[0] == 0
    before = sorted(p.name for p in build.iterdir())
    np.savez(tmp_path / "inputs.npz", x=_with_value(np.inf))
    code, _, err = run_cli(capsys, command[0], build, *command[1:], "--inputs", tmp_path / "inputs.npz")
    assert code == 2 and len(error_lines(err)) == 1 and "NaN or infinite" in err and "inputs.npz" in err
    assert sorted(p.name for p in build.iterdir()) == before  # no verify.json, run.json or sim/


def test_a_container_limit_lowers_the_memory_budget(tmp_path, monkeypatch):
    machine = limits.physical_memory()
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(limits, "CGROUP_LIMITS", (str(tmp_path / "absent"), str(limit)))
    limit.write_text("max\n")  # cgroup v2: no limit
    assert limits.physical_memory() == machine
    limit.write_text(f"{1 << 30}\n")
    assert limits.physical_memory() == min(machine, 1 << 30)
    assert limits.tensor_budget() == int(min(machine, 1 << 30) * limits.MEMORY_FRACTION)
