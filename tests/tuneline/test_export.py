import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tuneline.config import ExportConfig
from tuneline.errors import ConfigError, ExportParityError, QuantizationAccuracyError
from tuneline.export.encoder import check_parity, export_and_quantize, export_onnx
from tuneline.runtime.classifier import OnnxClassifier
from tuneline.export.quantization import count_ops
from tuneline.training.engine import predict_proba
from tuneline.export.triton import write_triton_repository
from tuneline.export.variants import VariantResult, check_quantized, compare_variants

TEXTS = [f"review number {i} says {'great' if i % 2 else 'awful, truly awful and long-winded'}" for i in range(40)]
LABELS = ("LABEL_0", "LABEL_1")


def export(model_dir, folder, **settings):
    return export_and_quantize(model_dir, folder, ExportConfig(**settings), 64, TEXTS, calibration_texts=TEXTS)


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    return export(tiny_bert, tmp_path_factory.mktemp("onnx"))


def test_export_has_dynamic_axes_and_passes_parity(exported):
    graph = onnx.load(str(exported.onnx_path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == ["batch", "sequence"]
    assert exported.parity.max_abs_diff <= 1e-4
    # batches of several sizes and lengths were compared, not only the traced shape
    assert len({shape for shape in exported.parity.shapes}) >= 2
    # node names read like module paths, which is what keep_fp32 patterns are written against
    assert "/classifier/Gemm" in {node.name for node in graph.node}


def test_dynamic_int8_quantizes_the_matmuls_and_shrinks(exported):
    ops = count_ops(exported.int8_path)
    assert ops.get("MatMulInteger", 0) >= 14  # 2 layers x (q, k, v, out, 2 feed-forward) + pooler + head
    assert ops.get("DynamicQuantizeLinear", 0) > 0
    assert exported.int8_bytes < exported.onnx_bytes


# entropy is slow (28 s: a histogram of every activation); minmax and percentile cover the calibrated QDQ path
@pytest.mark.parametrize("method", ["minmax", pytest.param("entropy", marks=pytest.mark.slow), "percentile"])
def test_static_int8_is_a_qdq_graph_calibrated_on_training_rows(tiny_bert, tmp_path, method):
    result = export(tiny_bert, tmp_path, quantization="static", calibration_method=method, calibration_rows=16)
    ops = count_ops(result.int8_path)
    assert ops["QuantizeLinear"] >= 14 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # weights + activations
    assert not list(tmp_path.glob("augmented_model*")) and not list(tmp_path.glob("*.prepared.onnx"))
    # it runs, and a calibrated INT8 graph stays close to FP32 on the same inputs
    fp32 = OnnxClassifier(result.onnx_path, tiny_bert, 64).predict_proba(TEXTS)
    int8 = OnnxClassifier(result.int8_path, tiny_bert, 64).predict_proba(TEXTS)
    assert np.abs(fp32 - int8).max() < 0.05


def test_keep_fp32_leaves_the_matched_nodes_unquantized(tiny_bert, tmp_path):
    result = export(tiny_bert, tmp_path, keep_fp32=["/classifier/*", "/bert/encoder/layer.0/*"])
    graph = onnx.load(str(result.int8_path)).graph
    quantized = {n.name for n in graph.node if n.op_type == "MatMulInteger"}
    assert not [name for name in quantized if name.startswith(("/classifier/", "/bert/encoder/layer.0/"))]
    assert any(name.startswith("/bert/encoder/layer.1/") for name in quantized)
    assert count_ops(result.int8_path)["MatMulInteger"] == 14 - 1 - 6


def test_a_keep_fp32_pattern_that_matches_nothing_names_the_nodes(tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match=re.escape("'/head/*' matches no MatMul/Gemm/Attention/Gather node")) as caught:
        export(tiny_bert, tmp_path, keep_fp32=["/head/*"])
    assert "/bert/embeddings/word_embeddings/Gather" in str(caught.value) and "/classifier/Gemm" in str(caught.value)


def test_optimized_graph_fuses_layer_norms_and_keeps_parity(tiny_bert, tmp_path):
    result = export(tiny_bert, tmp_path)
    optimized = export(tiny_bert, tmp_path / "optimized", optimize=True, quantization="none")
    assert optimized.optimized and optimized.parity.max_abs_diff <= 1e-4
    assert count_ops(optimized.onnx_path).get("SkipLayerNormalization", 0) > 0
    assert "SkipLayerNormalization" not in count_ops(result.onnx_path)
    assert not (tmp_path / "optimized" / "model.plain.onnx").exists()


def test_torch_dynamic_writes_a_torchscript_file_that_scores_like_fp32(tiny_bert, tmp_path):
    result = export(tiny_bert, tmp_path, quantization="torch_dynamic")
    assert result.int8_path.name == "model.int8.pt" and result.int8_onnx_path is None
    variants = compare_variants("classification", tiny_bert, result.onnx_path, result.int8_path, "torch_dynamic",
                                TEXTS, [LABELS[i % 2] for i in range(len(TEXTS))], LABELS, 64, 8)
    assert [v.name for v in variants] == ["PyTorch FP32", "ONNX FP32", "PyTorch INT8 (dynamic)"]
    import torch

    graph = str(torch.jit.load(str(result.int8_path)).inlined_graph)
    assert graph.count("quantized::linear_dynamic") >= 14  # every Linear, run as INT8
    # close to FP32 on the same rows: the INT8 Linear layers compute the same function
    assert abs(variants[2].metrics["accuracy"] - variants[0].metrics["accuracy"]) <= 0.1


def test_variants_are_measured_and_onnx_fp32_scores_like_pytorch(exported, tiny_bert):
    targets = [LABELS[i % 2] for i in range(len(TEXTS))]
    variants = compare_variants("classification", tiny_bert, exported.onnx_path, exported.int8_path, "dynamic",
                                TEXTS, targets, LABELS, 64, 8)
    torch_fp32, onnx_fp32, int8 = variants
    assert int8.name == "ONNX INT8 (dynamic)" and int8.bytes == exported.int8_bytes
    assert onnx_fp32.metrics == pytest.approx(torch_fp32.metrics, abs=1e-9)
    assert all(v.latency_ms > 0 and v.rows_per_second > 0 for v in variants)
    row = int8.row("classification", torch_fp32)
    assert row["accuracy_change"] == pytest.approx(int8.metrics["accuracy"] - torch_fp32.metrics["accuracy"], abs=1e-4)


def test_a_quantized_model_that_lost_too_much_is_refused_with_advice():
    reference = VariantResult("PyTorch FP32", "model.safetensors", 1, 1.0, 1.0, {"accuracy": 0.90, "macro_f1": 0.9})
    onnx_fp32 = VariantResult("ONNX FP32", "model.onnx", 1, 1.0, 1.0, {"accuracy": 0.90, "macro_f1": 0.9})
    int8 = VariantResult("ONNX INT8 (dynamic)", "model.int8.onnx", 1, 1.0, 1.0, {"accuracy": 0.88, "macro_f1": 0.88})
    with pytest.raises(QuantizationAccuracyError, match=r"loss \+0\.0200, allowed export.max_accuracy_drop 0\.0100.*"
                                                        r"try quantization=static.*keep_fp32"):
        check_quantized("classification", [reference, onnx_fp32, int8], 0.01, "dynamic")
    assert "loss +0.0200" in check_quantized("classification", [reference, onnx_fp32, int8], 0.02, "dynamic")
    # regression checks R²
    regression = [VariantResult(n, "f", 1, 1.0, 1.0, {"mse": 1.0, "mae": 1.0, "r2": r2})
                  for n, r2 in (("PyTorch FP32", 0.8), ("ONNX FP32", 0.8), ("ONNX INT8 (static)", 0.7))]
    with pytest.raises(QuantizationAccuracyError, match="r2 0.7000 vs PyTorch FP32 0.8000"):
        check_quantized("regression", regression, 0.05, "static")


def _classifier_variants(rows: int, fp32_right: list[bool], int8_right: list[bool]) -> list[VariantResult]:
    """PyTorch FP32, ONNX FP32 and INT8 with per-row correctness on the same `rows` test rows."""
    def variant(name, right):
        return VariantResult(name, "f", 1, 1.0, 1.0, {"accuracy": sum(right) / rows, "macro_f1": sum(right) / rows},
                             {"correct": tuple(float(r) for r in right)})
    return [variant("PyTorch FP32", fp32_right), variant("ONNX FP32", fp32_right),
            variant("ONNX INT8 (dynamic)", int8_right)]


def test_one_row_of_30_changed_by_int8_is_not_a_failure():
    fp32 = [i < 27 for i in range(30)]
    int8 = [i < 26 for i in range(30)]  # one more row wrong: 3.3 points on 30 rows
    line = check_quantized("classification", _classifier_variants(30, fp32, int8), 0.01, "dynamic", 0.05)
    assert line == ("ONNX INT8 (dynamic) accuracy 0.8667 vs PyTorch FP32 0.9000: loss +0.0333, allowed "
                    "export.max_accuracy_drop 0.0100; McNemar's exact test on 30 paired rows: 1 right only in PyTorch "
                    "FP32, 0 right only in ONNX INT8 (dynamic), p=1: not significant at export.significance 0.05")
    # significance 1: the point bound alone decides, as before
    with pytest.raises(QuantizationAccuracyError, match=r"loss \+0\.0333"):
        check_quantized("classification", _classifier_variants(30, fp32, int8), 0.01, "dynamic", 1.0)


def test_a_1_5_point_int8_loss_on_10000_rows_is_a_failure():
    rows = 10_000
    fp32 = [i < 9_000 for i in range(rows)]
    int8 = [(r and not 8_750 <= i < 9_000) or 9_000 <= i < 9_100 for i, r in enumerate(fp32)]  # 250 lost, 100 won
    with pytest.raises(QuantizationAccuracyError) as caught:
        check_quantized("classification", _classifier_variants(rows, fp32, int8), 0.01, "dynamic", 0.05)
    message = str(caught.value)
    assert "accuracy 0.8850 vs PyTorch FP32 0.9000: loss +0.0150" in message
    assert "McNemar's exact test on 10000 paired rows: 250 right only in PyTorch FP32, 100 right only in ONNX INT8" \
        in message and ": significant at export.significance 0.05" in message
    assert float(re.search(r"p=([0-9.e+-]+)", message).group(1)) < 1e-10
    # the same loss within the point bound passes, with the test on record
    assert "p=" in check_quantized("classification", _classifier_variants(rows, fp32, int8), 0.02, "dynamic", 0.05)


def test_a_regressors_int8_loss_is_tested_on_per_row_squared_errors():
    errors = [0.1 * (i % 9) for i in range(300)]
    def variant(name, r2, shift):
        return VariantResult(name, "f", 1, 1.0, 1.0, {"mse": 1.0, "mae": 1.0, "r2": r2},
                             {"squared_error": tuple((e + shift) ** 2 for e in errors)})
    variants = [variant("PyTorch FP32", 0.8, 0.0), variant("ONNX FP32", 0.8, 0.0), variant("ONNX INT8 (static)", 0.7, 0.3)]
    with pytest.raises(QuantizationAccuracyError, match=r"Wilcoxon signed-rank test on 300 paired rows: ONNX INT8 "
                                                        r"\(static\) worse on 300, better on 0"):
        check_quantized("regression", variants, 0.05, "static")


def test_onnx_runtime_path_matches_pytorch(exported, tiny_bert):
    classifier = OnnxClassifier(exported.onnx_path, tiny_bert, max_length=64)
    expected = predict_proba(tiny_bert, TEXTS, max_length=64, device="cpu")
    assert np.abs(classifier.predict_proba(TEXTS, batch_size=7) - expected).max() < 1e-5
    assert classifier.labels == LABELS


def test_tokenizers_only_runtime_encodes_like_transformers(tiny_bert, exported):
    from transformers import AutoTokenizer

    classifier = OnnxClassifier(exported.onnx_path, tiny_bert, max_length=16)
    reference = AutoTokenizer.from_pretrained(tiny_bert)(TEXTS[:5], padding=True, truncation=True, max_length=16, return_tensors="np")
    ours = classifier.encode(TEXTS[:5])
    for name in ours:
        assert (ours[name] == reference[name]).all(), name


def test_a_corrupted_export_fails_parity_naming_the_output(exported, tiny_bert, tmp_path):
    model = onnx.load(str(exported.onnx_path))
    # Perturb the classifier weights: the graph still runs, the logits drift.
    target = next(t for t in model.graph.initializer if "classifier" in t.name and "weight" in t.name)
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) + 0.05, target.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ExportParityError, match="'logits'.*differs from PyTorch"):
        check_parity(tiny_bert, broken, TEXTS, max_length=64, atol=1e-4)
    # relative tolerance: a loose enough rtol accepts the same drift
    assert check_parity(tiny_bert, broken, TEXTS, max_length=64, atol=1e-4, rtol=1e3).max_abs_diff > 1e-4


