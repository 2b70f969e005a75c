"""Mutation fuzzing of what users hand the compiler: ONNX models, .npz data, pipeline strings.

One case is (kind, seed): the seed fixes the base example and every mutation, so a crash is
replayed with `run_case(kind, seed)`. A case compiles in-process as `nnfpga compile` does,
without Verilator and without writing a build: read the model file, read and check the data,
run the pipeline, lower to the stream design, emit the Verilog and the reference ONNX. The
outcome must be "ok" or an NnfpgaError with a message; any other exception is a crash.

    model      byte flips, truncation, inserted bytes; protobuf edits: random attribute
               values, added attributes, input and initializer shapes, element types, op types
               swapped, nodes dropped or rewired, opset versions
    npz        calibration arrays with other dtypes, shapes, names, sample counts, NaN/Inf and
               extreme values, or the file's bytes flipped and truncated
    pipeline   random pass lists with real and made-up options and values, and character edits
               of the default pipeline

Used by tests/test_fuzz.py (a fixed budget in the default suite) and bench/fuzz.py (>= 10,000).
"""
from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnfpga.backends.lower import region_input
from nnfpga.backends.reference_onnx import to_reference_onnx
from nnfpga.backends.stream_graph import lower_stream
from nnfpga.backends.verilog import emit_stream_verilog
from nnfpga.builddir import check_sample_shapes, load_npz, match_inputs
from nnfpga.errors import NnfpgaError
from nnfpga.frontend import load_onnx_quantized
from nnfpga.passes import DEFAULT_PIPELINE, PassContext, parse_pipeline, run_pipeline
from nnfpga.passes.partition import with_partition
from nnfpga.passes.registry import PASSES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASE_MODELS = ("digits_mlp", "jet_mlp", "digits_cnn", "mnist_cnn", "digits_softmax")
"""Examples the model fuzzer mutates (mnist_mlp is left out: its 784-input layer makes every
surviving case slow without reaching code the others do not)."""
DATA_MODELS = ("digits_mlp", "digits_cnn")
"""Examples whose calibration data the npz fuzzer mutates, and the pipeline fuzzer compiles."""
CALIB_SAMPLES = 8
"""Calibration samples a case uses: enough for quantize, few enough to keep a case fast."""
KINDS = ("model", "npz", "pipeline")

_INTS = (0, 1, 2, 3, 4, -1, -2, 5, 7, 8, 16, 100, 255, 1 << 16, 1 << 31, -(1 << 31), 1 << 40)
_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, 3.4e38, np.nan, np.inf, -np.inf, 255.0, 1e-7)
_ATTR_NAMES = ("kernel_shape", "strides", "pads", "dilations", "group", "axis", "axes", "perm", "transA",
               "transB", "alpha", "beta", "auto_pad", "ceil_mode", "count_include_pad", "keepdims",
               "epsilon", "min", "max", "mode", "value", "allowzero", "storage_order", "to", "start", "end")
_OPS = ("Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "Div", "Flatten", "Gemm",
        "GlobalAveragePool", "GlobalMaxPool", "Identity", "MatMul", "MaxPool", "Mul", "Pad", "ReduceMean",
        "Relu", "Reshape", "Softmax", "Squeeze", "Sum", "Transpose", "Unsqueeze", "Sigmoid", "TopK",
        "ConstantOfShape", "Shape", "Dropout", "LSTM", "Tanh", "Sub")
_DTYPES = (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.uint64, np.bool_,
           np.complex64)


def _base_bytes(name: str) -> bytes:
    return (EXAMPLES / name / "model.onnx").read_bytes()


def _base_calib(name: str) -> dict[str, np.ndarray]:
    with np.load(EXAMPLES / name / "calib.npz") as data:
        return {k: data[k][:CALIB_SAMPLES] for k in data.files}


# -- compiling a case -------------------------------------------------------------------------

