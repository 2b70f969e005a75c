"""lowrank: factor dense and convolution layers into two thinner ones by truncated SVD.

    dense(x, W[K,N], b) {relu}         -> dense(dense(x, U[K,r], 0), V[r,N], b) {relu}
    conv(x, W[N,C,kh,kw], b) {s,p,d}   -> conv(conv(x, U' [r,C,kh,kw], 0) {s,p,d}, V' [N,r,1,1], b)
    W ≈ U·V with W as the [K, N] matrix of the matrix-vector unit (conv: K = C·kh·kw,
    U' = Uᵀ reshaped, V' = Vᵀ reshaped); MACs per output vector K·N -> r·(K+N)

Runs on the float IR after `canonicalize`, before `quantize`: the two layers are ordinary
layers, so quantization, folding and every backend take them as they take any other. The
rank per layer comes from one of three options (the first given wins):

    rank=R | rank=layer:R+layer:R   R for every layer, or per layer (names as the IR prints them)
    macs=F                          keep at most F of the model's MACs: the ranks with the largest
                                    product of the fractions of Σσ² the layers keep (exact)
    hw=1,macs=F | hw=1,cycles=F     only ranks the folding uses fully, chosen with autofold's plan on
                                    the build's device (passes/lowrank_hw.py)
    energy=E                        keep the fewest singular values holding E of Σσ² (default 0.95)

A layer is factored only when that saves MACs, r < K·N/(K+N); otherwise it is left alone and
reported as such. Grouped convolutions are left alone (a group's factors would need a grouped
1×1 layer the quantizer does not model). Every layer's rank, MACs, weights and relative
reconstruction error ||W - U·V||_F / ||W||_F go to `ctx.report` (the build's manifest).
"""
from __future__ import annotations

import numpy as np

from nnfpga.devices import DEFAULT_DEVICE, DEVICES
from nnfpga.errors import PipelineError
from nnfpga.ir import F32, Graph, Node, TensorType
from nnfpga.passes.lowrank_hw import hw_ranks
from nnfpga.passes.lowrank_ranks import DEFAULT_ENERGY, Layer, budget_ranks, energy_rank, factorable_layers
from nnfpga.passes.registry import Option, PassContext, register

def _parse_ranks(text: str, layers: list[Layer]) -> dict[str, int]:
    """`R` for every layer or `name:R+name:R`; every named layer must exist, 1 <= R <= min(K, N)."""
    by_name = {l.name: l for l in layers}
    known = ", ".join(by_name) or "none"
    text = text.strip()
    if ":" not in text:
        r = _int_option(text, "rank")
        if r < 1:
            raise PipelineError(f"lowrank: rank={r} must be at least 1")
        return {l.name: r for l in layers}
    ranks = {}
    for item in text.split("+"):
        name, colon, value = item.strip().rpartition(":")
        if not colon or not name:
            raise PipelineError(f"lowrank: rank entry '{item}' must look like layer:R (layers: {known})")
        if name not in by_name:
            raise PipelineError(f"lowrank: rank names layer '{name}', which is not a dense or conv layer "
                                f"of this model (layers: {known})")
        layer, r = by_name[name], _int_option(value, f"rank of layer {name}")
        if not 1 <= r <= layer.max_rank:
            raise PipelineError(f"lowrank: rank {r} of layer {name} ([{layer.k}, {layer.n}]) must lie in "
                                f"1..{layer.max_rank} (min(K, N)); it saves MACs below {layer.k * layer.n / (layer.k + layer.n):.1f}")
        ranks[name] = r
    return ranks


