"""bits: per-layer bit-width requests, written by hand, that `quantize` honours.

    bits{wbits=fc1:4+fc2:6, abits=fc2:6}   ->   dense(...) {wbits = 4}, dense(...) {abits = 6, wbits = 6}

Runs on the float IR before `quantize`. Layers are named as `nnfpga ir --after canonicalize`
prints them (the dense or conv node's result). `wbits` sets the layer's weight bits, `abits`
the bits of its output activation (after a fused relu); every other layer keeps quantize's
pass-wide wbits/abits. The `split` and `precision` passes leave the same requests.
"""
from __future__ import annotations

from nnfpga.errors import PipelineError
from nnfpga.ir import Graph
from nnfpga.passes.registry import Option, PassContext, register

LAYER_OPS = ("dense", "conv")


def parse_layer_bits(text: str, layers: dict, pass_name: str, key: str) -> dict[str, int]:
    """`name:B+name:B` -> {name: B}; every name a layer of `layers`, every B in 2..8."""
    known = ", ".join(layers) or "none"
    requests: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split("+"))):
        name, colon, value = item.rpartition(":")
        if not colon or not name:
            raise PipelineError(f"{pass_name}: {key} entry '{item}' must look like layer:B (layers: {known})")
        if name not in layers:
            raise PipelineError(f"{pass_name}: {key} names layer '{name}', which is not a dense or conv layer "
                                f"of this model (layers: {known})")
        try:
            bits = int(value)
        except ValueError:
            raise PipelineError(f"{pass_name}: {key} of layer {name} must be an integer, got '{value}'") from None
        if not 2 <= bits <= 8:
            raise PipelineError(f"{pass_name}: {key} of layer {name} is {bits}, outside 2..8")
        requests[name] = bits
    return requests


@register("bits",
          wbits=Option(str, "", "weight bits per layer: layer:B+layer:B (2..8; IR names)"),
          abits=Option(str, "", "output activation bits per layer: layer:B+layer:B (2..8)"))
def bits(g: Graph, ctx: PassContext, wbits: str, abits: str) -> bool:
    """Leave per-layer wbits/abits requests on named dense and conv layers for quantize."""
    layers = {n.output.name: n for n in g.nodes if n.op in LAYER_OPS}
    changed = False
    for key, text in (("wbits", wbits), ("abits", abits)):
        for name, value in parse_layer_bits(text, layers, "bits", key).items():
            layers[name].attrs[key] = value
            changed = True
    return changed