def compile_case(model_path: Path, calib_path: Path | None, pipeline: str, work: Path, seed: int) -> None:
    """What `nnfpga compile` does up to the build directory, in-process and without host code
    or HLS: NnfpgaError for a user's mistake, anything else is a bug."""
    steps = parse_pipeline(pipeline)
    g, fixed_quant = load_onnx_quantized(model_path)
    steps = with_partition(steps, g, None)
    if calib_path is not None:
        calib = match_inputs(g, load_npz(calib_path, "calibration"), "calibration data")
        check_sample_shapes(g, calib, "calibration data")
    else:  # a few samples shaped like the (possibly mutated) inputs, as a user would give
        rng = np.random.default_rng(seed)
        calib = {v.name: rng.standard_normal((CALIB_SAMPLES,) + tuple(v.type.shape[1:])).astype(np.float32)
                 for v in g.inputs}
    final = run_pipeline(g, steps, PassContext(calib=calib, seed=seed, fixed_quant=fixed_quant))
    design = lower_stream(final, region_input(final))
    emit_stream_verilog(design, work / "rtl")
    to_reference_onnx(final).SerializeToString()


def run_case(kind: str, seed: int) -> tuple[str, str]:
    """("ok", "") or ("error", message) for a clear NnfpgaError; other exceptions propagate."""
    rng = np.random.default_rng([KINDS.index(kind), seed])
    with tempfile.TemporaryDirectory(prefix="nnfpga-fuzz-") as tmp:
        work = Path(tmp)
        model, calib, pipeline = work / "model.onnx", None, DEFAULT_PIPELINE
        if kind == "model":
            model.write_bytes(mutate_model(_base_bytes(rng.choice(BASE_MODELS)), rng))
        elif kind == "npz":
            base = str(rng.choice(DATA_MODELS))
            model.write_bytes(_base_bytes(base))
            calib = work / "calib.npz"
            calib.write_bytes(mutate_npz(_base_calib(base), rng))
        elif kind == "pipeline":
            model.write_bytes(_base_bytes(rng.choice(DATA_MODELS)))
            pipeline = random_pipeline(rng)
        else:
            raise ValueError(f"unknown fuzz kind {kind}")
        try:
            compile_case(model, calib, pipeline, work, seed)
        except NnfpgaError as e:
            message = str(e).strip()
            if not message:
                raise AssertionError(f"{type(e).__name__} without a message") from e
            return "error", message
    return "ok", ""


# -- byte mutations -----------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    choice = rng.integers(4)
    if choice == 0 or not b:  # flip a few bytes
        for _ in range(int(rng.integers(1, 9))):
            if b:
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif choice == 1:  # truncate
        del b[int(rng.integers(len(b))):]
    elif choice == 2:  # insert random bytes
        at = int(rng.integers(len(b) + 1))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:  # flip one bit
        at = int(rng.integers(len(b)))
        b[at] ^= 1 << int(rng.integers(8))
    return bytes(b)


# -- protobuf mutations -------------------------------------------------------------------------

def _random_int(rng) -> int:
    return int(rng.choice(_INTS)) if rng.random() < 0.7 else int(rng.integers(-10, 100))


def _random_attribute(name: str, rng) -> onnx.AttributeProto:
    form = rng.integers(5)
    if form == 0:
        return helper.make_attribute(name, _random_int(rng))
    if form == 1:
        return helper.make_attribute(name, float(rng.choice(_FLOATS)))
    if form == 2:
        values = [_random_int(rng) for _ in range(int(rng.integers(0, 7)))]
        if not values:  # helper.make_attribute cannot tell the type of an empty list
            return helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS)
        return helper.make_attribute(name, values)
    if form == 3:
        return helper.make_attribute(name, [float(rng.choice(_FLOATS)) for _ in range(int(rng.integers(1, 5)))])
    return helper.make_attribute(name, rng.choice([b"NOTSET", b"SAME_UPPER", b"VALID", b"constant", b"x"]))


