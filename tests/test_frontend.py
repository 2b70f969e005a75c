"""ONNX frontend: imported graphs agree with onnxruntime; bad models give clear errors."""
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnfpga.errors import ModelError, NnfpgaError, UnsupportedOpError
from nnfpga.frontend import HOST_FALLBACK_NOTE, HOST_OPS, SUPPORTED_OPS, load_onnx
from nnfpga.ir import parse, print_graph, run

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def make_model(nodes, inputs, outputs, initializers=(), opset=13, name="test"):
    """inputs/outputs: (name, shape) pairs; initializers: name -> array."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # onnxruntime reads IR versions it knows
    return model


def assert_matches_onnxruntime(model, feeds, input_shapes=None):
    """Import `model` (a ModelProto), run the IR and onnxruntime, compare every output."""
    g = load_onnx(model, input_shapes)
    assert parse(print_graph(g), dict(g.arrays)) is not None
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    ir_feeds = {v.name: feeds[n] for v, n in zip(g.inputs, feeds)}
    env = run(g, ir_feeds, keep_all=True)
    got = [env[v.name] for v in g.outputs]  # by position: an output may repeat
    assert len(got) == len(expected)
    for e, r in zip(expected, got):
        np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-6)
    return g


# -- Gemm: every attribute combination -------------------------------------------------------

C_SHAPES = {"absent": None, "N": [5], "1xN": [1, 5], "MxN": [3, 5], "scalar": [], "Mx1": [3, 1]}


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_kind",
                         list(itertools.product([0, 1], [0, 1], [1.0, 0.5], [1.0, -2.0], C_SHAPES)))
def test_gemm_attributes(trans_a, trans_b, alpha, beta, c_kind):
    m, k, n = 3, 4, 5
    a_shape = [k, m] if trans_a else [m, k]
    b = rand(*([n, k] if trans_b else [k, n]))
    inits = {"B": b}
    inputs = ["A", "B"]
    if C_SHAPES[c_kind] is not None:
        inits["C"] = rand(*C_SHAPES[c_kind])
        inputs.append("C")
    node = helper.make_node("Gemm", inputs, ["Y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    model = make_model([node], [("A", a_shape)], [("Y", [m, n])], inits)
    g = assert_matches_onnxruntime(model, {"A": rand(*a_shape)})
    attrs = g.nodes[0].attrs
    assert g.nodes[0].op == "gemm"
    assert attrs.get("trans_a", False) == bool(trans_a) and attrs.get("trans_b", False) == bool(trans_b)
    assert ("alpha" in attrs) == (alpha != 1.0)
    assert ("beta" in attrs) == (beta != 1.0 and c_kind != "absent")


def test_gemm_default_attributes_print_short():
    node = helper.make_node("Gemm", ["A", "B", "C"], ["Y"])
    model = make_model([node], [("A", [1, 4])], [("Y", [1, 2])], {"B": rand(4, 2), "C": rand(2)})
    g = load_onnx(model)
    assert "{" not in print_graph(g).splitlines()[-3]  # the gemm line carries no attributes


def test_gemm_with_runtime_b_and_c():
    node = helper.make_node("Gemm", ["A", "B", "C"], ["Y"], transB=1, beta=0.25)
    model = make_model([node], [("A", [2, 3]), ("B", [4, 3]), ("C", [1, 4])], [("Y", [2, 4])])
    assert_matches_onnxruntime(model, {"A": rand(2, 3), "B": rand(4, 3), "C": rand(1, 4)})


# -- the other ops ---------------------------------------------------------------------------

def test_matmul_add_relu():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    model = make_model(nodes, [("x", [1, 6])], [("y", [1, 3])], {"W": rand(6, 3), "b": rand(3)})
    g = assert_matches_onnxruntime(model, {"x": rand(1, 6)})
    assert [n.op for n in g.nodes] == ["matmul", "add", "relu"]


def test_add_of_two_inputs_broadcasts():
    node = helper.make_node("Add", ["x", "z"], ["y"])
    model = make_model([node], [("x", [2, 1, 4]), ("z", [3, 1])], [("y", [2, 3, 4])])
    assert_matches_onnxruntime(model, {"x": rand(2, 1, 4), "z": rand(3, 1)})


@pytest.mark.parametrize("axis,out", [(1, [1, 64]), (0, [1, 64]), (2, [1, 64]), (3, [8, 8]),
                                      (-1, [8, 8]), (4, [64, 1])])
def test_flatten(axis, out):
    nodes = [helper.make_node("Flatten", ["x"], ["y"], axis=axis)]
    model = make_model(nodes, [("x", [1, 1, 8, 8])], [("y", out)])
    g = assert_matches_onnxruntime(model, {"x": rand(1, 1, 8, 8)})
    assert g.outputs[0].type.shape == tuple(out)


def test_flatten_then_gemm():
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    model = make_model(nodes, [("x", [1, 1, 8, 8])], [("y", [1, 10])], {"W": rand(10, 64), "b": rand(10)})
    assert_matches_onnxruntime(model, {"x": rand(1, 1, 8, 8)})


@pytest.mark.parametrize("target,out", [([-1], [48]), ([0, -1], [2, 24]), ([0, 0, -1], [2, 3, 8]),
                                        ([4, -1, 2], [4, 6, 2]), ([0, 0, 4, 2], [2, 3, 4, 2])])
def test_reshape_initializer_shape(target, out):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    model = make_model(nodes, [("x", [2, 3, 8])], [("y", out)], {"s": np.array(target, np.int64)})
    g = assert_matches_onnxruntime(model, {"x": rand(2, 3, 8)})
    assert g.outputs[0].type.shape == tuple(out)


@pytest.mark.parametrize("target", [[0, 4, 0, -1], [5, -1], [-1, -1], [7, 7]])
def test_reshape_bad_target(target):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    model = make_model(nodes, [("x", [2, 3, 8])], [("y", ["?"] * len(target))],
                       {"s": np.array(target, np.int64)})
    with pytest.raises(ModelError, match="Reshape|shape inference"):
        load_onnx(model)


def test_reshape_shape_from_constant_node():
    shape = numpy_helper.from_array(np.array([0, -1], np.int64))
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    model = make_model(nodes, [("x", [1, 2, 3, 4])], [("y", [1, 24])])
    g = assert_matches_onnxruntime(model, {"x": rand(1, 2, 3, 4)})
    assert [n.op for n in g.nodes] == ["reshape"] and g.nodes[0].attrs == {"shape": [1, 24]}


def test_reshape_of_constant_weight_is_folded():
    nodes = [helper.make_node("Reshape", ["w", "s"], ["w2"]),
             helper.make_node("MatMul", ["x", "w2"], ["y"])]
    model = make_model(nodes, [("x", [1, 6])], [("y", [1, 2])],
                       {"w": rand(12), "s": np.array([6, -1], np.int64)})
    g = assert_matches_onnxruntime(model, {"x": rand(1, 6)})
    assert [n.op for n in g.nodes] == ["matmul"] and g.nodes[0].inputs[1].is_const


def test_int64_model_input_is_refused():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="int64"):  # an int64 model input is refused first
        load_onnx(model)


def test_identity_and_dropout_are_removed():
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Gemm", ["i", "W"], ["g"]),
             helper.make_node("Dropout", ["g"], ["d", "mask"]),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("Identity", ["r"], ["y"])]
    model = make_model(nodes, [("x", [1, 4])], [("y", [1, 3])], {"W": rand(4, 3)})
    g = assert_matches_onnxruntime(model, {"x": rand(1, 4)})
    assert [n.op for n in g.nodes] == ["gemm", "relu"]
    assert g.outputs[0].name == "y"  # the removed Identity's name goes to its input
    assert g.nodes[0].inputs[0] is g.inputs[0]


def test_dropout_with_ratio_and_training_false():
    nodes = [helper.make_node("Dropout", ["x", "ratio", "train"], ["y"])]
    model = make_model(nodes, [("x", [1, 4])], [("y", [1, 4])],
                       {"ratio": np.array(0.3, np.float32), "train": np.array(False)})
    assert_matches_onnxruntime(model, {"x": rand(1, 4)})


def test_dropout_mask_used_is_unsupported():
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"]),
             helper.make_node("Identity", ["mask"], ["m"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("m", TensorProto.BOOL, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpError, match="mask output is used"):
        load_onnx(model)


def test_constant_node_float_operand():
    nodes = [helper.make_node("Constant", [], ["c"], value_floats=[1.0, -2.0, 3.5]),
             helper.make_node("Add", ["x", "c"], ["y"])]
    model = make_model(nodes, [("x", [2, 3])], [("y", [2, 3])])
    g = assert_matches_onnxruntime(model, {"x": rand(2, 3)})
    assert len(g.constants) == 1


def test_initializer_listed_as_input_is_a_constant():
    node = helper.make_node("Gemm", ["x", "W"], ["y"])
    model = make_model([node], [("x", [1, 4]), ("W", [4, 2])], [("y", [1, 2])], {"W": rand(4, 2)})
    g = load_onnx(model)
    assert [v.name for v in g.inputs] == ["x"] and g.nodes[0].inputs[1].is_const


def test_outputs_that_are_inputs_or_repeated():
    nodes = [helper.make_node("Identity", ["x"], ["same"]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Identity", ["r"], ["r2"])]
    model = make_model(nodes, [("x", [1, 3])], [("same", [1, 3]), ("r", [1, 3]), ("r2", [1, 3])])
    g = assert_matches_onnxruntime(model, {"x": rand(1, 3)})
    assert g.outputs[0] is g.inputs[0] and g.outputs[1] is g.outputs[2]


def test_names_are_sanitised_and_graph_name_kept(tmp_path):
    nodes = [helper.make_node("Relu", ["in:0"], ["out/relu:0"], name="/relu")]
    model = make_model(nodes, [("in:0", [1, 3])], [("out/relu:0", [1, 3])], name="my net")
    g = assert_matches_onnxruntime(model, {"in:0": rand(1, 3)})
    assert g.name == "my_net"
    assert g.inputs[0].name == "in_0" and g.outputs[0].name == "out_relu_0"


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 14, 17, 18, 21])
def test_opsets(opset, tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["g"], transB=1, alpha=0.5),
             helper.make_node("Dropout", ["g"], ["d"]),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("Reshape", ["r", "s"], ["y"])]
    model = make_model(nodes, [("x", [1, 2, 4])], [("y", [2, 3])],
                       {"W": rand(6, 8), "b": rand(6), "s": np.array([2, -1], np.int64)}, opset=opset)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    g = load_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rand(1, 2, 4)
    np.testing.assert_allclose(run(g, {"x": x})["y"], sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


# -- bad input -------------------------------------------------------------------------------

def small_model():
    return make_model([helper.make_node("Gemm", ["x", "W", "b"], ["y"])], [("x", [1, 16])],
                      [("y", [1, 8])], {"W": rand(16, 8), "b": rand(8)})


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_onnx(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"this is not an onnx model at all \x00\xff\xfe" * 7,
                                     bytes(range(256)) * 4, b"", b"\x08"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_onnx(path)


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9])
def test_truncated_file(tmp_path, fraction):
    data = small_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match="truncated.onnx"):
        load_onnx(path)


def test_checker_failure_is_model_error():
    model = small_model()
    model.graph.node[0].input[1] = "undefined_weight"
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_onnx(model)


@pytest.mark.parametrize("opset", [5, 26])
def test_opset_out_of_range(opset):
    model = small_model()
    model.opset_import[0].version = opset
    with pytest.raises(ModelError, match=f"opset {opset}.*6 to 25"):
        load_onnx(model)


def test_opsets_after_21_change_the_ops_read_only_in_element_types():
    # Read as opset 21: every op nnfpga takes that changed in opsets 22..25 must keep its
    # attributes, inputs and outputs (the changes only allow more element types).
    from nnfpga.frontend.onnx_import import MAX_OPSET, SAME_SINCE_21, TARGET_OPSET

    def signature(schema):
        return ({k: (a.type, a.required, str(a.default_value)) for k, a in schema.attributes.items()},
                [(i.name, i.option) for i in schema.inputs], [(o.name, o.option) for o in schema.outputs])

    for op in sorted(set(SUPPORTED_OPS) | set(HOST_OPS)):
        new, old = onnx.defs.get_schema(op, MAX_OPSET), onnx.defs.get_schema(op, TARGET_OPSET)
        if new.since_version > TARGET_OPSET:
            assert op in SAME_SINCE_21, op
        if op in SAME_SINCE_21:
            assert signature(new) == signature(old), op


def test_opset_25_model_is_read_as_21():
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["y"])]
    model = make_model(nodes, [("x", [1, 2, 3])], [("y", [1, 4])], {"W": rand(6, 4)}, opset=25)
    model.ir_version = 11
    assert [n.op for n in load_onnx(model).nodes] == ["reshape", "gemm"]


def test_unsupported_ops_all_listed():
    # Cos and Sin are in neither table: not the accelerator's, not the host fallback's.
    nodes = [helper.make_node("Gemm", ["x", "W"], ["g"], name="fc"),
             helper.make_node("Cos", ["g"], ["s"], name="act"),
             helper.make_node("Sin", ["s"], ["y"], name="probs"),
             helper.make_node("Sin", ["g"], ["z"])]
    model = make_model(nodes, [("x", [1, 4])], [("y", [1, 3]), ("z", [1, 3])], {"W": rand(4, 3)})
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(model)
    message = str(info.value)
    assert "Cos (node 'act')" in message
    assert "Sin (node 'probs')" in message
    assert "Sin (unnamed node producing 'z')" in message
    assert "neither by the accelerator nor by the host fallback" in message
    assert "Gemm (" not in message
    assert ", ".join(SUPPORTED_OPS) in message
    assert ", ".join(HOST_OPS) in message
    assert HOST_FALLBACK_NOTE in message
    assert "3 node(s)" in message


def test_matmul_3d_is_unsupported_with_details():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm3"),
             helper.make_node("Relu", ["m"], ["y"]),
             helper.make_node("MatMul", ["x2", "W"], ["y2"], name="mm3b")]
    model = make_model(nodes, [("x", [2, 3, 4]), ("x2", [5, 4])], [("y", [2, 3, 6]), ("y2", [5, 6])],
                       {"W": rand(4, 6)})
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(model)
    message = str(info.value)
    assert "MatMul (node 'mm3'): only 2-D MatMul" in message and "[2, 3, 4]" in message
    assert "mm3b" not in message and "1 node(s)" in message
    assert HOST_FALLBACK_NOTE in message


def test_custom_domain_op_is_unsupported():
    node = helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft", name="fg")
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match="FusedGemm \\(node 'fg'\\).*com.microsoft"):
        load_onnx(model)


def test_dynamic_batch_is_fixed_to_one():
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"])
    model = make_model([node], [("x", ["batch", 16])], [("y", ["batch", 8])],
                       {"W": rand(16, 8), "b": rand(8)})
    g = load_onnx(model)
    assert g.inputs[0].type.shape == (1, 16) and g.outputs[0].type.shape == (1, 8)
    assert_matches_onnxruntime(model, {"x": rand(1, 16)})


def test_unknown_batch_dim_is_fixed_to_one():
    model = small_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    assert load_onnx(model).inputs[0].type.shape == (1, 16)


def test_dynamic_non_batch_dim_asks_for_input_shape():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], [("x", ["N", 3, "H", "W"])], [("y", ["N", 3, "H", "W"])])
    with pytest.raises(ModelError, match="--input-shape x=1,3,H,W") as info:
        load_onnx(model)
    assert "'H' (axis 2)" in str(info.value)
    g = assert_matches_onnxruntime(model, {"x": rand(1, 3, 5, 7)}, input_shapes={"x": [1, 3, 5, 7]})
    assert g.inputs[0].type.shape == (1, 3, 5, 7)


def test_input_shapes_override_and_errors():
    node = helper.make_node("Relu", ["in:0"], ["y"])
    model = make_model([node], [("in:0", [1, 4])], [("y", [1, 4])])
    assert load_onnx(model, {"in_0": [2, 4]}).inputs[0].type.shape == (2, 4)  # sanitised name works
    assert load_onnx(model, {"in:0": [3, 4]}).outputs[0].type.shape == (3, 4)
    with pytest.raises(ModelError, match="no such input.*in:0"):
        load_onnx(model, {"x": [1, 4]})
    with pytest.raises(ModelError, match="3 dimensions"):
        load_onnx(model, {"in:0": [1, 4, 1]})
    with pytest.raises(ModelError, match="positive"):
        load_onnx(model, {"in:0": [0, 4]})


def test_non_float_input_is_refused():
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="'x'.*int8.*float32"):
        load_onnx(model)


def test_output_without_shape_fails_the_checker():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 2])], [("y", None)])
    with pytest.raises(ModelError, match="not a valid ONNX model.*shape"):
        load_onnx(model)


def test_shape_mismatch_is_model_error():
    node = helper.make_node("Gemm", ["x", "W"], ["y"])
    model = make_model([node], [("x", [1, 5])], [("y", [1, 2])], {"W": rand(4, 2)})
    with pytest.raises(ModelError, match="shape inference"):
        load_onnx(model)


# -- PyTorch ---------------------------------------------------------------------------------

def test_from_torch_mlp(tmp_path):
    torch = pytest.importorskip("torch")
    from nnfpga.frontend import from_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    x = torch.randn(1, 12)
    path = tmp_path / "mlp.onnx"
    g = from_torch(net, x, path=path)
    assert [n.op for n in g.nodes] == ["gemm", "relu", "gemm"]
    with torch.no_grad():
        expected = net(x).numpy()
    got = run(g, {g.inputs[0].name: x.numpy()})[g.outputs[0].name]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The saved model is readable by onnxruntime and by load_onnx.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], expected, rtol=1e-5, atol=1e-6)
    assert print_graph(load_onnx(path)) == print_graph(g)


def test_from_torch_names_and_saved_ir_version(tmp_path):
    torch = pytest.importorskip("torch")
    from nnfpga.frontend import from_torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.Dropout(0.5))
    path = tmp_path / "m.onnx"
    g = from_torch(net, torch.randn(1, 4, 4), path=path)
    assert not net.training
    assert [v.name for v in g.inputs] == ["input"] and [v.name for v in g.outputs] == ["output"]
    assert onnx.load(path).ir_version <= 10


def test_from_torch_without_torch(monkeypatch):
    import sys

    from nnfpga.frontend import from_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(NnfpgaError, match=r"pip install 'nnfpga\[torch\]'"):
        from_torch(object(), None)


def test_dynamo_exported_model_loads(tmp_path):
    """torch's default (torch.export-based) exporter writes opset 18 and external data."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()
    x = torch.randn(1, 8)
    path = tmp_path / "dynamo.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=True, opset_version=18, verbose=False)
    g = load_onnx(path)
    with torch.no_grad():
        expected = net(x).numpy()
    got = run(g, {g.inputs[0].name: x.numpy()})[g.outputs[0].name]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# -- host ops: imported as `host` nodes, run by the interpreter through onnxruntime -----------

