"""cocotb testbench for any accelerator with the nnfpga stream contract (see sim.py).

Loaded by the simulator's Python, configured by the JSON file named in $NNFPGA_SIM_CONFIG.
It resets the design, streams every input row through with random input gaps and random
output backpressure, lets the pipeline idle, then streams a few rows back to back to time
the interval and the latency. Outputs, mismatch counts and timings go back to the caller
as files; a failure is written to the result file before the test fails, so the caller
can show it.

Speed is the point of the shape: a regression pushes hundreds of inferences of thousands of
cycles each through here, and cocotb's cost is per await and per signal access (a few
microseconds each). So one coroutine does the driver's and the monitor's work in a single
loop: one RisingEdge per cycle (the trigger object reused), one read per handshake signal,
writes only when a value changes, beats packed and unpacked outside the loop. While the
design computes and neither stream can move, the loop sleeps on `tb_wake`, a signal the
simulation wrapper (sim.py) derives from the handshake signals, instead of waking on every
edge; `cocotb.triggers.First` over two signals would cost as much as ten edges.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge, Timer
from cocotb.utils import get_sim_steps

CONFIG_ENV = "NNFPGA_SIM_CONFIG"
CLOCK_NS = 10
RESET_CYCLES = 4
PROGRESS_SECONDS = 0.2


def pack_beats(x: np.ndarray, bits: int, par: int) -> list[list[int]]:
    """[B, K] integers -> per row, K/par beat words; element j of a beat at bits [j*bits +: bits]."""
    mask = (1 << bits) - 1
    rows, k = x.shape
    fields = (x.astype(np.int64) & mask).reshape(rows, k // par, par)
    if par * bits <= 62:
        shifts = np.arange(par, dtype=np.int64) * bits
        return (fields << shifts).sum(axis=2).tolist()
    return [[sum(int(v) << (j * bits) for j, v in enumerate(beat)) for beat in row] for row in fields.tolist()]


def unpack_beats(words: list[int], bits: int, par: int, signed: bool) -> list[int]:
    """Beat words of one inference -> its elements (two's complement when signed)."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    values = [(w >> (j * bits)) & mask for w in words for j in range(par)]
    if signed:
        values = [v - (1 << bits) if v & sign else v for v in values]
    return values


class ProtocolError(AssertionError):
    """The design broke the stream contract (tlast, X values, or it stopped moving)."""


class Streamer:
    """Drives s_axis and watches m_axis of `dut`, one clock edge at a time."""

    def __init__(self, dut, cfg: dict):
        self.dut = dut
        self.edge = RisingEdge(dut.clk)
        self.in_beats = cfg["input"]["beats"]
        self.out_beats = cfg["output"]["beats"]
        self.stall_cycles = cfg["stall_cycles"]
        self.progress_path = cfg["progress"]
        self.period_steps = get_sim_steps(CLOCK_NS, "ns")
        self.cycle = 0          # rising edges since the clock started, as of the last update
        self.done = 0           # inferences finished over the whole run
        self.transfers = 0      # beats moved on either stream, for the watchdog
        self.where = "reset"    # what the loop was waiting for when it last went to sleep
        self._last_report = 0.0

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= PROGRESS_SECONDS:
            self._last_report = now
            tmp = self.progress_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps({"done": self.done, "cycle": self.cycle}))
            os.replace(tmp, self.progress_path)

    async def watchdog(self) -> None:
        """Fail the test when nothing moves for `stall_cycles` (the main loop may be asleep)."""
        window = Timer(self.stall_cycles * CLOCK_NS, unit="ns")
        seen = -1
        while True:
            await window
            if self.transfers == seen:
                raise ProtocolError(f"the design stopped: no transfer on either stream for "
                                    f"{self.stall_cycles} cycles; {self.where}")
            seen = self.transfers

    async def idle(self, cycles: int) -> None:
        for _ in range(cycles):
            await self.edge
        self.cycle += cycles

    async def drain(self, cycles: int, after: str) -> None:
        """`cycles` edges with m_axis_tready high and no input; any output beat offered is one
        no input asked for, a fault even when every expected beat came and matched."""
        self.dut.m_axis_tready.value = 1
        m_tvalid = self.dut.m_axis_tvalid
        for _ in range(cycles):
            await self.edge
            self.cycle += 1
            if m_tvalid.value:
                raise ProtocolError(f"the design sent an output beat after {after} (cycle {self.cycle}); "
                                    "every expected output beat had already arrived")

    async def stream(self, rows: list[list[int]], gap_prob: float, backpressure_prob: float,
                     rng: random.Random) -> tuple[list[list[int]], list[int], list[int]]:
        """Push `rows` (beat words per inference) through; return (output words per inference,
        cycle of each inference's first accepted input beat, cycle of each last output beat)."""
        dut = self.dut
        s_tdata, s_tvalid, s_tlast, s_tready = dut.s_axis_tdata, dut.s_axis_tvalid, dut.s_axis_tlast, dut.s_axis_tready
        m_tdata, m_tvalid, m_tlast, m_tready = dut.m_axis_tdata, dut.m_axis_tvalid, dut.m_axis_tlast, dut.m_axis_tready
        edge, wake, rand = self.edge, dut.tb_wake.value_change, rng.random
        last_in_beat, last_out_beat = self.in_beats - 1, self.out_beats - 1
        count = len(rows)

        in_row = in_beat = 0            # next input beat to present
        out_row = out_beat = 0          # next output beat expected
        valid = last = 0                # s_axis tvalid/tlast as meant for the next edge
        wire_valid = 0                  # s_axis_tvalid as last written
        ready = 0                       # m_axis_tready as last written
        words: list[int] = []
        outputs: list[list[int]] = []
        first_in: list[int] = []
        last_out: list[int] = []
        cycle = self.cycle
        s_tlast.value = 0
        m_tready.value = 0

        while out_row < count:
            # Drive what the design sees at the next edge. tvalid, once high, stays high
            # until its transfer (AXI4-Stream); tready may change freely.
            if not valid and in_row < count and not (gap_prob and rand() < gap_prob):
                s_tdata.value = rows[in_row][in_beat]
                beat_last = int(in_beat == last_in_beat)
                if beat_last != last:
                    s_tlast.value = last = beat_last
                valid = 1
            if valid != wire_valid:
                s_tvalid.value = wire_valid = valid
            want = 0 if backpressure_prob and rand() < backpressure_prob else 1
            if want != ready:
                m_tready.value = ready = want

            await edge
            cycle += 1

            # Values read here are the ones the design saw at this edge (cocotb runs before
            # Verilator evaluates the edge).
            in_moved = valid and s_tready.value
            if in_moved:
                if in_beat == 0:
                    first_in.append(cycle)
                if in_beat == last_in_beat:
                    in_beat = 0
                    in_row += 1
                else:
                    in_beat += 1
                valid = 0
                self.transfers += 1
            out_valid = m_tvalid.value
            if ready and out_valid:
                data = m_tdata.value
                if not data.is_resolvable:
                    raise ProtocolError(f"m_axis_tdata is {data} (X/Z bits) at output beat {out_beat} "
                                        f"of inference {out_row}, cycle {cycle}")
                words.append(data.to_unsigned())
                is_last = bool(m_tlast.value)
                if is_last != (out_beat == last_out_beat):
                    raise ProtocolError(f"m_axis_tlast is {int(is_last)} at output beat {out_beat} of inference "
                                        f"{out_row} (cycle {cycle}); it must be 1 exactly on beat {last_out_beat}")
                self.transfers += 1
                if is_last:
                    outputs.append(words)
                    words = []
                    last_out.append(cycle)
                    out_row += 1
                    out_beat = 0
                    self.done += 1
                    self.cycle = cycle
                    self.report()
                else:
                    out_beat += 1
            elif not out_valid and not in_moved and (valid or in_row == count):
                # Neither stream can move until the design raises s_axis_tready (for the beat
                # we hold) or m_axis_tvalid: sleep until tb_wake changes. It can only rise
                # during this edge's evaluation or a later one, and the loop then wakes in
                # time for the next edge. Skipped edges are counted from simulated time.
                self.cycle = cycle
                self.where = (f"waiting at cycle {cycle} with {out_row} of {count} inferences out, "
                              + (f"holding input beat {in_beat} of inference {in_row} (s_axis_tready low)"
                                 if valid else "all input sent") + ", m_axis_tvalid low")
                t0 = get_sim_time()
                await wake
                cycle += (get_sim_time() - t0) // self.period_steps

        s_tvalid.value = 0
        self.cycle = cycle
        return outputs, first_in, last_out


