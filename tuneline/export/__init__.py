"""Export: a trained folder to ONNX with parity checked against PyTorch (`encoder` for classifiers and regressors,
`generative` for seq2seq and causal LMs), INT8 quantization (`quantization`), the variants compared on the test split
(`variants`), a Triton model repository (`triton`) and what the export tasks call (`stage`). `common` holds what every
export returns.

Imports `tuneline.training` (to load the trained model), `tuneline.runtime`, `tuneline.kinds` and
`tuneline.evaluation`; `stage` also the registry. Never Prefect.
"""
