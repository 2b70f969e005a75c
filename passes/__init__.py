"""Compiler passes, one per file, registered by name for pipeline strings."""
# Importing a pass's module registers it; one file per pass.
from nnfpga.passes import (autofold, bitplane, bits, bitslice, canonicalize, channels_last, fold, lowrank,  # noqa: F401
                           partition, precision, quantize, split)
from nnfpga.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline, run_pipeline
from nnfpga.passes.registry import PASSES, PassContext, lookup

__all__ = ["DEFAULT_PIPELINE", "parse_pipeline", "run_pipeline", "PASSES", "PassContext", "lookup"]