def test_export_without_quantization(tiny_bert, tmp_path):
    result = export(tiny_bert, tmp_path, quantization="none")
    assert result.int8_path is None and result.int8_bytes is None
    assert export_onnx(tiny_bert, tmp_path / "again.onnx", 14, 32).is_file()


def test_triton_repository_is_written_from_the_graph(exported, tmp_path):
    repository = write_triton_repository({"reviews": exported.int8_path}, tmp_path / "triton")
    config = (repository / "reviews" / "config.pbtxt").read_text()
    assert (repository / "reviews" / "1" / "model.onnx").read_bytes() == exported.int8_path.read_bytes()
    assert 'name: "reviews"' in config and 'backend: "onnxruntime"' in config and "max_batch_size: 0" in config
    graph = onnx.load(str(exported.int8_path)).graph
    for tensor in graph.input:
        assert f'name: "{tensor.name}"\n    data_type: TYPE_INT64\n    dims: [ -1, -1 ]' in config
    assert 'name: "logits"\n    data_type: TYPE_FP32\n    dims: [ -1, 2 ]' in config
    with pytest.raises(ValueError, match="may hold letters"):
        write_triton_repository({"bad name": exported.int8_path}, tmp_path / "t2")


def test_contradictory_export_settings_fail_at_load():
    with pytest.raises(ValueError, match="keep_fp32 applies to ONNX quantization"):
        ExportConfig(quantization="torch_dynamic", keep_fp32=["/classifier/*"])
    with pytest.raises(ValueError, match="optimize with static quantization"):
        ExportConfig(optimize=True, quantization="static")


def test_a_regressor_exports_quantizes_and_is_scored_with_r2(tiny_bert, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=1, problem_type="regression",
                                                          ignore_mismatched_sizes=True)
    folder = tmp_path / "regressor"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    result = export_and_quantize(folder, tmp_path / "onnx", ExportConfig(), 64, TEXTS, task="regression")
    graph = onnx.load(str(result.onnx_path)).graph
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [1]  # one number per text
    assert result.parity.max_abs_diff <= 1e-4
    targets = [float(len(text) % 5) for text in TEXTS]
    variants = compare_variants("regression", folder, result.onnx_path, result.int8_path, "dynamic", TEXTS, targets,
                                (), 64, 8)
    assert set(variants[0].metrics) == {"mse", "mae", "r2"}
    assert variants[1].metrics == pytest.approx(variants[0].metrics, rel=1e-5)  # parity holds through the metrics
    assert "r2_change" in variants[2].row("regression", variants[0])
