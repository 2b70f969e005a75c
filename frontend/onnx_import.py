"""ONNX -> float IR.

Reading a model goes: read and check the file, reject unsupported op types (all of them in
one message), upgrade the opset to TARGET_OPSET, fix the input shapes (dynamic batch -> 1),
run ONNX shape inference, then translate node by node. Constants (initializers and
Constant nodes) stay numpy arrays until a float op reads them, so integer shape tensors
(Reshape's target) never become IR values.

Supported ONNX ops map to IR ops as:

    Gemm      -> gemm {alpha, beta, trans_a, trans_b}   (attributes only when not default)
    MatMul    -> matmul                                  (2-D operands only)
    Add       -> add                                     (any broadcast)
    Sum       -> add(add(x0, x1), x2) ...                (one input: the input itself)
    Mul       -> mul                                     (one operand constant; two data operands: host)
    Div       -> mul(x, 1/c)                             (divisor constant; otherwise host)
    Relu      -> relu
    Transpose -> transpose {perm}
    Flatten   -> reshape {shape = [outer, inner]}
    Reshape   -> reshape {shape = [...]}                 (target shape must be constant)
    Squeeze, Unsqueeze -> reshape                        (axes must be constant)
    Identity, Dropout (inference) -> removed: the result is the input
    Constant, ConstantOfShape -> IR constant (when a float op reads it)
    Shape     -> an int64 constant (shapes are static)
    Conv, BatchNormalization, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool,
    ReduceMean, Concat, Clip, Pad -> conv, mul + add, maxpool, avgpool, concat, clip, pad
                                                         (frontend/onnx_spatial.py)

A quantized model (QuantizeLinear/DequantizeLinear, onnxruntime's QLinear ops, QONNX Quant)
is first rewritten into the float model it stands for, its own quantization kept aside
(frontend/onnx_quantized.py, `load_onnx_quantized`).

A node of a supported op whose inputs are all constants is evaluated here (numpy for the
shape-only ops, onnxruntime otherwise), so weights computed from constants stay constants.

Ops in HOST_OPS (Softmax, Sigmoid, LRN, TopK, ...) become `host` nodes that keep the ONNX
node (op_type, attributes, constant inputs as IR constants; result types from ONNX shape
inference); the `partition` pass places them on the host CPU, where TVM compiles them.
A host node whose inputs are all constants is evaluated here (onnxruntime) instead.
Clip, Mul and Div are in both tables: with constant bounds or a constant operand they are
IR ops, otherwise host nodes.

Opsets: models of opset 6 to 21 are converted to opset 21 by the ONNX version converter.
Opsets 22 to 25 changed the ops nnfpga reads only by allowing more element types
(bfloat16, float8, float4, int2), so such a model is read as opset 21 when every op it uses
is one of those (SAME_SINCE_21), and refused otherwise.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nnfpga.errors import ModelError, UnsupportedOpError
from nnfpga.frontend.onnx_common import Unsupported as _Unsupported
from nnfpga.frontend.onnx_common import describe as _describe
from nnfpga.frontend.onnx_common import node_attrs as _attrs
from nnfpga.frontend.onnx_common import optional_input as _optional
from nnfpga.frontend.onnx_guards import check_declared_sizes, check_finite, check_float_attributes
from nnfpga.frontend.onnx_quantized import FixedQuant, is_quantized, unquantize
from nnfpga.frontend.onnx_spatial import SPATIAL_HANDLERS
from nnfpga.ir import F32, Graph, TensorType, Value, clean_name, verify
from nnfpga.ir.host import attrs_from_onnx, evaluate_onnx_node, ir_element

SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "ConstantOfShape",
                 "Conv", "Div", "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Identity",
                 "MatMul", "MaxPool", "Mul", "Pad", "ReduceMean", "Relu", "Reshape", "Shape", "Squeeze", "Sum",
                 "Transpose", "Unsqueeze")
"""ONNX op types (default domain) the frontend translates into IR ops."""

HOST_OPS = ("Abs", "ArgMax", "Clip", "Div", "Elu", "Erf", "Exp", "Gelu", "HardSigmoid", "HardSwish",
            "Hardmax", "LRN", "LeakyRelu", "Log", "LogSoftmax", "Mul", "Neg", "Reciprocal", "Selu",
            "Sigmoid", "Softmax", "Softplus", "Softsign", "Sqrt", "Sub", "Tanh", "TopK")
"""ONNX op types (default domain) that run on the host CPU, compiled by TVM (each is in TVM's
Relax ONNX frontend, and a test compiles every one of them against onnxruntime)."""

HOST_FALLBACK_NOTE = "the host fallback (TVM) takes only " + ", ".join(HOST_OPS)
"""What the host can take instead; quoted by the unsupported-op error."""

MIN_OPSET, MAX_OPSET = 6, 25
"""Default-domain opsets the frontend reads."""

TARGET_OPSET = 21
"""Every model is converted to this opset first. The ONNX version converter only upgrades
reliably (it has no 14 -> 13 adapter for Relu, none below 16 for Identity), so the target is
the newest opset read, not an older one."""

SAME_SINCE_21 = ("AveragePool", "Constant", "ConstantOfShape", "Conv", "Dropout", "Elu", "Flatten",
                 "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity", "MaxPool", "Pad",
                 "Reshape", "Selu", "Shape", "Softplus", "Softsign", "Squeeze", "TopK", "Transpose", "Unsqueeze")
"""Ops whose versions of opsets 22..25 differ from opset 21 only in the element types they
allow (ONNX Changelog; MaxPool-22 and AveragePool-22 also state in words that ceil-mode
windows starting in the right padding are ignored, which onnxruntime did before). Attributes,
inputs and outputs are the same, as a test checks against the installed onnx."""

_ONNX_DOMAINS = ("", "ai.onnx")
_MAX_LISTED = 50


def load_onnx(path_or_model, input_shapes: dict[str, list[int]] | None = None) -> Graph:
    """Read an ONNX model (a path or a ModelProto) into a verified float IR graph.

    `input_shapes` maps input names (ONNX or sanitised) to full static shapes; it overrides
    the model's declared shapes. Otherwise a dynamic first (batch) dimension becomes 1 and
    any other dynamic dimension is an error. A quantized model is read as the float model it
    stands for; `load_onnx_quantized` also returns its own quantization."""
    return load_onnx_quantized(path_or_model, input_shapes)[0]


def load_onnx_quantized(path_or_model, input_shapes: dict[str, list[int]] | None = None
                        ) -> tuple[Graph, FixedQuant | None]:
    """`load_onnx`, plus the quantization a QDQ or QOperator model carries (None for a float
    model): value types keyed by IR value name, and the weights' scales (onnx_quantized.py)."""
    model, where = _read(path_or_model)
    _check(model, where)
    fixed = None
    if is_quantized(model):
        model, fixed = unquantize(model)
    opset = _default_opset(model, where)
    _reject_unsupported_op_types(model, where)
    check_float_attributes(model, where)
    model = _convert_opset(model, opset, where)
    _fix_input_shapes(model, input_shapes or {}, where)
    model = _infer_shapes(model, where)
    check_declared_sizes(model, where)  # before anything of those sizes is allocated
    importer = _Importer(model, where)
    g = importer.run()
    verify(g)
    if fixed is not None:
        fixed.activations = {importer.values[name].name: t for name, t in fixed.activations.items()
                             if name in importer.values}
    return g, fixed


