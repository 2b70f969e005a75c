"""Fuzzing in the default suite: mutated example models, mutated .npz data and random pipeline
strings must compile or fail with a clear NnfpgaError (the CLI: exit 2 and one `error:`
line), never with another exception and never hang. The cases are fixed (hypothesis
derandomized, seeds from a fixed stream), so a failure replays; `python -m bench --only fuzz`
runs the same fuzzers on >= 10,000 cases, each in a child process with a timeout.
"""
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fuzz_cases import EXAMPLES, mutate_model, random_pipeline, run_case, _base_bytes
from nnfpga.builddir import check_sample_shapes, load_npz, match_inputs
from nnfpga.errors import CalibrationError, NnfpgaError, PipelineError
from nnfpga.frontend import load_onnx
from nnfpga.passes import parse_pipeline

CASE_SECONDS = 60
"""A case running longer is a hang (the slowest legitimate case takes a few seconds)."""

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class CaseTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def expire(*_):
        raise CaseTimeout(f"a fuzz case ran longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_case(kind: str, seed: int) -> str:
    with time_limit(CASE_SECONDS):
        outcome, message = run_case(kind, seed)
    assert outcome in ("ok", "error")
    assert outcome == "ok" or message
    return outcome


@settings(FUZZ, max_examples=120)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_models(seed):
    check_case("model", seed)


@settings(FUZZ, max_examples=50)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_calibration_files(seed):
    check_case("npz", seed)


@settings(FUZZ, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_pipelines(seed):
    check_case("pipeline", seed)


def test_the_fuzzers_reach_both_outcomes():
    """A fuzzer whose every case is refused (or every case passes) tests little: over a fixed
    stream of seeds each kind must produce some compiled designs and some clear errors."""
    for kind in ("model", "npz", "pipeline"):
        outcomes = {check_case(kind, seed) for seed in range(12)}
        assert outcomes == {"ok", "error"}, (kind, outcomes)


# -- property-based: any text as a pipeline, any array as calibration data ------------------

PIPELINE_ALPHABET = "abcdefghijklmnopqrstuvwxyz_{},=.-+%:0123456789 \t\n;é"


@settings(FUZZ, max_examples=250)
@given(text=st.text(PIPELINE_ALPHABET, max_size=80) | st.from_regex(
    r"(canonicalize|quantize|fold|autofold|lowrank|channels_last|partition|x)"
    r"(\{([a-z_]{1,8}=[-+.0-9a-z]{0,6},?){0,3}\})?(,(quantize|fold|autofold)(\{[a-z]+=[0-9.a-z-]*\})?){0,3}",
    fullmatch=True))
def test_any_text_parses_or_is_a_pipeline_error(text):
    try:
        steps = parse_pipeline(text)
    except PipelineError as e:
        assert str(e)
        return
    assert steps and all(isinstance(s.options, dict) for s in steps)


_DIGITS = load_onnx(EXAMPLES / "digits_mlp" / "model.onnx")
_ELEMENTS = {"allow_nan": True, "allow_infinity": True}


@settings(FUZZ, max_examples=150)
@given(arrays=st.dictionaries(
    st.sampled_from(["input", "x", "label", "other"]),
    hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.uint8, np.int64, np.bool_]),
               shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=70)),
    max_size=3))
def test_any_arrays_read_as_data_or_a_calibration_error(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    np.savez(path, **arrays)
    try:
        feeds = match_inputs(_DIGITS, load_npz(path, "calibration"), "calibration data")
        check_sample_shapes(_DIGITS, feeds, "calibration data")
    except CalibrationError as e:
        assert str(e)
        return
    (x,) = feeds.values()
    assert x.shape[0] >= 1 and x.shape[-1] == 64
    assert not np.issubdtype(x.dtype, np.floating) or np.isfinite(x).all()


# -- a handful through the command line ---------------------------------------------------------

@pytest.mark.parametrize("seed", [3, 11, 29, 2024])
def test_mutated_models_through_the_cli(tmp_path, seed):
    rng = np.random.default_rng([9, seed])
    model = tmp_path / "model.onnx"
    model.write_bytes(mutate_model(_base_bytes(str(rng.choice(["digits_mlp", "digits_cnn"]))), rng))
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-m", "nnfpga.cli", "compile", str(model), "-o", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode in (0, 2), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    if proc.returncode == 2:
        assert len(errors) == 1 and not out.exists(), proc.stderr
    else:
        assert not errors and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx"] + (["build"] if out.exists() else []))