def _host_case(op):
    """(nodes, inputs, outputs, initializers, opset) exercising one host op after a Gemm."""
    gemm = helper.make_node("Gemm", ["x", "W", "B"], ["g"], name="fc")
    inits = {"W": rand(6, 8), "B": rand(8)}
    unary = lambda **attrs: ([gemm, helper.make_node(op, ["g"], ["y"], name="h", **attrs)],
                             [("x", [1, 6])], [("y", [1, 8])], inits, 13)
    if op == "LRN":
        inits["shape"] = np.array([1, 8, 1, 1], np.int64)
        nodes = [gemm, helper.make_node("Reshape", ["g", "shape"], ["r"]),
                 helper.make_node("LRN", ["r"], ["y"], size=3, alpha=1e-3, beta=0.5, bias=2.0)]
        return nodes, [("x", [1, 6])], [("y", [1, 8, 1, 1])], inits, 13
    if op == "TopK":
        inits["k"] = np.array([3], np.int64)
        nodes = [gemm, helper.make_node("TopK", ["g", "k"], ["v", "i"], axis=-1)]
        return nodes, [("x", [1, 6])], [("v", [1, 3]), ("i", [1, 3])], inits, 13
    if op == "Clip":  # a bound computed at run time (constant bounds make an IR clip), one element
        inits.update(lo=np.array(-0.5, np.float32))
        return ([gemm, helper.make_node("Clip", ["g", "lo", "hi"], ["y"])], [("x", [1, 6]), ("hi", [1])],
                [("y", [1, 8])], inits, 13)
    if op in ("Sub", "Div", "Mul"):
        # (x - mean) / std before the first layer: a typical host prefix, two data operands.
        inits["m"] = rand(6)
        nodes = [helper.make_node(op, ["x", "m"], ["n"], name="norm"),
                 helper.make_node(op, ["n", "x2"], ["n2"]), helper.make_node("Gemm", ["n2", "W", "B"], ["y"])]
        return nodes, [("x", [1, 6]), ("x2", [1, 6])], [("y", [1, 8])], inits, 13
    if op == "ArgMax":
        return [gemm, helper.make_node("ArgMax", ["g"], ["y"], axis=1, keepdims=1)], [("x", [1, 6])], [("y", [1, 1])], inits, 13
    if op in ("Gelu", "HardSwish"):  # opsets 20 and 14
        nodes, i, o, inits, _ = unary(**({"approximate": "tanh"} if op == "Gelu" else {}))
        return nodes, i, o, inits, 20
    attrs = {"Softmax": {"axis": 0}, "LeakyRelu": {"alpha": 0.2}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
             "Elu": {"alpha": 0.5}, "Selu": {"alpha": 1.5, "gamma": 1.1}}.get(op, {})
    if op in ("Log", "Sqrt", "Reciprocal"):
        nodes = [gemm, helper.make_node("Abs", ["g"], ["a"]), helper.make_node(op, ["a"], ["y"])]
        return nodes, [("x", [1, 6])], [("y", [1, 8])], inits, 13
    return unary(**attrs)


