"""Lower an integer region with convolutions, pooling and branches to a graph of stream modules.

    quantize(x) -> qconv+requant | qmatmul+requant | maxpool | sumpool+requant | qadd | concat
                -> reshape | transpose -> ... -> dequantize

Every module is one of the templates in templates/verilog, chained by AXI4-Stream:

    IR                         modules                                      stream out
    qmatmul + requant          nnfpga_dense (K, N)                          PE per beat
    qconv + requant            nnfpga_window -> nnfpga_dense (K = kh·kw·C)  PE per beat, one vector per pixel
                               (`window` taps per beat, the weight rows in the window's stream order)
                               (a 1×1 stride-1 unpadded conv skips the window; groups > 1 become
                               one block-diagonal matrix)
    maxpool                    nnfpga_window(pad = min) -> nnfpga_pool(max) input's PAR
    sumpool + requant          nnfpga_window(pad = z_x) -> nnfpga_pool(sum, BIAS = −P·z_x)
                               (a window covering the whole unpadded image skips nnfpga_window)
    qadd                       nnfpga_add                                   input's PAR
    concat (channels)          nnfpga_concat                                input's PAR
    a value read twice         nnfpga_fork (+ nnfpga_fifo on the branch that must wait)
    reshape, transpose         nothing: the stream order does not change (see channels_last)

Images stream channels-last (pixel by pixel, each pixel's channels together). A value's
`layout` says how its stream order relates to its IR shape: "image" (a [1, C, H, W] tensor
streamed NHWC) or "flat" (row-major order of its IR shape).

FIFOs: where two branches of a fork rejoin, backends/fifo_depth.py computes from each module's
`needed` function how many beats the branch that waits must hold; the derivation goes into
design.json and the report.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nnfpga.backends import fifo_depth, stream_model
from nnfpga.backends.lower import dense_layer
from nnfpga.backends.rtl_layers import DenseLayer, LayerConfigError, check_folding
from nnfpga.errors import NnfpgaError
from nnfpga.hardware import folding_cycles, largest_divisor_at_most, tap_block
from nnfpga.ir import Graph, Value, clean_name
from nnfpga.ir.spatial import window_output
from nnfpga.ir.types import IntType, TensorType, int_type_for_range


@dataclass(eq=False)
class Stream:
    """One AXI4-Stream connection between two modules (or a top-level port)."""

    name: str
    """Wire prefix in the top level (`s_axis`/`m_axis` for the ports)."""
    par: int
    """Elements per beat."""
    bits: int
    """Bits per element."""
    signed: bool
    """Whether elements are two's complement."""
    beats: int
    """Beats per frame (one inference)."""
    origin: tuple | None = None
    """(fork instance, output index) this stream descends from through one-input modules."""
    path: list = field(default_factory=list)
    """`needed` functions of the modules between that fork output and this stream."""

    @property
    def width(self) -> int:
        return self.par * self.bits


@dataclass(eq=False)
class Instance:
    """One module instance of the top level."""

    module: str
    """Module (and template) name, e.g. nnfpga_dense."""
    name: str
    """Instance name."""
    params: dict
    """SystemVerilog parameters, in the order written."""
    inputs: dict
    """Input port prefix (s_axis, a_axis, b_axis) -> Stream."""
    outputs: dict
    """Output port prefix (m_axis, m0_axis, m1_axis) -> Stream."""
    cycles: int
    """Steady-state cycles per frame."""
    needed: Callable[[int], int] | None = None
    """Input beats needed before output beat j (one-input modules; for FIFO sizing)."""
    layer: DenseLayer | None = None
    """The layer record of a dense instance (weights for its ROM files)."""
    vectors: int = 1
    """Vectors a dense instance computes per frame (a convolution: one per output pixel)."""
    note: str = ""
    """What the instance computes, for the generated comments and the report."""


