"""The timing contract of the stream modules nnfpga_window and nnfpga_pool, in Python.

What the compiler needs to size the FIFOs of branches so they cannot deadlock, and to
predict cycles. Everything follows from each module's readiness rule (the header comment
of templates/verilog/nnfpga_window.sv.j2 and nnfpga_pool.sv.j2):

    *_needed_beats(p, j)    input beats of the frame (counted from its first beat, every
                            earlier frame complete) the module must have accepted before it
                            can emit the frame's output beat j
    *_accept_limit(p, e)    the most input beats (counted across frames from the first) it
                            can have accepted while only e output beats have left it
    *_capacity_beats(p)     accept_limit(p, 0): input beats it takes with its output never read
    *_cycles(p)             steady-state cycles per frame with inputs offered and outputs taken
                            every cycle; input and output side run at this same rate
    *_latency_cycles(p)     cycles from a frame's first input beat accepted to its last output
                            beat, from an idle module, as hw_tests.sim measures it

Counts are in beats (PAR elements each); a frame is one image (window) or FRAME_WINDOWS
windows (pool).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from nnfpga.hardware import MULT_BITS, mult_bits, output_fifo_depth, pool_pipeline_stages, tap_block

WINDOW_STAGES = 2
"""Registers between issuing a window beat and its transfer: S1 (RAM read), S2 (output)."""


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


@dataclass(frozen=True)
class WindowParams:
    """The parameters of nnfpga_window, named as in the Verilog."""
    C: int
    """Channels per pixel."""
    H: int
    """Input image height."""
    W: int
    """Input image width."""
    KH: int
    """Window height (kernel rows)."""
    KW: int
    """Window width (kernel columns)."""
    SH: int
    """Vertical stride."""
    SW: int
    """Horizontal stride."""
    DH: int
    """Vertical dilation."""
    DW: int
    """Horizontal dilation."""
    PT: int
    """Rows of padding above the image."""
    PL: int
    """Columns of padding left of the image."""
    OH: int
    """Output height (bottom padding is whatever it implies)."""
    OW: int
    """Output width (right padding is whatever it implies)."""
    PAR: int
    """Channels per beat; divides C."""
    BITS: int
    """Bits per element."""
    PAD: int
    """Value at padded positions (truncated to BITS bits)."""
    TH: int = 1
    """Kernel rows of the taps one output beat holds (1, or TW = KW and TH divides KH)."""
    TW: int = 1
    """Kernel columns of the taps one output beat holds (divides KW)."""

    def __post_init__(self):
        for name in ("C", "H", "W", "KH", "KW", "SH", "SW", "DH", "DW", "OH", "OW", "PAR", "BITS", "TH", "TW"):
            if getattr(self, name) < 1:
                raise ValueError(f"window {name} must be >= 1, got {getattr(self, name)}")
        if self.PT < 0 or self.PL < 0:
            raise ValueError(f"window padding must be >= 0, got PT={self.PT}, PL={self.PL}")
        if self.C % self.PAR:
            raise ValueError(f"window PAR={self.PAR} does not divide C={self.C}")
        if (self.TH, self.TW) != tap_block(self.KH, self.KW, self.TH * self.TW):
            raise ValueError(f"window taps {self.TH}x{self.TW} per beat: a beat holds part of one kernel row "
                             f"(TH = 1, TW divides KW={self.KW}) or whole rows (TW = KW, TH divides KH={self.KH})")

    def verilog_params(self) -> dict[str, int]:
        return asdict(self)

    @property
    def taps(self) -> int:
        """Window taps per output beat."""
        return self.TH * self.TW

    @property
    def out_par(self) -> int:
        """Elements per output beat."""
        return self.taps * self.PAR

    @property
    def row_beats(self) -> int:
        """Beats per input image row."""
        return self.W * self.C // self.PAR

    @property
    def out_row_beats(self) -> int:
        """Beats per output row (OW windows)."""
        return self.OW * self.KH * self.KW * self.C // (self.PAR * self.taps)

    @property
    def in_beats(self) -> int:
        return self.H * self.row_beats

    @property
    def out_beats(self) -> int:
        return self.OH * self.out_row_beats

    @property
    def rows(self) -> int:
        """Rows in the circular line buffer: min(SPAN, H) + min(SH, H), or more when OH
        leaves unused bottom rows, so that the last output row can wait for all H."""
        span = (self.KH - 1) * self.DH + 1
        return max(min(span, self.H) + min(self.SH, self.H), self.H - self.free_rows(self.OH - 1))

    def need_rows(self, oy: int) -> int:
        """Input rows output row oy must see complete: rule (a). At least row 0, and all
        H for the last row, so each output frame lies within its input frame."""
        if oy == self.OH - 1:
            return self.H
        return _clamp(oy * self.SH - self.PT + (self.KH - 1) * self.DH + 1, 1, self.H)

    def free_rows(self, oy: int) -> int:
        """Input rows no output row from oy on reads: rule (b) lets input run to free + rows."""
        return _clamp(oy * self.SH - self.PT, 0, self.H)


def window_element_order(kh: int, kw: int, c: int, par: int, taps: int) -> list[int]:
    """Row (ky·kw + kx)·c + ch of the window's (ky, kx, c) matrix for each element of one
    window as nnfpga_window streams it: tap blocks, then channel beats, then per tap of the
    block PAR channels. The identity when taps = 1 or par = c."""
    th, tw = tap_block(kh, kw, taps)
    order = []
    for by in range(0, kh, th):
        for bx in range(0, kw, tw):
            for cb in range(c // par):
                for t in range(taps):
                    ky, kx = by + t // tw, bx + t % tw
                    order.extend((ky * kw + kx) * c + cb * par + e for e in range(par))
    return order


def window_needed_beats(p: WindowParams, j: int) -> int:
    return p.need_rows(j // p.out_row_beats) * p.row_beats


def _window_issue_limit(p: WindowParams, issued: int) -> int:
    """Input beats acceptable once `issued` output beats (across frames) left the line buffer."""
    frame, oy = divmod(issued // p.out_row_beats, p.OH)
    return (frame * p.H + p.free_rows(oy) + p.rows) * p.row_beats


def window_accept_limit(p: WindowParams, emitted: int) -> int:
    return _window_issue_limit(p, emitted + WINDOW_STAGES)


def window_capacity_beats(p: WindowParams) -> int:
    return window_accept_limit(p, 0)


def _window_frame_ends(p: WindowParams, frames: int) -> list[int]:
    """Cycle of each frame's last output transfer, input beats offered from cycle 0.

    Both rules move in whole rows and both sides take one beat per cycle, so rows suffice:
    an input row starts the cycle after the output row that frees its slot was issued,
    an output row the cycle after the last input row it needs was accepted.
    """
    in_end: list[int] = []      # cycle of each input row's last beat (global rows)
    out_end: list[int] = []     # cycle of each output row's last beat issued

    def need(q: int) -> int:
        frame, oy = divmod(q, p.OH)
        return frame * p.H + p.need_rows(oy)

    def free(q: int) -> int:
        frame, oy = divmod(q, p.OH)
        return frame * p.H + p.free_rows(oy)

    def issue_row() -> None:
        start = out_end[-1] + 1 if out_end else 0
        n = need(len(out_end))
        if n:
            start = max(start, in_end[n - 1] + 1)
        out_end.append(start + p.out_row_beats - 1)

    q = 0
    for g in range(frames * p.H):
        while g >= free(q) + p.rows:
            q += 1
        while len(out_end) < q:     # rows before q read only input rows before g
            issue_row()
        start = max(in_end[-1] + 1 if in_end else 0, out_end[q - 1] + 1 if q else 0)
        in_end.append(start + p.row_beats - 1)
    while len(out_end) < frames * p.OH:
        issue_row()
    return [out_end[(f + 1) * p.OH - 1] + WINDOW_STAGES for f in range(frames)]


def window_cycles(p: WindowParams) -> int:
    ends = _window_frame_ends(p, 6)
    return ends[-1] - ends[-2]


def window_latency_cycles(p: WindowParams) -> int:
    return _window_frame_ends(p, 1)[0]


@dataclass(frozen=True)
class PoolParams:
    """The parameters of nnfpga_pool, named as in the Verilog."""
    C: int
    """Channels."""
    P: int
    """Window positions reduced into one output."""
    PAR: int
    """Channels per beat, in and out; divides C."""
    IN_BITS: int
    """Bits per input element."""
    IN_SIGNED: int
    """1 if the input is signed (a 1-bit parameter)."""
    MODE: int
    """0 = max (output type = input type), 1 = sum with requantization."""
    OUT_BITS: int
    """Bits per output element (= IN_BITS for MODE 0)."""
    ACC_BITS: int = 32
    """MODE 1: signed accumulator width; BIAS + the sum must fit."""
    MULT: int = 1
    """MODE 1: requantization multiplier, 0 <= MULT < 2^MULT_BITS (nnfpga.hardware)."""
    SHIFT: int = 1
    """MODE 1: requantization shift, 1..62."""
    BIAS: int = 0
    """MODE 1: added to the sum (e.g. -P * input zero point)."""
    OUT_ZP: int = 0
    """MODE 1: output zero point."""
    LO: int = -128
    """MODE 1: clamp low."""
    HI: int = 127
    """MODE 1: clamp high."""
    FRAME_WINDOWS: int = 1
    """Windows per frame: tlast on the last beat of every FRAME_WINDOWS-th window."""

    def __post_init__(self):
        for name in ("C", "P", "PAR", "IN_BITS", "OUT_BITS", "ACC_BITS", "FRAME_WINDOWS"):
            if getattr(self, name) < 1:
                raise ValueError(f"pool {name} must be >= 1, got {getattr(self, name)}")
        if self.C % self.PAR:
            raise ValueError(f"pool PAR={self.PAR} does not divide C={self.C}")
        if self.MODE not in (0, 1) or self.IN_SIGNED not in (0, 1):
            raise ValueError(f"pool MODE and IN_SIGNED must be 0 or 1, got {self.MODE}, {self.IN_SIGNED}")
        if self.MODE == 0 and self.OUT_BITS != self.IN_BITS:
            raise ValueError(f"max pooling keeps the input type: OUT_BITS={self.OUT_BITS} != IN_BITS={self.IN_BITS}")
        if not (0 <= self.MULT < 1 << MULT_BITS and 1 <= self.SHIFT <= 62):
            raise ValueError(f"pool MULT must be in [0, 2^{MULT_BITS}) and SHIFT in 1..62, got {self.MULT}, {self.SHIFT}")

    def verilog_params(self) -> dict[str, int]:
        return asdict(self)

    @property
    def beats_per_position(self) -> int:
        return self.C // self.PAR

    @property
    def in_beats(self) -> int:
        return self.FRAME_WINDOWS * self.P * self.beats_per_position

    @property
    def out_beats(self) -> int:
        return self.FRAME_WINDOWS * self.beats_per_position


def _pool_last_position_beat(p: PoolParams, k: int) -> int:
    """Index of the input beat that completes output beat k (both counted the same way)."""
    window, cb = divmod(k, p.beats_per_position)
    return (window * p.P + p.P - 1) * p.beats_per_position + cb


def pool_needed_beats(p: PoolParams, j: int) -> int:
    return _pool_last_position_beat(p, j) + 1


def pool_stages(p: PoolParams) -> int:
    """Registers between a window's last input beat and its result's transfer."""
    return pool_pipeline_stages(p.MODE, p.ACC_BITS, mult_bits([p.MULT]))


def pool_accept_limit(p: PoolParams, emitted: int) -> int:
    # The pipeline and the output FIFO hold results emitted..emitted+depth-1 (a result's
    # place is reserved when its last-position beat is taken); the next one waits for them.
    return _pool_last_position_beat(p, emitted + output_fifo_depth(pool_stages(p)))


def pool_capacity_beats(p: PoolParams) -> int:
    return pool_accept_limit(p, 0)


def pool_cycles(p: PoolParams) -> int:
    # The input never waits while the output is taken, and the output has fewer beats.
    return p.in_beats


def pool_latency_cycles(p: PoolParams) -> int:
    return p.in_beats - 1 + pool_stages(p)
