"""Golden IR tests: each pass's output text, the interpreter agreeing before and after, and
the round trip print(parse(text)) == text for every golden text."""
import os

import numpy as np
import pytest

from goldens import all_goldens, arrays_for, read_golden, write_golden
from nnfpga.ir import parse, print_graph, run_batch, verify
from nnfpga.passes import PassContext, parse_pipeline, run_pipeline

GOLDENS = all_goldens()
IDS = [p.stem for p in GOLDENS]


def _run(golden):
    g = parse(golden.input, arrays_for(golden.input))
    verify(g)
    return g, run_pipeline(g, golden.pipeline, PassContext(seed=0))


@pytest.mark.parametrize("path", GOLDENS, ids=IDS)
def test_pass_output_matches_golden(path):
    golden = read_golden(path)
    _, after = _run(golden)
    text = print_graph(after)
    if os.environ.get("NNFPGA_REGEN_GOLDENS"):
        golden.expected = text
        write_golden(golden)
    assert text == golden.expected


@pytest.mark.parametrize("path", GOLDENS, ids=IDS)
def test_pass_preserves_meaning(path):
    golden = read_golden(path)
    before, after = _run(golden)
    # The first samples quantize's synthetic calibration draws (seed 0): no out-of-range clipping.
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal((256,) + v.type.shape[1:]).astype(np.float32)[:64]
             if v.type.shape[0] == 1 else rng.standard_normal((64,) + v.type.shape).astype(np.float32)
             for v in before.inputs}
    ref = run_batch(before, feeds)
    got = run_batch(after, feeds)
    for (name_a, a), (name_b, b) in zip(ref.items(), got.items()):
        if "bitslice" in golden.pipeline:
            # Lossy by design (test_bitslice.py checks the rounding against brute force); a wrong
            # sign, bias or accumulator would move the outputs by about their own size.
            assert np.linalg.norm(a - b) <= 0.3 * np.linalg.norm(a)
        elif "quantize" in golden.pipeline:
            # Quantized: the error stays a small fraction of the output range (inputs are drawn
            # from the calibration distribution, so nothing clips); 4-bit weights are coarser.
            tolerance = 0.15 if "wbits=4" in golden.pipeline else 0.05
            assert np.abs(a - b).max() <= tolerance * np.abs(a).max()
        elif "lowrank" in golden.pipeline:
            # Lossy by design (test_lowrank.py bounds the error); a wrong factor order or
            # reshape would give an error near or above the output's own size.
            assert np.linalg.norm(a - b) <= 0.6 * np.linalg.norm(a)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", GOLDENS, ids=IDS)
def test_golden_texts_round_trip(path):
    golden = read_golden(path)
    g_in = parse(golden.input, arrays_for(golden.input))
    assert print_graph(g_in) == golden.input
    _, after = _run(golden)
    assert print_graph(parse(golden.expected, after.arrays)) == golden.expected


def test_goldens_exist_for_every_spine_pass():
    pipelines = {parse_pipeline(read_golden(p).pipeline)[-1].name for p in GOLDENS}
    assert {"canonicalize", "quantize", "fold"} <= pipelines
