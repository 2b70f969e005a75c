"""Facts about the generated hardware that the passes, the cost model and the backends share.

One home for each number and layout the templates in templates/verilog and templates/hls
assume, so that no two modules re-derive them. A plain module of constants and small
functions on plain values (a layer record is read through its attributes), sorted by topic;
it imports nothing of ours but nnfpga.errors, so anything may import it.

The templates compute the pipeline numbers from their own parameters too (the Verilog
backend passes these in and the templates check them), so a change here and a change in a
template go together; hw_tests hold measured latency to them. A stage count is the register
edges from the cycle a module issues work to the cycle its result is visible on m_axis
(tvalid high), with the output never held back.

    requantizer   DSP_MULT_BITS, MULT_BITS, ADD_MULT_BITS, mult_bits
    folding       largest_divisor_at_most, folding_cycles, legal_taps, largest_taps_at_most,
                  tap_block
    pipeline      dense_pipeline_stages, pool_pipeline_stages, add_pipeline_stages,
                  requant_stages, output_fifo_depth, with_submodules, MULT_STAGES
    multipliers   dsp_tiles
    cores         CORES, pack_lane_bits, packed_weight_bits, pack_fits, max_pack,
                  product_multipliers, X_COPY_LANES
    bit-serial    bitserial_schedule (slices and tiles: nnfpga.bitslices), bitserial_fold_tiles, slice_weight_fields,
                  schedule_fields, schedule_field_bits
    ROM layout    weight_fields, param_fields, weight_words, param_words, varying_bits,
                  W_ROM_SLICE_BITS
"""
from __future__ import annotations

import numpy as np

from nnfpga.bitslices import nonzero_tiles, sign_magnitude_slices, slice_count

from nnfpga.errors import NnfpgaError

# -- requantizer ---------------------------------------------------------------------------

DSP_MULT_BITS = 17
"""Low bits of a requant multiplier M that one signed 18x18 multiplier port takes unsigned
(ECP5 MULT18X18D): y = clamp(zy + ((acc·M + 2^(s-1)) >> s)). A calibrated layer's M fits them."""
MULT_BITS = 21
"""Widest requant multiplier, M < 2^21: the bits above DSP_MULT_BITS are multiplied in fabric
(shift-and-add rows, templates/verilog/nnfpga_requant.sv.j2), so they cost adders, never another
multiplier. A model that brings its own quantization uses them: onnxruntime requantizes with a
float32 ratio, and a 17-bit M left 0.1-0.3% of output integers one step apart from it."""
ADD_MULT_BITS = 16
"""The residual add's operand multipliers ma, mb (nnfpga_add): its sum is already scaled, and
measured agreement with onnxruntime did not change with wider ones."""


def mult_bits(mult) -> int:
    """Width of a layer's requant multipliers in its parameter ROM and its requantizer: the
    DSP's DSP_MULT_BITS, or more when some M needs them (those come from fabric)."""
    return max(DSP_MULT_BITS, int(np.max(mult, initial=0)).bit_length())


# -- folding -------------------------------------------------------------------------------

