"""The hardware annotations a pass may put on any node of the IR (checked by the verifier;
the host backend leaves them out of the ONNX attributes it writes)."""
from __future__ import annotations

ANNOTATIONS = {"pe": int, "simd": int, "window": int, "core": str, "pack": int, "slice": int,
               "skip": int, "wbits": int, "abits": int,
               "place": str, "part_of": str}
"""Hardware attributes a pass may put on any node (`place` = accel|host, set by partition;
`window` = a qconv's window taps per beat, set by fold and autofold; `core` = dsp|lut|bitserial and
`pack` = products per DSP multiplier, on qmatmul and qconv; `slice` = the bitserial core's
weight slice width and `skip` = 0|1 whether its schedule leaves out all-zero tiles; `part_of` = the layer a part of
a split layer came from, set by split)."""
PLACES = ("accel", "host")
"""Values of the `place` annotation."""
