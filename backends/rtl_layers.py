"""Layer records the RTL backend consumes, their checks, and the exact numpy oracle.

A `DenseLayer` is one matrix-vector unit plus its requantizer:

    acc = x @ W + bias                                           (exact integers)
    y   = clip(out_zp + ((acc * M + 2^(s-1)) >> s), lo, hi)      (>> is floor)

The oracle below is what the generated hardware must reproduce bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnfpga.errors import NnfpgaError
from nnfpga.bitslices import SLICE_WIDTHS
from nnfpga.hardware import CORES, MULT_BITS, mult_bits


class LayerConfigError(NnfpgaError, ValueError):
    """A layer record the hardware cannot implement (folding, widths, ranges)."""


@dataclass(frozen=True)
class DenseLayer:
    """One fully connected layer with its requantization, as the hardware sees it."""

    name: str
    """Identifier fragment ([a-z0-9_]); re-sanitized by the emitter anyway."""
    weights: np.ndarray
    """int64 [K, N], symmetric: |w| <= 2^(wbits-1) - 1."""
    bias: np.ndarray
    """int64 [N], already including the folded input zero point."""
    wbits: int
    """Weight width, 2..8."""
    in_bits: int
    """Input activation storage width."""
    in_signed: bool
    """Whether input activations are two's complement (else unsigned)."""
    acc_bits: int
    """Signed accumulator width; must hold x·W + bias exactly for every input."""
    mult: np.ndarray
    """int64 [N], requant multiplier per output channel, 0 <= M < 2^MULT_BITS (nnfpga.hardware)."""
    shift: int
    """Requant right shift s >= 1, shared by the layer."""
    out_zp: int
    """Output zero point."""
    lo: int
    """Lower clamp bound (lo == out_zp means a fused ReLU)."""
    hi: int
    """Upper clamp bound."""
    out_bits: int
    """Output activation storage width."""
    out_signed: bool
    """Whether output activations are two's complement."""
    pe: int
    """Output channels computed per cycle; divides N."""
    simd: int
    """Inputs consumed per cycle; divides K."""
    core: str = "dsp"
    """What builds the products: dsp (hard multipliers), lut (shift-add in logic) or
    bitserial (one weight slice per cycle, nnfpga.hardware "bit-serial core")."""
    pack: int = 1
    """Products per DSP multiplier (output channels sharing one input; dsp core only)."""
    slice_bits: int = 0
    """Bit-serial core: magnitude bits per weight slice (1, 2 or 4); 0 on the other cores."""
    skip_zero: bool = True
    """Bit-serial core: whether the schedule leaves out tiles whose slices are all zero."""

    @property
    def mult_bits(self) -> int:
        """Width of M in the parameter ROM and the requantizer (nnfpga.hardware.mult_bits)."""
        return mult_bits(self.mult)

    @property
    def k(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n(self) -> int:
        return int(self.weights.shape[1])


def type_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest value of an integer storage type."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def acc_range(layer: DenseLayer) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel min and max of x·W + bias over every input the type allows."""
    x_lo, x_hi = type_range(layer.in_bits, layer.in_signed)
    w = layer.weights.astype(object)
    hi = np.maximum(w * x_lo, w * x_hi).sum(axis=0) + layer.bias.astype(object)
    lo = np.minimum(w * x_lo, w * x_hi).sum(axis=0) + layer.bias.astype(object)
    return lo, hi


def check_folding(i: int, l: DenseLayer) -> None:
    """Raise LayerConfigError naming layer `i` and the fix if its matrix or folding is impossible."""
    where = f"layer {i} ({l.name!r})"
    if l.weights.ndim != 2:
        raise LayerConfigError(f"{where}: weights must be a [K, N] matrix, got shape {l.weights.shape}")
    k, n = l.weights.shape
    if k < 1 or n < 1:
        raise LayerConfigError(f"{where}: empty weight matrix {l.weights.shape}")
    if l.bias.shape != (n,) or l.mult.shape != (n,):
        raise LayerConfigError(f"{where}: bias {l.bias.shape} and mult {l.mult.shape} must both be ({n},)")
    if l.pe < 1 or n % l.pe:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise LayerConfigError(f"{where}: pe={l.pe} must divide N={n}; choose one of {divisors}")
    if l.simd < 1 or k % l.simd:
        divisors = [d for d in range(1, k + 1) if k % d == 0]
        raise LayerConfigError(f"{where}: simd={l.simd} must divide K={k}; choose one of {divisors}")


def _check_core(where: str, l: DenseLayer) -> None:
    if l.core not in CORES:
        raise LayerConfigError(f"{where}: unknown core {l.core!r} (accepted: {', '.join(CORES)})")
    if l.pack < 1 or (l.pack > 1 and l.core != "dsp"):
        raise LayerConfigError(f"{where}: pack={l.pack} must be at least 1, and above 1 only on the dsp core")
    if l.core == "bitserial" and l.slice_bits not in SLICE_WIDTHS:
        raise LayerConfigError(f"{where}: the bitserial core needs a slice width of "
                               f"{', '.join(map(str, SLICE_WIDTHS))} bits, got {l.slice_bits}")
    if l.core != "bitserial" and l.slice_bits:
        raise LayerConfigError(f"{where}: slice={l.slice_bits} slices weights for the bitserial core only")
    if l.core == "const" and (l.pe, l.simd) != (l.n, l.k):
        raise LayerConfigError(f"{where}: the const core computes a whole vector per cycle; it needs "
                               f"pe=N={l.n} and simd=K={l.k}, not pe={l.pe}, simd={l.simd}")


def _check_layer(i: int, l: DenseLayer) -> None:
    check_folding(i, l)
    where = f"layer {i} ({l.name!r})"
    _check_core(where, l)
    if not 2 <= l.wbits <= 8:
        raise LayerConfigError(f"{where}: wbits={l.wbits} is outside the supported 2..8")
    for label, bits in (("in_bits", l.in_bits), ("out_bits", l.out_bits)):
        if not 1 <= bits <= 32:
            raise LayerConfigError(f"{where}: {label}={bits} is outside 1..32")
    w_max = (1 << (l.wbits - 1)) - 1
    if np.abs(l.weights).max() > w_max:
        raise LayerConfigError(f"{where}: a weight exceeds ±{w_max}, the symmetric range of wbits={l.wbits}")
    if l.mult.min() < 0 or l.mult.max() >= 1 << MULT_BITS:
        raise LayerConfigError(f"{where}: requant multipliers must lie in [0, 2^{MULT_BITS}); "
                               f"got [{l.mult.min()}, {l.mult.max()}]; increase or lower the shift")
    if l.shift < 1 or l.shift > 62:
        raise LayerConfigError(f"{where}: shift={l.shift} must lie in 1..62")
    out_lo, out_hi = type_range(l.out_bits, l.out_signed)
    if not out_lo <= l.lo <= l.hi <= out_hi:
        raise LayerConfigError(f"{where}: clamp [{l.lo}, {l.hi}] must be ordered and inside the output "
                               f"type's range [{out_lo}, {out_hi}]")
    if not out_lo <= l.out_zp <= out_hi:
        raise LayerConfigError(f"{where}: out_zp={l.out_zp} lies outside the output type's range")
    acc_lo, acc_hi = type_range(l.acc_bits, True)
    lo, hi = acc_range(l)
    if min(lo) < acc_lo or max(hi) > acc_hi:
        raise LayerConfigError(f"{where}: x·W + bias spans [{min(lo)}, {max(hi)}], which does not fit the "
                               f"signed {l.acc_bits}-bit accumulator; widen acc_bits")
    if max(abs(int(min(lo))), abs(int(max(hi)))) * int(l.mult.max()) >= 1 << 62:
        raise LayerConfigError(f"{where}: |acc·M| can reach 2^62; lower the multiplier and shift")


def check(layers: list[DenseLayer]) -> None:
    """Raise LayerConfigError (a ValueError) naming the layer and the fix if the chain is unbuildable."""
    if not layers:
        raise LayerConfigError("no layers to build")
    for i, l in enumerate(layers):
        _check_layer(i, l)
    for i, (a, b) in enumerate(zip(layers, layers[1:])):
        if a.n != b.k:
            raise LayerConfigError(f"layer {i} ({a.name!r}) has N={a.n} outputs but layer {i + 1} "
                                   f"({b.name!r}) expects K={b.k} inputs")
        if (a.out_bits, a.out_signed) != (b.in_bits, b.in_signed):
            raise LayerConfigError(
                f"layer {i} ({a.name!r}) outputs {'i' if a.out_signed else 'u'}{a.out_bits} but layer {i + 1} "
                f"({b.name!r}) reads {'i' if b.in_signed else 'u'}{b.in_bits}; the types must match")


def reference_forward(layers: list[DenseLayer], x_int: np.ndarray) -> list[np.ndarray]:
    """Exact integer forward pass; returns every layer's output, int64 [B, N_i]."""
    x = np.asarray(x_int, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != layers[0].k:
        raise LayerConfigError(f"inputs must be [B, {layers[0].k}], got {x.shape}")
    outs = []
    for l in layers:
        acc = x.astype(object) @ l.weights.astype(object) + l.bias.astype(object)
        scaled = (acc * l.mult.astype(object) + (1 << (l.shift - 1))) >> l.shift
        y = np.clip(l.out_zp + scaled, l.lo, l.hi).astype(np.int64)
        outs.append(y)
        x = y
    return outs
