"""Convolutional ops through the ONNX frontend: onnxruntime against the float interpreter,
before and after canonicalize, on random window shapes (hypothesis) and on each op's corners;
bad nodes give clear errors."""
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from nnfpga.errors import ModelError, NnfpgaError, UnsupportedOpError
from nnfpga.frontend import load_onnx
from nnfpga.ir import parse, print_graph, run, verify
from nnfpga.passes import PassContext, run_pipeline

RTOL, ATOL = 1e-4, 1e-5
"""onnxruntime computes in float32 in its own order; the interpreter's conv sums in float64."""

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_model(nodes, inputs, outputs, initializers=None, opset=13):
    """inputs: (name, shape) pairs; outputs: names (shapes left to inference); initializers: name -> array."""
    graph = helper.make_graph(
        nodes, "spatial", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["?"]) for n in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def reference(model, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check(model, feeds, canonicalize=True, reference_model=None):
    """Import, compare with onnxruntime (running `reference_model` when given); canonicalize and
    compare again. Returns both graphs."""
    g = load_onnx(model)
    text = print_graph(g)
    assert print_graph(parse(text, dict(g.arrays))) == text
    expected = reference(reference_model or model, feeds)
    ir_feeds = {v.name: feeds[n] for v, n in zip(g.inputs, feeds)}
    for got, want in zip(run(g, ir_feeds).values(), expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    after = None
    if canonicalize:
        after = run_pipeline(g.clone(), "canonicalize", PassContext(seed=0))
        verify(after)
        for got, want in zip(run(after, ir_feeds).values(), expected):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return g, after


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- random windows ----------------------------------------------------------------------------

AUTO_PADS = ["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]


@st.composite
def window(draw, spatial_dims, max_kernel=4, dilate=True):
    """(input spatial sizes, ONNX window attributes) with every size fitting its window."""
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(spatial_dims)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial_dims)]
    auto_pad = draw(st.sampled_from(AUTO_PADS))
    dilate = dilate and not auto_pad.startswith("SAME")  # onnxruntime refuses dilated SAME windows
    dilations = [draw(st.integers(1, 2)) if dilate else 1 for _ in range(spatial_dims)]
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    attrs = {"kernel_shape": kernel, "strides": strides}
    if dilate:
        attrs["dilations"] = dilations
    if auto_pad == "NOTSET":
        pads = [draw(st.integers(0, k - 1)) for k in kernel * 2]
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
        pads = [0] * (2 * spatial_dims)
    sizes = [draw(st.integers(max(1, e - pads[i] - pads[i + spatial_dims]), e + 6)) for i, e in enumerate(span)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = [max(s, e) for s, e in zip(sizes, span)]
    return sizes, attrs


def expect_clear_refusal_or_match(model, feeds):
    """A window nnfpga refuses on purpose must say why; anything else must match. On purpose:
    ceil_mode windows starting in the right padding, SAME padding with a stride longer than the
    window (negative padding: onnxruntime's pools refuse it or crop, depending on the opset), and
    dilated pool windows whose taps all land in padding."""
    try:
        load_onnx(model)
    except UnsupportedOpError as e:
        assert any(why in str(e) for why in ("ceil_mode=1", "leaves input unread", "sees padding only")), str(e)
        return
    check(model, feeds)


@PROPERTY
@given(spatial=st.sampled_from([1, 2]), data=st.data(), seed=st.integers(0, 2**16))
def test_conv_matches_onnxruntime(spatial, data, seed):
    sizes, attrs = data.draw(window(spatial, max_kernel=3))
    if "pads" in attrs and data.draw(st.booleans()):  # pads as wide as the window: padded explicitly
        attrs["pads"] = [p + data.draw(st.integers(0, 2)) for p in attrs["pads"]]
    group = data.draw(st.sampled_from([1, 1, 2, 3]))
    per_group_in = data.draw(st.integers(1, 2))
    per_group_out = data.draw(st.integers(1, 2))
    c, o = group * per_group_in, group * per_group_out
    rng = np.random.default_rng(seed)
    kernel = attrs.pop("kernel_shape")
    inits = {"W": rand(rng, o, per_group_in, *kernel)}
    inputs = ["x", "W"]
    if data.draw(st.booleans()):
        inits["B"] = rand(rng, o)
        inputs.append("B")
    shape = [1, c, *sizes]
    model = make_model([helper.make_node("Conv", inputs, ["y"], group=group, **attrs)], [("x", shape)], ["y"], inits)
    check(model, {"x": rand(rng, *shape)})


@PROPERTY
@given(spatial=st.sampled_from([1, 2]), data=st.data(), seed=st.integers(0, 2**16))
def test_maxpool_matches_onnxruntime(spatial, data, seed):
    sizes, attrs = data.draw(window(spatial))
    attrs["ceil_mode"] = data.draw(st.sampled_from([0, 1]))
    shape = [1, data.draw(st.integers(1, 3)), *sizes]
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [("x", shape)], ["y"], opset=12)
    expect_clear_refusal_or_match(model, {"x": rand(np.random.default_rng(seed), *shape)})


@PROPERTY
@given(spatial=st.sampled_from([1, 2]), data=st.data(), seed=st.integers(0, 2**16))
def test_avgpool_matches_onnxruntime(spatial, data, seed):
    sizes, attrs = data.draw(window(spatial, dilate=False))
    attrs["ceil_mode"] = data.draw(st.sampled_from([0, 1]))
    attrs["count_include_pad"] = data.draw(st.sampled_from([0, 1]))
    shape = [1, data.draw(st.integers(1, 3)), *sizes]
    model = make_model([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], [("x", shape)], ["y"])
    expect_clear_refusal_or_match(model, {"x": rand(np.random.default_rng(seed), *shape)})


@settings(max_examples=20, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_dilated_avgpool_is_a_depthwise_conv(data, seed):
    sizes, attrs = data.draw(window(2))
    attrs["count_include_pad"] = 1
    shape = [1, 2, *sizes]
    model = make_model([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], [("x", shape)], ["y"], opset=19)
    expect_clear_refusal_or_match(model, {"x": rand(np.random.default_rng(seed), *shape)})


# -- one op at a time ------------------------------------------------------------------------------

RNG = np.random.default_rng(1)


def test_conv_names_weights_and_fills_a_missing_bias():
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], [("x", [1, 3, 5, 5])],
                       ["y"], {"W": rand(RNG, 4, 3, 3, 3)})
    g, _ = check(model, {"x": rand(RNG, 1, 3, 5, 5)})
    (conv,) = g.nodes
    assert conv.op == "conv" and conv.inputs[1].name == "W" and conv.output.name == "y"
    assert conv.attrs == {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    assert not g.const_data(conv.inputs[2]).any()


def test_depthwise_conv_1d_is_reshaped_around_a_2d_conv():
    model = make_model([helper.make_node("Conv", ["x", "W", "B"], ["y"], group=4, strides=[2], pads=[1, 2])],
                       [("x", [1, 4, 11])], ["y"], {"W": rand(RNG, 8, 1, 3), "B": rand(RNG, 8)})
    g, after = check(model, {"x": rand(RNG, 1, 4, 11)})
    assert [n.op for n in g.nodes] == ["reshape", "conv", "reshape"]
    assert g.nodes[1].attrs["pads"] == [0, 1, 0, 2] and g.nodes[1].inputs[1].type.shape == (8, 1, 1, 3)


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_batchnorm_is_mul_then_add_by_channel(rank):
    shape = [1, 3, 4, 5][:rank]
    params = {"s": rand(RNG, 3), "b": rand(RNG, 3), "m": rand(RNG, 3), "v": np.abs(rand(RNG, 3)) + 0.1}
    model = make_model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
                       [("x", shape)], ["y"], params)
    g, after = check(model, {"x": rand(RNG, *shape)})
    assert [n.op for n in g.nodes] == ["mul", "add"]
    assert g.nodes[0].inputs[1].type.shape == (1, 3) + (1,) * (rank - 2)
    if rank >= 3:  # a standalone affine becomes one depthwise conv for the hardware
        assert [n.op for n in after.nodes if n.op != "reshape"] == ["conv"]