@pytest.mark.parametrize("op", sorted(HOST_OPS))
def test_host_ops_import_as_host_nodes_and_match_onnxruntime(op):
    nodes, inputs, outputs, inits, opset = _host_case(op)
    model = make_model(nodes, inputs, outputs, inits, opset=opset)
    if opset > 13:
        model.ir_version = 9
    if op == "TopK":
        model.graph.output[1].type.tensor_type.elem_type = TensorProto.INT64
    if op == "ArgMax":
        model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    feeds = {name: rand(*shape) for name, shape in inputs}
    g = assert_matches_onnxruntime(model, feeds)
    hosts = [n for n in g.nodes if n.op == "host"]
    assert hosts and all(n.attrs["op_type"] in HOST_OPS for n in hosts)
    assert op in {n.attrs["op_type"] for n in hosts}
    text = print_graph(g)
    assert f'op_type = "{op}"' in text
    assert print_graph(parse(text, dict(g.arrays))) == text


def test_host_node_keeps_attributes_and_integer_constants():
    model = make_model(*_host_case("TopK")[:4])
    model.graph.output[1].type.tensor_type.elem_type = TensorProto.INT64
    g = load_onnx(model)
    (top,) = [n for n in g.nodes if n.op == "host"]
    assert top.attrs == {"op_type": "TopK", "axis": -1}
    assert [v.type for v in top.outputs] == [parse_type("tensor<1x3xf32>"), parse_type("tensor<1x3xi64>")]
    assert top.inputs[1].is_const and repr(top.inputs[1].type) == "tensor<1xi64>"
    model = make_model(*_host_case("LRN")[:4])
    g = load_onnx(model)
    (lrn,) = [n for n in g.nodes if n.op == "host"]
    assert lrn.attrs == {"op_type": "LRN", "size": 3, "alpha": pytest.approx(1e-3), "beta": 0.5, "bias": 2.0}


