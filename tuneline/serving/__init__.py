"""Serve the ONNX model of a registered version: FastAPI + uvicorn + onnxruntime (+ grpcio), no torch, no Prefect.

    tuneline serve --model models:/NAME@champion [--host 127.0.0.1 --port 8080 --grpc-port 8081]

- `POST /v1/predict`: `{"inputs": ["text", ...], "parameters": {...}}` -> labels and scores, values, or
  generated texts (generation tasks take per-request decoding settings in `parameters`).
- The Open Inference Protocol v2 (KServe, Triton) over REST: server and model metadata, live/ready, infer with
  JSON or binary tensors, Triton's repository index, model configuration and statistics extensions; and over
  gRPC (`grpc_server`) with KServe's grpc_predict_v2.proto, sharing the same batcher.
- `/metrics`: Prometheus text (requests, latency, batch sizes, shed and timed-out requests, the version served).

Concurrent requests are batched (up to `max_batch_size` texts, waiting at most `max_wait_ms`); generation
requests only with the same decoding settings (a sampled request's `seed` aside: each row draws from its
own generator). The model runs on `workers` threads with `threads` onnxruntime threads each (by default
one per core, one each). A classifier's batch is sorted by length and cut into pieces of at most
`texts_per_run` texts, spread over the threads; a cut goes where padding would cost more than another call.
A request that fails (a text the tokenizer cannot read) fails alone; a full queue answers 503 with Retry-After,
a request past its deadline 504. With an alias in the URI the server polls the registry and swaps to a new version
between batches, so a request in flight finishes on the version it started on. Only the files serving reads are
downloaded (MLmodel, one ONNX model, the tokenizer), not the whole version.

The modules: `settings` (ServeSettings, the one definition of every flag), `model` (a version made ready to
predict, the holder that swaps versions), `batcher`, `errors`, `v2` (the protocol's wire format), `core` (what
both transports share), `rest` (FastAPI) and `grpc_server`. None imports torch, transformers or Prefect.
"""

import importlib

# Imported when first asked for, so that reading the settings (the CLI builds `tuneline serve`'s flags from them)
# loads neither FastAPI nor onnxruntime.
_HOME = {"Batcher": "batcher", "CALL_CHARS": "model", "TOKENIZER_FILES": "model", "LoadedModel": "model",
         "ModelHolder": "model", "files_to_serve": "model", "in_order": "model", "length_pieces": "model",
         "load_model": "model", "run_sorted": "model", "create_app": "rest", "serve": "rest",
         "ServeSettings": "settings", "available_cores": "settings"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'tuneline.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tuneline.serving.{_HOME[name]}"), name)
