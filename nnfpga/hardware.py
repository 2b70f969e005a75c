"""Facts about the generated hardware that the passes, the cost model and the backends share.

One home for each number and layout the templates in templates/verilog and templates/hls
assume, so that no two modules re-derive them. A plain module of constants and small
functions on plain values (a layer record is read through its attributes), sorted by topic;
it imports nothing of ours but nnfpga.errors, so anything may import it.

    requantizer   MULT_BITS
    folding       largest_divisor_at_most, folding_cycles
    pipeline      PIPELINE_STAGES
    multipliers   dsp_tiles
    ROM layout    weight_fields, param_fields, weight_words, param_words, varying_bits
"""
from __future__ import annotations

import numpy as np

# -- requantizer ---------------------------------------------------------------------------

MULT_BITS = 16
"""Requant multipliers are unsigned 16-bit: y = clamp(zy + ((acc·M + 2^(s-1)) >> s)), M < 2^16."""


# -- folding -------------------------------------------------------------------------------

def largest_divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of `n` not above `cap` (at least 1): a legal pe, simd or in_par."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def folding_cycles(layer) -> int:
    """Cycles the matrix-vector unit spends on one vector: (N/pe)·(K/simd)."""
    return (layer.n // layer.pe) * (layer.k // layer.simd)


# -- pipeline ------------------------------------------------------------------------------

PIPELINE_STAGES = 6
"""Register stages from issuing a fold to its result leaving a dense layer (S1..S6 in
templates/verilog/nnfpga_dense.sv.j2)."""


# -- multipliers ---------------------------------------------------------------------------

def dsp_tiles(a_bits: int, b_bits: int, shape: tuple[int, int]) -> int:
    """Hard multipliers for one a x b product on an A x B block (either orientation).

    yosys's mul2dsp cuts an operand wider than the port into port-wide pieces; a last piece
    narrower than 2 bits is multiplied in logic instead (measured on ECP5: a 19 x 17
    requant product takes one MULT18X18D, a 20 x 17 one takes two)."""
    def pieces(bits: int, port: int) -> int:
        whole, rest = divmod(bits, port)
        return max(1, whole + (1 if rest >= 2 else 0))
    big, small = max(shape), min(shape)
    return min(pieces(a_bits, big) * pieces(b_bits, small), pieces(b_bits, big) * pieces(a_bits, small))


# -- ROM layout ----------------------------------------------------------------------------
# A dense layer reads two ROMs (templates/verilog/nnfpga_dense.sv.j2, templates/hls):
#   weights     NF·SF words of PE·SIMD lanes, wbits each: word nf·SF + sf, lane p·SIMD + s
#               holds W[sf·SIMD + s][nf·PE + p]
#   parameters  NF words of PE lanes, MULT_BITS + acc_bits each: word nf, lane p holds
#               {M, bias} of channel nf·PE + p (bias in the low acc_bits)
# NF = N/PE, SF = K/SIMD; lane 0 sits in the low bits of a word.

def weight_fields(layer) -> np.ndarray:
    """[NF·SF, PE·SIMD] weight ROM lanes: word nf*SF + sf, lane p*SIMD + s holds W[sf*SIMD + s][nf*PE + p]."""
    nf, sf = layer.n // layer.pe, layer.k // layer.simd
    return (np.asarray(layer.weights).reshape(sf, layer.simd, nf, layer.pe).transpose(2, 0, 3, 1)
            .reshape(nf * sf, layer.pe * layer.simd))


def param_fields(layer) -> np.ndarray:
    """[NF, PE] parameter ROM lanes: {M, bias} of channel nf*PE + p (Python integers in an
    object array when a lane is wider than int64 holds)."""
    dtype = np.int64 if MULT_BITS + layer.acc_bits <= 62 else object
    acc_mask = (1 << layer.acc_bits) - 1
    lanes = ((np.asarray(layer.mult).astype(dtype) << layer.acc_bits)
             | (np.asarray(layer.bias).astype(dtype) & acc_mask))
    return lanes.reshape(layer.n // layer.pe, layer.pe)


def _pack(fields, bits: int) -> int:
    """Pack `fields` into one word, field 0 in the low bits, each `bits` wide (two's complement)."""
    mask = (1 << bits) - 1
    word = 0
    for i, f in enumerate(fields):
        word |= (int(f) & mask) << (i * bits)
    return word


def weight_words(layer) -> list[int]:
    """The weight ROM as integers, one per word (the rows of `weight_fields` packed)."""
    return [_pack(row, layer.wbits) for row in weight_fields(layer).tolist()]


def param_words(layer) -> list[int]:
    """The parameter ROM as integers, one per word (the rows of `param_fields` packed)."""
    return [_pack(row, MULT_BITS + layer.acc_bits) for row in param_fields(layer).tolist()]


def varying_bits(fields: np.ndarray, bits: int) -> int:
    """Bit columns of a ROM (words = rows of `fields`, lanes `bits` wide) that are not the
    same in every word: the width synthesis keeps once it drops the constant columns."""
    if len(fields) == 0:
        return 0
    if bits > 62:  # lanes beyond int64: Python integers
        ones = zeros = 0
        for word in (_pack(row, bits) for row in np.asarray(fields).tolist()):
            ones, zeros = ones | word, zeros | ~word
        return bin(ones & zeros).count("1")
    mask = (1 << bits) - 1
    f = np.asarray(fields, np.int64) & mask
    ones = np.bitwise_or.reduce(f, axis=0)  # per lane: bits that are 1 in some word
    zeros = np.bitwise_or.reduce(~f & mask, axis=0)  # ... and bits that are 0 in some word
    return sum(bin(int(v)).count("1") for v in (ones & zeros).tolist())
