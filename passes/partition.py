"""partition: place every node on the accelerator or on the host CPU.

    accelerator ops in the accelerator's region  -> {place = "accel"}
    every other node (host ops, float leftovers)  -> {place = "host"}

The accelerator runs one region: a connected set of accelerator ops (dense, reshape, conv,
pooling, residual add, concat, and the relu/clip fused into a conv or add) with a single
value coming in and a single value going out, branches allowed inside. A connected set
with more ways in or out falls back to its chains: each node reads the previous node's
result, and no result inside the chain is read by anything else. Host nodes before the chain form the
host *prefix*, those after it the *suffix* (both compiled by TVM, see backends/host.py);
`quantize` then puts quantize/dequantize at the chain's two ends.

A host op in the middle of the layers splits them into several chains. The accelerator
keeps the chain with the most multiply-accumulates (the first of equals) and the other
layers run on the host in float, where they stay exactly as the model computes them;
the pass warns and names them. (Erroring out instead would refuse models that the
hardware and the host together can run.)

`host_ops` forces nodes onto the host: op names separated by '+', either IR names (dense,
reshape) or the ONNX ones they come from (Gemm, MatMul -> dense; Flatten, Reshape ->
reshape), or `%name` for the one node defining that value.
"""
from __future__ import annotations

from nnfpga.errors import PipelineError
from nnfpga.ir import Graph, Node
from nnfpga.passes.quantize_spatial import fusable
from nnfpga.passes.pipeline import Step
from nnfpga.passes.registry import Option, PassContext, lookup, register

ACCEL_OPS = ("dense", "reshape", "conv", "maxpool", "avgpool", "add", "concat", "relu", "clip")
"""Float ops `quantize` and the hardware backend can take (backends/lower.py, stream_graph.py);
add, relu and clip with the conditions in `_acceleratable`."""
ONNX_NAMES = {"gemm": "dense", "matmul": "dense", "flatten": "reshape", "reshape": "reshape", "dense": "dense",
              "conv": "conv", "maxpool": "maxpool", "averagepool": "avgpool", "avgpool": "avgpool",
              "globalaveragepool": "avgpool", "concat": "concat", "add": "add", "sum": "add", "relu": "relu",
              "clip": "clip"}
"""Names `host_ops` accepts for the accelerator's ops (lower case)."""
INTEGER_OPS = ("quantize", "dequantize", "qmatmul", "requant")


def _forced(g: Graph, host_ops: str) -> tuple[set[str], set[int]]:
    """(IR op names, node ids) that `host_ops` puts on the host."""
    ops: set[str] = set()
    nodes: set[int] = set()
    host_types = {n.attrs["op_type"].lower() for n in g.nodes if n.op == "host"}
    by_value = {v.name: n for n in g.nodes for v in n.outputs}
    for item in filter(None, (s.strip() for s in host_ops.split("+"))):
        if item.startswith("%"):
            if item[1:] not in by_value:
                raise PipelineError(f"partition: host_ops names {item}, which no node defines")
            nodes.add(id(by_value[item[1:]]))
        elif item.lower() in ONNX_NAMES:
            ops.add(ONNX_NAMES[item.lower()])
        elif item.lower() not in host_types:  # a host op is on the host anyway
            raise PipelineError(f"partition: host_ops names '{item}', which is not an op the accelerator "
                                "runs; give one of "
                               f"{', '.join(sorted(set(ONNX_NAMES)))}, or %value")
    return ops, nodes


def _macs(chain: list[Node]) -> int:
    total = 0
    for n in chain:
        if n.op == "dense":
            total += n.inputs[1].type.shape[0] * n.inputs[1].type.shape[1]
        elif n.op == "conv":
            o, cg, kh, kw = n.inputs[1].type.shape
            total += o * cg * kh * kw * n.outputs[0].type.shape[2] * n.outputs[0].type.shape[3]
    return total


def _acceleratable(g: Graph, node: Node) -> bool:
    """Whether the accelerator can take `node` where it stands (before the user's overrides)."""
    if node.op not in ACCEL_OPS:
        return False
    data = [v for v in node.inputs if not v.is_const]
    if not data or not all(v.type.is_float for v in data):
        return False
    if node.op == "add":  # a residual add of two activations; a bias add is canonicalize's
        return len(data) == 2 and data[0].type.shape == data[1].type.shape
    if node.op == "avgpool" and any(node.attrs["pads"]) and not node.attrs.get("count_include_pad"):
        return False  # its divisor changes at the border; the accelerator divides by one constant
    if node.op in ("relu", "clip"):  # only fused into the conv or add before it
        return fusable(g, node)
    return True


