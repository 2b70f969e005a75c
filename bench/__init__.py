"""nnfpga benchmarks: `python -m bench` from the repository root (not part of the package)."""