# -- reading and normalising the model ------------------------------------------------------

def _read(path_or_model) -> tuple[onnx.ModelProto, str]:
    if isinstance(path_or_model, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path_or_model)
        return model, "the ONNX model"
    path = Path(path_or_model)
    where = str(path)
    if not path.is_file():
        raise ModelError(f"model file {where} does not exist")
    try:
        model = onnx.load(str(path))  # also loads external data stored beside the file
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot read {where} as an ONNX model: the file is truncated, corrupt "
                         f"or not ONNX ({reason})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise ModelError(f"cannot read {where} as an ONNX model: it has no graph or no opset "
                         "(the file is truncated or not ONNX)")
    return model, where


def _check(model: onnx.ModelProto, where: str) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{where} is not a valid ONNX model: {str(e).strip()}") from None


def _default_opset(model: onnx.ModelProto, where: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS]
    if not versions:
        raise ModelError(f"{where} imports no version of the standard ONNX operator set")
    opset = versions[0]
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"{where} uses ONNX opset {opset}; nnfpga reads opsets {MIN_OPSET} to "
                         f"{MAX_OPSET}. Re-export the model with an opset in that range "
                         "(e.g. torch.onnx.export(..., opset_version=17)).")
    return opset


def _reject_unsupported_op_types(model: onnx.ModelProto, where: str) -> None:
    # Before opset conversion: the converter may itself fail on exotic ops, and the user
    # needs the list of ops, not a converter error.
    problems = []
    for node in model.graph.node:
        if node.domain not in _ONNX_DOMAINS:
            problems.append((node, f"op of domain '{node.domain}' is not supported"))
        elif node.op_type not in SUPPORTED_OPS and node.op_type not in HOST_OPS:
            problems.append((node, "op supported neither by the accelerator nor by the host fallback"))
    if problems:
        raise UnsupportedOpError(_unsupported_message(where, problems))