def _mutate_attribute(model: onnx.ModelProto, rng) -> None:
    nodes = list(model.graph.node)
    node = nodes[int(rng.integers(len(nodes)))]
    if node.attribute and rng.random() < 0.7:
        at = int(rng.integers(len(node.attribute)))
        name = node.attribute[at].name
        del node.attribute[at]
    else:
        name = str(rng.choice(_ATTR_NAMES))
        keep = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(keep)
    if rng.random() < 0.9:
        node.attribute.append(_random_attribute(name, rng))


def _mutate_dims(dims: list[int], rng) -> list[int]:
    dims = list(dims)
    choice = rng.integers(4)
    if choice == 0 and dims:
        dims[int(rng.integers(len(dims)))] = _random_int(rng)
    elif choice == 1:
        dims.insert(int(rng.integers(len(dims) + 1)), int(rng.choice((1, 2, 3, 0))))
    elif choice == 2 and dims:
        del dims[int(rng.integers(len(dims)))]
    else:
        rng.shuffle(dims)
    return dims


def _mutate_input_shape(model: onnx.ModelProto, rng) -> None:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        return
    shape = inputs[0].type.tensor_type.shape
    dims = [d.dim_value for d in shape.dim]
    shape.ClearField("dim")
    for d in _mutate_dims(dims, rng):
        if d < 0 and rng.random() < 0.5:
            shape.dim.add().dim_param = "N"
        else:
            shape.dim.add().dim_value = d


def _mutate_initializer(model: onnx.ModelProto, rng) -> None:
    inits = list(model.graph.initializer)
    if not inits:
        return
    t = inits[int(rng.integers(len(inits)))]
    choice = rng.integers(4)
    if choice == 0:  # dims that no longer match the data
        dims = _mutate_dims(list(t.dims), rng)
        del t.dims[:]
        t.dims.extend(dims)
    elif choice == 1:  # special values in the data
        data = numpy_helper.to_array(t).copy()
        if data.size and np.issubdtype(data.dtype, np.floating):
            flat = data.reshape(-1)
            for _ in range(int(rng.integers(1, 4))):
                flat[int(rng.integers(flat.size))] = rng.choice(_FLOATS)
            t.CopyFrom(numpy_helper.from_array(data, t.name))
    elif choice == 2:  # another element type over the same bytes
        t.data_type = int(rng.choice([TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.INT64,
                                      TensorProto.BOOL, TensorProto.STRING, TensorProto.UINT8, 0, 99]))
    else:  # a reshaped copy (same data, another legal shape)
        data = numpy_helper.to_array(t)
        if data.size:
            t.CopyFrom(numpy_helper.from_array(data.reshape(-1), t.name))


def _mutate_node(model: onnx.ModelProto, rng) -> None:
    graph = model.graph
    nodes = list(graph.node)
    at = int(rng.integers(len(nodes)))
    node = graph.node[at]
    choice = rng.integers(5)
    if choice == 0:
        node.op_type = str(rng.choice(_OPS))
    elif choice == 1 and len(nodes) > 1:
        del graph.node[at]
    elif choice == 2 and len(node.input) > 1:
        i, j = rng.choice(len(node.input), 2, replace=False)
        node.input[int(i)], node.input[int(j)] = node.input[int(j)], node.input[int(i)]
    elif choice == 3:
        names = [n for other in nodes for n in other.output] + [t.name for t in graph.initializer] + ["nowhere"]
        if node.input:
            node.input[int(rng.integers(len(node.input)))] = str(rng.choice(names))
    else:
        copy = graph.node.add()
        copy.CopyFrom(node)


def _mutate_opset(model: onnx.ModelProto, rng) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = int(rng.choice([1, 5, 6, 9, 11, 13, 17, 21, 22, 25, 26, 99]))
    if rng.random() < 0.3:
        model.ir_version = int(rng.choice([1, 3, 4, 7, 10, 11, 99]))


_PROTO_MUTATIONS = (_mutate_attribute, _mutate_attribute, _mutate_input_shape, _mutate_initializer,
                    _mutate_node, _mutate_opset)


