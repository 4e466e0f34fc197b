"""Run an exported classifier with onnxruntime and tokenizers only.

This is the serving path: it must not import torch, transformers or Prefect.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tuneline.kinds.classification import softmax


class OnnxClassifier:
    """An ONNX sequence classifier plus its tokenizer, loaded from files.

    `tokenizer_dir` is the folder `save_pretrained` wrote (tokenizer.json,
    tokenizer_config.json, config.json with `id2label`). `spinning=False` stops onnxruntime's
    threads from busy-waiting between operators.
    """

    def __init__(self, onnx_path: Path | str, tokenizer_dir: Path | str, max_length: int, threads: int | None = None,
                 spinning: bool = True):
        import onnxruntime as ort

        tokenizer_dir = Path(tokenizer_dir)
        self.max_length = max_length
        self.encode_texts = self.text_encoder(tokenizer_dir, max_length)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:  # idle threads sleep instead of busy-waiting: for a process that shares its cores (a server)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        # transformers omits id2label from config.json when it is the default LABEL_<i>.
        id2label = json.loads((tokenizer_dir / "config.json").read_text()).get("id2label") or {}
        classes = self.session.get_outputs()[0].shape[-1]
        self.labels = tuple(id2label.get(str(i), f"LABEL_{i}") for i in range(classes))

    @staticmethod
    def text_encoder(tokenizer_dir: Path, max_length: int):
        """texts -> token ids, attention mask and token types (int64), padded to the batch's longest text."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        settings = json.loads((Path(tokenizer_dir) / "tokenizer_config.json").read_text())
        pad_token = settings.get("pad_token") or "[PAD]"
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad_token)

        def encode(texts: list[str]) -> dict[str, np.ndarray]:
            encodings = tokenizer.encode_batch(list(texts))
            return {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }

        return encode

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and token types, padded to the batch's longest text."""
        arrays = self.encode_texts(texts)
        return {name: arrays[name] for name in self.input_names}

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], inputs)[0]

    def batch_logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Raw logits, one row per text, computed `batch_size` texts at a time."""
        texts = list(texts)
        parts = [self.logits(self.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per text, columns in `self.labels` order."""
        return softmax(self.batch_logits(texts, batch_size))

    def predict_values(self, texts: list[str], batch_size: int = 64) -> list[float]:
        """A regression model's prediction for each text (its single output)."""
        return [float(v) for v in self.batch_logits(texts, batch_size)[:, 0]]

    def predict(self, texts: list[str], batch_size: int = 64) -> list[tuple[str, float]]:
        """`(label, probability)` of the most likely class for each text."""
        probabilities = self.predict_proba(texts, batch_size)
        return [(self.labels[i], float(p[i])) for p, i in zip(probabilities, probabilities.argmax(axis=1))]
