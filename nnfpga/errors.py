"""The one exception family users see. The CLI prints the message and exits non-zero."""


class NnfpgaError(Exception):
    """A problem with the user's input or environment, stated so the user can act on it."""


class ModelError(NnfpgaError):
    """The ONNX model cannot be read or uses something nnfpga does not support."""


class UnsupportedOpError(ModelError):
    """An op that neither the accelerator nor the host fallback can take."""


class IRError(NnfpgaError):
    """The IR text is malformed or a graph breaks an IR rule (names the node and the rule)."""


class PipelineError(NnfpgaError):
    """A pipeline string names an unknown pass or option, or a pass cannot apply."""


class CalibrationError(NnfpgaError):
    """Calibration or input data does not match the model's inputs."""


class BuildError(NnfpgaError):
    """The build directory or an external tool (Verilator, cocotb) failed."""