def _int_option(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PipelineError(f"lowrank: {what} must be an integer, got '{text}'") from None


# ---- rewriting -------------------------------------------------------------------------------

def factors(matrix: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """U [K, r], V [r, N] with U·V the best rank-r approximation of `matrix`.

    σ is split as sqrt(σ) on each side rather than all on one: the intermediate activation
    x·U is quantized per tensor and V per output channel (column), so all of σ in U would give
    the activation's channels ranges spread by σ_1/σ_r under one scale, and all of σ in V the
    rows of each column of V the same spread; the square root halves both (in decades)."""
    u, sigma, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(sigma[:r])
    return u[:, :r] * root, root[:, None] * vt[:r]


def factor_layer(g: Graph, node: Node, r: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Replace a dense or group-1 conv node by its rank-r factors (any r, saving MACs or not);
    return the relative reconstruction error and the two factors."""
    name = node.output.name
    x, w, b = node.inputs
    if node.op == "dense":
        matrix = g.const_data(w).astype(np.float64)
    else:
        matrix = g.const_data(w).astype(np.float64).reshape(w.type.shape[0], -1).T
    u, v = factors(matrix, r)
    error = float(np.linalg.norm(matrix - u @ v) / (np.linalg.norm(matrix) or 1.0))
    zero = _const(g, f"{name}_proj_b", np.zeros(r))
    if node.op == "dense":
        proj = g.add_node("dense", [x, _const(g, f"{name}_u", u), zero], [TensorType((1, r), F32)],
                          names=[f"{name}_proj"], before=node)
        second = g.add_node("dense", [proj.output, _const(g, f"{name}_v", v), b], [node.output.type],
                            dict(node.attrs), before=node)
    else:
        n, c, kh, kw = w.type.shape
        out = node.output.type.shape
        proj = g.add_node("conv", [x, _const(g, f"{name}_u", u.T.reshape(r, c, kh, kw)), zero],
                          [TensorType((1, r, out[2], out[3]), F32)], dict(node.attrs),
                          names=[f"{name}_proj"], before=node)
        pointwise = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
        second = g.add_node("conv", [proj.output, _const(g, f"{name}_v", v.T.reshape(n, r, 1, 1)), b],
                            [node.output.type], pointwise, before=node)
    g.replace_all_uses(node.output, second.output)
    g.remove_node(node)
    g.rename(second.output, name)  # the second layer is known by the layer's name
    g.remove_unused_constants()
    return error, u, v


def _const(g: Graph, hint: str, data: np.ndarray):
    data = np.ascontiguousarray(data, dtype=np.float32)
    return g.add_const(hint, data, TensorType(data.shape, F32))


def _record(layer: Layer, r: int | None, error: float, note: str) -> dict:
    return {"pass": "lowrank", "layer": layer.name, "op": layer.node.op, "k": layer.k, "n": layer.n,
            "vectors": layer.vectors, "rank": r, "factored": note == "",
            "macs_before": layer.macs(None), "macs_after": layer.macs(r if note == "" else None),
            "weights_before": layer.k * layer.n,
            "weights_after": r * (layer.k + layer.n) if note == "" else layer.k * layer.n,
            "rel_error": error, "note": note}


@register("lowrank",
          energy=Option(float, DEFAULT_ENERGY, "fraction of Σσ² each layer keeps, in (0, 1] "
                        "(used when neither rank nor macs is given)"),
          rank=Option(str, "", "R for every layer, or layer:R+layer:R (IR names); 1..min(K, N)"),
          macs=Option(float, 0.0, "fraction of the model's MACs to keep, in (0, 1]; the ranks keeping the most "
                      "of Σσ² (product over layers) within it "
                      "(default 0: not used)"),
          hw=Option(int, 0, "1: only ranks the folding uses fully, chosen by predicted cycles saved per unit "
                    "of error on the build's device (with macs= or cycles=)"),
          cycles=Option(float, 0.0, "with hw=1: fraction of the unfactored design's predicted cycles per "
                        "inference to reach, in (0, 1] (default 0: not used)"))
def lowrank(g: Graph, ctx: PassContext, energy: float, rank: str, macs: float, hw: int, cycles: float) -> bool:
    """Factor dense and conv layers W ≈ U·V (truncated SVD) into two layers where that saves MACs."""
    if not 0.0 < energy <= 1.0:
        raise PipelineError(f"lowrank: energy={energy} must lie in (0, 1]")
    if macs != 0.0 and not 0.0 < macs <= 1.0:
        raise PipelineError(f"lowrank: macs={macs} must lie in (0, 1]")
    if cycles != 0.0 and not 0.0 < cycles <= 1.0:
        raise PipelineError(f"lowrank: cycles={cycles} must lie in (0, 1]")
    if hw not in (0, 1):
        raise PipelineError(f"lowrank: hw={hw} must be 0 or 1")
    if rank and (macs or hw):
        raise PipelineError("lowrank: give rank or macs/hw, not both")
    if hw and bool(macs) == bool(cycles):
        raise PipelineError("lowrank: hw=1 needs one target, macs=F or cycles=F")
    if cycles and not hw:
        raise PipelineError("lowrank: cycles= is a target of hw=1 (lowrank{hw=1,cycles=F})")
    layers = factorable_layers(g)
    decided = None
    if rank:
        ranks = _parse_ranks(rank, layers)
    elif hw:
        device = ctx.device or DEFAULT_DEVICE
        if device not in DEVICES:
            raise PipelineError(f"lowrank: unknown device '{device}'; known devices: {', '.join(DEVICES)}")
        ranks, decided = hw_ranks(layers, DEVICES[device], macs, cycles)
    elif macs:
        ranks = budget_ranks(layers, macs)
    else:
        ranks = {l.name: energy_rank(l.sigma, energy) for l in layers if not l.skip_reason}
    changed, first_record = False, len(ctx.report)
    for layer in layers:
        r = ranks.get(layer.name)
        if layer.skip_reason:
            ctx.report.append(_record(layer, None, 0.0, layer.skip_reason))
        elif r is None:
            ctx.report.append(_record(layer, None, 0.0, "kept whole (macs budget met without it)"))
        elif not layer.saves(r):
            note = (f"kept whole: rank {r} saves no MACs (needs r < K·N/(K+N) = "
                    f"{layer.k * layer.n / (layer.k + layer.n):.1f})")
            ctx.report.append(_record(layer, r, 0.0, note))
        else:
            error, _, _ = factor_layer(g, layer.node, r)
            ctx.report.append(_record(layer, r, error, ""))
            changed = True
    if decided is not None:  # every layer's record says which interval its rank was chosen for
        for record in ctx.report[first_record:]:
            record["hw"] = decided
    return changed
