"""Hardware facts shared by the cost model, the latency and FIFO models and the backends.

A leaf module: constants and small functions, no imports of ours but nnfpga.errors. The
templates compute the same numbers from their own parameters (and the Verilog backends
pass these in and the templates check them), so a change here and a change in a template
must go together; hw_tests hold measured latency to these numbers.

Pipeline stage counts are register edges from the cycle a module issues work to the cycle
its result is visible on m_axis (tvalid high), with the output never held back.
"""
from __future__ import annotations

from nnfpga.errors import NnfpgaError

MULT_BITS = 16
"""Requant multipliers are unsigned 16-bit."""
DSP_SIGNED_BITS = 18
"""ECP5 MULT18X18D (and the 18-bit side of DSP48E1/E2): signed operand width of one multiplier."""
SPLIT_PIECE_BITS = DSP_SIGNED_BITS - 1
"""Low pieces of a wide accumulator are this many unsigned bits (a zero sign bit makes them 18)."""
TREE_LEVELS_PER_STAGE = 2
"""The SIMD lane sum is an adder tree with a register after every this many levels."""
ROM_READ_STAGES = 2
"""Weight ROM and input buffer: read register, then output register (DP16KD's OUTREG)."""
PRODUCT_STAGES = 2
"""The pe x simd products: the multiplier's output register, then a second one, so the
route from a DSP column back to the adder tree has a cycle of its own."""

REQUANT_MODULE = "nnfpga_requant"
FIFO_MODULE = "nnfpga_fifo"
SUBMODULES = {
    "nnfpga_dense": (REQUANT_MODULE, FIFO_MODULE),
    "nnfpga_pool": (REQUANT_MODULE, FIFO_MODULE),
    "nnfpga_add": (REQUANT_MODULE, FIFO_MODULE),
}
"""Template modules a module instantiates: they must be among the sources wherever it is."""


def with_submodules(modules) -> list[str]:
    """`modules` followed by the submodules they instantiate, each once, in a stable order."""
    out = list(dict.fromkeys(modules))
    for m in list(out):
        for sub in SUBMODULES.get(m, ()):
            if sub not in out:
                out.append(sub)
    return out


def _clog2(n: int) -> int:
    return max(0, (n - 1).bit_length())


def requant_pieces(acc_bits: int) -> int:
    """Multipliers per lane for acc·M: one while acc fits a signed 18-bit operand, else the
    low 17-bit unsigned pieces plus a signed top piece of at most 18 bits."""
    if acc_bits < 1:
        raise NnfpgaError(f"requantizer accumulator width must be >= 1, got {acc_bits}")
    if acc_bits <= DSP_SIGNED_BITS:
        return 1
    return 1 + -(-(acc_bits - DSP_SIGNED_BITS) // SPLIT_PIECE_BITS)


def requant_stages(acc_bits: int, multiply: bool = True) -> int:
    """nnfpga_requant's register stages: [partial products, their sum,] round and clamp."""
    if not multiply:
        return 1
    return 2 if requant_pieces(acc_bits) == 1 else 3


def adder_tree_stages(simd: int) -> int:
    """Registered stages of the SIMD lane sum: ceil(ceil(log2 simd) / levels per stage)."""
    return -(-_clog2(simd) // TREE_LEVELS_PER_STAGE)


def dense_pipeline_stages(simd: int, acc_bits: int) -> int:
    """nnfpga_dense: ROM read (2), products (2), lane sum tree, accumulate (1), requant,
    output FIFO write (1)."""
    return ROM_READ_STAGES + PRODUCT_STAGES + adder_tree_stages(simd) + 1 + requant_stages(acc_bits) + 1


def output_fifo_depth(stages: int) -> int:
    """Output FIFO of a credit-issued module: every beat in flight has a place, and two more
    keep one beat per cycle flowing while the output is taken (a beat holds its credit from
    issue until it leaves, stages + 1 cycles)."""
    return stages + 2


def pool_pipeline_stages(mode: int, acc_bits: int) -> int:
    """nnfpga_pool: final value (1), requant in sum mode, output FIFO write (1)."""
    return 1 + (requant_stages(acc_bits) if mode else 0) + 1


ADD_OPERAND_STAGES = 3
"""nnfpga_add before its requantizer: operands minus zero points, products, their sum."""


def add_pipeline_stages() -> int:
    """nnfpga_add: operand stages, requant (no multiplier: the sum is already scaled), FIFO write."""
    return ADD_OPERAND_STAGES + requant_stages(1, multiply=False) + 1
