"""The MLflow pyfunc model of a registered version (logged as code, see `registry.register_model`).

`mlflow.pyfunc.load_model("models:/NAME@champion")` runs the INT8 ONNX model
(FP32 when no INT8 file was logged) with onnxruntime and tokenizers, no torch.
"""

from __future__ import annotations

import mlflow
import pandas as pd

from tuneline.kinds import kind


class OnnxClassifierModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `text` column. Output: `label` and `score` (classification), `value`
    (regression) or `generated` (seq2seq, causal_lm: the ONNX generation runtime with the run's decoding settings)."""

    def load_context(self, context):
        settings = context.model_config or {}
        onnx_path = context.artifacts.get("onnx_int8") or context.artifacts["onnx"]
        self.task = settings.get("task", "classification")
        if kind(self.task).generative:
            from tuneline.config import GenerationConfig
            from tuneline.runtime.generator import OnnxGenerator

            self.generator = OnnxGenerator(onnx_path)
            self.decoding = GenerationConfig(**(settings.get("generation") or {}))
            return
        from tuneline.runtime.classifier import OnnxClassifier

        self.classifier = OnnxClassifier(onnx_path, context.artifacts["hf_model"], int(settings.get("max_length", 128)))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = list(model_input["text"]) if isinstance(model_input, pd.DataFrame) else list(model_input)
        if kind(self.task).generative:
            return pd.DataFrame({"generated": self.generator.generate([str(t) for t in texts], self.decoding)})
        what = kind(self.task)
        scores = what.scores(self.classifier.batch_logits([str(t) for t in texts]))
        return pd.DataFrame(what.answers(scores, self.classifier.labels), columns=[name for name, _ in what.outputs])


mlflow.models.set_model(OnnxClassifierModel())
