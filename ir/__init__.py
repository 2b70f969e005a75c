"""The nnfpga IR: types, graph, op table, verifier, text format and interpreter."""
from nnfpga.ir.graph import ArrayRef, Graph, Node, Value, clean_name
from nnfpga.ir.interpreter import run, run_batch
from nnfpga.ir.parser import parse
from nnfpga.ir.printer import print_graph
from nnfpga.ir.types import F32, FloatType, IntType, QuantType, TensorType, i, u
from nnfpga.ir.verifier import verify

__all__ = ["ArrayRef", "Graph", "Node", "Value", "clean_name", "run", "run_batch", "parse",
           "print_graph", "F32", "FloatType", "IntType", "QuantType", "TensorType", "i", "u", "verify"]
