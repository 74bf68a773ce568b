#!/usr/bin/env python3
"""Check that two ONNX files hold the same model, whatever their layout (inline or external data).

Usage: /usr/bin/python3 tools/bench/same_model.py A.onnx B.onnx

Compares the graph without its initializers (nodes, inputs, outputs, value infos), the model's
other fields, and every initializer's name, shape, type and bytes, as onnx loads them (external
data read in). Exit status 0 and "identical" when they match; an AssertionError naming the
difference otherwise. Used to compare the streaming writer's output with an earlier writer's.
"""
import sys

import onnx
from onnx import numpy_helper


def main(a_path, b_path):
    a, b = onnx.load(a_path), onnx.load(b_path)

    def without_initializers(g):
        g = onnx.GraphProto.FromString(g.SerializeToString())
        del g.initializer[:]
        return g.SerializeToString()

    def without_graph(m):
        m = onnx.ModelProto.FromString(m.SerializeToString())
        m.ClearField("graph")
        return m.SerializeToString()

    assert without_initializers(a.graph) == without_initializers(b.graph), "the graphs differ"
    assert without_graph(a) == without_graph(b), "the model fields differ"
    names = [t.name for t in a.graph.initializer]
    assert names == [t.name for t in b.graph.initializer], "the initializers differ in names or order"
    for x, y in zip(a.graph.initializer, b.graph.initializer):
        assert list(x.dims) == list(y.dims) and x.data_type == y.data_type, f"{x.name}: shape or type differs"
        assert numpy_helper.to_array(x).tobytes() == numpy_helper.to_array(y).tobytes(), f"{x.name}: bytes differ"
    print(f"identical: {len(names)} initializers")


if __name__ == "__main__":
    main(*sys.argv[1:3])
