"""IR types. Each `repr` is the text syntax, so a printed type parses back to an equal type.

    f32                      float
    i8, u4, i24              integers of any width, signed (i) or unsigned (u)
    !q<u8, 0.05>             quantized, per tensor: storage, scale (zero point 0)
    !q<i8, 0.05, -3>         ... with zero point -3
    !q<i8, @w0.scale, axis=1>  per channel: scales in the graph's array table
    tensor<1x64xf32>         a tensor of static shape; tensor<f32> is a scalar
"""
from __future__ import annotations

from dataclasses import dataclass

from nnfpga.errors import IRError


def format_float(x: float) -> str:
    """Shortest text that reads back as exactly the same float64."""
    text = repr(float(x))
    if text in ("inf", "-inf", "nan"):
        raise IRError(f"non-finite float {text} cannot appear in the IR")
    return text


@dataclass(frozen=True)
class FloatType:
    """IEEE float of `bits` width; the IR only uses 32."""

    bits: int = 32

    def __repr__(self) -> str:
        return f"f{self.bits}"


@dataclass(frozen=True)
class IntType:
    """Two's-complement (signed) or plain binary (unsigned) integer of any width."""

    bits: int
    """Width in bits, at least 1."""
    signed: bool
    """True for i<bits>, False for u<bits>."""

    def __post_init__(self):
        if not 1 <= self.bits <= 64:
            raise IRError(f"integer width {self.bits} is outside 1..64")

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __repr__(self) -> str:
        return f"{'i' if self.signed else 'u'}{self.bits}"


def int_type_for_range(lo: int, hi: int) -> IntType:
    """The narrowest signed type holding every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return IntType(bits, True)


@dataclass(frozen=True)
class QuantType:
    """Integer storage standing for real values `(q - zero_point) * scale`."""

    storage: IntType
    """The integer type the values are stored in."""
    scale: float | str
    """Per-tensor scale, or the name of a graph array of per-channel scales."""
    zero_point: int = 0
    """Integer that represents real 0 (per tensor; per-channel tensors are symmetric)."""
    axis: int | None = None
    """Channel axis of a per-channel scale; None when per tensor."""

    def __post_init__(self):
        per_channel = isinstance(self.scale, str)
        if per_channel != (self.axis is not None):
            raise IRError("a quantized type has an axis exactly when its scale is per channel")
        if per_channel and self.zero_point != 0:
            raise IRError("per-channel quantized types are symmetric (zero point 0)")
        if not per_channel and not self.scale > 0:
            raise IRError(f"quantization scale must be positive, got {self.scale}")
        if not self.storage.min <= self.zero_point <= self.storage.max:
            raise IRError(f"zero point {self.zero_point} does not fit {self.storage!r}")

    @property
    def min(self) -> int:
        return self.storage.min

    @property
    def max(self) -> int:
        return self.storage.max

    @property
    def bits(self) -> int:
        return self.storage.bits

    @property
    def signed(self) -> bool:
        return self.storage.signed

    def __repr__(self) -> str:
        if isinstance(self.scale, str):
            return f"!q<{self.storage!r}, @{self.scale}, axis={self.axis}>"
        zp = f", {self.zero_point}" if self.zero_point else ""
        return f"!q<{self.storage!r}, {format_float(self.scale)}{zp}>"


ElementType = FloatType | IntType | QuantType


@dataclass(frozen=True)
class TensorType:
    """A tensor with a static shape; every value in the IR has one."""

    shape: tuple[int, ...]
    """Dimensions, all positive."""
    element: ElementType
    """Element type."""

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d <= 0 for d in self.shape):
            raise IRError(f"tensor dimensions must be positive, got {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return isinstance(self.element, FloatType)

    @property
    def is_int(self) -> bool:
        """True for plain and quantized integers."""
        return isinstance(self.element, (IntType, QuantType))

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(shape), self.element)

    def with_element(self, element: ElementType) -> TensorType:
        return TensorType(self.shape, element)

    def __repr__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"tensor<{dims}{self.element!r}>"


F32 = FloatType(32)


def i(bits: int) -> IntType:
    return IntType(bits, True)


def u(bits: int) -> IntType:
    return IntType(bits, False)
