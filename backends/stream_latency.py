"""Latency of a stream design: cycles from an inference's first input beat to its last output
beat, when the input arrives one beat per cycle into an idle accelerator and the output is
never held back (how the harness measures `latency_cycles`).

Each module turns the cycle at which each of its input beats arrives into the cycle at which
each output beat leaves, in data order, one numpy array per stream:

    one-input module   out[j] = max(out[j−1] + 1, in[needed(j) − 1] + D)
                       needed(j): the input beats output beat j waits for (the module's own
                       rule, as in backends/fifo_depth.py); D its register stages
    nnfpga_dense       vector v starts when its last input beat is in and vector v−1's folds
                       are done: start_v = max(in_last_v, start_{v−1} + NF·SF); output beat i
                       of v leaves at start_v + (i+1)·SF + layer_pipeline_stages
    nnfpga_add         step j takes beat j of both inputs: out[j] = max(out[j−1] + 1, max(a[j], b[j]) + D)
    nnfpga_concat      each pixel's a beats, then its b beats, through the same recurrence

    D: window 3 (issue, RAM read, output), pool 2 (max) or 2 + requant stages (sum), add 5
    (nnfpga/hardware.py), fork, FIFO, concat, repack 1

The recurrence out[j] = max(out[j−1] + 1, a[j]) is out = j + running max of (a − j), so a
frame costs a few numpy passes per module. Backpressure is left out: a module that cannot
take a beat yet would delay its producer; in a design autofold balanced, the slower side
is the one whose times are kept. Measured in Verilator (hw_tests/test_rtl_cnn.py,
hw_tests/test_cnn_models.py): exact on the digits CNN at two foldings (1,379 and 1,051
cycles), the residual, depthwise-separable, concat and 1-D test networks, and the three
IR-text networks of test_rtl_cnn (1,047, 549, 1,197). It is not exact where a module waits on
another: the strided network's second window stops its input until an output row is done
while the dense layer before it delivers 8 beats per 9 cycles, so it gives 769 where
Verilator measures 801. The predictions a build reports come from the cycle model of
backends/stream_sim.py, which includes backpressure and gives 801 there (and the interval,
442, where the slowest module alone takes 432); this model remains the fast estimate and the
fallback for designs too large to simulate. On an MLP it gives nnfpga.cost's latency.
"""
from __future__ import annotations

import numpy as np

from nnfpga.backends import stream_model
from nnfpga.backends.stream_graph import Instance, StreamDesign, data_order
from nnfpga.backends.const_graph import layer_pipeline_stages
from nnfpga.hardware import add_pipeline_stages, bitserial_fold_tiles

STAGES = {"nnfpga_window": 3, "nnfpga_add": add_pipeline_stages(), "nnfpga_fork": 1,
          "nnfpga_fifo": 1, "nnfpga_concat": 1, "nnfpga_repack": 1}
"""D per module: cycles from the input beat an output waits for to that output's transfer
(nnfpga_pool's depends on its mode: stream_model.pool_stages)."""


def _stages(inst: Instance) -> int:
    if inst.module == "nnfpga_pool":
        return stream_model.pool_stages(stream_model.PoolParams(**inst.params))
    return STAGES[inst.module]


def _paced(ready: np.ndarray) -> np.ndarray:
    """out[j] = max(out[j-1] + 1, ready[j]): one beat per cycle, none before it is ready."""
    j = np.arange(len(ready), dtype=np.int64)
    return j + np.maximum.accumulate(ready - j)


def _needed(inst: Instance, beats: int) -> np.ndarray:
    """needed(j) for every output beat j of a one-input module, as an array."""
    j = np.arange(beats, dtype=np.int64)
    p = inst.params
    if inst.module == "nnfpga_window":
        w = stream_model.WindowParams(**p)
        rows = np.array([w.need_rows(oy) for oy in range(w.OH)], np.int64)
        return rows[j // w.out_row_beats] * w.row_beats
    if inst.module == "nnfpga_pool":
        q = stream_model.PoolParams(**p)
        window, cb = np.divmod(j, q.beats_per_position)
        return (window * q.P + q.P - 1) * q.beats_per_position + cb + 1
    if inst.module == "nnfpga_repack":
        if p["OUT_PAR"] > p["IN_PAR"]:  # widening: R input beats make one output beat
            return (j + 1) * (p["OUT_PAR"] // p["IN_PAR"])
        return j // (p["IN_PAR"] // p["OUT_PAR"]) + 1
    return j + 1  # fork, FIFO: beat for beat


def _dense(inst: Instance, arrive: np.ndarray) -> np.ndarray:
    l = inst.layer
    nf, sf = l.n // l.pe, l.k // l.simd
    # cycles from a vector's start to each output fold's last issue: SF per fold, or the
    # tiles the bit-serial schedule lists per fold
    fold_tiles = bitserial_fold_tiles(l) if l.core == "bitserial" else np.full(nf, sf, np.int64)
    ends = np.cumsum(fold_tiles)
    last_in = arrive.reshape(inst.vectors, -1)[:, -1]
    v = np.arange(inst.vectors, dtype=np.int64) * int(ends[-1])
    start = v + np.maximum.accumulate(last_in - v)
    stages = layer_pipeline_stages(l)
    return (start[:, None] + ends + stages).reshape(-1)


def frame_latency(design: StreamDesign) -> int:
    """Predicted cycles from an inference's first input beat to its last output beat."""
    times = {id(design.input): np.arange(design.input.beats, dtype=np.int64)}
    for inst in data_order(design):
        arrive = [times[id(s)] for s in inst.inputs.values()]
        out = next(iter(inst.outputs.values()))
        if inst.module == "nnfpga_dense":
            leave = _dense(inst, arrive[0])
        elif inst.module == "nnfpga_add":
            leave = _paced(np.maximum(arrive[0], arrive[1]) + _stages(inst))
        elif inst.module == "nnfpga_concat":
            p = inst.params
            a = arrive[0].reshape(p["PIXELS"], -1)
            b = arrive[1].reshape(p["PIXELS"], -1)
            leave = _paced(np.concatenate([a, b], axis=1).reshape(-1) + _stages(inst))
        else:
            leave = _paced(arrive[0][_needed(inst, out.beats) - 1] + _stages(inst))
        for s in inst.outputs.values():
            times[id(s)] = leave
    return int(times[id(design.output)][-1])
