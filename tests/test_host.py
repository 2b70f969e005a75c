"""Host fallback: host parts exported to ONNX, compiled by TVM, run by `nnfpga run` and
`.predict`; cross targets, a missing TVM and TVM failures give clear outcomes.

Tests that compile with TVM skip when it is not installed (pip install -e '.[host]').
The RTL end to end runs are in hw_tests/test_host_e2e.py."""
import importlib.util
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from goldens import arrays_for
from onnx_models import mlp, save
from test_frontend import _host_case, make_model, rand
from nnfpga.backends.host import (compile_onnx, cross_compiler, emit_host, host_parts, parse_target,
                                  part_to_onnx)
from nnfpga.build import compile_model
from nnfpga.cli import main
from nnfpga.errors import BuildError
from nnfpga.frontend import HOST_OPS, load_onnx
from nnfpga.ir import parse, run_batch
from nnfpga.passes import PassContext, run_pipeline

HAVE_TVM = importlib.util.find_spec("tvm") is not None
needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason="Apache TVM is not installed: pip install -e '.[host]' "
                                                    "(or pip install apache-tvm) to test the host fallback")

PREFIX_SUFFIX = """graph @mlp(%x: tensor<1x2x4xf32>) {
  const %mean : tensor<1x2x4xf32> = @mean
  const %w0 : tensor<8x6xf32> = @w0
  const %b0 : tensor<6xf32> = @b0
  const %w1 : tensor<6x4xf32> = @w1
  const %b1 : tensor<4xf32> = @b1
  %centred = host(%x, %mean) {op_type = "Sub"} : tensor<1x2x4xf32>
  %flat = reshape(%centred) {shape = [1, 8]} : tensor<1x8xf32>
  %mm0 = matmul(%flat, %w0) : tensor<1x6xf32>
  %a0 = add(%mm0, %b0) : tensor<1x6xf32>
  %s0 = host(%a0) {op_type = "Sigmoid"} : tensor<1x6xf32>
  %mm1 = matmul(%s0, %w1) : tensor<1x4xf32>
  %logits = add(%mm1, %b1) : tensor<1x4xf32>
  %y = host(%logits) {axis = 1, op_type = "LogSoftmax"} : tensor<1x4xf32>
  return %y
}
"""


def partitioned(text=PREFIX_SUFFIX, pipeline="canonicalize,partition,quantize"):
    return run_pipeline(parse(text, arrays_for(text)), pipeline, PassContext(seed=0))


def ort_run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


# -- parts and their ONNX -------------------------------------------------------------------------

def test_prefix_and_suffix_parts_are_onnx_models_that_compute_what_the_ir_does():
    g = partitioned()
    # The Sigmoid splits 8x6 from 6x4: the accelerator keeps the first layer; the second
    # layer runs on the host with the LogSoftmax.
    prefix, suffix = host_parts(g)
    assert [n.attrs.get("op_type", n.op) for n in prefix.nodes] == ["Sub"]
    assert [v.name for v in prefix.inputs] == ["x"] and [v.name for v in prefix.outputs] == ["centred"]
    assert [n.attrs.get("op_type", n.op) for n in suffix.nodes] == ["Sigmoid", "dense", "LogSoftmax"]
    assert [v.name for v in suffix.inputs] == ["a0_dq"] and [v.name for v in suffix.outputs] == ["y"]
    x = np.random.default_rng(0).standard_normal((5, 1, 2, 4)).astype(np.float32)
    env = run_batch(g, {"x": x}, keep_all=True)
    for part in (prefix, suffix):
        model = part_to_onnx(g, part)
        for n in range(len(x)):
            (got,) = ort_run(model, {v.name: env[v.name][n] for v in part.inputs})
            np.testing.assert_allclose(got, env[part.outputs[0].name][n], rtol=1e-5, atol=1e-6)


def test_a_graph_without_host_nodes_has_no_parts():
    g = run_pipeline(load_onnx(mlp()), "canonicalize,quantize", PassContext())
    assert host_parts(g) == []
    assert emit_host(g, None) is None


