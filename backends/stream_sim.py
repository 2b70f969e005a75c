"""Cycle-level model of a stream design: the latency and interval hw_tests.sim measures.

Each module is modelled by the registers that decide its handshakes (counters, valid bits,
the line buffer's row counts, the dense layer's ping-pong flags, the credit counters and
output FIFOs of nnfpga_dense, nnfpga_pool and nnfpga_add), with the update rules of its
template; data is left out. Every cycle: each stream's tvalid comes from its producer's
registers (or the input, offered while beats remain), each tready from its consumer's
registers (nnfpga_add's also from the other input's tvalid: it takes both together); no
module passes m_axis_tready on combinationally (nnfpga_dense, nnfpga_pool and nnfpga_add
issue work only while their output FIFO has room for the beats in flight, and
m_axis_tready reaches only that FIFO). Readies are evaluated from the output back to the
input all the same, so a module that did pass it on would be modelled by its `ready`; then
every module takes its clock edge. The pipeline lengths come from nnfpga/hardware.py, as the
templates' PIPE_STAGES do. A template change that moves a handshake must change its model
here: tests/test_stream_sim.py and the Verilator tests, which hold the measurement to this
model exactly, show a mismatch.

Why a simulation and not a formula per module: a module's rate depends on how its producer
delivers and its consumer accepts. The strided CNN shows it: its second window
(rule (b) of nnfpga_window) stops its input until an output row is done, while the dense
layer before it delivers 8 beats per 9 cycles, then bursts after a stall. The window alone,
fed one beat per cycle, takes 432 cycles a frame; in the network it averages 442 (Verilator,
hw_tests/test_cnn_models.py), and the first frame's latency is 801 where beat-by-beat
recurrences without backpressure (backends/stream_latency.py) give 769. This model gives
442 and 801.

What is measured (hw_tests/axis_tb.py): from an idle design, TIMING_FRAMES inferences back to
back, input offered every cycle and output always taken; latency = last output beat of the
first inference - its first input beat; interval = (last output beat of the last inference -
that of the first) / (TIMING_FRAMES - 1).
"""
from __future__ import annotations

from itertools import accumulate

from nnfpga.backends import stream_model
from nnfpga.backends.stream_graph import Instance, StreamDesign, data_order
from nnfpga.errors import NnfpgaError
from nnfpga.backends.const_graph import layer_pipeline_stages
from nnfpga.hardware import (add_pipeline_stages, bitserial_fold_tiles, mult_bits, output_fifo_depth,
                             pool_pipeline_stages)

TIMING_FRAMES = 8
"""Inferences the harness streams back to back to time (hw_tests.sim `timing_samples`)."""
MAX_CYCLES = 1_000_000
"""Module-cycles (cycles × instances) simulated at most; a larger design is not simulated."""
STALL_SLACK = 100
"""A design with no transfer on any stream for longer than its slowest module's cycles per
frame plus this is deadlocked (a dense layer may compute a whole vector between transfers)."""


