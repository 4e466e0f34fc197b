"""INT8 quantization: onnxruntime dynamic and static (QDQ), and PyTorch dynamic.

Every function writes one file and returns its path; whether the result kept
its accuracy is decided by the caller on the test split (`tuneline.export.variants`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tuneline.errors import ConfigError

log = logging.getLogger(__name__)

# The ops worth quantizing in a transformer: they hold the weights (Gather: the embedding tables, a third of
# MiniLM's bytes) and nearly all the FLOPs. Quantizing Add, Mul or Softmax as well (the static quantizer's
# default) costs accuracy and buys little on CPU.
QUANTIZED_OP_TYPES = ["MatMul", "Gemm", "Attention", "Gather"]
# Fused contrib ops (export.optimize) carry no inferred output types; the graphs are FP32 throughout.
FLOAT = 1  # onnx.TensorProto.FLOAT
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def quantizable_nodes(onnx_path: Path) -> dict[str, str]:
    """`{node name: op type}` of the nodes the quantizer would touch, in graph order."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return {node.name: node.op_type for node in graph.node if node.op_type in QUANTIZED_OP_TYPES
            # a Gather of shapes or ids is not quantized; only one reading from a weight table is
            and (node.op_type != "Gather" or node.input[0] in weights)}


def resolve_exclusions(onnx_path: Path, patterns: list[str], strict: bool = True) -> list[str]:
    """Node names matched by the `export.keep_fp32` glob patterns; with `strict`, a pattern that matches
    nothing is an error (a typo would otherwise quantize what the user meant to keep)."""
    if not patterns:
        return []
    candidates = quantizable_nodes(onnx_path)
    excluded: list[str] = []
    for pattern in patterns:
        matched = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
        if not matched and strict:
            names = list(candidates)
            raise ConfigError(f"export.keep_fp32 pattern {pattern!r} matches no MatMul/Gemm/Attention/Gather node of "
                              f"{onnx_path.name}; node names look like: {', '.join(names[:3] + names[-2:])}")
        excluded.extend(name for name in matched if name not in excluded)
    log.info("keeping %d of %d quantizable nodes in FP32: %s", len(excluded), len(candidates), excluded)
    # The dynamic quantizer first splits a Gemm into `<name>_MatMul` + Add, and checks the new name.
    return excluded + [f"{name}_MatMul" for name in excluded if candidates[name] == "Gemm"]


def quantize_dynamic_int8(onnx_path: Path, output_path: Path, per_channel: bool = True,
                          keep_fp32: list[str] | None = None, strict: bool = True) -> Path:
    """INT8 weights, activations quantized at run time from their own range.

    Per-channel weight scales kept SST-2 dev accuracy at the FP32 level where
    one scale per tensor lost 0.9 points (benchmarks/README.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(onnx_path), str(output_path), weight_type=QuantType.QInt8, per_channel=per_channel,
        op_types_to_quantize=QUANTIZED_OP_TYPES, nodes_to_exclude=resolve_exclusions(onnx_path, keep_fp32 or [], strict),
        extra_options={"DefaultTensorType": FLOAT},
    )
    return output_path


def quantize_static_int8(onnx_path: Path, output_path: Path, calibration: list[dict[str, np.ndarray]],
                         method: str = "minmax", per_channel: bool = True, keep_fp32: list[str] | None = None) -> Path:
    """INT8 QDQ graph whose activation ranges were measured on `calibration` batches (graph inputs by name).

    Activations unsigned, weights signed (U8S8): the pair onnxruntime's x86 kernels fuse into QLinearMatMul.
    With signed activations only half of MiniLM's MatMuls fused (the rest ran as FP32 MatMuls between Q/DQ
    pairs, slower than FP32); with U8 all of them do (benchmarks/README.md). On CPUs without VNNI, U8S8 can
    saturate; the accuracy check after quantization is what catches it.
    """
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          create_calibrator, quantize_static)
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ConfigError("static quantization needs calibration rows; export.calibration_rows is 0 or the data is empty")
    excluded = resolve_exclusions(onnx_path, keep_fp32 or [])
    calibrate_method = getattr(CalibrationMethod, CALIBRATION_METHODS[method])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches: Iterator[dict[str, np.ndarray]] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="tuneline-calibration-") as scratch:
        # Shape inference and constant folding first, as onnxruntime advises; its symbolic shape pass gives up
        # on these graphs (dynamic sequence axis), so ONNX shape inference it is.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        # The ranges are computed here rather than inside quantize_static, which gives the entropy calibrator
        # 128 histogram bins for 128 quantized bins: one candidate threshold, the full range, i.e. minmax.
        # 2048 bins (TensorRT's choice) let it actually search for the clipping threshold.
        calibrator = create_calibrator(
            prepared, QUANTIZED_OP_TYPES, augmented_model_path=str(Path(scratch) / "augmented.onnx"),
            calibrate_method=calibrate_method,
            extra_options={"num_bins": 2048, "num_quantized_bins": 128} if method == "entropy" else {},
        )
        calibrator.collect_data(Reader())
        ranges = Path(scratch) / "ranges.json"
        save_tensors_data(calibrator.compute_data(), ranges)
        del calibrator
        quantize_static(
            str(prepared), str(output_path), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OP_TYPES,
            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded, calibrate_method=calibrate_method, calibration_cache_path=ranges,
            extra_options={"WeightSymmetric": True, "DefaultTensorType": FLOAT},
        )
    return output_path


def quantize_torch_dynamic(module, example: tuple, output_path: Path, input_names: list[str]) -> Path:
    """PyTorch dynamic INT8 of every Linear layer, saved as TorchScript: loads with `torch.jit.load`, no Python model code.

    `module` takes the inputs named `input_names` positionally (the wrapper the ONNX export traces); the
    names travel in the file as `input_names.json`.
    """
    import warnings

    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        # torch deprecates quantized tensors in favour of torchao (not installed here); tracing warns about
        # Python-side shape checks that are constant for this graph, as in the ONNX export.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
        traced = torch.jit.trace(quantized, example, check_trace=False, strict=False)
    torch.jit.save(traced, str(output_path), _extra_files={"input_names.json": json.dumps(list(input_names))})
    return output_path


def count_ops(onnx_path: Path) -> dict[str, int]:
    """How many nodes of each operator type the graph holds."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