def test_batchnorm_from_opset_6():
    params = {"s": rand(RNG, 3), "b": rand(RNG, 3), "m": rand(RNG, 3), "v": np.abs(rand(RNG, 3)) + 0.1}
    model = make_model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], is_test=1)],
                       [("x", [1, 3, 4, 4])], ["y"], params, opset=6)
    # onnxruntime has no BatchNormalization-6 kernel: the same node of opset 9 is the reference.
    same = make_model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
                      [("x", [1, 3, 4, 4])], ["y"], params, opset=9)
    check(model, {"x": rand(RNG, 1, 3, 4, 4)}, reference_model=same)


def test_global_pools_and_reduce_mean():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
             helper.make_node("GlobalMaxPool", ["x"], ["gmp"]),
             helper.make_node("ReduceMean", ["x", "axes"], ["keep"]),
             helper.make_node("ReduceMean", ["x", "axes"], ["flat"], keepdims=0),
             helper.make_node("GlobalMaxPool", ["line"], ["line_max"])]
    model = make_model(nodes, [("x", [1, 3, 4, 5]), ("line", [1, 2, 7])], ["gap", "gmp", "keep", "flat", "line_max"],
                       {"axes": np.array([-2, -1], np.int64)}, opset=18)
    g, _ = check(model, {"x": rand(RNG, 1, 3, 4, 5), "line": rand(RNG, 1, 2, 7)})
    assert [v.type.shape for v in g.outputs] == [(1, 3, 1, 1), (1, 3, 1, 1), (1, 3, 1, 1), (1, 3), (1, 2, 1)]


