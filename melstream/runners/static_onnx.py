"""Fixed-shape ONNX: a network's dynamic ONNX frozen at one bucket's size, no variable axis but the batch.

What a compile-ahead accelerator needs (and what the ``cpu-static`` profile serves, one file per bucket): the
variable axis of every input and output is set to the bucket, and the shape arithmetic the exporter traced
(``Shape -> Gather -> Range`` for a mask's positions, and what follows from it) is folded into constants,
so shape inference finds every tensor's size static except the batch.  Only the graph's shape computation
changes; its parameters and arithmetic are the addon's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.errors import AddonError

if TYPE_CHECKING:
    from melstream_client.spec import NetworkSpec

BATCH = "batch"  # the one symbolic dimension left
MAX_FOLD_ROUNDS = 20


def static_file_name(network: str, bucket: int) -> str:
    """The file of ``network`` frozen at ``bucket`` (in a cpu-static repository's model version directory)."""
    return f"{network}.b{bucket}.onnx"


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def dynamic_tensors(model: Any) -> dict[str, list[int | None]]:
    """Every tensor of ``model`` (inputs, outputs, inferred intermediates) with an unknown size past its first
    (batch) axis, or with no known rank: what a compile-ahead compiler could not size.  Empty when frozen."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    found: dict[str, list[int | None]] = {}
    for vi in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if not vi.type.tensor_type.HasField("shape"):
            found[vi.name] = []
            continue
        dims = _dims(vi)
        if any(d is None for d in dims[1:]):
            found[vi.name] = dims
    return found


def _fold_once(model: Any) -> bool:
    """Replace by constants the nodes whose outputs are known now: a Gather of static dimensions from a Shape,
    and any node whose inputs are all constants; drop constants nobody reads.  True if anything changed."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    shapes = {vi.name: _dims(vi) for vi in (*graph.value_info, *graph.input, *graph.output)}
    consts: dict[str, np.ndarray] = {}
    partial: dict[str, list[int | None]] = {}
    nodes, changed = [], False
    for node in graph.node:
        value = None
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Shape" and not node.attribute and node.input[0] in shapes:
            partial[node.output[0]] = shapes[node.input[0]]
        elif node.op_type == "Gather" and node.input[0] in partial and node.input[1] in consts:
            index = consts[node.input[1]]
            picked = [partial[node.input[0]][int(i)] for i in np.atleast_1d(index)]
            if all(p is not None for p in picked):
                value = np.array(picked if index.ndim else picked[0], dtype=np.int64)
        elif node.input and all(i in consts for i in node.input if i) and len(node.output) == 1:
            single = helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)])
            evaluated: Any = ReferenceEvaluator(helper.make_model(single, opset_imports=model.opset_import)).run(
                None, {i: consts[i] for i in node.input if i})
            value = evaluated[0]
        if value is not None:
            consts[node.output[0]] = value
            node = helper.make_node("Constant", [], [node.output[0]], value=numpy_helper.from_array(np.asarray(value), node.output[0]))
            changed = True
        nodes.append(node)
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    alive = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    changed |= len(alive) != len(nodes)
    del graph.node[:]
    graph.node.extend(alive)
    return changed


def freeze(model: Any, spec: NetworkSpec, size: int) -> Any:
    """A copy of ``model`` (an ``onnx.ModelProto`` of network ``spec``) with its variable axis fixed at ``size``
    and the batch named :data:`BATCH`; raises :class:`AddonError` if a tensor is still not sized after folding."""
    import onnx

    frozen = onnx.ModelProto.FromString(model.SerializeToString())
    specs = {t.name: t for t in (*spec.all_inputs(), *spec.outputs)}
    for vi in (*frozen.graph.input, *frozen.graph.output):
        t = specs.get(vi.name)
        if t is None:
            raise AddonError(f"network {spec.name!r}: its ONNX has a tensor {vi.name!r} that addon.json does not declare")
        dims = vi.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_param = BATCH
        for i, d in enumerate(t.shape, start=1):
            dims[i].Clear()
            dims[i].dim_value = size if d == -1 else d
    del frozen.graph.value_info[:]
    for _ in range(MAX_FOLD_ROUNDS):
        frozen = onnx.shape_inference.infer_shapes(frozen, data_prop=True)
        changed = _fold_once(frozen)
        del frozen.graph.value_info[:]
        if not changed:
            break
    frozen = onnx.shape_inference.infer_shapes(frozen, data_prop=True, strict_mode=True)
    left = dynamic_tensors(frozen)
    if left:
        raise AddonError(f"network {spec.name!r} at size {size}: tensors still of unknown size after folding: "
                         f"{dict(list(left.items())[:5])}")
    onnx.checker.check_model(frozen)
    return frozen


def frozen_bytes(path: str, spec: NetworkSpec) -> dict[int, bytes]:
    """``{bucket: serialized frozen model}`` for every bucket of ``spec`` (its dynamic ONNX at ``path``)."""
    import onnx

    model = onnx.load(path)
    return {b: freeze(model, spec, b).SerializeToString() for b in spec.buckets}
