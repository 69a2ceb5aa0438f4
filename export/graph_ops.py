"""Op types in an exported graph, and which compute ops still run in float in an int8 artefact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Ops that only move or convert data at the float/int8 boundary; not "compute".
_TFLITE_BOUNDARY = {"QUANTIZE", "DEQUANTIZE"}
_ONNX_BOUNDARY = {"QuantizeLinear", "DequantizeLinear"}
# Pure data-movement ONNX ops whose dtype follows their input (int8 when fed by int8 tensors).
_ONNX_LAYOUT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Constant"}


@dataclass(frozen=True)
class OpReport:
    """Sorted unique op types, and those compute op types that have float operands."""

    ops: list[str]
    float_ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def tflite_ops(content: bytes | Path) -> OpReport:
    """Op types in a TFLite flatbuffer (read without delegates, so XNNPACK does not hide them).

    An op counts as float when any of its operands or results is float16/float32; quantise and
    dequantise ops are listed but not counted as compute.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = {"model_path": str(content)} if isinstance(content, (str, Path)) else {"model_content": content}
    interpreter = Interpreter(**source, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops, float_ops = set(), set()
    for detail in interpreter._get_ops_details():
        name = detail["op_name"]
        ops.add(name)
        types = [*detail.get("operand_types", []), *detail.get("result_types", [])]
        if name not in _TFLITE_BOUNDARY and any(np.issubdtype(np.dtype(t), np.floating) for t in types):
            float_ops.add(name)
    return OpReport(sorted(ops), sorted(float_ops))


def onnx_ops(path: Path) -> OpReport:
    """Op types in an ONNX graph; for QDQ graphs, the compute ops not wrapped in Q/DQ pairs.

    onnxruntime fuses DequantizeLinear -> op -> QuantizeLinear into an integer kernel; an op
    whose activation inputs do not all come from DequantizeLinear, or whose outputs do not all
    go to QuantizeLinear, runs in float. For a float graph every compute op is float.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    def is_int8_source(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in _ONNX_LAYOUT:
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    def feeds_quantize(name: str) -> bool:
        users = consumers.get(name, [])
        return bool(users) and name not in graph_outputs and all(u.op_type == "QuantizeLinear" for u in users)

    ops, float_ops = set(), set()
    for node in graph.node:
        ops.add(node.op_type)
        if node.op_type in _ONNX_BOUNDARY or node.op_type in _ONNX_LAYOUT:
            continue
        activations = [
            n for n in node.input if n and n not in initializers and getattr(producer.get(n), "op_type", "") != "Constant"
        ]
        inputs_int8 = bool(activations) and all(is_int8_source(n) for n in activations)
        wrapped = inputs_int8 and all(feeds_quantize(o) for o in node.output)
        if not wrapped:
            float_ops.add(node.op_type)
    return OpReport(sorted(ops), sorted(float_ops))