def _convert_opset(model: onnx.ModelProto, opset: int, where: str) -> onnx.ModelProto:
    if opset == TARGET_OPSET:
        return model
    if opset > TARGET_OPSET:
        return _read_as_target_opset(model, opset, where)
    if model.ir_version < 4:
        # IR 3 wants every initializer listed as a graph input; the converter adds
        # initializers that are not (Pad-2's pads become an input), then rejects its own result.
        model.ir_version = 4
    try:
        return onnx.version_converter.convert_version(model, TARGET_OPSET)
    except Exception as e:
        raise ModelError(f"could not convert {where} from ONNX opset {opset} to opset "
                         f"{TARGET_OPSET}: {str(e).strip()}") from None


def _read_as_target_opset(model: onnx.ModelProto, opset: int, where: str) -> onnx.ModelProto:
    changed = sorted({n.op_type for n in model.graph.node if n.domain in _ONNX_DOMAINS
                      and onnx.defs.get_schema(n.op_type, opset).since_version > TARGET_OPSET
                      and n.op_type not in SAME_SINCE_21})
    if changed:
        raise ModelError(f"{where} uses ONNX opset {opset}, whose {', '.join(changed)} differ(s) from opset "
                         f"{TARGET_OPSET}, the newest nnfpga translates; re-export the model with opset "
                         f"{TARGET_OPSET} or lower (e.g. torch.onnx.export(..., opset_version=17)).")
    for entry in model.opset_import:
        if entry.domain in _ONNX_DOMAINS:
            entry.version = TARGET_OPSET
    return model