def parse_type(text):
    from nnfpga.ir.parser import _Cursor, _type
    return _type(_Cursor(text, 0))


def test_host_op_from_an_old_opset_keeps_its_meaning():
    # Softmax before opset 13 flattens to 2-D around `axis`; the converter rewrites it for opset 21.
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    model = make_model(nodes, [("x", [1, 2, 3])], [("y", [1, 2, 3])], opset=11)
    assert_matches_onnxruntime(model, {"x": rand(1, 2, 3)})


def test_host_op_on_constants_is_folded():
    nodes = [helper.make_node("Exp", ["c"], ["e"]), helper.make_node("Gemm", ["x", "W", "e"], ["y"])]
    model = make_model(nodes, [("x", [1, 4])], [("y", [1, 3])], {"W": rand(4, 3), "c": rand(3)})
    g = assert_matches_onnxruntime(model, {"x": rand(1, 4)})
    assert all(n.op != "host" for n in g.nodes)


def test_host_node_verifier_rules():
    text = """graph @g(%x: tensor<1x4xf32>) {
  %y = host(%x) {op_type = "Softmax", place = "nowhere"} : tensor<1x4xf32>
  return %y
}
"""
    with pytest.raises(NnfpgaError, match="place must be one of accel, host"):
        from nnfpga.ir import verify
        verify(parse(text))
    with pytest.raises(NnfpgaError, match="missing required attribute 'op_type'"):
        verify(parse(text.replace('op_type = "Softmax", place = "nowhere"', 'axis = 1')))
    with pytest.raises(NnfpgaError, match="has no attribute 'frobs'"):
        run(parse(text.replace('place = "nowhere"', "frobs = 1")), {"x": rand(1, 4)})