@dataclass
class StreamDesign:
    """The accelerator as module instances; what the Verilog emitter renders."""

    input: Stream
    output: Stream
    instances: list[Instance]
    input_value: Value
    output_value: Value
    fifos: list[dict] = field(default_factory=list)
    """Per skip FIFO: instance, depth, and the derivation in words."""

    @property
    def layers(self) -> list[DenseLayer]:
        return [i.layer for i in self.instances if i.layer is not None]

    @property
    def interval(self) -> int:
        """Predicted cycles between inferences: the slowest module."""
        return max(i.cycles for i in self.instances)


def data_order(design: StreamDesign) -> list[Instance]:
    """The instances in a topological order of their streams, otherwise as listed."""
    producer = {id(s): inst for inst in design.instances for s in inst.outputs.values()}
    placed: set[int] = set()
    order: list[Instance] = []
    while len(order) < len(design.instances):
        ready = next((i for i in design.instances if id(i) not in placed and all(
            s is design.input or id(producer.get(id(s))) in placed for s in i.inputs.values())), None)
        if ready is None:
            raise NnfpgaError("the stream design has a cycle or a stream nothing writes; cannot order its processes")
        placed.add(id(ready))
        order.append(ready)
    return order


RATE_FACTOR, RATE_SLACK = 2, 2
"""Skip FIFOs are built RATE_FACTOR × their deadlock-free depth + RATE_SLACK (see join_fifos)."""


def is_image(v: Value) -> bool:
    """[1, C, H, W] and [1, C, L] tensors stream channels-last."""
    return v.type.rank in (3, 4) and v.type.shape[0] == 1


def channels_last_perm(rank: int) -> list[int]:
    """The transpose that lists an image's elements in stream order."""
    return [0, 2, 3, 1] if rank == 4 else [0, 2, 1]


def _mixes_nothing(v: Value) -> bool:
    """Whether row-major and channels-last order agree for v (one channel, or one pixel)."""
    shape = v.type.shape
    return not is_image(v) or shape[1] == 1 or int(np.prod(shape[2:])) == 1


def _ident(index: int, hint: str) -> str:
    return f"u{index}_" + (re.sub(r"[^a-z0-9_]", "_", hint.lower()).strip("_")[:24] or "m")


