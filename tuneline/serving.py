"""Serve the ONNX model of a registered version: FastAPI + uvicorn + onnxruntime, no torch, no Prefect.

    tuneline serve --model models:/NAME@champion [--host 127.0.0.1 --port 8080]

- `POST /v1/predict`: `{"inputs": ["text", ...], "parameters": {...}}` -> labels and scores, values, or
  generated texts (generation tasks take per-request decoding settings in `parameters`).
- Open Inference Protocol v2: `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}`,
  `/v2/models/{name}/infer` (one BYTES input).
- `/metrics`: Prometheus text (requests, latency, batch sizes, the version served).

Concurrent classification / regression requests are batched (up to `max_batch_size` texts, waiting at
most `max_wait_ms`); with an alias in the URI the server polls the registry and swaps to a new version
between batches, so a request in flight finishes on the version it started on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tuneline.config import GENERATIVE_TASKS

log = logging.getLogger(__name__)

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class ServeSettings(BaseModel):
    """How the server runs; `tuneline serve --help` lists them as flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = Field(description="models:/NAME@alias (followed as it moves) or models:/NAME/VERSION.")
    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 unless you mean to expose it.")
    port: int = Field(8080, ge=0, le=65535)
    max_batch_size: int = Field(32, ge=1, le=1024, description="Texts run together at most.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="How long a batch waits for more requests.")
    max_inputs: int = Field(256, ge=1, description="Texts one request may send.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text accepted, in characters.")
    over_length: Literal["reject", "truncate"] = Field("reject", description="What happens to a longer text.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body.")
    reload_interval_s: float = Field(30.0, ge=0, description="Alias polling interval; 0 turns reloading off.")
    token_env: str = Field("TUNELINE_SERVE_TOKEN", description="Env var whose value, when set, is the bearer token.")
    threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads; empty: all cores.")

    def reference(self) -> tuple[str, str]:
        """`(name, alias or version)` of the model URI; ValueError for anything else."""
        match = _URI.match(self.model_uri)
        if not match:
            raise ValueError(f"--model {self.model_uri!r} must be models:/NAME@alias or models:/NAME/VERSION")
        return match["name"], match["alias"] or match["version"]


@dataclass
class LoadedModel:
    """One registered version, ready to predict."""

    name: str
    version: str
    task: str
    labels: tuple[str, ...]
    predict: Callable[[list[str], dict[str, Any]], list[dict[str, Any]]]
    folder: Path
    loaded_at: float = field(default_factory=time.time)


def load_model(name: str, version: str, threads: int | None = None, scratch: Path | None = None) -> LoadedModel:
    """Download a version's files and build its onnxruntime predictor (INT8 ONNX when there is one)."""
    from tuneline import registry

    folder = Path(tempfile.mkdtemp(prefix=f"{name}-v{version}-", dir=scratch))
    artifacts = registry.download_version(name, version, folder)
    settings = (yaml.safe_load((artifacts.parent / "MLmodel").read_text())["flavors"]["python_function"]
                .get("config") or {})
    task, max_length = settings.get("task", "classification"), int(settings.get("max_length", 128))
    if task in GENERATIVE_TASKS:
        from tuneline.config import GenerationConfig
        from tuneline.onnx_generator import OnnxGenerator

        generator_dir = next(p for p in (artifacts / "generator.int8", artifacts / "generator") if p.is_dir())
        generator, defaults = OnnxGenerator(generator_dir, threads), dict(settings.get("generation") or {})

        def predict(texts: list[str], parameters: dict[str, Any]) -> list[dict[str, Any]]:
            decoding = GenerationConfig(**(defaults | parameters))
            return [{"generated": text} for text in generator.generate(texts, decoding)]

        return LoadedModel(name, version, task, (), predict, folder)
    from tuneline.onnx_classifier import OnnxClassifier

    onnx_path = next(p for p in (artifacts / "model.int8.onnx", artifacts / "model.onnx") if p.is_file())
    classifier = OnnxClassifier(onnx_path, artifacts / "hf_model", max_length, threads)
    if task == "regression":
        return LoadedModel(name, version, task, (), lambda texts, _: [{"value": v} for v in classifier.predict_values(texts)],
                           folder)
    predict = lambda texts, _: [{"label": label, "score": score} for label, score in classifier.predict(texts)]  # noqa: E731
    return LoadedModel(name, version, task, classifier.labels, predict, folder)


class ModelHolder:
    """The version being served; swapped whole, so a batch that took a reference keeps a working model."""

    def __init__(self, settings: ServeSettings, scratch: Path):
        self.settings, self.scratch = settings, scratch
        self.name, self.reference = settings.reference()
        self.current: LoadedModel | None = None

    def refresh(self) -> bool:
        """Load the version the reference points at, if it is not the one served; True when it swapped."""
        from tuneline import registry

        version = str(registry.resolve_version(self.name, self.reference).version)
        if self.current is not None and self.current.version == version:
            return False
        model = load_model(self.name, version, self.settings.threads, self.scratch)
        previous, self.current = self.current, model  # one assignment: readers see the old model or the new one
        log.info("serving %s version %s (%s)", self.name, version, model.task)
        if previous is not None:
            shutil.rmtree(previous.folder, ignore_errors=True)  # its sessions stay alive while referenced
        return True


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class Batcher:
    """Groups concurrent requests into batches of at most `max_texts`, waiting at most `max_wait` seconds."""

    def __init__(self, holder: ModelHolder, max_texts: int, max_wait: float, observe: Callable[[int], None]):
        self.holder, self.max_texts, self.max_wait, self.observe = holder, max_texts, max_wait, observe
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def submit(self, texts: list[str]) -> tuple[LoadedModel, list[dict[str, Any]]]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(texts, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size, deadline = len(batch[0].texts), loop.time() + self.max_wait
            while size < self.max_texts:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                batch.append(item)
                size += len(item.texts)
            model = self.holder.current  # one version for the whole batch, even if a reload lands meanwhile
            texts = [text for item in batch for text in item.texts]
            self.observe(len(texts))
            try:
                outputs = await asyncio.to_thread(model.predict, texts, {})
            except Exception as error:  # a model failure fails its requests, not the server
                for item in batch:
                    item.future.set_exception(error)
                continue
            start = 0
            for item in batch:
                item.future.set_result((model, outputs[start : start + len(item.texts)]))
                start += len(item.texts)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BYTES"]
    data: list[str]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)


def create_app(settings: ServeSettings, holder: ModelHolder | None = None):
    """The ASGI app. The model loads at start-up; `/v2/health/ready` says 200 once it has."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    scratch = Path(tempfile.mkdtemp(prefix="tuneline-serve-"))
    holder = holder or ModelHolder(settings, scratch)
    metrics = CollectorRegistry()
    requests = Counter("tuneline_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=metrics)
    latency = Histogram("tuneline_request_seconds", "Request latency", ["endpoint"], registry=metrics,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    batch_sizes = Histogram("tuneline_batch_texts", "Texts per model call", registry=metrics,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
    served = Gauge("tuneline_model_version", "Registered version being served", ["model"], registry=metrics)
    batcher = Batcher(holder, settings.max_batch_size, settings.max_wait_ms / 1000, batch_sizes.observe)

    async def follow_alias() -> None:
        while True:
            await asyncio.sleep(settings.reload_interval_s)
            try:
                if await asyncio.to_thread(holder.refresh):
                    served.labels(holder.name).set(float(holder.current.version))
            except Exception as error:  # the registry being away must not take the server down
                log.warning("could not check %s for a new version: %s", settings.model_uri, error)

    @asynccontextmanager
    async def lifespan(_app):
        await asyncio.to_thread(holder.refresh)
        served.labels(holder.name).set(float(holder.current.version))
        workers = [asyncio.create_task(batcher.run())]
        if settings.reload_interval_s and not holder.reference.isdigit():
            workers.append(asyncio.create_task(follow_alias()))
        yield
        for worker in workers:
            worker.cancel()
        shutil.rmtree(scratch, ignore_errors=True)

    app = FastAPI(title="tuneline", lifespan=lifespan)
    token = os.environ.get(settings.token_env) or None
    open_paths = ("/v2/health/", "/metrics")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started, endpoint = time.perf_counter(), request.url.path
        if token and not endpoint.startswith(open_paths):
            if request.headers.get("authorization") != f"Bearer {token}":
                requests.labels(endpoint, "401").inc()
                return JSONResponse({"error": "missing or wrong bearer token"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            requests.labels(endpoint, "413").inc()
            return JSONResponse({"error": f"request body of {length} bytes is over the limit of "
                                          f"{settings.max_body_bytes}"}, 413)
        response = await call_next(request)
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    def checked(texts: list[str]) -> list[str]:
        if len(texts) > settings.max_inputs:
            raise HTTPException(413, f"{len(texts)} inputs; at most {settings.max_inputs} per request")
        too_long = [i for i, text in enumerate(texts) if len(text) > settings.max_text_chars]
        if too_long and settings.over_length == "reject":
            raise HTTPException(413, f"inputs {too_long[:10]} are longer than {settings.max_text_chars} characters")
        return [text[: settings.max_text_chars] for text in texts]

    async def run(texts: list[str], parameters: dict[str, Any]) -> tuple[LoadedModel, list[dict[str, Any]]]:
        model = holder.current
        if model.task in GENERATIVE_TASKS:  # per-request decoding settings: not batched across requests
            try:
                return model, await asyncio.to_thread(model.predict, texts, parameters)
            except (TypeError, ValueError) as error:  # invalid decoding settings
                raise HTTPException(422, f"parameters: {error}") from None
        if parameters:
            raise HTTPException(422, f"parameters apply to generation models; {model.name} is a {model.task} model")
        return await batcher.submit(texts)

    @app.post("/v1/predict")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        model, outputs = await run(checked(body.inputs), body.parameters)
        return {"model": model.name, "version": model.version, "task": model.task, "predictions": outputs}

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if holder.current is None:
            return JSONResponse({"ready": False}, 503)
        return {"ready": True}

    def served_model(name: str) -> LoadedModel:
        if name != holder.name:
            raise HTTPException(404, f"unknown model {name!r}; this server serves {holder.name!r}")
        return holder.current

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        model = served_model(name)
        outputs = {"classification": [("label", "BYTES"), ("score", "FP32")], "regression": [("value", "FP32")]}.get(
            model.task, [("generated", "BYTES")])
        return {"name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx", "task": model.task,
                "labels": list(model.labels), "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in outputs]}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, body: InferRequest) -> dict[str, Any]:
        served_model(name)
        tensor = body.inputs[0]
        if tensor.shape != [len(tensor.data)]:
            raise HTTPException(422, f"input {tensor.name!r} has shape {tensor.shape} but {len(tensor.data)} values")
        if not tensor.data:
            raise HTTPException(422, f"input {tensor.name!r} is empty")
        model, outputs = await run(checked(tensor.data), {})
        columns = list(outputs[0])
        return {"model_name": model.name, "model_version": model.version, "id": body.id,
                "outputs": [{"name": column, "shape": [len(outputs)],
                             "datatype": "BYTES" if isinstance(outputs[0][column], str) else "FP32",
                             "data": [row[column] for row in outputs]} for column in columns]}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted."""
    import uvicorn

    settings.reference()  # a malformed URI fails before anything starts
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