def test_reduce_mean_axes_attribute_in_old_opsets():
    model = make_model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
                       [("x", [1, 3, 4, 5])], ["y"], opset=11)
    check(model, {"x": rand(RNG, 1, 3, 4, 5)})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_concat_any_axis_with_a_constant(axis):
    shape = [1, 2, 3, 4]
    other = list(shape)
    other[axis] = 2 if axis != 0 else 1
    model = make_model([helper.make_node("Concat", ["x", "c", "x"], ["y"], axis=axis)], [("x", shape)], ["y"],
                       {"c": rand(RNG, *other)})
    g, _ = check(model, {"x": rand(RNG, *shape)})
    assert g.nodes[0].attrs["axis"] == axis % 4


@pytest.mark.parametrize("opset,bounds,attrs", [
    (13, (0.0, 6.0), {}),            # Relu6
    (13, (-0.5, None), {}),          # no max
    (13, (None, 0.25), {}),          # no min
    (13, (0.5, -0.5), {}),           # min > max: every value becomes max
    (13, (None, None), {}),          # no bounds: the input
    (6, None, {"min": -0.3, "max": 0.4}),
    (6, None, {"min": 0.0}),
])
def test_clip(opset, bounds, attrs):
    inits, inputs = {}, ["x"]
    if bounds is not None:
        for name, value in zip(("lo", "hi"), bounds):
            if value is not None:
                inits[name] = np.array(value, np.float32)
            inputs.append(name if value is not None else "")
    model = make_model([helper.make_node("Clip", inputs, ["c"], **attrs), helper.make_node("Relu", ["c"], ["y"])],
                       [("x", [1, 2, 3, 3])], ["y"], inits, opset=opset)
    g, after = check(model, {"x": rand(RNG, 1, 2, 3, 3)})
    assert all(n.op != "host" for n in g.nodes)
    assert len(after.nodes) == 1 and after.nodes[0].op in ("clip", "relu")  # relu(clip) is one op


def test_clip_with_run_time_bound_is_a_host_node():
    model = make_model([helper.make_node("Clip", ["x", "lo"], ["y"])], [("x", [1, 4]), ("lo", [])], ["y"])
    g = load_onnx(model)
    assert [n.op for n in g.nodes] == ["host"] and g.nodes[0].attrs["op_type"] == "Clip"