def _declared_dims(value_info) -> list[str]:
    """Dimensions as text: numbers, symbolic names, or '?' when unknown."""
    return [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _fix_input_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]], where: str) -> None:
    """Write static shapes into the model's inputs (in place) and drop stale shape info."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    by_key: dict[str, onnx.ValueInfoProto] = {}
    for inp in inputs:
        by_key.setdefault(clean_name(inp.name), inp)
    for inp in inputs:
        by_key[inp.name] = inp
    overrides: dict[str, list[int]] = {}
    for key, dims in input_shapes.items():
        if key not in by_key:
            raise ModelError(f"--input-shape names '{key}', but {where} has no such input "
                             f"(inputs: {', '.join(i.name for i in inputs) or 'none'})")
        overrides[by_key[key].name] = [int(d) for d in dims]

    for inp in inputs:
        name = inp.name
        if not inp.type.HasField("tensor_type"):
            raise ModelError(f"input '{name}' of {where} is not a tensor; nnfpga takes float32 tensors")
        tt = inp.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
            raise ModelError(f"input '{name}' of {where} is {dtype}; nnfpga takes float32 model inputs only")
        if name in overrides:
            dims = overrides[name]
            if any(d <= 0 for d in dims):
                raise ModelError(f"--input-shape for '{name}' must be positive numbers, got {dims}")
            if tt.HasField("shape") and len(tt.shape.dim) != len(dims):
                raise ModelError(f"--input-shape gives '{name}' {len(dims)} dimensions, but the model "
                                 f"declares {len(tt.shape.dim)}: [{', '.join(_declared_dims(inp))}]")
        else:
            if not tt.HasField("shape"):
                raise ModelError(f"input '{name}' of {where} has no declared shape; give it with "
                                 f"--input-shape {name}=1,3,32,32 (its real dimensions)")
            dims, dynamic = [], []
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    if d.dim_value <= 0:
                        raise ModelError(f"input '{name}' of {where} has size {d.dim_value} on axis {axis}")
                    dims.append(d.dim_value)
                elif axis == 0:
                    dims.append(1)  # a dynamic batch: compile for one sample
                else:
                    dims.append(0)
                    dynamic.append(f"'{d.dim_param or '?'}' (axis {axis})")
            if dynamic:
                shown = ["1"] + _declared_dims(inp)[1:]
                raise ModelError(
                    f"input '{name}' of {where} has dynamic dimension(s) {', '.join(dynamic)}; "
                    f"nnfpga compiles static shapes only. Give the shape with --input-shape "
                    f"{name}={','.join(shown)} with numbers in place of names "
                    f"(from Python: input_shapes={{'{name}': [...]}}).")
        tt.shape.ClearField("dim")
        for d in dims:
            tt.shape.dim.add().dim_value = d
    # Shapes recorded for the old input shapes would contradict the new ones.
    del graph.value_info[:]
    for out in graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")


def _infer_shapes(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        raise ModelError(f"ONNX shape inference failed on {where} (shapes do not fit together): "
                         f"{str(e).strip()}") from None


def _initializer_data(t: onnx.TensorProto, where: str) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # data shorter than its dims, or an element type numpy cannot hold
        raise ModelError(f"{where}: initializer '{t.name}' cannot be read ({str(e).strip() or type(e).__name__}); "
                         "the model is damaged") from None


def _evaluate(node: onnx.NodeProto, arrays: list[np.ndarray], where: str) -> list[np.ndarray]:
    """Run a node on constants; onnxruntime's refusal (bad attributes, shapes) is a model error."""
    try:
        return evaluate_onnx_node(node, arrays)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{where}: {node.op_type} ({_describe(node)}) on constants cannot be computed: "
                         f"{reason}") from None


# -- messages -------------------------------------------------------------------------------

def _unsupported_message(where: str, problems: list[tuple[onnx.NodeProto, str]]) -> str:
    lines = [f"{where}: {len(problems)} node(s) cannot be compiled:"]
    for node, reason in problems[:_MAX_LISTED]:
        lines.append(f"  {node.op_type} ({_describe(node)}): {reason}")
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    lines.append(f"Supported ops: {', '.join(SUPPORTED_OPS)} (accelerator); {', '.join(HOST_OPS)} (host).")
    lines.append(f"Cannot fall back to the host otherwise: {HOST_FALLBACK_NOTE}.")
    return "\n".join(lines)


# -- translation ----------------------------------------------------------------------------