class _Lowering:
    def __init__(self, g: Graph, x: Value, in_par: int):
        self.g = g
        self.instances: list[Instance] = []
        self.fifos: list[dict] = []
        self.streams: dict[int, list[Stream]] = {}
        self.layout: dict[int, str] = {}
        self.count = 0
        e = x.type.element
        self.input = Stream("s_axis", in_par, e.bits, e.signed, x.type.size // in_par)
        self.layout[id(x)] = "image" if is_image(x) else "flat"
        self.publish(x, self.input)

    # -- streams -----------------------------------------------------------------
    def fresh(self, par: int, element, elements: int, like: Stream | None = None, needed=None) -> Stream:
        self.count += 1
        s = Stream(f"st{self.count}", par, element.bits, element.signed, elements // par)
        if like is not None and like.origin is not None:
            s.origin, s.path = like.origin, like.path + ([needed] if needed else [])
        return s

    def publish(self, v: Value, s: Stream) -> None:
        """Make `s` the stream of `v`, forked once per reader in the region."""
        readers = len([u for u, _ in v.uses if u.op != "dequantize"]) + (1 if self._leaves(v) else 0)
        outs = [s]
        while len(outs) < readers:
            src = outs.pop()
            fork = self.add("nnfpga_fork", "fork", {"WIDTH": src.width}, {"s_axis": src}, [], src.beats)
            for k in (0, 1):
                o = Stream(f"{fork.name}_m{k}", src.par, src.bits, src.signed, src.beats, (fork, k), [])
                fork.outputs[f"m{k}_axis"] = o
                outs.append(o)
        self.streams[id(v)] = outs

    def take(self, v: Value) -> Stream:
        if id(v) not in self.streams or not self.streams[id(v)]:
            raise NnfpgaError(f"%{v.name} is read by the accelerator but made outside it")
        return self.streams[id(v)].pop(0)

    def _leaves(self, v: Value) -> bool:
        return v in self.g.outputs or any(u.op == "dequantize" for u, _ in v.uses)

    def add(self, module, hint, params, inputs, outputs, cycles, needed=None, layer=None, note="") -> Instance:
        inst = Instance(module, _ident(len(self.instances), hint), params, inputs, {}, cycles, needed, layer, note=note)
        for port, s in outputs:
            inst.outputs[port] = s
        self.instances.append(inst)
        return inst

    # -- modules -----------------------------------------------------------------
    def dense(self, layer: DenseLayer, src: Stream, vectors: int, hint: str, note: str) -> Stream:
        if layer.k % src.par:
            raise NnfpgaError(f"{note}: its input arrives {src.par} elements per beat, which does not divide K={layer.k}")
        cycles = vectors * max(folding_cycles(layer), layer.k // src.par)
        needed = fifo_depth.dense_needed(layer.k, layer.n, layer.pe, src.par)
        out = self.fresh(layer.pe, IntType(layer.out_bits, layer.out_signed), vectors * layer.n, src, needed)
        inst = self.add("nnfpga_dense", hint, {"IN_PAR": src.par}, {"s_axis": src}, [("m_axis", out)], cycles,
                        needed, layer, note)
        inst.vectors = vectors
        return out

    def window(self, src: Stream, x: Value, kernel, attrs, pad: int, hint: str, taps: int = 1) -> Stream:
        """The window stream of image `x`: `taps` window taps of src.par channels per beat."""
        _, c, h, w = x.type.shape
        top, left, _, _ = attrs["pads"]
        (kh, kw), (sh, sw), (dh, dw) = kernel, attrs["strides"], attrs.get("dilations", [1, 1])
        oh, ow = window_output(h, w, kernel, attrs["strides"], attrs["pads"], [dh, dw])
        th, tw = tap_block(kh, kw, taps)
        p = stream_model.WindowParams(C=c, H=h, W=w, KH=kh, KW=kw, SH=sh, SW=sw, DH=dh, DW=dw, PT=top, PL=left,
                                      OH=oh, OW=ow, PAR=src.par, BITS=src.bits, PAD=int(pad), TH=th, TW=tw)
        needed = lambda j: stream_model.window_needed_beats(p, j)  # noqa: E731
        out = self.fresh(p.out_par, IntType(src.bits, src.signed), oh * ow * kh * kw * c, src, needed)
        per_beat = f", {taps} taps per beat" if taps > 1 else ""
        self.add("nnfpga_window", hint + "_win", p.verilog_params(), {"s_axis": src}, [("m_axis", out)],
                 stream_model.window_cycles(p), needed, note=f"{kh}x{kw} windows of {c}x{h}x{w}{per_beat}")
        return out

    def pool(self, src: Stream, channels: int, positions: int, windows: int, out_elem, params: dict,
             hint: str, note: str) -> Stream:
        p = stream_model.PoolParams(C=channels, P=positions, PAR=src.par, IN_BITS=src.bits, IN_SIGNED=int(src.signed),
                                    FRAME_WINDOWS=windows, **params)
        needed = lambda j: stream_model.pool_needed_beats(p, j)  # noqa: E731
        out = self.fresh(src.par, out_elem, windows * channels, src, needed)
        self.add("nnfpga_pool", hint, p.verilog_params(), {"s_axis": src}, [("m_axis", out)],
                 stream_model.pool_cycles(p), needed, note=note)
        return out

    def fifo_behind(self, s: Stream, depth: int) -> Stream | None:
        """Put a FIFO of `depth` right behind the fork output `s`. Returns the FIFO's output
        when nothing reads `s` yet (the join being built will), else rewires the reader."""
        reader = next((i for i in self.instances for t in i.inputs.values() if t is s), None)
        out = Stream(f"{s.name}_q", s.par, s.bits, s.signed, s.beats)
        self.add("nnfpga_fifo", "skip_fifo", {"WIDTH": s.width, "DEPTH": depth}, {"s_axis": s},
                 [("m_axis", out)], s.beats, fifo_depth.identity_needed)
        if reader is None:
            return out
        for port, t in reader.inputs.items():
            if t is s:
                reader.inputs[port] = out
        return None

    def repack(self, s: Stream, par: int) -> Stream:
        """Carry `s` at `par` elements per beat (nnfpga_repack); the same stream if it already is."""
        if s.par == par:
            return s
        ratio = max(s.par, par) // min(s.par, par)
        widen = par > s.par
        needed = (lambda j: (j + 1) * ratio) if widen else (lambda j: j // ratio + 1)
        out = self.fresh(par, IntType(s.bits, s.signed), s.beats * s.par, s, needed)
        self.add("nnfpga_repack", "repack", {"IN_PAR": s.par, "OUT_PAR": par, "BITS": s.bits, "BEATS": out.beats},
                 {"s_axis": s}, [("m_axis", out)], max(s.beats, out.beats), needed,
                 note=f"{s.par} -> {par} elements per beat")
        return out

    def same_par(self, a: Stream, b: Stream, channels: list[int], what: str) -> tuple[Stream, Stream]:
        """Bring the inputs of a join to one parallelism: the largest that divides both (the
        smaller one, if it divides the other), so each side is narrowed by a whole ratio."""
        if a.par == b.par:
            return a, b
        common = math.gcd(a.par, b.par)
        if any(c % common for c in channels):
            raise NnfpgaError(f"{what}: its inputs arrive {a.par} and {b.par} elements per beat, and "
                              f"{common} elements per beat do not divide its channels {channels}; fold the "
                              "layers before it to matching pe")
        return self.repack(a, common), self.repack(b, common)

    def join_fifos(self, a: Stream, b: Stream, join_for, out_beats: int, what: str) -> tuple[Stream, Stream]:
        """Size and insert the FIFOs that keep the fork feeding a and b from deadlocking."""
        if a.origin is None or b.origin is None or a.origin[0] is not b.origin[0]:
            raise NnfpgaError(f"{what}: its two inputs must come from one fork through one-input layers "
                              "(nested branches are not supported yet)")
        fork = a.origin[0]
        heads = {k: fork.outputs[f"m{k}_axis"] for k in (0, 1)}
        need = {"a": fifo_depth.branch_needed(a.path), "b": fifo_depth.branch_needed(b.path)}
        streams = {"a": a, "b": b}
        for long_side, short_side in (("a", "b"), ("b", "a")):
            depth, _, text = fifo_depth.skip_fifo_depth(need[long_side], need[short_side], out_beats,
                                                        join_for(long_side))
            if depth <= 0:
                continue
            # `depth` is the least that cannot deadlock; at that depth the fork still stalls whenever
            # the long branch is busy with earlier beats, which cost up to half the rate in
            # hw_tests/test_rtl_cnn.py. Twice it plus two ran at the full predicted rate there.
            rate_depth = RATE_FACTOR * depth + RATE_SLACK
            head = heads[streams[short_side].origin[1]]
            direct = self.fifo_behind(head, rate_depth)
            if direct is not None:
                streams[short_side] = direct
            self.fifos.append({"instance": self.instances[-1].name, "depth": rate_depth, "deadlock_depth": depth,
                               "join": what, "waits_for": f"input {long_side}",
                               "derivation": f"{text}; built {RATE_FACTOR}·{depth} + {RATE_SLACK} = {rate_depth} deep "
                                             "so the fork keeps feeding the long branch at its rate"})
        return streams["a"], streams["b"]


def split_layer_of(va: Value, vb: Value) -> str | None:
    """The layer two concatenated values are the parts of (split pass), else None."""
    names = []
    for v in (va, vb):
        rq = v.producer
        layer = rq.inputs[0].producer if rq is not None and rq.op == "requant" else None
        names.append(layer.attrs.get("part_of") if layer is not None and layer.op in ("qmatmul", "qconv") else None)
    return names[0] if names[0] is not None and names[0] == names[1] else None


def conv_matrix(w: np.ndarray, channels: int, group: int) -> np.ndarray:
    """[kh·kw·C, O] matrix of a (grouped) convolution, rows in the window's (ky, kx, c) order."""
    o, cg, kh, kw = w.shape
    m = np.zeros((kh, kw, channels, o), np.int64)
    og = o // group
    for gi in range(group):
        block = w[gi * og:(gi + 1) * og].transpose(2, 3, 1, 0)  # [kh, kw, C/g, O/g]
        m[:, :, gi * cg:(gi + 1) * cg, gi * og:(gi + 1) * og] = block
    return m.reshape(kh * kw * channels, o)


def _single_requant(g: Graph, node):
    users = [u for u, _ in node.output.uses]
    if len(users) != 1 or users[0].op != "requant" or node.output in g.outputs:
        raise NnfpgaError(f"{node.op} %{node.output.name} must feed exactly one requant")
    return users[0]


def lower_stream(g: Graph, x: Value, in_par: int | None = None) -> StreamDesign:
    """The module graph computing the region that starts at quantized value `x`."""
    first = next((u for u, _ in x.uses), None)
    if in_par is None:
        lanes = x.type.shape[1] if is_image(x) else x.type.size
        in_par = largest_divisor_at_most(lanes, first.attrs.get("simd", 1) if first is not None else 1)
    lo = _Lowering(g, x, in_par)
    out_value = None
    done: set[int] = set()  # requants lowered with their qmatmul, qconv or sumpool
    for node in g.nodes:
        if id(node) in done or not any(id(v) in lo.layout for v in node.inputs):
            continue
        if node.op == "dequantize":
            out_value = node.inputs[0]
            continue
        _lower_node(g, lo, node, done)
    if out_value is None:
        out_value = next(v for v in g.outputs if id(v) in lo.layout)
    out = lo.take(out_value)
    out.name = "m_axis"
    return StreamDesign(lo.input, out, lo.instances, x, out_value, lo.fifos)


def chain_design(layers: list[DenseLayer], in_par: int | None = None) -> StreamDesign:
    """The stream design of dense layer records in a chain, as `lower_stream` builds an MLP:
    one nnfpga_dense per record, `in_par` input elements per beat at the top (default: the
    first layer's simd). For records made without an IR graph (tests, one-layer benchmarks)."""
    if not layers:
        raise LayerConfigError("no layers to build")
    for i, layer in enumerate(layers):
        check_folding(i, layer)
    for i, (a, b) in enumerate(zip(layers, layers[1:])):
        if a.n != b.k or (a.out_bits, a.out_signed) != (b.in_bits, b.in_signed):
            raise LayerConfigError(f"layer {i} ({a.name!r}) outputs {a.n} x {'i' if a.out_signed else 'u'}{a.out_bits} "
                              f"but layer {i + 1} ({b.name!r}) reads {b.k} x {'i' if b.in_signed else 'u'}{b.in_bits}")
    first, last = layers[0], layers[-1]
    in_par = first.simd if in_par is None else in_par
    if in_par < 1 or first.k % in_par:
        raise LayerConfigError(f"in_par={in_par} must divide the input length {first.k}")
    x = Value("x", TensorType((1, first.k), IntType(first.in_bits, first.in_signed)))
    y = Value("y", TensorType((1, last.n), IntType(last.out_bits, last.out_signed)))
    lo = _Lowering(Graph("chain"), x, in_par)
    s = lo.take(x)
    for layer in layers:
        name = clean_name(layer.name)  # as an IR value name: it reaches comments in the generated sources
        s = lo.dense(layer, s, 1, name, f"dense {name}: {layer.k} -> {layer.n}")
    s.name = "m_axis"
    return StreamDesign(lo.input, s, lo.instances, x, y)


def _lower_node(g: Graph, lo: _Lowering, node, done: set) -> None:
    op = node.op
    where = f"{op} %{node.outputs[0].name}"
    if op in ("reshape", "transpose"):
        x, y = node.inputs[0], node.output
        layout = lo.layout[id(x)]
        if op == "transpose":
            if not (layout == "image" and node.attrs["perm"] == channels_last_perm(x.type.rank)):
                raise NnfpgaError(f"{where}: the accelerator streams images channels-last; it can only "
                                  "transpose an image to channels-last (which moves no data), not by "
                                  f"perm {node.attrs['perm']}")
            new = "flat"
        else:
            new = "image" if is_image(y) else "flat"
            # A reshape moves no data when both sides list the elements in the same stream order.
            same = ((layout == "flat" or _mixes_nothing(x)) and (new == "flat" or _mixes_nothing(y))
                    or (layout == new == "image" and x.type.shape[1] == y.type.shape[1]))
            if not same:
                raise NnfpgaError(f"{where}: reshaping {list(x.type.shape)} to {list(y.type.shape)} would reorder "
                                  "the channels-last stream; a flatten before a dense layer needs the "
                                  "channels_last pass (it makes the layer read pixels in stream order)")
        lo.layout[id(y)] = new
        lo.publish(y, lo.take(x))
        return
    if op in ("qmatmul", "qconv"):
        rq = _single_requant(g, node)
        done.add(id(rq))
        x, w, b = node.inputs
        src = lo.take(x)
        name = rq.output.name
        if op == "qmatmul":
            layer = dense_layer(g, node, rq, name)
            out = lo.dense(layer, src, 1, name, f"dense %{name}: {layer.k} -> {layer.n}")
            lo.layout[id(rq.output)] = "flat"
        else:
            if lo.layout[id(x)] != "image":
                raise NnfpgaError(f"{where}: the convolution reads %{x.name}, which is not an image stream")
            _, c, h, wd = x.type.shape
            wdata = g.const_data(w).astype(np.int64)
            o, _, kh, kw = wdata.shape
            _, _, oh, ow = node.output.type.shape
            pointwise = kh == kw == 1 and node.attrs["strides"] == [1, 1] and not any(node.attrs["pads"])
            matrix = conv_matrix(wdata, c, node.attrs["group"])
            if not pointwise:
                taps = node.attrs.get("window", 1)
                par = src.par
                src = lo.window(src, x, [kh, kw], node.attrs, x.type.element.zero_point, name, taps)
                # rows in the order the window streams a window's elements
                matrix = matrix[stream_model.window_element_order(kh, kw, c, par, taps)]
            layer = dense_layer(g, node, rq, name, matrix)
            out = lo.dense(layer, src, oh * ow, name,
                           f"conv %{name}: {kh}x{kw}, {c} -> {o} channels, {h}x{wd} -> {oh}x{ow}")
            lo.layout[id(rq.output)] = "image"
        lo.publish(rq.output, out)
        return
    if op in ("maxpool", "sumpool"):
        x = node.inputs[0]
        if lo.layout[id(x)] != "image":
            raise NnfpgaError(f"{where}: pooling reads %{x.name}, which is not an image stream")
        _, c, h, w = x.type.shape
        _, _, oh, ow = node.output.type.shape
        kernel = node.attrs["kernel"]
        src = lo.take(x)
        whole = list(kernel) == [h, w] and not any(node.attrs["pads"])
        xe = x.type.element
        if op == "maxpool":
            y = node.output
            if not whole:
                src = lo.window(src, x, kernel, node.attrs, xe.min, y.name)
            params = {"MODE": 0, "ACC_BITS": xe.bits + 1, "MULT": 1, "SHIFT": 1, "BIAS": 0, "OUT_BITS": xe.bits,
                      "OUT_ZP": 0, "LO": xe.min, "HI": xe.max}
            out = lo.pool(src, c, kernel[0] * kernel[1] if not whole else h * w, oh * ow, xe, params, y.name,
                          f"max pool %{y.name}: {kernel[0]}x{kernel[1]}")
        else:
            rq = _single_requant(g, node)
            done.add(id(rq))
            y = rq.output
            mult = np.unique(g.arrays[rq.attrs["mult"].name])
            if len(mult) != 1:
                raise NnfpgaError(f"{where}: an average pool requantizes every channel alike; got {len(mult)} multipliers")
            if not whole:
                src = lo.window(src, x, kernel, node.attrs, xe.zero_point, y.name)
            positions = kernel[0] * kernel[1]
            ye = y.type.element
            bias = -positions * xe.zero_point  # the pool adds raw x; Σ(x − z_x) = Σx − P·z_x
            acc_bits = int_type_for_range(bias + positions * min(0, xe.min), bias + positions * max(0, xe.max)).bits
            params = {"MODE": 1, "ACC_BITS": acc_bits, "MULT": int(mult[0]), "SHIFT": rq.attrs["shift"],
                      "BIAS": bias, "OUT_BITS": ye.bits, "OUT_ZP": ye.zero_point,
                      "LO": rq.attrs["lo"], "HI": rq.attrs["hi"]}
            out = lo.pool(src, c, positions, oh * ow, ye, params, y.name,
                          f"average pool %{y.name}: {kernel[0]}x{kernel[1]}")
        lo.layout[id(y)] = "image"
        lo.publish(y, out)
        return
    if op == "qadd":
        a, b = lo.same_par(*(lo.take(v) for v in node.inputs), [node.output.type.shape[1]], where)
        a, b = lo.join_fifos(a, b, lambda side: None, a.beats, where)
        ta, tb, y = node.inputs[0].type.element, node.inputs[1].type.element, node.output.type.element
        params = {"PAR": a.par, "A_BITS": ta.bits, "A_SIGNED": int(ta.signed), "A_ZP": ta.zero_point,
                  "MA": node.attrs["ma"], "B_BITS": tb.bits, "B_SIGNED": int(tb.signed), "B_ZP": tb.zero_point,
                  "MB": node.attrs["mb"], "SHIFT": node.attrs["shift"], "OUT_BITS": y.bits, "OUT_ZP": y.zero_point,
                  "LO": node.attrs["lo"], "HI": node.attrs["hi"], "BEATS": a.beats}
        out = lo.fresh(a.par, y, node.output.type.size)
        lo.add("nnfpga_add", node.output.name, params, {"a_axis": a, "b_axis": b}, [("m_axis", out)], a.beats,
               note=f"residual add %{node.output.name}")
        lo.layout[id(node.output)] = lo.layout[id(node.inputs[0])]
        lo.publish(node.output, out)
        return
    if op == "concat":
        if len(node.inputs) != 2 or node.attrs["axis"] != 1:
            raise NnfpgaError(f"{where}: the accelerator concatenates two tensors on the channel axis; this one "
                              f"joins {len(node.inputs)} on axis {node.attrs['axis']}")
        va, vb = node.inputs
        ca, cb = va.type.shape[1], vb.type.shape[1]
        a, b = lo.same_par(lo.take(va), lo.take(vb), [ca, cb], where)
        pixels = va.type.size // ca
        if ca % a.par or cb % a.par:
            raise NnfpgaError(f"{where}: {a.par} elements per beat must divide both channel counts ({ca}, {cb})")
        out_beats = pixels * (ca + cb) // a.par
        a, b = lo.join_fifos(a, b, lambda side: fifo_depth.concat_join(pixels, ca // a.par, cb // a.par, side),
                             out_beats, where)
        layer = split_layer_of(va, vb)
        if layer is not None:  # the two parts of a split layer run side by side; the concat takes a, then b
            depth_a, depth_b, text = fifo_depth.split_join_depths(ca // a.par, cb // a.par)
            a, b = lo.fifo_behind(a, depth_a), lo.fifo_behind(b, depth_b)
            lo.fifos.append({"instance": lo.instances[-2].name, "depth": depth_a, "join": where,
                             "waits_for": "input b", "derivation": f"split layer {layer}: {text}"})
            lo.fifos.append({"instance": lo.instances[-1].name, "depth": depth_b, "join": where,
                             "waits_for": "input a", "derivation": f"split layer {layer}: {text}"})
        e = node.output.type.element
        out = lo.fresh(a.par, e, node.output.type.size)
        lo.add("nnfpga_concat", node.output.name, {"PIXELS": pixels, "CA": ca, "CB": cb, "PAR": a.par, "BITS": e.bits},
               {"a_axis": a, "b_axis": b}, [("m_axis", out)], out_beats, note=f"concat %{node.output.name}")
        lo.layout[id(node.output)] = lo.layout[id(va)]
        lo.publish(node.output, out)
        return
    raise NnfpgaError(f"the hardware backend has no module for op '{op}' (node defining %{node.outputs[0].name})")
