"""Value, Node, Graph: a flat dataflow graph whose constructors keep use-lists right.

A graph owns an array table (`arrays`, the sidecar `.npz` of the text format): constant
values and array-valued attributes (`mult = @m0`) refer to it by name.
"""
from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from nnfpga.errors import IRError
from nnfpga.ir.types import QuantType, TensorType

_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def clean_name(hint: str) -> str:
    """A valid IR name derived from any string (ONNX names can hold anything)."""
    name = re.sub(r"[^A-Za-z0-9_.]", "_", hint).strip("._") or "v"
    if not (name[0].isalpha() or name[0] == "_"):
        name = "v" + name
    return name


@dataclass(frozen=True)
class ArrayRef:
    """An attribute value naming an array in the graph's array table (`@name`)."""

    name: str
    """Key in `Graph.arrays`."""

    def __repr__(self) -> str:
        return f"@{self.name}"


class Value:
    """An SSA value: a graph input, a constant or a node result."""

    def __init__(self, name: str, type: TensorType, producer: Node | None = None,
                 array: str | None = None):
        self.name = name
        """Unique name within the graph (printed as %name)."""
        self.type = type
        """Static tensor type."""
        self.producer = producer
        """The node computing it; None for graph inputs and constants."""
        self.array = array
        """For a constant: the key of its data in the graph's array table."""
        self.uses: list[tuple[Node, int]] = []
        """(node, input index) pairs reading this value."""

    @property
    def is_const(self) -> bool:
        return self.array is not None

    def __repr__(self) -> str:
        return f"%{self.name}"


class Node:
    """One op application. Create nodes with `Graph.add_node` so use-lists stay right."""

    def __init__(self, op: str, inputs: list[Value], attrs: dict[str, Any]):
        self.op = op
        """Op name, a key of the op table."""
        self.inputs: list[Value] = list(inputs)
        """Operands in order."""
        self.outputs: list[Value] = []
        """Results in order."""
        self.attrs: dict[str, Any] = dict(attrs)
        """Attributes: int, float, str, bool, list of int, IR type or ArrayRef."""

    @property
    def output(self) -> Value:
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def set_input(self, index: int, value: Value) -> None:
        old = self.inputs[index]
        old.uses.remove((self, index))
        self.inputs[index] = value
        value.uses.append((self, index))

    def __repr__(self) -> str:
        outs = ", ".join(map(repr, self.outputs))
        return f"<{outs} = {self.op}(...)>"