class _Importer:
    """Translates one shape-inferred ONNX graph (opset TARGET_OPSET) into an IR graph."""

    def __init__(self, model: onnx.ModelProto, where: str):
        self.onnx_graph = model.graph
        """The ONNX graph being read."""
        self.where = where
        """How messages name the model (its path)."""
        self.g = Graph(model.graph.name or "main")
        """The IR graph being built."""
        self.values: dict[str, Value] = {}
        """ONNX tensor name -> IR value (inputs, node results, materialised constants)."""
        self.consts: dict[str, np.ndarray] = {}
        """ONNX tensor name -> data, for initializers and Constant results."""
        self.origin: dict[str, str] = {}
        """ONNX tensor name -> what made the constant, as messages name it."""
        self.poisoned: set[str] = set()
        """Results of nodes that could not be translated (their readers are skipped)."""
        self.problems: list[tuple[onnx.NodeProto, str]] = []
        """Every node that could not be translated, with the reason."""
        self.read: set[str] = {i for n in model.graph.node for i in n.input if i}
        self.read |= {o.name for o in model.graph.output}
        self.inferred: dict[str, onnx.TypeProto] = {
            v.name: v.type for v in list(model.graph.value_info) + list(model.graph.output)}
        """ONNX tensor name -> type from shape inference (what host node results take)."""

    def run(self) -> Graph:
        graph = self.onnx_graph
        for t in graph.initializer:
            self.consts[t.name] = _initializer_data(t, self.where)
            self.origin[t.name] = "initializer"
        for inp in graph.input:
            if inp.name in self.consts:
                continue  # an initializer listed as an input is a constant
            shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            self.values[inp.name] = self.g.add_input(inp.name, TensorType(shape, F32))
        for node in graph.node:
            if any(i in self.poisoned for i in node.input):
                self.poisoned.update(node.output)
                continue
            try:
                handler = _HANDLERS.get(node.op_type)
                if handler is None:  # made by the opset converter from a supported op
                    raise _Unsupported(f"converting the model to opset {TARGET_OPSET} made this op, which "
                                       "nnfpga does not take")
                if not self.fold(node):
                    handler(self, node)
            except _Unsupported as e:
                self.problems.append((node, str(e)))
                self.poisoned.update(node.output)
        named: set[int] = set()
        for out in graph.output:
            if out.name in self.poisoned:
                continue
            try:
                value = self.operand(out.name)
            except _Unsupported as e:
                self.problems.append((onnx.NodeProto(op_type="Output", name=out.name), str(e)))
                continue
            if value.producer is not None and id(value) not in named:
                named.add(id(value))
                if value.name != clean_name(out.name):
                    self.g.rename(value, out.name)  # results of removed Identity/Dropout
            self.g.outputs.append(value)
        if self.problems:
            raise UnsupportedOpError(_unsupported_message(self.where, self.problems))
        return self.g

    # -- helpers ----------------------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.consts and name not in self.values

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.values:
            return self.values[name].type.shape
        return tuple(self.consts[name].shape)

    def operand(self, name: str) -> Value:
        """The IR value for an ONNX tensor; a constant becomes an IR constant on first use."""
        if name in self.values:
            return self.values[name]
        if name not in self.consts:
            raise ModelError(f"{self.where}: tensor '{name}' is read but never defined")
        data = self.consts[name]
        if data.dtype != np.float32:
            raise _Unsupported(f"tensor '{name}' is a {data.dtype} constant; only float32 tensors are computed")
        if data.size == 0:
            raise _Unsupported(f"tensor '{name}' is empty (shape {list(data.shape)})")
        # Checked here, where a constant becomes data the model computes with (a weight, a bias);
        # an infinite Clip bound read elsewhere stays legal.
        check_finite(name, data, self.where, self.origin.get(name, "constant"))
        # np.array, not ascontiguousarray: the latter turns a 0-d scalar into shape [1].
        value = self.g.add_const(name, np.array(data, np.float32, order="C"), TensorType(data.shape, F32))
        self.values[name] = value
        return value

    def host_operand(self, name: str) -> Value:
        """Like `operand`, but an integer constant (TopK's k) becomes an integer IR constant."""
        if name in self.values or name not in self.consts or self.consts[name].dtype == np.float32:
            return self.operand(name)
        data = self.consts[name]
        element = ir_element(helper.np_dtype_to_tensor_dtype(data.dtype))
        if element is None or element == F32:
            raise _Unsupported(f"its input '{name}' is a {data.dtype} constant; the host takes float32, "
                               "int32 and int64 tensors")
        if data.size == 0:
            raise _Unsupported(f"its input '{name}' is empty (shape {list(data.shape)})")
        value = self.g.add_const(name, np.array(data, order="C"), TensorType(data.shape, element))
        self.values[name] = value
        return value

    def inferred_type(self, name: str) -> TensorType:
        """The static type ONNX shape inference gives tensor `name`."""
        t = self.inferred.get(name)
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            raise _Unsupported(f"ONNX shape inference gives no shape for its result '{name}'")
        element = ir_element(t.tensor_type.elem_type)
        if element is None:
            dtype = onnx.TensorProto.DataType.Name(t.tensor_type.elem_type).lower()
            raise _Unsupported(f"its result '{name}' is {dtype}; the host gives float32, int32 and int64 tensors")
        dims = []
        for d in t.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise _Unsupported(f"ONNX shape inference gives its result '{name}' no static shape")
            dims.append(d.dim_value)
        return TensorType(dims, element)

    def alias(self, new: str, old: str) -> None:
        """`new` is the same tensor as `old` (Identity, Dropout, a reshape that changes nothing)."""
        if self.is_const(old):
            self.consts[new] = self.consts[old]
        else:
            self.values[new] = self.operand(old)

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[Value], shape, attrs=None) -> None:
        """The IR node computing the ONNX node's (first) result."""
        self.values[node.output[0]] = self.add_op(op, inputs, shape, attrs, node.output[0])

    def add_op(self, op: str, inputs: list[Value], shape, attrs=None, hint: str = "v") -> Value:
        """One IR node with a float result of `shape`, named after `hint`."""
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise _Unsupported(f"its result has an empty shape {list(shape)}")
        return self.g.add_node(op, inputs, [TensorType(shape, F32)], attrs or {}, names=[hint]).output

    def const(self, hint: str, data: np.ndarray) -> Value:
        """A float IR constant made by the frontend (a folded BatchNormalization's scale, ...)."""
        data = np.array(data, np.float32, order="C")
        check_finite(hint, data, self.where, "constant derived from the model")
        return self.g.add_const(hint, data, TensorType(data.shape, F32))

    def check_inferred(self, node: onnx.NodeProto, shape) -> None:
        """The shape the op's rules give must be the one ONNX shape inference gives."""
        t = self.inferred.get(node.output[0])
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            return
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]
        if None not in dims and dims != [int(d) for d in shape]:
            raise ModelError(f"{node.op_type} ({_describe(node)}): its result has shape {[int(d) for d in shape]} "
                             f"by the op's rules, but ONNX shape inference gives {dims}; the model is inconsistent")

    def host_node(self, node: onnx.NodeProto) -> None:
        """The node kept as it is, for the host (Mul of two data operands, Clip with run-time bounds)."""
        _host(self, node)

    def fold(self, node: onnx.NodeProto) -> bool:
        """Evaluate a supported node whose inputs are all constants; whether it did."""
        if node.op_type in _NOT_FOLDED or not node.input or "" in node.input:
            return False
        if not all(self.is_const(name) for name in node.input):
            return False
        outputs = [o for o in node.output if o]
        for name, data in zip(outputs, _evaluate(node, [self.consts[n] for n in node.input], self.where)):
            self.origin[name] = f"constant computed by {node.op_type} ({_describe(node)})"
            self.consts[name] = data
        return True

    def reshape(self, node: onnx.NodeProto, shape: tuple[int, ...]) -> None:
        src, dst = node.input[0], node.output[0]
        if tuple(shape) == self.shape_of(src):
            self.alias(dst, src)
        elif self.is_const(src):
            self.consts[dst] = self.consts[src].reshape(shape)  # folded: weights stay constants
        else:
            self.emit(node, "reshape", [self.operand(src)], shape, {"shape": [int(d) for d in shape]})