@pytest.mark.parametrize("opset", [6, 11, 18])
def test_constant_pad(opset):
    pads = [0, 0, 1, 2, 0, 0, 0, 3]
    if opset == 6:  # Pad-2: pads and value are attributes
        node = helper.make_node("Pad", ["x"], ["y"], pads=pads, value=0.5)
        inits = {}
    elif opset == 11:
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"])
        inits = {"p": np.array(pads, np.int64), "v": np.array(0.5, np.float32)}
    else:  # axes name the padded axes
        node = helper.make_node("Pad", ["x", "p", "v", "axes"], ["y"])
        inits = {"p": np.array([1, 2, 0, 3], np.int64), "v": np.array(0.5, np.float32),
                 "axes": np.array([-2, 3], np.int64)}
    model = make_model([node], [("x", [1, 2, 3, 3])], ["y"], inits, opset=opset)
    g, _ = check(model, {"x": rand(RNG, 1, 2, 3, 3)})
    assert g.nodes[0].attrs == {"pads": pads, "value": 0.5}


def test_sum_mul_div_transpose():
    nodes = [helper.make_node("Sum", ["x", "c", "x"], ["s"]),
             helper.make_node("Mul", ["k", "s"], ["m"]),
             helper.make_node("Div", ["m", "d"], ["q"]),
             helper.make_node("Transpose", ["q"], ["y"], perm=[0, 2, 3, 1]),
             helper.make_node("Sum", ["x"], ["one"])]
    model = make_model(nodes, [("x", [1, 2, 3, 4])], ["y", "one"],
                       {"c": rand(RNG, 1, 2, 1, 1), "k": rand(RNG, 2, 1, 1), "d": np.float32(4.0)})
    g, _ = check(model, {"x": rand(RNG, 1, 2, 3, 4)})
    assert [n.op for n in g.nodes] == ["add", "add", "mul", "mul", "transpose"]
    assert g.outputs[1] is g.inputs[0]


def test_squeeze_unsqueeze_and_constants_folded():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                              value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Unsqueeze", ["ones", "axes"], ["w"]),       # [3] -> [1, 3, 1, 1]
             helper.make_node("Mul", ["x", "w"], ["m"]),
             helper.make_node("Squeeze", ["m", "sq"], ["y"])]
    model = make_model(nodes, [("x", [1, 3, 1, 1])], ["y"],
                       {"shape": np.array([3], np.int64), "axes": np.array([0, 2, 3], np.int64),
                        "sq": np.array([2, 3], np.int64)})
    g, _ = check(model, {"x": rand(RNG, 1, 3, 1, 1)})
    assert [n.op for n in g.nodes] == ["mul", "reshape"] and g.nodes[0].inputs[1].is_const


def test_opset_22_conv_and_pool_are_read():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], auto_pad="SAME_UPPER"),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    model = make_model(nodes, [("x", [1, 2, 6, 6])], ["y"], {"W": rand(RNG, 3, 2, 3, 3)}, opset=22)
    model.ir_version = 10
    check(model, {"x": rand(RNG, 1, 2, 6, 6)})


# -- clear errors -------------------------------------------------------------------------------------

def refused(nodes, inputs, inits=None, opset=13, outputs=("y",), error=UnsupportedOpError):
    with pytest.raises(error) as info:
        load_onnx(make_model(nodes, inputs, list(outputs), inits, opset=opset))
    return str(info.value)


def test_training_batchnorm_is_refused():
    params = {"s": rand(RNG, 3), "b": rand(RNG, 3), "m": rand(RNG, 3), "v": np.abs(rand(RNG, 3))}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1,
                            name="bn")
    message = refused([node], [("x", [1, 3, 4, 4])], params, opset=15, outputs=("y", "rm", "rv"))
    assert "BatchNormalization (node 'bn'): training-mode" in message


