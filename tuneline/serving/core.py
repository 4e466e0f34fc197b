"""What both transports (REST, gRPC) share: the version served, the batcher, the limits a request is checked
against, and the model's metadata and statistics. A transport only turns its wire format into `infer` calls."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tuneline.kinds import kind
import tuneline
from tuneline.serving.batcher import Batcher
from tuneline.serving.errors import BadRequest, DeadlineExceeded, NotFound, NotReady, ServingError, TooLarge, \
    Unprocessable
from tuneline.serving.model import LoadedModel, ModelHolder
from tuneline.serving.settings import ServeSettings
from tuneline.serving.v2 import EXTENSIONS, INPUT, outputs_of


@dataclass
class Statistics:
    """Per-model counters, as Triton's statistics extension reports them."""

    inferences: int = 0  # texts answered
    executions: int = 0  # model batches
    success: list[int] = field(default_factory=lambda: [0, 0])  # requests, nanoseconds
    fail: list[int] = field(default_factory=lambda: [0, 0])
    timed_out: int = 0
    last_inference_ms: int = 0


class Inference:
    """One served model behind a batcher: `infer` checks a request against the limits and runs it."""

    def __init__(self, settings: ServeSettings, holder: ModelHolder, observe=None):
        self.settings, self.holder = settings, holder
        self.statistics = Statistics()

        def observed(texts: int) -> None:
            self.statistics.executions += 1
            if observe:
                observe(texts)

        self.batcher = Batcher(holder, settings.max_batch_size, settings.max_wait_ms / 1000, observed,
                               settings.model_workers(), ready=settings.model_workers() * settings.texts_per_run,
                               max_queue=settings.max_queue_texts)

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The version being served, if `name` (and `version`, when given) are it; NotFound otherwise."""
        if name != self.holder.name:
            raise NotFound(f"unknown model {name!r}; this server serves {self.holder.name!r}")
        model = self.holder.current
        if model is None:
            raise NotReady(f"model {name!r} is still loading")
        if version not in (None, "", model.version):
            raise NotFound(f"model {name!r} has no version {version!r} here; this server serves version "
                           f"{model.version} ({self.settings.model_uri})")
        return model

    def checked(self, texts: list[str]) -> list[str]:
        """The texts the model will see, or the limit they break (TooLarge, naming the setting) or the input the
        tokenizer cannot read (BadRequest, naming its index)."""
        settings = self.settings
        if len(texts) > settings.max_inputs:
            raise TooLarge(f"{len(texts)} inputs; at most {settings.max_inputs} per request (max_inputs)")
        too_long = [i for i, text in enumerate(texts) if len(text) > settings.max_text_chars]
        if too_long and settings.over_length == "reject":
            raise TooLarge(f"inputs {too_long[:10]} are longer than {settings.max_text_chars} characters "
                           f"(max_text_chars; over_length=truncate cuts them instead)")
        texts = [text[: settings.max_text_chars] for text in texts]
        chars = sum(map(len, texts))
        if chars > settings.max_request_chars:
            raise TooLarge(f"the request's {len(texts)} inputs hold {chars} characters; at most "
                           f"{settings.max_request_chars} per request (max_request_chars): send them in parts")
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:  # a lone surrogate ("\ud800" is valid JSON, not text)
                raise BadRequest(f"input {i} is not valid Unicode text: {error.reason} at character {error.start} "
                                 f"({text[error.start]!r})") from None
        return texts

    async def infer(self, texts: list[str], parameters: dict[str, Any] | None = None,
                    timeout_s: float | None = None) -> tuple[LoadedModel, list[dict[str, Any]], int | None]:
        """(the version that answered, one output per text, the seed a sampled request drew with)."""
        started = time.perf_counter_ns()
        deadlines = [t for t in (self.settings.request_timeout_s or None, timeout_s) if t]
        try:
            result = await self._infer(self.checked(texts), dict(parameters or {}), min(deadlines, default=None))
        except ServingError as error:
            self.statistics.fail[0] += 1
            self.statistics.fail[1] += time.perf_counter_ns() - started
            self.statistics.timed_out += isinstance(error, DeadlineExceeded)
            raise
        self.statistics.success[0] += 1
        self.statistics.success[1] += time.perf_counter_ns() - started
        self.statistics.inferences += len(texts)
        self.statistics.last_inference_ms = int(time.time() * 1000)
        return result

    async def _infer(self, texts: list[str], parameters: dict[str, Any], timeout: float | None):
        model = self.holder.current
        if model is None:
            raise NotReady("the model is still loading")
        if not kind(model.task).generative:
            if parameters:
                raise Unprocessable(f"parameters {sorted(parameters)} apply to generation models; {model.name} is "
                                    f"a {model.task} model")
            return *(await self.batcher.submit(texts, timeout=timeout)), None
        seed = parameters.pop("seed", None)
        try:
            sampled = model.decoding(parameters).do_sample
            if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
                raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
        except (TypeError, ValueError) as error:  # decoding settings the model refuses (a batch shares them)
            raise Unprocessable(f"parameters: {error}") from None
        # Each sampled row draws from its own (seed, row) generator, so sampled requests batch like greedy
        # ones: with the requests of the same settings, and the same text for a seed alone or in any batch.
        seed = (secrets.randbits(63) if seed is None else seed) if sampled else None
        try:
            return *(await self.batcher.submit(texts, parameters, seed, timeout=timeout)), seed
        except (TypeError, ValueError) as error:  # refused inside the batch (beam search, for one)
            raise Unprocessable(f"parameters: {error}") from None

    # -- metadata, as the protocol's metadata endpoints and RPCs return it
    @staticmethod
    def server_metadata() -> dict[str, Any]:
        return {"name": "tuneline", "version": tuneline.__version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.model(name, version)
        return {"name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx",
                "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in outputs_of(model.task)],
                "parameters": {"task": model.task, "labels": ",".join(model.labels)}}

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration extension, for what a Triton user's tooling reads of it."""
        model = self.model(name, version)
        types = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}
        return {"name": model.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                "max_batch_size": self.settings.max_inputs,
                "input": [{"name": INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
                "output": [{"name": n, "data_type": types[d], "dims": [1]} for n, d in outputs_of(model.task)],
                "dynamic_batching": {"max_queue_delay_microseconds": int(self.settings.max_wait_ms * 1000)},
                "parameters": {"task": {"string_value": model.task}}}

    def repository_index(self) -> list[dict[str, str]]:
        model = self.holder.current
        if model is None:
            return [{"name": self.holder.name, "state": "LOADING"}]
        return [{"name": model.name, "version": model.version, "state": "READY"}]

    def model_statistics(self, name: str, version: str | None = None) -> dict[str, Any]:
        model, s = self.model(name, version), self.statistics
        return {"model_stats": [{
            "name": model.name, "version": model.version, "last_inference": s.last_inference_ms,
            "inference_count": s.inferences, "execution_count": s.executions,
            "inference_stats": {"success": {"count": s.success[0], "ns": s.success[1]},
                                "fail": {"count": s.fail[0], "ns": s.fail[1]}},
        }]}
