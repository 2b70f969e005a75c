"""The package version (pyproject.toml says the same), for `nnfpga.__version__` and the
reference ONNX's producer_version."""
__version__ = "0.1.0"
