"""The MLflow pyfunc model of a registered version (logged as code, see `registry.register_model`).

`mlflow.pyfunc.load_model("models:/NAME@champion")` runs the INT8 ONNX model
(FP32 when no INT8 file was logged) with onnxruntime and tokenizers.
"""

from __future__ import annotations

import mlflow
import pandas as pd


class OnnxClassifierModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `text` column. Output: a DataFrame with `label` and `score`."""

    def load_context(self, context):
        from tuneline.onnx_classifier import OnnxClassifier

        settings = context.model_config or {}
        onnx_path = context.artifacts.get("onnx_int8") or context.artifacts["onnx"]
        self.classifier = OnnxClassifier(onnx_path, context.artifacts["hf_model"], int(settings.get("max_length", 128)))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = list(model_input["text"]) if isinstance(model_input, pd.DataFrame) else list(model_input)
        predictions = self.classifier.predict([str(t) for t in texts])
        return pd.DataFrame({"label": [p[0] for p in predictions], "score": [p[1] for p in predictions]})


mlflow.models.set_model(OnnxClassifierModel())
