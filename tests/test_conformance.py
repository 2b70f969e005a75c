"""Conformance: the ONNX project's own backend tests through the frontend and the float interpreter.

The onnx package ships test models with inputs and expected outputs (onnx/backend/test/data):
`pytorch-converted/` and `pytorch-operator/` (models exported by PyTorch, outputs from
PyTorch) and `node/` (one node per model, outputs from onnx's reference implementations).
Wheels without `node/` on disk still ship the code that writes it
(onnx.backend.test.case.node, what `python -m onnx.backend.test.cmd_tools generate-data`
runs); the cases are then made in memory, the same models and the same data.

Every case is classified:
  pass         the frontend imports it, the interpreter matches every expected output
               (RTOL, ATOL), before and after canonicalize;
  fail         a claimed case that gives wrong numbers or raises anything but an NnfpgaError;
  unsupported  with a reason: an op nnfpga does not claim, a non-float32 input, or the
               frontend's own clear refusal of a node it claims (grouped by kind).
A model whose input has a batch N > 1 where the IR's convolutional ops take one sample is
run sample by sample (batch 1, outputs stacked), which is exact for the per-sample models
these are. Node tests feed parameters as graph inputs (a Conv's weight, a BatchNormalization's
statistics, Clip's bounds, Pad's pads, Reshape's shape); nnfpga compiles parameters as
constants, so such an input becomes an initializer holding the test's value (FROZEN_SLOTS) —
the same model for that data. Run `python tests/test_conformance.py` for the README's table.

The `light/` models (real networks with their weights replaced by ConstantOfShape) must
import; ops the accelerator does not take become host nodes, listed per model.
"""
from __future__ import annotations

import re
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nnfpga.errors import NnfpgaError
from nnfpga.frontend import HOST_OPS, SUPPORTED_OPS, load_onnx
from nnfpga.ir import print_graph, run
from nnfpga.passes import PassContext, run_pipeline

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
DIRECTORIES = ("pytorch-converted", "pytorch-operator", "node")
RTOL, ATOL = 1e-3, 1e-4
"""The onnx runner's rtol (1e-3); atol 1e-4 rather than its 1e-7 for node tests, as the
interpreter sums convolutions in float64 and rounds once, not in float32 like the references."""
CLAIMED = set(SUPPORTED_OPS) | set(HOST_OPS)
FROZEN_SLOTS = {"Conv": 1, "BatchNormalization": 1, "Clip": 1, "Pad": 1, "ReduceMean": 1, "Reshape": 1,
                "Squeeze": 1, "Unsqueeze": 1, "Dropout": 1, "ConstantOfShape": 0}
"""Op -> first input that is a parameter; a graph input read there becomes an initializer."""

KNOWN_FAILURES: dict[str, str] = {}
"""Claimed cases that give wrong numbers, with the reason (none)."""

MEASURED_PASSES = {"pytorch-converted": 55, "pytorch-operator": 15, "node": 207}
"""Pass counts measured with onnx 1.23.2 / onnxruntime 1.32.0; the test holds at least these."""

LIGHT_MODELS = ("light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2",
                "light_resnet50", "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512")


@dataclass
class Case:
    directory: str
    """Which directory of onnx/backend/test/data the case is from."""
    name: str
    """The test's name (its folder)."""
    model: onnx.ModelProto
    """The model."""
    data_sets: list
    """(inputs, expected outputs) pairs of numpy arrays."""


@dataclass
class Outcome:
    case: Case
    """The case run."""
    status: str
    """pass, fail or unsupported."""
    reason: str = ""
    """Why it is not a plain pass (a reason kind, then details)."""


# -- reading the cases ----------------------------------------------------------------------

def _tensor(path: Path) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def _cases_on_disk(directory: str) -> list[Case]:
    cases = []
    for folder in sorted((DATA / directory).iterdir()):
        if not (folder / "model.onnx").is_file():
            continue
        sets = []
        for ds in sorted(folder.glob("test_data_set_*")):
            count = lambda kind: len(list(ds.glob(f"{kind}_*.pb")))  # noqa: E731
            sets.append(([_tensor(ds / f"input_{i}.pb") for i in range(count("input"))],
                         [_tensor(ds / f"output_{i}.pb") for i in range(count("output"))]))
        cases.append(Case(directory, folder.name, onnx.load(str(folder / "model.onnx")), sets))
    return cases


def _node_cases() -> list[Case]:
    if (DATA / "node").is_dir():
        return _cases_on_disk("node")
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        generated = collect_testcases()
    return [Case("node", c.name, c.model, [([_array(x) for x in ins], [_array(y) for y in outs])
                                          for ins, outs in c.data_sets]) for c in generated if c.model is not None]


