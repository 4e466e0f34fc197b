"""Runtime: the exported model at inference time, with onnxruntime and tokenizers only: `classifier` (classification
and regression), `generator` (seq2seq, causal LM, with past key values) and `pyfunc`, the MLflow model of a registered
version.

Imports only `tuneline.config` and `tuneline.kinds`; never torch, transformers or Prefect (serving and `tuneline.load_model` run on it).
"""
