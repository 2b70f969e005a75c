"""Compiler passes, one per file, registered by name for pipeline strings."""
from nnfpga.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline, run_pipeline
from nnfpga.passes.registry import PASSES, PassContext, lookup

__all__ = ["DEFAULT_PIPELINE", "parse_pipeline", "run_pipeline", "PASSES", "PassContext", "lookup"]
