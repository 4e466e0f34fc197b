import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tuneline.errors import ExportParityError
from tuneline.export import check_parity, count_ops, export_and_quantize, export_onnx
from tuneline.onnx_classifier import OnnxClassifier
from tuneline.training import predict_proba

TEXTS = [f"review number {i} says {'great' if i % 2 else 'awful, truly awful and long-winded'}" for i in range(40)]


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    return export_and_quantize(tiny_bert, tmp_path_factory.mktemp("onnx"), TEXTS, max_length=64, opset=17,
                               atol=1e-4, quantization="dynamic")


def test_export_has_dynamic_axes_and_passes_parity(exported):
    graph = onnx.load(str(exported.onnx_path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == ["batch", "sequence"]
    assert exported.parity.max_abs_diff <= 1e-4
    # batches of several sizes and lengths were compared, not only the traced shape
    assert len({shape for shape in exported.parity.shapes}) >= 2


def test_int8_model_quantizes_the_matmuls_and_shrinks(exported):
    ops = count_ops(exported.int8_path)
    assert ops.get("MatMulInteger", 0) >= 12  # 2 layers x (q, k, v, out, 2 feed-forward)
    assert ops.get("DynamicQuantizeLinear", 0) > 0
    assert exported.int8_bytes < exported.onnx_bytes


def test_onnx_runtime_path_matches_pytorch(exported, tiny_bert):
    classifier = OnnxClassifier(exported.onnx_path, tiny_bert, max_length=64)
    expected = predict_proba(tiny_bert, TEXTS, max_length=64, device="cpu")
    assert np.abs(classifier.predict_proba(TEXTS, batch_size=7) - expected).max() < 1e-5
    assert classifier.labels == ("LABEL_0", "LABEL_1")


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


def test_export_without_quantization(tiny_bert, tmp_path):
    result = export_and_quantize(tiny_bert, tmp_path, TEXTS[:3], 32, 17, 1e-4, "none")
    assert result.int8_path is None and result.int8_bytes is None
    assert export_onnx(tiny_bert, tmp_path / "again.onnx", 14, 32).is_file()