def accelerator_regions(g: Graph, can_accelerate) -> list[list[Node]]:
    """Connected sets of nodes `can_accelerate` takes with one value in and one out; a set with
    more ways in or out is split into its chains."""
    members = [n for n in g.nodes if can_accelerate(n)]
    group = {id(n): i for i, n in enumerate(members)}
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n in members:
        for v in n.inputs:
            if v.producer is not None and id(v.producer) in group:
                parent[root(group[id(n)])] = root(group[id(v.producer)])
    sets: dict[int, list[Node]] = {}
    for n in members:
        sets.setdefault(root(group[id(n)]), []).append(n)
    regions = []
    for nodes in sets.values():
        ids = {id(n) for n in nodes}
        entries = {id(v) for n in nodes for v in n.inputs
                   if not v.is_const and (v.producer is None or id(v.producer) not in ids)}
        exits = {id(v) for n in nodes for v in n.outputs
                 if v in g.outputs or any(id(u) not in ids for u, _ in v.uses)}
        if len(entries) == 1 and len(exits) == 1:
            regions.append(nodes)
        else:
            regions += accelerator_chains(g, lambda node: id(node) in ids)
    return sorted(regions, key=lambda r: g.nodes.index(r[0]))


def accelerator_chains(g: Graph, can_accelerate) -> list[list[Node]]:
    """Maximal chains of nodes `can_accelerate` takes, in graph order."""
    chains: list[list[Node]] = []
    tail: dict[int, list[Node]] = {}  # id(last node) -> its chain
    for node in g.nodes:
        if not can_accelerate(node):
            continue
        x = node.inputs[0]
        extends = x.producer is not None and id(x.producer) in tail and len(x.uses) == 1 and x not in g.outputs
        chain = tail.pop(id(x.producer)) if extends else None
        if chain is None:
            chain = []
            chains.append(chain)
        chain.append(node)
        tail[id(node)] = chain
    return chains


@register("partition",
          host_ops=Option(str, "", "ops forced onto the host, '+'-separated: dense, reshape, Gemm, ..., or %value"))
def partition(g: Graph, ctx: PassContext, host_ops: str) -> bool:
    """Place each node: one region of layers on the accelerator, the rest on the host."""
    integer = [n for n in g.nodes if n.op in INTEGER_OPS]
    if integer:
        raise PipelineError(f"partition: the graph is already quantized (%{integer[0].outputs[0].name} is "
                            f"{integer[0].op}); run partition before quantize")
    forced_ops, forced_nodes = _forced(g, host_ops)

    def can_accelerate(node: Node) -> bool:
        if not _acceleratable(g, node) or node.op in forced_ops or id(node) in forced_nodes:
            return False
        return node.inputs[0].type.is_float and not node.inputs[0].is_const

    chains = [c for c in accelerator_regions(g, can_accelerate) if any(n.op in ("dense", "conv") for n in c)]
    if not chains:
        host = sorted({n.attrs["op_type"] if n.op == "host" else n.op for n in g.nodes})
        raise PipelineError("partition: no dense or convolution layer is left for the accelerator (the graph "
                            f"holds {', '.join(host) or 'no nodes'}); run canonicalize first, or force fewer ops "
                            "onto the host")
    best = max(chains, key=_macs)  # max keeps the first of equals
    if len(chains) > 1:
        moved = [n for c in chains if c is not best for n in c if n.op in ("dense", "conv")]
        ctx.warn(f"partition: the accelerator runs one region of layers, and host ops split this model "
                 f"into {len(chains)}; it takes %{best[0].outputs[0].name} .. %{best[-1].outputs[0].name} "
                 f"({_macs(best)} multiply-accumulates), and layer(s) "
                 f"{', '.join('%' + n.outputs[0].name for n in moved)} run on the host in float")
    accel = {id(n) for n in best}
    changed = False
    for node in g.nodes:
        place = "accel" if id(node) in accel else "host"
        if node.attrs.get("place") != place:
            node.attrs["place"] = place
            changed = True
    return changed


def needs_partition(g: Graph) -> bool:
    """Whether `g` (an imported graph) holds ops the accelerator cannot take."""
    return any(n.op == "host" for n in g.nodes)


def with_partition(steps: list, g: Graph, host_ops: str | None = None) -> list:
    """`steps` with a partition step when `g` needs one or `host_ops` is given: before the first
    quantize (or after the last canonicalize, or at the end). `host_ops` ('+'- or
    ','-separated) overrides the option of a partition step already there."""
    ops = "+".join(s.strip() for s in (host_ops or "").replace(",", "+").split("+") if s.strip())
    names = [s.name for s in steps]
    if "partition" in names:
        if not ops:
            return steps
        return [Step(s.name, {**s.options, "host_ops": ops}) if s.name == "partition" else s for s in steps]
    if not ops and not needs_partition(g):
        return steps
    step = Step("partition", {"host_ops": ops})
    if "quantize" in names:
        at = names.index("quantize")
    elif "canonicalize" in names:
        at = len(names) - names[::-1].index("canonicalize")
    else:
        at = len(names)
    return steps[:at] + [step] + steps[at:]


def pipeline_text(steps: list) -> str:
    """A pipeline string for `steps` (options that differ from their defaults only)."""
    parts = []
    for s in steps:
        defaults = {k: o.default for k, o in lookup(s.name).options.items()}
        opts = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in s.options.items()
                if v != defaults.get(k)]
        parts.append(s.name + ("{" + ",".join(opts) + "}" if opts else ""))
    return ",".join(parts)