def test_targets():
    assert parse_target("llvm") == {"kind": "llvm"}
    assert parse_target("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a53 -mattr=+neon,+v8") == {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a53", "mattr": ["+neon", "+v8"]}
    assert parse_target('{"kind": "llvm", "mcpu": "skylake"}') == {"kind": "llvm", "mcpu": "skylake"}
    with pytest.raises(BuildError, match="target kind 'llvm'"):
        parse_target("cuda")
    with pytest.raises(BuildError, match="cannot read 'mtriple'"):
        parse_target("llvm mtriple")
    assert cross_compiler({"kind": "llvm"}) is None
    assert cross_compiler({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}) in (None, "aarch64-linux-gnu-gcc")
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        assert cross_compiler({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}) == "aarch64-linux-gnu-gcc"
        assert cross_compiler({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}) is None


# -- TVM -----------------------------------------------------------------------------------------

@needs_tvm
@pytest.mark.parametrize("op", sorted(HOST_OPS))
def test_tvm_compiles_every_host_op_like_onnxruntime(tmp_path, op):
    from nnfpga.run import HostLibrary

    nodes, inputs, outputs, inits, opset = _host_case(op)
    model = make_model(nodes, inputs, outputs, inits, opset=opset)
    model.ir_version = 9 if opset > 13 else 8
    for out in model.graph.output:
        if (op, out.name) in (("TopK", "i"), ("ArgMax", "y")):
            out.type.tensor_type.elem_type = TensorProto.INT64
    g = run_pipeline(load_onnx(model), "canonicalize,partition,quantize", PassContext(seed=0))
    for part in host_parts(g):
        onnx_model = part_to_onnx(g, part)
        compile_onnx(onnx_model, {"kind": "llvm"}, tmp_path / f"{part.name}.so")
        record = {"name": part.name, "library": f"{part.name}.so", "ops": [op],
                  "inputs": [{"name": v.name, "dtype": "float32" if v.type.is_float else "int64"} for v in part.inputs],
                  "outputs": [{"name": v.name} for v in part.outputs]}
        library = HostLibrary(tmp_path, record, {"local": True})
        env = {v.name: rand(*v.type.shape) for v in part.inputs}
        got = library(env)
        expected = ort_run(onnx_model, env)
        for v, e in zip(part.outputs, expected):
            np.testing.assert_allclose(got[v.name], e, rtol=1e-4, atol=1e-5, err_msg=f"{op}: %{v.name}")


@needs_tvm
def test_compile_and_predict_a_model_ending_in_softmax(tmp_path, capsys):
    model = mlp(sizes=(16, 12, 5), extra_op="Softmax")
    path = save(model, tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "b")
    assert code == 0 and "host suffix: Softmax (%y_extra) -> host/suffix.so" in err
    build = tmp_path / "b"
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["pipeline"] == "canonicalize,partition,quantize,channels_last,autofold"  # partition added
    host = manifest["host"]
    assert host["compiled"] and host["local"] and host["accelerator_float_output"] == "h1_dq"
    assert [p["name"] for p in host["parts"]] == ["suffix"]
    for name in ("host/suffix.onnx", "host/suffix.so", "host/suffix.json", "ir/02-partition.ir"):
        assert (build / name).is_file(), name
    assert 'place = "host"' in (build / "ir" / "final.ir").read_text()
    x = np.random.default_rng(3).standard_normal((40, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, out, _ = run_cli(capsys, "run", build, "--inputs", tmp_path / "in.npz", "--accelerator", "reference",
                           "--json", "--save", tmp_path / "out.npz")
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["samples"] == 40 and result["top1_agreement"] >= 0.95
    assert result["float_max_abs_err"] < 0.1
    saved = np.load(tmp_path / "out.npz")["y_extra"]
    np.testing.assert_allclose(saved.sum(-1), 1.0, rtol=1e-5)
    assert json.loads((build / "run.json").read_text()) == result


@needs_tvm
def test_python_api_compiles_a_model_proto_and_predicts(tmp_path):
    import nnfpga

    x = np.random.default_rng(4).standard_normal((30, 16)).astype(np.float32)
    build = nnfpga.compile(mlp(extra_op="Sigmoid"), calib=x)
    y = build.predict(x[:10], accelerator="reference")
    assert y.shape == (10, 5) and np.all((y > 0) & (y < 1))
    (expected,) = zip(*[ort_run(mlp(extra_op="Sigmoid"), {"x": xi[None]}) for xi in x[:10]])
    assert np.abs(np.concatenate(expected) - y).max() < 0.05


@needs_tvm
def test_tvm_failure_is_a_clear_error_and_leaves_no_build(tmp_path, capsys):
    # TVM's Relax frontend takes only sorted TopK.
    model = mlp(sizes=(16, 12, 5))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2], np.int64), "k"))
    model.graph.node.append(helper.make_node("TopK", ["h1", "k"], ["v", "i"], sorted=0, name="top"))
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2]),
                               helper.make_tensor_value_info("i", TensorProto.INT64, [1, 2])])
    code, _, err = run_cli(capsys, "compile", save(model, tmp_path / "m.onnx"), "-o", tmp_path / "b")
    assert code == 2 and "TVM could not compile the host code for TopK (%v)" in err and "sorted" in err
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


@needs_tvm
def test_cross_target_without_a_toolchain_is_emitted_and_skipped(tmp_path, capsys, monkeypatch):
    import nnfpga.backends.host as host

    monkeypatch.setattr(host.shutil, "which", lambda name: None)
    monkeypatch.setattr(host.platform, "machine", lambda: "x86_64")
    path = save(mlp(extra_op="Softmax"), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "b", "--host-target",
                           "llvm -mtriple=aarch64-linux-gnu")
    assert code == 0
    assert "was not compiled: the cross compiler aarch64-linux-gnu-gcc is not on PATH" in err
    build = tmp_path / "b"
    assert (build / "host" / "suffix.onnx").is_file() and not (build / "host" / "suffix.so").exists()
    script = (build / "host" / "build_host.py").read_text()
    assert "aarch64-linux-gnu-gcc" in script and '"mtriple": "aarch64-linux-gnu"' in script
    compile(script, "build_host.py", "exec")
    host_record = json.loads((build / "manifest.json").read_text())["host"]
    assert host_record["compiled"] is False and host_record["parts"][0]["library"] is None
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 16), np.float32))
    code, _, err = run_cli(capsys, "run", build, "--inputs", tmp_path / "in.npz", "--accelerator", "reference")
    assert code == 2 and "was not compiled" in err and "--host-target llvm" in err


def test_missing_tvm_names_the_host_ops_and_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tvm", None)  # import tvm raises ImportError
    path = save(mlp(extra_op="Softmax"), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "b")
    assert code == 2
    assert "needs the host CPU for Softmax (%y_extra)" in err and "pip install 'apache-tvm==0.27.0.post1'" in err
    assert "pip install -e '.[host]'" in err
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_pure_mlp_builds_have_no_host_part(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "compile", save(mlp(), tmp_path / "m.onnx"), "-o", tmp_path / "b")
    assert code == 0 and not (tmp_path / "b" / "host").exists()
    assert "host" not in json.loads((tmp_path / "b" / "manifest.json").read_text())