def test_maxpool_indices_are_refused():
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], name="mp")
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["?"] * 4),
                               helper.make_tensor_value_info("i", TensorProto.INT64, ["?"] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    with pytest.raises(UnsupportedOpError, match="MaxPool \\(node 'mp'\\): its Indices output is used"):
        load_onnx(model)


def test_ceil_mode_window_starting_in_the_right_padding_is_refused():
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 2], strides=[1, 2], pads=[0, 0, 0, 1],
                            ceil_mode=1, name="mp")
    message = refused([node], [("x", [1, 1, 1, 4])], opset=12)
    assert "MaxPool (node 'mp'): ceil_mode=1" in message and "right padding" in message


def test_ceil_mode_with_same_padding_that_would_add_a_window_is_refused():
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[1], strides=[3], auto_pad="SAME_UPPER",
                            ceil_mode=1)
    assert "auto_pad SAME_UPPER" in refused([node], [("x", [1, 1, 5])])


def test_kernel_larger_than_input_is_a_model_error():
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="big")
    with pytest.raises(ModelError, match="big|shape inference"):
        load_onnx(make_model([node], [("x", [1, 1, 3, 3])], ["y"], {"W": rand(RNG, 1, 1, 5, 5)}))


def test_batch_of_two_is_refused_with_the_fix():
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="c")
    message = refused([node], [("x", [2, 1, 3, 3])], {"W": rand(RNG, 1, 1, 2, 2)})
    assert "Conv (node 'c'): its input has batch 2" in message and "--input-shape" in message


@pytest.mark.parametrize("case,text", [
    ("reflect", "Pad mode 'reflect'"),
    ("crop", "negative (cropping)"),
    ("reduce_channels", "averages axes [1]"),
    ("runtime_weight", "weight is computed at run time"),
    ("conv3d", "only 1-D"),
    ("dilated_avg_excluding_pad", "dilations"),
    ("dilated_same", "auto_pad SAME_UPPER with dilations"),
])
def test_unsupported_corners_are_named(case, text):
    x = [("x", [1, 2, 4, 4])]
    nodes, inits, opset = [], {}, 13
    if case == "reflect":
        nodes = [helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")]
        inits = {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}
    elif case == "crop":
        nodes = [helper.make_node("Pad", ["x", "p"], ["y"])]
        inits = {"p": np.array([0, 0, -1, 0, 0, 0, 0, 0], np.int64)}
    elif case == "reduce_channels":
        nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1])]
    elif case == "runtime_weight":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
        x = x + [("w", [1, 2, 2, 2])]
    elif case == "conv3d":
        nodes = [helper.make_node("Conv", ["x", "W"], ["y"])]
        x, inits = [("x", [1, 2, 4, 4, 4])], {"W": rand(RNG, 1, 2, 2, 2, 2)}
    elif case == "dilated_same":
        nodes = [helper.make_node("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER", dilations=[2, 2])]
        inits = {"W": rand(RNG, 1, 2, 2, 2)}
    else:
        nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2],
                                  pads=[1, 1, 1, 1])]
        opset = 19
    message = refused(nodes, x, inits, opset=opset)
    assert text in message, message
    assert "Supported ops:" in message


def test_errors_are_nnfpga_errors_never_tracebacks():
    # A Conv whose weight disagrees with the input's channels: shape inference or the op rule says so.
    node = helper.make_node("Conv", ["x", "W"], ["y"], group=2)
    with pytest.raises(NnfpgaError):
        load_onnx(make_model([node], [("x", [1, 4, 5, 5])], ["y"], {"W": rand(RNG, 2, 3, 3, 3)}))


# -- small convolutional networks ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["residual_block", "depthwise_separable", "strided_cnn", "concat_block",
                                  "conv1d_net"])
@pytest.mark.parametrize("opset", [11, 13, 21])
def test_small_networks_match_onnxruntime_and_fold_every_batchnorm(name, opset):
    import onnx_models

    model = getattr(onnx_models, name)(opset=opset)
    rng = np.random.default_rng(0)
    feeds = {i.name: rand(rng, *[d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input}
    g, after = check(model, feeds)
    assert "mul" not in {n.op for n in after.nodes}  # BatchNormalization became part of a conv
    assert {n.op for n in after.nodes} <= {"conv", "relu", "clip", "add", "maxpool", "avgpool", "concat",
                                           "reshape", "dense"}
