"""A Triton Inference Server model repository for exported ONNX graphs.

Layout (https://github.com/triton-inference-server/server, docs/user_guide/model_repository.md):

    <repository>/<model>/config.pbtxt
    <repository>/<model>/1/model.onnx

The config is written from the graph itself, so names, types and shapes cannot drift from the file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

# ONNX TensorProto element type -> Triton data type
_TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL",
                 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _tensors(values) -> list[tuple[str, str, list[int]]]:
    out = []
    for value in values:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _TRITON_TYPES:
            raise ValueError(f"graph tensor {value.name!r} has ONNX element type {tensor.elem_type}, which Triton lacks")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        out.append((value.name, _TRITON_TYPES[tensor.elem_type], dims))
    return out


def triton_config(onnx_path: Path, model_name: str, instances: int = 1, kind: str = "KIND_CPU") -> str:
    """config.pbtxt text for one ONNX graph served by Triton's onnxruntime backend."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def block(kind_name: str, tensors) -> str:
        entries = ",\n".join(
            f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'
            for name, dtype, dims in tensors
        )
        return f"{kind_name} [\n{entries}\n]"

    inputs = _tensors(v for v in graph.input if v.name not in initializers)
    return "\n".join([
        f'name: "{model_name}"',
        'backend: "onnxruntime"',
        # 0: the batch axis is part of each tensor's dims. Triton's own batcher would need every request in a
        # batch to have the same sequence length, which tokenized text does not.
        "max_batch_size: 0",
        block("input", inputs),
        block("output", _tensors(graph.output)),
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
        "",
    ])


def write_triton_repository(graphs: dict[str, Path], repository: Path) -> Path:
    """One Triton model per `{model name: ONNX file}`, version 1; returns the repository folder."""
    for model_name, onnx_path in graphs.items():
        if not _MODEL_NAME.match(model_name):
            raise ValueError(f"Triton model name {model_name!r} may hold letters, digits, '.', '_' and '-' only")
        folder = repository / model_name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path, folder / "1" / "model.onnx")
        (folder / "config.pbtxt").write_text(triton_config(onnx_path, model_name))
    return repository