def _gemm(imp: _Importer, node: onnx.NodeProto) -> None:
    # y = alpha·op(A)·op(B) + beta·C
    at = _attrs(node)
    a, b = imp.operand(node.input[0]), imp.operand(node.input[1])
    if a.type.rank != 2 or b.type.rank != 2:
        raise _Unsupported(f"Gemm operands must be 2-D, got {list(a.type.shape)} and {list(b.type.shape)}")
    trans_a, trans_b = bool(at.get("transA", 0)), bool(at.get("transB", 0))
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    m = a.type.shape[1] if trans_a else a.type.shape[0]
    n = b.type.shape[0] if trans_b else b.type.shape[1]
    inputs = [a, b]
    attrs = {}
    c_name = _optional(node, 2)
    if c_name is not None:
        inputs.append(imp.operand(c_name))
        if beta != 1.0:
            attrs["beta"] = beta
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if trans_a:
        attrs["trans_a"] = True
    if trans_b:
        attrs["trans_b"] = True
    imp.emit(node, "gemm", inputs, (m, n), attrs)


def _matmul(imp: _Importer, node: onnx.NodeProto) -> None:
    a, b = imp.operand(node.input[0]), imp.operand(node.input[1])
    if a.type.rank != 2 or b.type.rank != 2:
        raise _Unsupported(f"only 2-D MatMul is supported; operands have shapes "
                           f"{list(a.type.shape)} and {list(b.type.shape)}")
    imp.emit(node, "matmul", [a, b], (a.type.shape[0], b.type.shape[1]))