class _Window:
    def __init__(self, inst: Instance):
        self.p = p = stream_model.WindowParams(**{k: int(v) for k, v in inst.params.items()})
        self.need = [p.need_rows(oy) for oy in range(p.OH)]
        self.free = [p.free_rows(oy) for oy in range(p.OH)]
        self.rows_in = self.in_col = self.e = 0
        self.s1 = self.s2 = False

    def valid(self, k):
        return self.s2

    def ready(self, k, valid_in, ready_out):
        return self.rows_in < self.free[self.e // self.p.out_row_beats] + self.p.rows

    def clock(self, took, gave, valid_in, ready_out):
        p = self.p
        advance = not self.s2 or ready_out[0]
        issue = self.rows_in >= self.need[self.e // p.out_row_beats]
        take = advance and issue
        rows = self.rows_in
        if took[0]:
            rows += self.in_col == p.row_beats - 1
            self.in_col = (self.in_col + 1) % p.row_beats
        if take:
            if self.e == p.out_beats - 1:
                rows -= p.H
            self.e = (self.e + 1) % p.out_beats
        self.rows_in = rows
        if advance:
            self.s1, self.s2 = issue, self.s1


class _CreditedOutput:
    """The output side shared by nnfpga_dense, nnfpga_pool and nnfpga_add: a beat entered
    (issued) at cycle t rides valid registers to the FIFO's write at t + stages - 1 and is
    offered from t + stages; its place is reserved from its issue until it leaves
    (`reserved`, and `credit`, the register that allows the next issue)."""

    def __init__(self, stages: int):
        self.depth = output_fifo_depth(stages)
        self.pipe = [False] * (stages - 1)   # valid after 1 .. stages - 1 edges; the last is the FIFO write
        self.count = self.reserved = 0       # beats in the FIFO; beats issued and not yet taken
        self.credit = True

    def valid(self):
        return self.count > 0

    def clock(self, enter, pop):
        push = self.pipe[-1]
        if push and self.count == self.depth:
            raise NnfpgaError("cycle model: a beat reached a full output FIFO (the credit rule is broken)")
        self.count += push - pop
        if enter and not pop:
            self.credit = self.reserved + 1 < self.depth
            self.reserved += 1
        elif pop and not enter:
            self.credit = True
            self.reserved -= 1
        self.pipe = [enter] + self.pipe[:-1]


class _Dense:
    def __init__(self, inst: Instance):
        l = inst.layer
        self.beats = l.k // int(inst.params["IN_PAR"])
        # the last tile of each output fold: every SF-th, or as the bit-serial schedule lists them
        fold_tiles = bitserial_fold_tiles(l) if l.core == "bitserial" else [l.k // l.simd] * (l.n // l.pe)
        self.folds = int(sum(fold_tiles))
        self.last_of_fold = set(accumulate(int(t) for t in fold_tiles))
        self.full = [False, False]
        self.fill_sel = self.fill_beat = self.comp_sel = self.fold = 0
        self.out = _CreditedOutput(layer_pipeline_stages(l))

    def valid(self, k):
        return self.out.valid()

    def ready(self, k, valid_in, ready_out):
        return not self.full[self.fill_sel]

    def clock(self, took, gave, valid_in, ready_out):
        issue = self.full[self.comp_sel] and self.out.credit
        last_sf = self.fold + 1 in self.last_of_fold
        full = list(self.full)
        if took[0]:
            if self.fill_beat == self.beats - 1:
                self.fill_beat = 0
                full[self.fill_sel] = True
                self.fill_sel ^= 1
            else:
                self.fill_beat += 1
        if issue:
            if self.fold == self.folds - 1:
                self.fold = 0
                full[self.comp_sel] = False
                self.comp_sel ^= 1
            else:
                self.fold += 1
        self.full = full
        self.out.clock(issue and last_sf, gave[0])


class _Pool:
    def __init__(self, inst: Instance):
        self.cb_beats, self.positions = int(inst.params["C"]) // int(inst.params["PAR"]), int(inst.params["P"])
        self.cb = self.pos = 0
        self.out = _CreditedOutput(pool_pipeline_stages(int(inst.params["MODE"]), int(inst.params["ACC_BITS"]),
                                                        mult_bits([int(inst.params["MULT"])])))

    def valid(self, k):
        return self.out.valid()

    def ready(self, k, valid_in, ready_out):
        return self.out.credit or self.pos != self.positions - 1

    def clock(self, took, gave, valid_in, ready_out):
        last_pos = self.pos == self.positions - 1
        if took[0]:
            if self.cb == self.cb_beats - 1:
                self.cb = 0
                self.pos = 0 if last_pos else self.pos + 1
            else:
                self.cb += 1
        self.out.clock(took[0] and last_pos, gave[0])


class _Add:
    def __init__(self, inst: Instance):
        self.out = _CreditedOutput(add_pipeline_stages())

    def valid(self, k):
        return self.out.valid()

    def ready(self, k, valid_in, ready_out):
        return self.out.credit and valid_in[1 - k]

    def clock(self, took, gave, valid_in, ready_out):
        self.out.clock(took[0] and took[1], gave[0])


class _Fork:
    def __init__(self, inst: Instance):
        self.pend = [False, False]
        self.skid = False

    def valid(self, k):
        return self.pend[k]

    def ready(self, k, valid_in, ready_out):
        return not self.skid

    def clock(self, took, gave, valid_in, ready_out):
        free = all(not p or r for p, r in zip(self.pend, ready_out))
        if free:
            self.pend = [self.skid or took[0]] * 2
            self.skid = False
        else:
            self.pend = [p and not r for p, r in zip(self.pend, ready_out)]
            self.skid = self.skid or took[0]


class _Fifo:
    def __init__(self, inst: Instance):
        self.depth = int(inst.params["DEPTH"])
        self.ram = self.depth >= int(inst.params.get("RAM_MIN_DEPTH", 64)) and self.depth >= 2
        self.count = self.ram_count = 0
        self.q = False

    def valid(self, k):
        return self.q if self.ram else self.count > 0

    def ready(self, k, valid_in, ready_out):
        return self.count != self.depth

    def clock(self, took, gave, valid_in, ready_out):
        if self.ram:
            rd = self.ram_count > 0 and (not self.q or ready_out[0])
            self.ram_count += took[0] - rd
            self.q = rd or (self.q and not ready_out[0])
        self.count += took[0] - gave[0]


class _Concat:
    def __init__(self, inst: Instance):
        par = int(inst.params["PAR"])
        self.a_beats, self.pixel_beats = int(inst.params["CA"]) // par, (int(inst.params["CA"]) + int(inst.params["CB"])) // par
        self.beat = 0
        self.o = self.skid = False

    def valid(self, k):
        return self.o

    def ready(self, k, valid_in, ready_out):
        return not self.skid and (self.beat < self.a_beats) == (k == 0)

    def clock(self, took, gave, valid_in, ready_out):
        take = took[0] or took[1]
        if not self.o or ready_out[0]:
            self.o, self.skid = self.skid or take, False
        else:
            self.skid = self.skid or take
        if take:
            self.beat = (self.beat + 1) % self.pixel_beats


class _Repack:
    def __init__(self, inst: Instance):
        i, o = int(inst.params["IN_PAR"]), int(inst.params["OUT_PAR"])
        self.narrow, self.r = i >= o, max(i, o) // min(i, o)
        self.count = 0
        self.held = False   # narrowing: `next` full; widening: the output register full

    def valid(self, k):
        return self.count > 0 if self.narrow else self.held

    def ready(self, k, valid_in, ready_out):
        return not self.held if self.narrow else self.count != self.r

    def clock(self, took, gave, valid_in, ready_out):
        if self.narrow:
            if self.count == 0 or (self.count == 1 and ready_out[0]):
                if self.held or took[0]:
                    self.count, self.held = self.r, False
                elif gave[0]:
                    self.count -= 1
            else:
                self.count -= gave[0]
                self.held = self.held or took[0]
            return
        waiting = self.count == self.r
        completes = took[0] and self.count == self.r - 1
        o_free = not self.held or ready_out[0]
        if o_free:
            self.held = waiting or completes
        if o_free and (waiting or completes):
            self.count = 0
        elif took[0]:
            self.count += 1


MODELS = {"nnfpga_window": _Window, "nnfpga_dense": _Dense, "nnfpga_pool": _Pool, "nnfpga_add": _Add,
          "nnfpga_fork": _Fork, "nnfpga_fifo": _Fifo, "nnfpga_concat": _Concat, "nnfpga_repack": _Repack}


def simulate(design: StreamDesign, frames: int = TIMING_FRAMES) -> tuple[int, float] | None:
    """(latency, interval) of `frames` inferences streamed back to back into the idle design,
    as the harness measures them; None if the design is too large to simulate (MAX_CYCLES)."""
    if frames < 2:
        raise ValueError(f"frames must be >= 2 to measure an interval, got {frames}")
    order = data_order(design)
    estimate = (frames + 2) * max(design.interval, design.input.beats, design.output.beats) * len(order)
    if estimate > MAX_CYCLES:
        return None
    models = []
    for inst in order:
        if inst.module not in MODELS:
            raise NnfpgaError(f"no cycle model for module {inst.module} (instance {inst.name})")
        models.append(MODELS[inst.module](inst))
    index = {id(design.input): 0}
    for inst in order:
        for s in inst.outputs.values():
            index[id(s)] = len(index)
    producer = {index[id(s)]: (m, k) for inst, m in zip(order, models) for k, s in enumerate(inst.outputs.values())}
    ins = [[index[id(s)] for s in inst.inputs.values()] for inst in order]
    outs = [[index[id(s)] for s in inst.outputs.values()] for inst in order]
    out_stream = index[id(design.output)]

    in_total, out_beats = frames * design.input.beats, design.output.beats
    sent = received = 0
    first_in, frame_ends = None, []
    valid = [False] * len(index)
    ready = [False] * len(index)
    cycle = idle = 0
    stall_limit = design.interval + STALL_SLACK
    while len(frame_ends) < frames:
        valid[0] = sent < in_total
        for s, (m, k) in producer.items():
            valid[s] = m.valid(k)
        ready[out_stream] = True
        for m, i, o in zip(reversed(models), reversed(ins), reversed(outs)):
            v, r = [valid[s] for s in i], [ready[s] for s in o]
            for k, s in enumerate(i):
                ready[s] = m.ready(k, v, r)
        fire = [v and r for v, r in zip(valid, ready)]
        if fire[0]:
            first_in = cycle if first_in is None else first_in
            sent += 1
        if fire[out_stream]:
            received += 1
            if received % out_beats == 0:
                frame_ends.append(cycle)
        for m, i, o in zip(models, ins, outs):
            m.clock([fire[s] for s in i], [fire[s] for s in o], [valid[s] for s in i], [ready[s] for s in o])
        idle = 0 if any(fire) else idle + 1
        if idle > stall_limit:
            raise NnfpgaError(f"the cycle model of the stream design stalls at cycle {cycle} with {received} "
                              f"of {frames * out_beats} output beats out (a deadlock: check the skip FIFO depths)")
        cycle += 1
    interval = (frame_ends[-1] - frame_ends[0]) / (frames - 1)
    return frame_ends[0] - first_in, int(interval) if interval.is_integer() else interval
