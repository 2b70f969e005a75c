"""Device table: the resources that budgets, folding and the open flow read.

Figures are the vendors' datasheet numbers for the named part (LUTs are 6-input for Xilinx
and 4-input for ECP5; BRAM in bits: RAMB36 = 36 Kib, DP16KD = 18 Kib).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from nnfpga.errors import NnfpgaError, PipelineError


@dataclass(frozen=True)
class Device:
    name: str
    """Name used by --target."""
    family: str
    """'ecp5', 'xc7' or 'xcup' (UltraScale+)."""
    part: str
    """Vendor part number (Vivado part, or nextpnr device)."""
    package: str
    """Package (nextpnr --package / part suffix)."""
    speed: str
    """Speed grade."""
    luts: int
    """Logic LUTs (LUT4 on ECP5, LUT6 on Xilinx)."""
    ffs: int
    """Flip-flops."""
    dsps: int
    """Hard multiplier blocks."""
    dsp_shape: tuple[int, int]
    """Widest signed multiply one block does (a x b bits)."""
    bram_bits: int
    """Block RAM capacity in bits."""
    bram_block: str
    """Block RAM primitive name."""


DEVICES: dict[str, Device] = {d.name: d for d in [
    Device("xc7z020", "xc7", "xc7z020clg400-1", "clg400", "1", 53_200, 106_400, 220, (25, 18),
           140 * 36 * 1024, "RAMB36E1"),
    Device("xczu3eg", "xcup", "xczu3eg-sbva484-1-e", "sbva484", "1", 70_560, 141_120, 360, (27, 18),
           216 * 36 * 1024, "RAMB36E2"),
    Device("ecp5-25k", "ecp5", "LFE5U-25F", "CABGA256", "6", 24_288, 24_288, 28, (18, 18),
           56 * 18 * 1024, "DP16KD"),
    Device("ecp5-85k", "ecp5", "LFE5U-85F", "CABGA381", "6", 83_640, 83_640, 156, (18, 18),
           208 * 18 * 1024, "DP16KD"),
]}
DEFAULT_DEVICE = "ecp5-85k"


def device(name: str) -> Device:
    if name not in DEVICES:
        raise NnfpgaError(f"unknown target '{name}'; known devices: {', '.join(DEVICES)}")
    return DEVICES[name]


def pass_device(who: str, name: str, budget: float = 1.0) -> Device:
    """The device a pass designs for, with `budget` (0, 1] of each of its LUTs, FFs, DSPs and
    block RAM: a pass's `device=` (else the build's target) and `budget=` options."""
    if name not in DEVICES:
        raise PipelineError(f"{who}: unknown device '{name}'; known devices: {', '.join(DEVICES)}")
    if not 0 < budget <= 1:
        raise PipelineError(f"{who}: budget={budget:g} must be in (0, 1]: the share of {name}'s LUTs, FFs, "
                            "DSPs and block RAM the design may take")
    dev = DEVICES[name]
    if budget == 1:
        return dev
    return replace(dev, luts=int(dev.luts * budget), ffs=int(dev.ffs * budget), dsps=int(dev.dsps * budget),
                   bram_bits=int(dev.bram_bits * budget))