def mutate_model(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three mutations of a serialized model: bytes (a third of cases) or protobuf edits."""
    if rng.random() < 0.33:
        return mutate_bytes(data, rng)
    model = onnx.load_from_string(data)
    for _ in range(int(rng.integers(1, 4))):
        mutation = _PROTO_MUTATIONS[int(rng.integers(len(_PROTO_MUTATIONS)))]
        try:
            mutation(model, rng)
        except Exception:  # an earlier mutation left data this one cannot read (onnx raises many kinds): skip it
            pass
    return model.SerializeToString()


# -- npz mutations ------------------------------------------------------------------------------

def _mutate_array(x: np.ndarray, rng) -> np.ndarray:
    choice = rng.integers(7)
    if choice == 0:
        return x.astype(rng.choice(_DTYPES))
    if choice == 1:  # samples: none, one, a few
        return x[: int(rng.choice((0, 1, 2)))]
    if choice == 2:  # another shape
        dims = _mutate_dims(list(x.shape), rng)
        if x.size and rng.random() < 0.3:
            return x.reshape(-1)
        if all(0 <= d < 1 << 12 for d in dims) and len(dims) <= 5 and int(np.prod(dims)) < 1 << 20:
            return rng.standard_normal(dims).astype(np.float32)
        return x[None]
    if choice == 3:  # special values
        y = x.astype(np.float32).copy()
        flat = y.reshape(-1)
        for _ in range(int(rng.integers(1, 4))):
            if flat.size:
                flat[int(rng.integers(flat.size))] = rng.choice(_FLOATS)
        return y
    if choice == 4:  # extreme scale (float32 overflows to inf on purpose)
        with np.errstate(over="ignore"):
            return (x.astype(np.float64) * float(rng.choice((1e30, 1e-30, -1.0, 255.0, 1e300)))).astype(
                rng.choice((np.float32, np.float64)))
    if choice == 5:
        return np.asarray(x.reshape(-1)[:1].item() if x.size else 0.0)
    return (x * 255).astype(np.uint8)


def mutate_npz(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> bytes:
    """An .npz from the example's calibration arrays with one or two mutations, or its bytes damaged."""
    arrays = dict(arrays)
    for _ in range(int(rng.integers(1, 3))):
        choice = rng.integers(5)
        name = next(iter(arrays), "input")
        if choice <= 1 and arrays:
            try:
                arrays[name] = _mutate_array(arrays[name], rng)
            except (ValueError, TypeError, IndexError):  # a string array from an earlier step: keep it
                pass
        elif choice == 2:  # renamed, extra or missing arrays
            form = rng.integers(3)
            if form == 0 and arrays:
                arrays[str(rng.choice(["x", "label", "input_1", "", "a/b"]))] = arrays.pop(name)
            elif form == 1:
                arrays[str(rng.choice(["extra", "label", "other"]))] = np.arange(3)
            else:
                arrays.clear()
        elif choice == 3 and arrays:
            arrays[name] = np.array([str(v) for v in np.asarray(arrays[name]).reshape(-1)[:4]], dtype=object) \
                if rng.random() < 0.5 else np.array(["a", "b"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:  # np.savez's layout, names as given (even odd ones)
        for key, value in arrays.items():
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=True)
    data = buffer.getvalue()
    return mutate_bytes(data, rng) if rng.random() < 0.25 else data


# -- pipeline strings ---------------------------------------------------------------------------

_OPTION_VALUES = {
    "wbits": ["2", "3", "4", "5", "8", "1", "9", "0"], "abits": ["2", "3", "4", "6", "8", "1", "9"],
    "calib": ["minmax", "percentile", "mse", "max"], "pct": ["0.001", "0.01", "1", "49.9", "50", "0"],
    "pe": ["1", "2", "3", "4", "7", "8", "64", "1000", "0"], "simd": ["1", "2", "4", "5", "8", "64", "4096", "-1"],
    "target_fps": ["0", "1", "1000", "1e5", "1e6", "1e8", "1e12", "-5"],
    "clock_mhz": ["1", "50", "100", "500", "0", "1e-9"],
    "device": ["", "ecp5-25k", "ecp5-85k", "xc7z020", "xczu3eg", "nosuch"],
    "energy": ["0.01", "0.5", "0.95", "1", "0", "1.5"], "rank": ["", "1", "2", "8", "100", "0", "fc0:2", "x:y"],
    "macs": ["0", "0.05", "0.5", "1", "2"], "host_ops": ["", "dense", "Gemm", "reshape", "%nope", "LSTM"],
    "ratio": ["auto", "0", "0.25", "0.5", "1", "1.5", "x"], "lut_bits": ["2", "3", "4", "8", "1", "9"],
    "layers": ["", "relu0", "relu0+logits", "logits", "conv1_Conv_output_0", "nope"],
}
"""Values a pipeline option is tried with: usual ones, edges, and a few out of range (layer
names are the digits examples')."""
_LAYER_BITS = ["relu0:4", "relu1:2+logits:6", "logits:8", "conv1_Conv_output_0:3", "relu0:9", "nope:4", "relu0"]
_JUNK_VALUES = ["nan", "inf", "-inf", "1e309", "true", "", "x", "0x10", "1_000", "٣", " 8 ", "1+2", "%h0"]


def _option(name: str, rng) -> str:
    options = PASSES[name].options if name in PASSES else {}
    if not options or rng.random() < 0.1:
        key = str(rng.choice(list(options) + ["bogus", "wbits"])) if options else "bogus"
    else:
        key = str(rng.choice(list(options)))
    if rng.random() < 0.05:
        return key  # no value
    values = _LAYER_BITS if name == "bits" else _OPTION_VALUES.get(key, ["1"])
    value = str(rng.choice(_JUNK_VALUES)) if rng.random() < 0.1 else str(rng.choice(values))
    return f"{key}={value}"


def _step(name: str, rng, options: int) -> str:
    items, keys = [], set()
    for _ in range(options):
        item = _option(name, rng)
        key = item.split("=")[0]
        if key not in keys or rng.random() < 0.05:  # a repeated option now and then
            items.append(item)
            keys.add(key)
    return name + ("{" + ",".join(items) + "}" if items else "")


def random_pipeline(rng: np.random.Generator) -> str:
    """Half the cases: the usual pass order with random (mostly legal) options; the rest random
    pass lists with made-up names, or character edits of the default pipeline."""
    form = rng.random()
    if form < 0.5:
        steps = ["canonicalize"]
        if rng.random() < 0.3:
            steps.append(_step("lowrank", rng, int(rng.integers(0, 3))))
        if rng.random() < 0.1:
            steps.append(_step("partition", rng, int(rng.integers(0, 2))))
        if rng.random() < 0.2:
            steps.append(_step(str(rng.choice(["split", "bits"])), rng, int(rng.integers(0, 3))))
        steps.append(_step("quantize", rng, int(rng.integers(0, 4))))
        if rng.random() < 0.8:
            steps.append("channels_last")
        steps.append(_step(str(rng.choice(["autofold", "fold"])), rng, int(rng.integers(0, 3))))
        return ",".join(steps)
    if form < 0.8:
        names = list(PASSES) + ["nosuch", "Quantize", "fold2"]
        return ",".join(_step(str(rng.choice(names)), rng, int(rng.integers(0, 3)))
                        for _ in range(int(rng.integers(1, 6))))
    text = list(DEFAULT_PIPELINE)
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(len(text) + 1))
        edit = rng.integers(3)
        if edit == 0 and text:
            del text[min(at, len(text) - 1)]
        elif edit == 1:
            text.insert(at, str(rng.choice(list("{},= _a1.-%\t\n;:\\\"'é"))))
        elif text:
            text[min(at, len(text) - 1)] = str(rng.choice(list("{},=xz9")))
    return "".join(text)