def _array(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


# -- running one case -----------------------------------------------------------------------------

_REASONS = [  # frontend message -> reason kind
    (r"takes float32 model inputs only|is not a tensor", "non-float32 input"),
    (r"Output \(node", "integer graph output"),
    (r"is a (u?int|bool|float16|float64|double)\w* constant|tensor '.*' is a", "non-float32 constant"),
    (r"gives float32, int32 and int64|result '.*' is", "non-float32 result"),
    (r"nnfpga reads opsets|differ\(s\) from opset", "opset outside 6..25"),
    (r"only 1-D \[N, C, L\] and 2-D", "3-D (volumetric) window"),
    (r"training", "training mode"),
    (r"Indices output", "MaxPool Indices output"),
    (r"mask output is used", "Dropout mask output"),
    (r"ceil_mode=1", "ceil_mode window starting in the right padding"),
    (r"leaves input unread", "SAME padding with a stride longer than the window"),
    (r"Pad mode", "Pad mode other than constant"),
    (r"averages axes", "ReduceMean over other than the spatial axes"),
    (r"only 2-D MatMul", "MatMul of other than 2-D operands"),
    (r"empty|has size 0", "empty tensor"),
    (r"batch", "batch > 1 the model fixes"),
]


def _reason(message: str) -> str:
    detail = next((line.strip() for line in message.splitlines()[1:] if line.startswith("  ")),
                  message.splitlines()[0])
    for pattern, kind in _REASONS:
        if re.search(pattern, message):
            return f"{kind}: {detail}"
    return f"other: {detail}"


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _run(g, feeds: list[np.ndarray]) -> list[np.ndarray]:
    env = run(g, {v.name: x for v, x in zip(g.inputs, feeds)}, keep_all=True)
    return [env[v.name] for v in g.outputs]


def _graphs(model: onnx.ModelProto, input_shapes=None):
    """The imported graph, and the canonicalized one when canonicalize changes it."""
    g = load_onnx(model, input_shapes)
    after = run_pipeline(g.clone(), "canonicalize", PassContext(seed=0))
    return (g,) if print_graph(after) == print_graph(g) else (g, after)


def _matches(got: list, expected: list) -> str | None:
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for idx, (r, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        if r.shape != e.shape:
            return f"output {idx} has shape {list(r.shape)}, expected {list(e.shape)}"
        try:
            np.testing.assert_allclose(r.astype(np.float64), e.astype(np.float64), rtol=RTOL, atol=ATOL)
        except AssertionError:
            return f"output {idx} differs by up to {np.abs(r.astype(np.float64) - e).max():.3g}"
    return None


def _freeze_parameters(case: Case) -> Case:
    """The case with its parameter inputs (FROZEN_SLOTS) as initializers holding the test's values."""
    inputs = [vi.name for vi in _inputs(case.model)]
    params = {name for n in case.model.graph.node if n.op_type in FROZEN_SLOTS
              for name in n.input[FROZEN_SLOTS[n.op_type]:] if name in inputs}
    values = {name: [np.asarray(ins[inputs.index(name)]) for ins, _ in case.data_sets] for name in params}
    params = {name for name in params if all(np.array_equal(v, values[name][0]) for v in values[name])}
    if not params:
        return case
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    model.graph.initializer.extend(numpy_helper.from_array(values[name][0], name) for name in sorted(params))
    keep = [vi for vi in model.graph.input if vi.name not in params]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    sets = [([x for name, x in zip(inputs, ins) if name not in params], outs) for ins, outs in case.data_sets]
    return Case(case.directory, case.name, model, sets)


def run_case(case: Case) -> Outcome:
    ops = {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in case.model.graph.node}
    unclaimed = sorted(ops - CLAIMED)
    if unclaimed:
        return Outcome(case, "unsupported", f"op not claimed: {', '.join(unclaimed)}")
    original = case
    case = _freeze_parameters(case)
    for vi in _inputs(case.model):
        if not vi.type.HasField("tensor_type") or vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            return Outcome(case, "unsupported", f"non-float32 input: {vi.name}")
    try:
        outcome = _compare(case)
    except NnfpgaError as e:
        outcome = Outcome(case, "unsupported", _reason(str(e)))
    except Exception as e:  # a traceback is a failure of the frontend, whatever the model
        outcome = Outcome(case, "fail", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    outcome.case = original
    if case is not original and outcome.status == "pass":
        outcome.reason = ", ".join(filter(None, [outcome.reason, "parameters frozen"]))
    return outcome


def _compare(case: Case) -> Outcome:
    try:
        graphs = _graphs(case.model)
        per_sample = False
    except NnfpgaError as e:
        batches = {x.shape[0] for ins, _ in case.data_sets for x in ins if np.ndim(x) >= 3}
        if "has batch" not in str(e) or not batches or max(batches) == 1:
            raise
        # One sample at a time: the convolutional ops take batch 1.
        shapes = {vi.name: [1] + list(np.shape(x))[1:] for vi, x in zip(_inputs(case.model), case.data_sets[0][0])
                  if np.ndim(x) >= 3}
        graphs = _graphs(case.model, shapes)
        per_sample = True
    for inputs, expected in case.data_sets:
        for g in graphs:
            if per_sample:
                samples = [_run(g, [x[i:i + 1] for x in inputs]) for i in range(inputs[0].shape[0])]
                got = [np.concatenate([s[k] for s in samples]) for k in range(len(samples[0]))]
            else:
                got = _run(g, [np.asarray(x) for x in inputs])
            problem = _matches(got, expected)
            if problem:
                where = "after import" if g is graphs[0] else "after canonicalize"
                return Outcome(case, "fail", f"{where}: {problem}")
    notes = ["one sample at a time" if per_sample else "", "host nodes" if any(n.op == "host" for n in graphs[0].nodes)
             else ""]
    return Outcome(case, "pass", ", ".join(filter(None, notes)))


@lru_cache(maxsize=None)
def results() -> tuple[Outcome, ...]:
    cases = _cases_on_disk("pytorch-converted") + _cases_on_disk("pytorch-operator") + _node_cases()
    return tuple(run_case(c) for c in cases)


# -- the table ------------------------------------------------------------------------------------

def table(outcomes) -> str:
    """Markdown: counts per directory, then the reasons for unsupported cases, grouped."""
    counts = {d: Counter(o.status for o in outcomes if o.case.directory == d) for d in DIRECTORIES}
    passed = [o for o in outcomes if o.status == "pass"]
    per_sample = Counter(o.case.directory for o in passed if "one sample" in o.reason)
    frozen = Counter(o.case.directory for o in passed if "frozen" in o.reason)
    host = Counter(o.case.directory for o in passed if "host" in o.reason)
    lines = ["| directory | cases | pass | of which sample by sample | parameters frozen | with host nodes | fail "
             "| unsupported |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d in DIRECTORIES:
        c = counts[d]
        lines.append(f"| {d} | {sum(c.values())} | {c['pass']} | {per_sample[d]} | {frozen[d]} | {host[d]} | "
                     f"{c['fail']} | {c['unsupported']} |")
    lines += ["", "| unsupported because | " + " | ".join(DIRECTORIES) + " |", "|---|" + "---:|" * len(DIRECTORIES)]
    kinds: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        if o.status == "unsupported":
            kinds[o.reason.split(":")[0]][o.case.directory] += 1
    for kind, by_dir in sorted(kinds.items(), key=lambda kv: -sum(kv[1].values())):
        lines.append(f"| {kind} | " + " | ".join(str(by_dir[d]) for d in DIRECTORIES) + " |")
    return "\n".join(lines)


def claimed_unsupported(outcomes) -> list[str]:
    """name: reason of every case nnfpga claims the ops of but refuses."""
    return [f"{o.case.directory}/{o.case.name}: {o.reason}" for o in outcomes
            if o.status == "unsupported" and not o.reason.startswith(("op not claimed", "non-float32 input"))]


# -- tests ------------------------------------------------------------------------------------------

def test_no_claimed_case_fails():
    outcomes = results()
    print("\n" + table(outcomes))
    failures = {f"{o.case.directory}/{o.case.name}": o.reason for o in outcomes if o.status == "fail"}
    unexpected = {k: v for k, v in failures.items() if k not in KNOWN_FAILURES}
    assert not unexpected, "\n".join(f"{k}: {v}" for k, v in sorted(unexpected.items()))


def test_pass_counts_hold():
    counts = Counter(o.case.directory for o in results() if o.status == "pass")
    for directory, measured in MEASURED_PASSES.items():
        assert counts[directory] >= measured, (directory, counts[directory], measured)


def test_every_refusal_of_a_claimed_op_has_a_known_kind():
    # A refusal the reason table does not recognise would hide a frontend gap in "other".
    others = [line for line in claimed_unsupported(results()) if ": other:" in line]
    assert not others, "\n".join(others)


def _light(name: str):
    return load_onnx(DATA / "light" / f"{name}.onnx")


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_imports(name):
    g = _light(name)
    after = run_pipeline(g.clone(), "canonicalize", PassContext(seed=0))
    host = sorted({n.attrs["op_type"] for n in after.nodes if n.op == "host"})
    ops = Counter(n.op for n in after.nodes)
    print(f"\n{name}: {len(g.nodes)} IR nodes imported; after canonicalize {dict(sorted(ops.items()))}; "
          f"host ops: {', '.join(host) or 'none'}")
    assert g.outputs and set(host) <= set(HOST_OPS)
    assert {"conv"} <= set(ops) and "mul" not in ops  # every BatchNorm folded into a conv


if __name__ == "__main__":
    outcomes = results()
    print(table(outcomes))
    if "-v" in sys.argv:
        for o in outcomes:
            if o.status != "pass" or o.reason:
                print(f"{o.status:12} {o.case.directory}/{o.case.name}: {o.reason}")