def _write(path: str, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


@cocotb.test()
async def run_inferences(dut):
    """Bit-exact outputs under random gaps and backpressure, then interval and latency."""
    cfg = json.loads(Path(os.environ[CONFIG_ENV]).read_text())
    tb = Streamer(dut, cfg)

    async def guarded(coro):
        try:
            return await coro
        except Exception as e:  # written for the caller, then the test fails as usual
            why = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            _write(cfg["result"], {"error": why})
            raise

    cocotb.start_soon(guarded(tb.watchdog()))
    await guarded(_run(dut, tb, cfg))


async def _run(dut, tb: Streamer, cfg: dict) -> None:
    started = time.perf_counter()
    x = np.load(cfg["inputs"])
    expected = np.load(cfg["expected"]) if cfg["expected"] else None
    cin, cout = cfg["input"], cfg["output"]
    rows = pack_beats(x, cin["bits"], cin["par"])
    rng = random.Random(cfg["seed"])

    def unpack_all(words):
        return np.array([unpack_beats(w, cout["bits"], cout["par"], cout["signed"]) for w in words],
                        dtype=np.int64).reshape(len(words), cout["elements"])

    # Reset (synchronous, active low) with both streams idle.
    dut.rst_n.value = 0
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.s_axis_tdata.value = 0
    dut.m_axis_tready.value = 0
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await tb.idle(RESET_CYCLES)
    dut.rst_n.value = 1
    await tb.idle(1)

    loop_start = time.perf_counter()
    outputs = unpack_all((await tb.stream(rows, cfg["gap_prob"], cfg["backpressure_prob"], rng))[0])
    np.save(cfg["outputs"], outputs)
    mismatches = 0
    if expected is not None:
        bad = np.flatnonzero(np.any(outputs != expected, axis=1))
        mismatches = len(bad)
        for i in bad[:5]:
            dut._log.warning("inference %d: expected %s, got %s", i, expected[i].tolist(), outputs[i].tolist())

    interval = latency = None
    timing_mismatches = 0
    n = cfg["timing_samples"]
    await tb.drain(cfg["idle_cycles"] if n else cfg["drain_cycles"], "the last expected inference")
    if n:
        picks = [i % len(rows) for i in range(n)]
        words, first_in, last_out = await tb.stream([rows[i] for i in picks], 0.0, 0.0, rng)
        latency = last_out[0] - first_in[0]
        if n >= 2:
            interval = (last_out[-1] - last_out[0]) / (n - 1)
        if expected is not None:
            timing_mismatches = int(np.any(unpack_all(words) != expected[picks], axis=1).sum())
            if timing_mismatches:
                dut._log.warning("%d of %d back-to-back inferences differ from expected", timing_mismatches, n)
        await tb.drain(cfg["drain_cycles"], "the last back-to-back inference")
    loop_seconds = time.perf_counter() - loop_start

    tb.report(force=True)
    _write(cfg["result"], {
        "error": None,
        "mismatches": mismatches,
        "timing_mismatches": timing_mismatches,
        "cycles_per_inference": interval,
        "latency_cycles": latency,
        "cycles": tb.cycle,
        "loop_seconds": loop_seconds,
        "testbench_seconds": time.perf_counter() - started,
    })
    dut._log.info("%d inferences, %d cycles in %.3f s: %.0f inferences/s, %.0f cycles/s", tb.done, tb.cycle,
                  loop_seconds, tb.done / max(loop_seconds, 1e-9), tb.cycle / max(loop_seconds, 1e-9))