def _add(imp: _Importer, node: onnx.NodeProto) -> None:
    a, b = imp.operand(node.input[0]), imp.operand(node.input[1])
    imp.emit(node, "add", [a, b], np.broadcast_shapes(a.type.shape, b.type.shape))


def _relu(imp: _Importer, node: onnx.NodeProto) -> None:
    x = imp.operand(node.input[0])
    imp.emit(node, "relu", [x], x.type.shape)


def _flatten(imp: _Importer, node: onnx.NodeProto) -> None:
    # [d0..dk-1, dk..dn-1] -> [d0·..·dk-1, dk·..·dn-1]
    shape = imp.shape_of(node.input[0])
    axis = int(_attrs(node).get("axis", 1))
    if axis < 0:
        axis += len(shape)
    imp.reshape(node, (math.prod(shape[:axis]), math.prod(shape[axis:])))


def _reshape(imp: _Importer, node: onnx.NodeProto) -> None:
    shape_name = node.input[1]
    if not imp.is_const(shape_name):
        raise _Unsupported("its target shape is computed at run time; only a constant shape "
                           "(initializer or Constant node) is supported")
    allowzero = bool(_attrs(node).get("allowzero", 0))
    src = imp.shape_of(node.input[0])
    target = [int(s) for s in imp.consts[shape_name].reshape(-1)]
    out = []
    for axis, s in enumerate(target):
        if s == 0 and not allowzero:
            if axis >= len(src):
                raise ModelError(f"Reshape ({_describe(node)}): target {target} copies axis {axis}, "
                                 f"but the input {list(src)} has only {len(src)} axes")
            s = src[axis]  # 0 copies the input's dimension
        out.append(s)
    total = math.prod(src)
    if out.count(-1) > 1:
        raise ModelError(f"Reshape ({_describe(node)}): target {target} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known <= 0 or total % known:
            raise ModelError(f"Reshape ({_describe(node)}): cannot reshape {list(src)} to {target}")
        out[out.index(-1)] = total // known
    if any(d <= 0 for d in out):
        raise _Unsupported(f"target shape {target} gives an empty tensor")
    if math.prod(out) != total:
        raise ModelError(f"Reshape ({_describe(node)}): cannot reshape {list(src)} ({total} elements) "
                         f"to {out}")
    imp.reshape(node, tuple(out))


def _identity(imp: _Importer, node: onnx.NodeProto) -> None:
    imp.alias(node.output[0], node.input[0])


def _dropout(imp: _Importer, node: onnx.NodeProto) -> None:
    training = _optional(node, 2)
    if training is not None and not (imp.is_const(training) and not imp.consts[training].any()):
        raise _Unsupported("Dropout in training mode (training_mode not a constant false) is not supported")
    if len(node.output) > 1 and node.output[1] and node.output[1] in imp.read:
        raise _Unsupported("its mask output is used; only inference Dropout (mask unused) is supported")
    imp.alias(node.output[0], node.input[0])


def _constant(imp: _Importer, node: onnx.NodeProto) -> None:
    (name, value), = _attrs(node).items()
    if name == "value":
        data = numpy_helper.to_array(value)
    elif name in ("value_float", "value_floats"):
        data = np.array(value, np.float32)
    elif name in ("value_int", "value_ints"):
        data = np.array(value, np.int64)
    else:
        raise _Unsupported(f"Constant given by '{name}' is not supported")
    imp.origin[node.output[0]] = f"Constant ({_describe(node)})"
    imp.consts[node.output[0]] = data


def _shape(imp: _Importer, node: onnx.NodeProto) -> None:
    shape = imp.shape_of(node.input[0])
    at = _attrs(node)
    start, end = int(at.get("start", 0)), int(at.get("end", len(shape)))
    imp.consts[node.output[0]] = np.array(shape[start:end], np.int64)  # Python slicing = ONNX clamping


def _host(imp: _Importer, node: onnx.NodeProto) -> None:
    # The node as it is: the partition pass places it on the host, where TVM compiles it.
    inputs = list(node.input)
    while inputs and not inputs[-1]:
        inputs.pop()
    outputs = list(node.output)
    while outputs and not outputs[-1]:
        outputs.pop()
    if "" in inputs or "" in outputs:
        raise _Unsupported("it skips an optional input or output before a given one")
    try:
        attrs = attrs_from_onnx(node)
    except ValueError as e:
        raise _Unsupported(str(e)) from None
    if inputs and all(imp.is_const(name) for name in inputs):
        for name, data in zip(outputs, _evaluate(node, [imp.consts[n] for n in inputs], imp.where)):
            imp.consts[name] = data  # a host op on constants is a constant
        return
    operands = [imp.host_operand(name) for name in inputs]
    types = [imp.inferred_type(name) for name in outputs]
    out = imp.g.add_node("host", operands, types, {"op_type": node.op_type, **attrs}, names=outputs)
    for name, value in zip(outputs, out.outputs):
        imp.values[name] = value


_HANDLERS = {op: _host for op in HOST_OPS}
_HANDLERS.update({
    "Add": _add, "Constant": _constant, "Dropout": _dropout, "Flatten": _flatten, "Gemm": _gemm,
    "Identity": _identity, "MatMul": _matmul, "Relu": _relu, "Reshape": _reshape, "Shape": _shape,
})
_HANDLERS.update(SPATIAL_HANDLERS)
assert set(_HANDLERS) == set(SUPPORTED_OPS) | set(HOST_OPS)

_NOT_FOLDED = set(HOST_OPS) - {"Clip", "Div", "Mul"} | {
    "Constant", "ConstantOfShape", "Dropout", "Flatten", "Identity", "Reshape", "Shape", "Squeeze", "Unsqueeze"}
"""Ops `_Importer.fold` leaves to their handlers: host ops fold themselves, the rest read
constants without running anything (shapes, aliases, numpy reshapes)."""
