"""IR text parser, the inverse of the printer: `print_graph(parse(t, arrays)) == t`.

Lines whose first non-blank characters are `#` or `//` are comments (golden files use them).
"""
from __future__ import annotations

import json
import re

import numpy as np

from nnfpga.errors import IRError
from nnfpga.ir.graph import ArrayRef, Graph, Value
from nnfpga.ir.types import FloatType, IntType, QuantType, TensorType

_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_FLOAT = re.compile(r"-?(\d+\.\d*(e[-+]?\d+)?|\d+e[-+]?\d+)")
_INT = re.compile(r"-?\d+")


class _Cursor:
    def __init__(self, text: str, lineno: int):
        self.text, self.pos, self.lineno = text, 0, lineno

    def error(self, what: str) -> IRError:
        return IRError(f"line {self.lineno}: {what} at column {self.pos + 1}: {self.text.strip()!r}")

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def at(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.pos)

    def eat(self, s: str) -> bool:
        if self.at(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        if not self.eat(s):
            raise self.error(f"expected '{s}'")

    def regex(self, pattern, what: str) -> re.Match:
        self.ws()
        m = re.compile(pattern).match(self.text, self.pos) if isinstance(pattern, str) else pattern.match(self.text, self.pos)
        if not m:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m

    def done(self) -> bool:
        self.ws()
        return self.pos == len(self.text)


def _element(c: _Cursor):
    if c.eat("!q<"):
        storage = _element(c)
        if not isinstance(storage, IntType):
            raise c.error("quantized storage must be an integer type")
        c.expect(",")
        if c.eat("@"):
            scale = c.regex(_NAME, "array name").group(0)
            c.expect(",")
            c.expect("axis")
            c.expect("=")
            axis = int(c.regex(_INT, "axis").group(0))
            c.expect(">")
            return QuantType(storage, scale, 0, axis)
        scale = float(c.regex(_FLOAT, "float scale").group(0))
        zp = int(c.regex(_INT, "zero point").group(0)) if c.eat(",") else 0
        c.expect(">")
        return QuantType(storage, scale, zp)
    m = c.regex(r"([fiu])(\d+)", "element type (f32, i8, u4, !q<...>)")
    kind, bits = m.group(1), int(m.group(2))
    return FloatType(bits) if kind == "f" else IntType(bits, kind == "i")


def _type(c: _Cursor) -> TensorType:
    c.expect("tensor<")
    dims = []
    while True:
        m = re.compile(r"(\d+)x").match(c.text, c.pos)
        if not m:
            break
        dims.append(int(m.group(1)))
        c.pos = m.end()
    element = _element(c)
    c.expect(">")
    return TensorType(tuple(dims), element)


def _attr_value(c: _Cursor):
    if c.eat("true"):
        return True
    if c.eat("false"):
        return False
    if c.eat("@"):
        return ArrayRef(c.regex(_NAME, "array name").group(0))
    if c.at('"'):
        m = c.regex(r'"(\\.|[^"\\])*"', "string")
        return json.loads(m.group(0))
    if c.eat("["):
        items = []
        if not c.eat("]"):
            while True:
                items.append(_attr_value(c))
                if c.eat("]"):
                    break
                c.expect(",")
        return items
    if c.at("tensor<"):
        return _type(c)
    if c.at("!q<") or re.compile(r"[fiu]\d+\b").match(c.text, c.pos):
        return _element(c)
    m = _FLOAT.match(c.text, c.pos)
    if m:
        c.pos = m.end()
        return float(m.group(0))
    return int(c.regex(_INT, "attribute value").group(0))


def _value_name(c: _Cursor) -> str:
    c.expect("%")
    return c.regex(_NAME, "value name").group(0)


def parse(text: str, arrays: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse IR text; `arrays` is the sidecar array table that `@name` references point into."""
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.strip().startswith(("#", "//"))]
    if not lines:
        raise IRError("empty IR text: expected 'graph @name(...) {'")
    n, header = lines[0]
    c = _Cursor(header, n)
    c.expect("graph")
    c.expect("@")
    g = Graph(c.regex(_NAME, "graph name").group(0))
    g.arrays = dict(arrays or {})
    scope: dict[str, Value] = {}
    c.expect("(")
    if not c.eat(")"):
        while True:
            name = _value_name(c)
            c.expect(":")
            scope[name] = g.add_input(name, _type(c), exact=True)
            if c.eat(")"):
                break
            c.expect(",")
    c.expect("{")

    def lookup(c: _Cursor) -> Value:
        name = _value_name(c)
        if name not in scope:
            raise c.error(f"%{name} is not defined above")
        return scope[name]

    finished = False
    for n, line in lines[1:]:
        c = _Cursor(line, n)
        if finished:
            raise c.error("text after the closing '}'")
        if c.eat("}"):
            finished = True
        elif c.eat("return"):
            outs = [] if c.done() else [lookup(c)]
            while c.eat(","):
                outs.append(lookup(c))
            g.outputs = outs
        elif c.eat("const"):
            name = _value_name(c)
            c.expect(":")
            t = _type(c)
            c.expect("=")
            c.expect("@")
            key = c.regex(_NAME, "array name").group(0)
            if key not in g.arrays:
                raise c.error(f"constant data @{key} is missing from the array table")
            scope[name] = g.add_const(name, None, t, exact=True, array=key)
        else:
            names = [_value_name(c)]
            while c.eat(","):
                names.append(_value_name(c))
            c.expect("=")
            op = c.regex(r"[a-z_][a-z0-9_]*", "op name").group(0)
            c.expect("(")
            args = []
            if not c.eat(")"):
                while True:
                    args.append(lookup(c))
                    if c.eat(")"):
                        break
                    c.expect(",")
            attrs = {}
            if c.eat("{"):
                while True:
                    key = c.regex(r"[a-z_][a-z0-9_]*", "attribute name").group(0)
                    c.expect("=")
                    attrs[key] = _attr_value(c)
                    if c.eat("}"):
                        break
                    c.expect(",")
            c.expect(":")
            types = [_type(c)]
            while c.eat(","):
                types.append(_type(c))
            if len(types) != len(names):
                raise c.error(f"{len(names)} results but {len(types)} types")
            for name in names:
                if name in scope:
                    raise c.error(f"%{name} is defined twice")
            node = g.add_node(op, args, types, attrs, names=names, exact=True)
            scope.update({v.name: v for v in node.outputs})
        if not c.done():
            raise c.error("unexpected text")
    if not finished:
        raise IRError("IR text ends without the closing '}'")
    return g
