"""partition: place every node on the accelerator or on the host CPU.

    dense, reshape in the accelerator's chain   -> {place = "accel"}
    every other node (host ops, float leftovers) -> {place = "host"}

The accelerator runs one chain of layers: each node reads the previous node's result, and
no result inside the chain is read by anything else. Host nodes before the chain form the
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
from nnfpga.passes.registry import Option, PassContext, register

ACCEL_OPS = ("dense", "reshape")
"""Float ops `quantize` and the hardware backend can take (backends/lower.py)."""
ONNX_NAMES = {"gemm": "dense", "matmul": "dense", "flatten": "reshape", "reshape": "reshape", "dense": "dense"}
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
                                "runs; give dense, reshape (or Gemm, MatMul, Flatten, Reshape), or %value")
    return ops, nodes


def _macs(chain: list[Node]) -> int:
    return sum(n.inputs[1].type.shape[0] * n.inputs[1].type.shape[1] for n in chain if n.op == "dense")


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
    """Place each node: one chain of dense layers on the accelerator, the rest on the host."""
    integer = [n for n in g.nodes if n.op in INTEGER_OPS]
    if integer:
        raise PipelineError(f"partition: the graph is already quantized (%{integer[0].outputs[0].name} is "
                            f"{integer[0].op}); run partition before quantize")
    forced_ops, forced_nodes = _forced(g, host_ops)

    def can_accelerate(node: Node) -> bool:
        if node.op not in ACCEL_OPS or node.op in forced_ops or id(node) in forced_nodes:
            return False
        return node.inputs[0].type.is_float and not node.inputs[0].is_const

    chains = [c for c in accelerator_chains(g, can_accelerate) if any(n.op == "dense" for n in c)]
    if not chains:
        host = sorted({n.attrs["op_type"] if n.op == "host" else n.op for n in g.nodes})
        raise PipelineError("partition: no dense layer is left for the accelerator (the graph holds "
                            f"{', '.join(host) or 'no nodes'}); run canonicalize first, or force fewer ops "
                            "onto the host")
    best = max(chains, key=_macs)  # max keeps the first of equals
    if len(chains) > 1:
        moved = [n for c in chains if c is not best for n in c if n.op == "dense"]
        ctx.warn(f"partition: the accelerator runs one chain of layers, and host ops split this model "
                 f"into {len(chains)}; it takes %{best[0].outputs[0].name} .. %{best[-1].outputs[0].name} "
                 f"({_macs(best)} multiply-accumulates), and dense layer(s) "
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
    from nnfpga.passes.pipeline import Step

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
    from nnfpga.passes.registry import lookup

    parts = []
    for s in steps:
        defaults = {k: o.default for k, o in lookup(s.name).options.items()}
        opts = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in s.options.items()
                if v != defaults.get(k)]
        parts.append(s.name + ("{" + ",".join(opts) + "}" if opts else ""))
    return ",".join(parts)
