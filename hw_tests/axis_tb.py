"""cocotb testbench for any accelerator with the nnfpga stream contract (see sim.py).

Loaded by the simulator's Python, configured by the JSON file named in $NNFPGA_SIM_CONFIG.
It resets the design, streams every input row through with random input gaps and random
output backpressure, lets the pipeline idle, then streams a few rows back to back to time
the interval and the latency, and finally holds m_axis_tready high for a while: any output
beat then is one too many. Outputs, mismatch counts and timings go back to the caller as
files; a failure is written to the result file before the test fails, so the caller can
show it.

The streams are driven and watched by cocotbext-axi, the AXI-Stream library cocotb users
know: an AxiStreamSource on s_axis (its pause generator makes the input gaps), an
AxiStreamSink on m_axis (its pause generator makes the backpressure) and an
AxiStreamMonitor on s_axis that timestamps the beats the design accepts (the source's own
timestamp is when it offers a beat, one cycle or more earlier). The library checks no
contract of ours, so the checks stay here: each output frame (delimited by tlast) must be
exactly the design's output beat count long, X bits in an output beat fail the test (the
library raises ValueError reading them), and a watchdog fails the test when no frame
completes on either stream for `stall_cycles`. Whole-model regressions use the faster
self-checking SystemVerilog testbench (fastsim.py) instead.
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
from cocotb.triggers import ClockCycles, Timer
from cocotb.utils import get_sim_steps
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamMonitor, AxiStreamSink, AxiStreamSource

from nnfpga.hw_tests.beats import pack_beats, unpack_beats

CONFIG_ENV = "NNFPGA_SIM_CONFIG"
CLOCK_NS = 10
RESET_CYCLES = 4
PROGRESS_SECONDS = 0.2


class ProtocolError(AssertionError):
    """The design broke the stream contract (tlast, extra beats, or it stopped moving)."""


def _pauses(probability: float, rng: random.Random):
    """The pause generator cocotbext-axi reads once per clock edge: True = hold back this cycle."""
    while True:
        yield rng.random() < probability


class Streamer:
    """Drives s_axis and takes m_axis of `dut` through cocotbext-axi."""

    def __init__(self, dut, cfg: dict):
        self.dut = dut
        self.out_beats = cfg["output"]["beats"]
        self.stall_cycles = cfg["stall_cycles"]
        self.progress_path = cfg["progress"]
        self.period_steps = get_sim_steps(CLOCK_NS, "ns")
        reset = dict(reset=dut.rst_n, reset_active_level=False, byte_lanes=1)  # one beat word per "byte"
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, **reset)
        self.accepted = AxiStreamMonitor(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, **reset)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, **reset)
        for part in (self.source, self.accepted, self.sink):
            part.log.setLevel("WARNING")  # the library logs every frame at INFO
        self.done = 0           # inferences finished over the whole run
        self.frames_in = 0      # input frames accepted, for the watchdog
        self.where = "reset"    # what the testbench was waiting for
        self._last_report = 0.0

    @property
    def cycle(self) -> int:
        return get_sim_time() // self.period_steps

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= PROGRESS_SECONDS:
            self._last_report = now
            tmp = self.progress_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps({"done": self.done, "cycle": self.cycle}))
            os.replace(tmp, self.progress_path)

    async def watchdog(self) -> None:
        """Fail the test when no frame completes on either stream for `stall_cycles`."""
        window = Timer(self.stall_cycles * CLOCK_NS, unit="ns")
        seen = None
        while True:
            await window
            # Both sums only grow while frames complete (frames move from the queues to the counts).
            now = (self.frames_in + self.accepted.count(), self.done + self.sink.count())
            if now == seen:
                raise ProtocolError(f"the design stopped: no frame completed on either stream for "
                                    f"{self.stall_cycles} cycles; {self.where}")
            seen = now

    async def drain(self, cycles: int, after: str) -> None:
        """`cycles` edges with m_axis_tready high and no input; any output beat offered is one
        no input asked for, a fault even when every expected beat came and matched."""
        self.sink.clear_pause_generator()
        self.sink.pause = False
        await ClockCycles(self.dut.clk, cycles)
        if not self.sink.empty() or self.sink.active:
            raise ProtocolError(f"the design sent an output beat after {after} (by cycle {self.cycle}); "
                                "every expected output beat had already arrived")

    def _pace(self, part, probability: float, rng: random.Random) -> None:
        if probability:
            part.set_pause_generator(_pauses(probability, rng))
        else:
            part.clear_pause_generator()
            part.pause = False

    async def stream(self, rows: list[list[int]], gap_prob: float, backpressure_prob: float,
                     rng: random.Random) -> tuple[list[list[int]], list[int], list[int]]:
        """Push `rows` (beat words per inference) through; return (output words per inference,
        cycle of each inference's first accepted input beat, cycle of each last output beat)."""
        self._pace(self.source, gap_prob, rng)
        self._pace(self.sink, backpressure_prob, rng)
        for row in rows:
            self.source.send_nowait(AxiStreamFrame(list(row)))
        outputs: list[list[int]] = []
        last_out: list[int] = []
        count = len(rows)
        for out_row in range(count):
            self.where = f"waiting at cycle {self.cycle} for inference {out_row} of {count}"
            frame = await self.sink.recv()
            if len(frame.tdata) != self.out_beats:
                raise ProtocolError(f"m_axis_tlast came after {len(frame.tdata)} beats in output frame {out_row} "
                                    f"(by cycle {self.cycle}); it must be 1 exactly on beat {self.out_beats - 1}")
            outputs.append(list(frame.tdata))
            last_out.append(frame.sim_time_end // self.period_steps)
            self.done += 1
            self.report()
        first_in = []
        while len(first_in) < count:
            frame = self.accepted.recv_nowait()
            first_in.append(frame.sim_time_start // self.period_steps)
        self.frames_in += count
        self.source.clear_pause_generator()
        self.source.pause = False
        return outputs, first_in, last_out


def _write(path: str, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


@cocotb.test()
async def run_inferences(dut):
    """Bit-exact outputs under random gaps and backpressure, then interval and latency."""
    cfg = json.loads(Path(os.environ[CONFIG_ENV]).read_text())

    async def guarded(coro):
        try:
            return await coro
        except Exception as e:  # written for the caller, then the test fails as usual
            why = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            _write(cfg["result"], {"error": why})
            raise

    # Reset (synchronous, active low) with both streams idle, before the library's parts
    # attach: they start driving when rst_n goes high.
    dut.rst_n.value = 0
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.s_axis_tdata.value = 0
    dut.m_axis_tready.value = 0
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    tb = Streamer(dut, cfg)
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

    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst_n.value = 1
    await ClockCycles(dut.clk, 1)

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