class Graph:
    """Inputs, constants, nodes in topological order, outputs, and the array table."""

    def __init__(self, name: str = "main"):
        self.name = clean_name(name)
        """Graph name (printed as @name)."""
        self.inputs: list[Value] = []
        """Graph inputs, in order."""
        self.constants: list[Value] = []
        """Constant values, in order of creation."""
        self.nodes: list[Node] = []
        """Nodes in topological order."""
        self.outputs: list[Value] = []
        """Graph results, in order."""
        self.arrays: dict[str, np.ndarray] = {}
        """Array table: constant data and array-valued attributes by name."""
        self._names: set[str] = set()

    # -- naming ----------------------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        base = clean_name(hint)
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def fresh_array_name(self, hint: str) -> str:
        base = clean_name(hint)
        name, n = base, 0
        while name in self.arrays:
            n += 1
            name = f"{base}_{n}"
        return name

    def _claim(self, name: str) -> str:
        if not _NAME_OK.match(name):
            raise IRError(f"'{name}' is not a valid value name")
        if name in self._names:
            raise IRError(f"value name %{name} is defined twice")
        self._names.add(name)
        return name

    # -- construction ----------------------------------------------------------
    def add_input(self, name: str, type: TensorType, exact: bool = False) -> Value:
        value = Value(self._claim(name) if exact else self.fresh_name(name), type)
        self.inputs.append(value)
        return value

    def add_array(self, hint: str, data: np.ndarray) -> ArrayRef:
        """Put `data` in the array table under a fresh name and return a reference."""
        key = self.fresh_array_name(hint)
        self.arrays[key] = np.asarray(data)
        return ArrayRef(key)

    def add_const(self, name: str, data: np.ndarray, type: TensorType,
                  exact: bool = False, array: str | None = None) -> Value:
        """A constant value; `array` names existing table data, else `data` is stored."""
        vname = self._claim(name) if exact else self.fresh_name(name)
        if array is None:
            array = self.add_array(vname, data).name
        value = Value(vname, type, array=array)
        self.constants.append(value)
        return value

    def const_data(self, value: Value) -> np.ndarray:
        if value.array is None:
            raise IRError(f"%{value.name} is not a constant")
        return self.arrays[value.array]

    def add_node(self, op: str, inputs: Iterable[Value], out_types: list[TensorType],
                 attrs: dict[str, Any] | None = None, names: list[str] | None = None,
                 before: Node | None = None, exact: bool = False) -> Node:
        """Create a node (appended, or inserted before `before`) and its result values."""
        node = Node(op, list(inputs), attrs or {})
        hints = names or [op] * len(out_types)
        for hint, t in zip(hints, out_types):
            vname = self._claim(hint) if exact else self.fresh_name(hint)
            node.outputs.append(Value(vname, t, producer=node))
        for idx, v in enumerate(node.inputs):
            v.uses.append((node, idx))
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    # -- rewriting ---------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Every reader of `old` (and the graph outputs) reads `new` instead."""
        for node, idx in list(old.uses):
            node.set_input(idx, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_node(self, node: Node) -> None:
        """Remove a node whose results nobody reads; safe while iterating a copy."""
        for v in node.outputs:
            if v.uses or v in self.outputs:
                raise IRError(f"cannot remove {node.op} node: %{v.name} is still used")
        for idx, v in enumerate(node.inputs):
            v.uses.remove((node, idx))
        self.nodes.remove(node)
        for v in node.outputs:
            self._names.discard(v.name)

    def rename(self, value: Value, name: str) -> None:
        """Give `value` a name that is free (e.g. the name of a value just removed)."""
        self._names.discard(value.name)
        value.name = self.fresh_name(name)
        if value.is_const and value.name not in self.arrays:
            # Keep a constant's data under its own name so the text reads naturally.
            if sum(c.array == value.array for c in self.constants) == 1:
                self.arrays[value.name] = self.arrays.pop(value.array)
                value.array = value.name

    def remove_unused_constants(self) -> bool:
        unused = [c for c in self.constants if not c.uses and c not in self.outputs]
        for c in unused:
            self.constants.remove(c)
            self._names.discard(c.name)
        return bool(unused)

    def referenced_arrays(self) -> list[str]:
        """Array names used by constants, attributes and per-channel types, in print order."""
        seen: dict[str, None] = {}

        def visit_type(t: TensorType):
            if isinstance(t.element, QuantType) and isinstance(t.element.scale, str):
                seen.setdefault(t.element.scale)

        for v in self.inputs:
            visit_type(v.type)
        for c in self.constants:
            seen.setdefault(c.array)
            visit_type(c.type)
        for node in self.nodes:
            for key in sorted(node.attrs):
                if isinstance(node.attrs[key], ArrayRef):
                    seen.setdefault(node.attrs[key].name)
            for v in node.outputs:
                visit_type(v.type)
        return list(seen)

    def drop_unreferenced_arrays(self) -> None:
        keep = set(self.referenced_arrays())
        self.arrays = {k: v for k, v in self.arrays.items() if k in keep}

    def values(self) -> list[Value]:
        out = list(self.inputs) + list(self.constants)
        for node in self.nodes:
            out.extend(node.outputs)
        return out

    def clone(self) -> Graph:
        """A deep copy, as parsing the printed text would give (use-lists in node order,
        exactly its values' names claimed), sharing the array table's arrays."""
        g = Graph(self.name)
        g.arrays = dict(self.arrays)
        copies: dict[int, Value] = {}

        def copy_of(v: Value, producer: Node | None = None) -> Value:
            copies[id(v)] = Value(v.name, v.type, producer, v.array)
            return copies[id(v)]

        g.inputs = [copy_of(v) for v in self.inputs]
        g.constants = [copy_of(v) for v in self.constants]
        for node in self.nodes:
            n = Node(node.op, [copies[id(v)] for v in node.inputs], deepcopy(node.attrs))
            for index, v in enumerate(n.inputs):
                v.uses.append((n, index))
            n.outputs = [copy_of(v, n) for v in node.outputs]
            g.nodes.append(n)
        g.outputs = [copies[id(v)] for v in self.outputs]
        g._names = {v.name for v in g.values()}
        return g