def largest_divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of `n` not above `cap` (at least 1): a legal pe, simd or in_par."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def folding_cycles(layer) -> int:
    """Cycles the matrix-vector unit spends on one vector: (N/pe)·(K/simd), or on the
    bit-serial core the tiles its schedule lists (bitserial_schedule)."""
    if getattr(layer, "core", "dsp") == "bitserial":
        return len(bitserial_schedule(layer))
    return (layer.n // layer.pe) * (layer.k // layer.simd)


def legal_taps(kh: int, kw: int) -> list[int]:
    """Taps per beat a kh x kw sliding window (nnfpga_window) can emit: a divisor of a
    kernel row, or whole kernel rows (a divisor of kh times kw)."""
    return sorted({d for d in range(1, kw + 1) if kw % d == 0} | {kw * d for d in range(1, kh + 1) if kh % d == 0})


def largest_taps_at_most(kh: int, kw: int, cap: int) -> int:
    """The most taps per beat a kh x kw window can emit, not above `cap` (at least 1)."""
    return max(t for t in legal_taps(kh, kw) if t <= max(1, cap))


def tap_block(kh: int, kw: int, taps: int) -> tuple[int, int]:
    """(rows, columns) of the block of `taps` window taps one beat holds; ValueError if the
    window cannot emit that many per beat."""
    if taps not in legal_taps(kh, kw):
        raise ValueError(f"a {kh}x{kw} window emits {', '.join(map(str, legal_taps(kh, kw)))} taps per beat, "
                         f"not {taps}")
    return (1, taps) if kw % taps == 0 else (taps // kw, kw)


# -- pipeline ------------------------------------------------------------------------------

DSP_SIGNED_BITS = 18
"""ECP5 MULT18X18D (and the 18-bit side of DSP48E1/E2): signed operand width of one multiplier."""
SPLIT_PIECE_BITS = DSP_SIGNED_BITS - 1
"""Low pieces of a wide accumulator are this many unsigned bits (a zero sign bit makes them 18)."""
TREE_LEVELS_PER_STAGE = 2
"""The SIMD lane sum is an adder tree with a register after every this many levels."""
ROM_READ_STAGES = 2
"""Weight ROM and input buffer: the read register, then a second one (the next is the
multiplier's operand register, inside nnfpga_mult, or the lut and packed cores'). The second
is for timing: an ECP5 block RAM's read register has a 5.6 ns clock-to-out, and its way to a
DSP across the chip took the rest of the cycle; on ECP5 the build moves it into the DP16KD's
output register (backends/ecp5_outreg.py)."""
PRODUCT_STAGES = 4
"""The pe x simd products: nnfpga_mult's operand and product registers, then two more
product registers, so the route from a DSP column back to the adder tree has two cycles
(ECP5: 9.9 ns for one). Every core takes these four: lut (operands registered, two partial
sums, then their sum) and packed (operands registered, the one product, then each lane's
field with its correction), then the shared fourth, so the stage count does not depend on
the core."""

X_COPY_LANES = 4
"""lut and bit-serial cores: output lanes that share one copy of the S2 input word register.
One register feeding every lane's shift-add was a 10.5 ns route on ECP5 (MNIST's first
layer, 16 lanes); a copy per lane added 1,920 flip-flops and that design no longer placed."""

W_ROM_SLICE_BITS = 64
"""A weight ROM built from logic: word bits read through one copy of the ROM address register.
One address register for the whole word reached a LUT per bit spread among the DSP columns
(ECP5, jet MLP autofolded: 15.7 ns of routing from the address to the ROM's read register)."""

MULT_STAGES = 2
"""nnfpga_mult: operand register, product register (on ECP5 the MULT18X18D's own)."""
ECP5_DSP_DEFINE = "NNFPGA_ECP5_DSP"
"""The macro under which nnfpga_mult instantiates MULT18X18D (set by the ECP5 yosys flow)."""

REQUANT_MODULE = "nnfpga_requant"
FIFO_MODULE = "nnfpga_fifo"
MULT_MODULE = "nnfpga_mult"
LUT_PRODUCT_MODULE = "nnfpga_mul_lut"
PACKED_PRODUCT_MODULE = "nnfpga_mul_pack"
SUBMODULES = {
    "nnfpga_dense": (REQUANT_MODULE, FIFO_MODULE, MULT_MODULE, LUT_PRODUCT_MODULE, PACKED_PRODUCT_MODULE),
    "nnfpga_pool": (REQUANT_MODULE, FIFO_MODULE),
    "nnfpga_add": (REQUANT_MODULE, FIFO_MODULE),
    "nnfpga_const_dense": (REQUANT_MODULE, FIFO_MODULE),
    REQUANT_MODULE: (MULT_MODULE,),
}
"""Template modules a module instantiates: they must be among the sources wherever it is."""


def with_submodules(modules) -> list[str]:
    """`modules` followed by the submodules they instantiate, directly or through another
    submodule, each once, in a stable order."""
    out = list(dict.fromkeys(modules))
    for m in out:  # the list grows while it is walked: submodules' own submodules follow
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


def requant_stages(acc_bits: int, multiply: bool = True, m_bits: int = DSP_MULT_BITS) -> int:
    """nnfpga_requant's register stages: [the partial products (nnfpga_mult), their sum,]
    round and clamp. The sum has a stage of its own when acc·M is more than one product: acc
    split into pieces, or M wider than the DSP's port (its high bits multiplied in fabric)."""
    if not multiply:
        return 1
    return MULT_STAGES + (1 if requant_pieces(acc_bits) == 1 and m_bits <= DSP_MULT_BITS else 2)


def adder_tree_stages(simd: int) -> int:
    """Registered stages of the SIMD lane sum: ceil(ceil(log2 simd) / levels per stage)."""
    return -(-_clog2(simd) // TREE_LEVELS_PER_STAGE)


def dense_pipeline_stages(simd: int, acc_bits: int, m_bits: int = DSP_MULT_BITS) -> int:
    """nnfpga_dense: ROM read (2), products (4), lane sum tree, accumulate (1), requant,
    output FIFO write (1); `m_bits` is the layer's mult_bits."""
    return (ROM_READ_STAGES + PRODUCT_STAGES + adder_tree_stages(simd) + 1
            + requant_stages(acc_bits, True, m_bits) + 1)


def output_fifo_depth(stages: int) -> int:
    """Output FIFO of a credit-issued module: every beat in flight has a place, and two more
    keep one beat per cycle flowing while the output is taken (a beat holds its credit from
    issue until it leaves, stages + 1 cycles)."""
    return stages + 2


def pool_pipeline_stages(mode: int, acc_bits: int, m_bits: int = DSP_MULT_BITS) -> int:
    """nnfpga_pool: final value (1), requant in sum mode, output FIFO write (1)."""
    return 1 + (requant_stages(acc_bits, True, m_bits) if mode else 0) + 1


ADD_OPERAND_STAGES = 3
"""nnfpga_add before its requantizer: operands minus zero points, products, their sum."""


def add_pipeline_stages() -> int:
    """nnfpga_add: operand stages, requant (no multiplier: the sum is already scaled), FIFO write."""
    return ADD_OPERAND_STAGES + requant_stages(1, multiply=False) + 1


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


# -- cores ---------------------------------------------------------------------------------
# A layer's products are built by its core (the `core` annotation; nnfpga_dense's CORE):
#   dsp  behavioural `*`: one hard multiplier per product, or `pack` products per multiplier
#   lut  shift-add over the weight bits (templates/verilog/nnfpga_mul_lut.sv.j2): yosys keeps
#        it in logic (it ignores use_dsp = "no"; any `*` becomes a DSP)
# Packing (templates/verilog/nnfpga_mul_pack.sv.j2): `pack` output channels of one SIMD lane
# share the activation x; their weights sit at lane offsets L = ib + wb of one operand
#     U = w_top * 2^((lanes-1)*L) + sum over i < top of (w_i mod 2^wb) * 2^(i*L)
# (the top weight signed, the others as their raw bits: wiring, no adder), so the one product
# x*U holds every x*w_i in a field of its own; the template takes each field plus the borrow
# of the fields below it, and subtracts x*2^wb where w_i is negative (its raw bits read
# as w_i + 2^wb).

CORES = ("dsp", "lut", "bitserial", "const")
"""Values of the `core` annotation."""


def pack_lane_bits(in_bits: int, wbits: int) -> int:
    """Field width L of one packed product: x*w of an ib-bit x (signed, or unsigned) and a
    wb-bit weight (signed, or its raw bits) fits ib + wb bits."""
    return in_bits + wbits


def packed_weight_bits(lanes: int, in_bits: int, wbits: int) -> int:
    """Signed width of the packed weight operand U: (lanes-1)*(ib+wb) + wb."""
    return (lanes - 1) * pack_lane_bits(in_bits, wbits) + wbits


def pack_fits(lanes: int, in_bits: int, in_signed: bool, wbits: int, dsp_shape: tuple[int, int]) -> bool:
    """Whether `lanes` products sharing x fit one A x B multiplier: the packed weight on the
    wide port, x with its sign (an unsigned x gains a zero sign bit) on the narrow one."""
    x_bits = in_bits + (0 if in_signed else 1)
    return packed_weight_bits(lanes, in_bits, wbits) <= max(dsp_shape) and x_bits <= min(dsp_shape)


def max_pack(in_bits: int, in_signed: bool, wbits: int, dsp_shape: tuple[int, int]) -> int:
    """The most products sharing x that one multiplier of `dsp_shape` holds (at least 1)."""
    lanes = 1
    while pack_fits(lanes + 1, in_bits, in_signed, wbits, dsp_shape):
        lanes += 1
    return lanes


def product_multipliers(core: str, pack: int, pe: int, simd: int) -> int:
    """Multipliers the pe x simd products take: none on the fabric cores, else ceil(pe/pack) per
    SIMD lane (groups of `pack` output channels; the last group may hold fewer)."""
    if core in ("lut", "bitserial", "const"):
        return 0
    return -(-pe // max(1, pack)) * simd


# -- bit-serial core -----------------------------------------------------------------------
# core = bitserial (BISMO's arrangement over sign-magnitude weight slices of s bits):
#     |w| = sum_k 2^(k·s)·m_k,  m_k in [0, 2^s),  so  x·w = sum_k 2^(k·s)·(x·sign(w)·m_k)
# A weight of wbits has wbits-1 magnitude bits (|w| <= 2^(wbits-1) - 1), so
# ceil((wbits-1)/s) slices. A tile is (nf, sf, k): the PE x SIMD block of output fold nf and
# input fold sf, slice k. Per cycle the core takes one tile: each lane's product of x with
# the signed slice sign(w)·m_k (s+1 bits, a small shift-add), the lane sum over SIMD, shifted
# left by k·s and accumulated. A schedule ROM lists the tiles in (nf, sf, k) order: every
# tile, or with skipping only those with a non-zero slice; an output fold whose tiles are all
# zero keeps its first tile (nf, 0, 0), so the bias still reaches the output in one cycle.
# Cycles per vector = listed tiles, known exactly at compile time.

def bitserial_schedule(layer) -> np.ndarray:
    """int64 [T, 5] tiles the bit-serial core walks per vector, in order: (nf, sf, k, first,
    last), first/last marking an output fold's first and last tile. With `skip_zero`, only
    tiles with a non-zero slice, and (nf, 0, 0) alone for an all-zero fold; else every tile."""
    nz = nonzero_tiles(layer.weights, layer.wbits, layer.slice_bits, layer.pe, layer.simd)
    listed = np.ones_like(nz) if not layer.skip_zero else nz.copy()
    listed[~listed.any(axis=(1, 2)), 0, 0] = True  # an all-zero fold keeps (nf, 0, 0) for its bias
    tiles = np.argwhere(listed)  # row-major: (nf, sf, k) order
    nf = tiles[:, 0]
    first = np.r_[True, nf[1:] != nf[:-1]]
    last = np.r_[nf[1:] != nf[:-1], True]
    return np.column_stack([tiles, first, last]).astype(np.int64)


def bitserial_fold_tiles(layer) -> np.ndarray:
    """int64 [NF]: tiles listed per output fold (the cycles between its output beats)."""
    sched = bitserial_schedule(layer)
    return np.bincount(sched[:, 0], minlength=layer.n // layer.pe)


def slice_weight_fields(layer) -> np.ndarray:
    """[T, PE·SIMD] the bit-serial weight ROM: word t holds tile t of the schedule, lane
    p·SIMD + s the signed slice k of W[sf·SIMD + s][nf·PE + p] (s+1 bits two's complement)."""
    w = np.asarray(layer.weights, np.int64)
    sl = np.moveaxis(np.sign(w)[..., None] * sign_magnitude_slices(w, layer.wbits, layer.slice_bits), -1, 0)  # [S, K, N]
    nf, sf = layer.n // layer.pe, layer.k // layer.simd
    tiles = sl.reshape(len(sl), sf, layer.simd, nf, layer.pe).transpose(3, 1, 0, 4, 2)  # [NF, SF, S, PE, SIMD]
    sched = bitserial_schedule(layer)
    return tiles[sched[:, 0], sched[:, 1], sched[:, 2]].reshape(len(sched), layer.pe * layer.simd)


def schedule_fields(layer) -> np.ndarray:
    """[T, 1] the bit-serial schedule ROM: word t = {last, first, k, sf} of tile t, sf in the
    low bits (schedule_field_bits wide each)."""
    sched = bitserial_schedule(layer)
    sfw, kw = schedule_field_bits(layer)
    return (sched[:, 1] | (sched[:, 2] << sfw) | (sched[:, 3] << (sfw + kw))
            | (sched[:, 4] << (sfw + kw + 1)))[:, None]


def schedule_field_bits(layer) -> tuple[int, int]:
    """(sf bits, slice-index bits) of a schedule word, each at least 1."""
    return (max(1, _clog2(layer.k // layer.simd)),
            max(1, _clog2(slice_count(layer.wbits, layer.slice_bits))))


# -- ROM layout ----------------------------------------------------------------------------
# A dense layer reads two ROMs (templates/verilog/nnfpga_dense.sv.j2, templates/hls):
#   weights     NF·SF words of PE·SIMD lanes, wbits each: word nf·SF + sf, lane p·SIMD + s
#               holds W[sf·SIMD + s][nf·PE + p]
#   parameters  NF words of PE lanes, mult_bits + acc_bits each: word nf, lane p holds
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
    dtype = np.int64 if mult_bits(layer.mult) + layer.acc_bits <= 62 else object
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
    return [_pack(row, mult_bits(layer.mult) + layer.acc_bits) for row in param_fields(layer).tolist()]


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


# -- LUT products --------------------------------------------------------------------------

