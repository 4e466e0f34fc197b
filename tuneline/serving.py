"""Serve the ONNX model of a registered version: FastAPI + uvicorn + onnxruntime, no torch, no Prefect.

    tuneline serve --model models:/NAME@champion [--host 127.0.0.1 --port 8080]

- `POST /v1/predict`: `{"inputs": ["text", ...], "parameters": {...}}` -> labels and scores, values, or
  generated texts (generation tasks take per-request decoding settings in `parameters`).
- Open Inference Protocol v2: `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}`,
  `/v2/models/{name}/infer` (one BYTES input).
- `/metrics`: Prometheus text (requests, latency, batch sizes, the version served).

Concurrent requests are batched (up to `max_batch_size` texts, waiting at most `max_wait_ms`); generation
requests only with the same decoding settings (a sampled request's `seed` aside: each row draws from its
own generator). The model runs on `workers` threads with `threads` onnxruntime threads each (by default
one per core, one each). A classifier's batch is sorted by length and cut into pieces of at most
`texts_per_run` texts, spread over the threads; a cut goes where padding would cost more than another call.
With an alias in the URI the server polls the registry and swaps to a new version between batches, so a
request in flight finishes on the version it started on. Only the files serving reads are downloaded
(MLmodel, one ONNX model, the tokenizer), not the whole version.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tuneline.config import GENERATIVE_TASKS
from tuneline.errors import RegistrationError

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
    workers: int | None = Field(None, ge=1, le=256, description="Model threads: onnxruntime calls run at once "
                                                                "(pieces of one batch, or several batches); "
                                                                "empty: one per core.")
    threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads of each model thread; "
                                                        "empty: the cores divided among the workers.")
    access_log: bool = Field(False, description="A log line per request (uvicorn's access log); /metrics counts "
                                                "requests, latency and statuses either way.")
    texts_per_run: int = Field(4, ge=1, le=1024, description="Texts per onnxruntime call of a classifier at most: a "
                                                             "batch runs sorted by length in pieces of up to this "
                                                             "many, so short texts are not padded to the longest.")

    def model_workers(self) -> int:
        return self.workers or available_cores()

    def model_threads(self) -> int:
        """onnxruntime threads per batch. One by default (workers = cores): a single-threaded run never waits for
        a second thread at the end of each parallel operator, and two one-thread batches on two cores served
        1.4-1.7x the rows/s of one two-thread batch (benchmarks/README.md)."""
        return self.threads or max(1, available_cores() // self.model_workers())

    def reference(self) -> tuple[str, str]:
        """`(name, alias or version)` of the model URI; ValueError for anything else."""
        match = _URI.match(self.model_uri)
        if not match:
            raise ValueError(f"--model {self.model_uri!r} must be models:/NAME@alias or models:/NAME/VERSION")
        return match["name"], match["alias"] or match["version"]


def available_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity (a cpuset, `taskset`), capped by a cgroup v2 CPU quota (a
    container's CPU limit), not the host's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


@dataclass
class LoadedModel:
    """One registered version, ready to predict."""

    name: str
    version: str
    task: str
    labels: tuple[str, ...]
    # texts, the batch's parameters, one seed per text (sampling) -> one output per text
    predict: Callable[[list[str], dict[str, Any], list[tuple[int, int]] | None], list[dict[str, Any]]]
    folder: Path
    loaded_at: float = field(default_factory=time.time)
    decoding: Callable[[dict[str, Any]], Any] | None = None  # generation: a request's parameters, validated
    # A batch's texts -> the index lists to predict separately (and at once, on the free model threads);
    # None: the batch runs as one call (generation: the rows decode together).
    pieces: Callable[[list[str]], list[list[int]]] | None = None


# What serving reads of a version: MLmodel (task, max_length, decoding settings), one ONNX model (INT8 when
# there is one) and the tokenizer files. The HF weights and the other precision stay in the registry.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def files_to_serve(available: list[str]) -> list[str]:
    """The paths of a version that `load_model` downloads, given what is under its `artifacts/`."""
    for choice in ("artifacts/generator.int8", "artifacts/generator", "artifacts/model.int8.onnx", "artifacts/model.onnx"):
        if choice in available:
            tokenizer = [] if "generator" in choice else [f"artifacts/hf_model/{name}" for name in TOKENIZER_FILES]
            return ["MLmodel", choice, *tokenizer]
    raise RegistrationError(f"the version has no ONNX model to serve (model.onnx or generator/ under artifacts/); "
                            f"it holds {sorted(available)}")


# The fixed cost of one more onnxruntime call, in characters of padding. MiniLM-L6 INT8 on one thread spends
# about 0.09 ms per token of its padded input and 0.2 ms + 0.02 ms per token of padded length per call
# (benchmarks/README.md): at SST-2's 25 tokens a call costs what 7.6 tokens of padding do, 36 characters of
# English at 4.8 a token. Larger models cost more per token, so this errs towards fewer, fuller calls.
CALL_CHARS = 36


def length_pieces(texts: list[str], texts_per_run: int, call_chars: int = CALL_CHARS) -> list[list[int]]:
    """The indices of `texts`, shortest first, cut into pieces of at most `texts_per_run`, each padded to its
    longest text. The cuts minimise padding plus `call_chars` per call (characters: a cheap proxy for tokens), so
    a long text runs alone rather than padding three short ones, and texts of like length still run together."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    lengths = [len(texts[i]) for i in order]
    # cost[end]: the cheapest cut of the `end` shortest texts; its last piece starts at start[end]
    cost, start = [0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for size in range(1, min(texts_per_run, end) + 1):
            option = cost[end - size] + call_chars + size * lengths[end - 1]
            if option < cost[end]:
                cost[end], start[end] = option, end - size
    pieces, end = [], len(order)
    while end:
        pieces.append(order[start[end] : end])
        end = start[end]
    return pieces[::-1]


def in_order(pieces: list[list[int]], parts: list[list]) -> list:
    """The results of every piece (`parts[k]` for the indices `pieces[k]`), back in the order of the indices."""
    results: list = [None] * sum(map(len, pieces))
    for piece, part in zip(pieces, parts):
        for i, result in zip(piece, part):
            results[i] = result
    return results


def run_sorted(predict: Callable[[list[str]], list], texts: list[str], texts_per_run: int) -> list:
    """`predict` over `texts` piece by piece (`length_pieces`); the results come back in the order of `texts`."""
    pieces = length_pieces(texts, texts_per_run)
    return in_order(pieces, [predict([texts[i] for i in piece]) for piece in pieces])


def load_model(name: str, version: str, threads: int | None = None, scratch: Path | None = None,
               texts_per_run: int = 4) -> LoadedModel:
    """Download the files serving needs of a version and build its onnxruntime predictor (INT8 ONNX when there is one)."""
    from tuneline import registry

    folder = Path(tempfile.mkdtemp(prefix=f"{name}-v{version}-", dir=scratch))
    wanted = files_to_serve(registry.list_version_files(name, version))
    registry.download_version_files(name, version, wanted, folder)
    settings = (yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
                .get("config") or {})
    task, max_length = settings.get("task", "classification"), int(settings.get("max_length", 128))
    if task in GENERATIVE_TASKS:
        from tuneline.config import GenerationConfig
        from tuneline.onnx_generator import OnnxGenerator

        generator = OnnxGenerator(folder / wanted[1], threads, spinning=False)
        defaults = dict(settings.get("generation") or {})

        def decoding(parameters: dict[str, Any]) -> GenerationConfig:
            return GenerationConfig(**(defaults | parameters))

        def predict(texts: list[str], parameters: dict[str, Any], seeds: list[tuple[int, int]] | None = None,
                    ) -> list[dict[str, Any]]:
            generated = generator.generate(texts, decoding(parameters), seeds or 0, batch_size=len(texts))
            return [{"generated": text} for text in generated]

        return LoadedModel(name, version, task, (), predict, folder, decoding=decoding)
    from tuneline.onnx_classifier import OnnxClassifier

    # No spinning: the event loop shares the cores, and threads busy-waiting between operators starve it.
    classifier = OnnxClassifier(folder / wanted[1], folder / "artifacts" / "hf_model", max_length, threads,
                                spinning=False)
    pieces = functools.partial(length_pieces, texts_per_run=texts_per_run)
    if task == "regression":
        return LoadedModel(name, version, task, (), lambda texts, *_: [
            {"value": value} for value in run_sorted(classifier.predict_values, texts, texts_per_run)], folder,
            pieces=pieces)
    return LoadedModel(name, version, task, classifier.labels, lambda texts, *_: [
        {"label": label, "score": score} for label, score in run_sorted(classifier.predict, texts, texts_per_run)],
        folder, pieces=pieces)


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
        model = load_model(self.name, version, self.settings.model_threads(), self.scratch,
                           self.settings.texts_per_run)
        previous, self.current = self.current, model  # one assignment: readers see the old model or the new one
        log.info("serving %s version %s (%s)", self.name, version, model.task)
        if previous is not None:
            shutil.rmtree(previous.folder, ignore_errors=True)  # its sessions stay alive while referenced
        return True


@dataclass
class _Pending:
    texts: list[str]
    parameters: dict[str, Any]
    key: str  # requests run together only with the same parameters
    future: asyncio.Future
    arrived: float
    seed: int | None = None  # sampling: row i of this request draws from (seed, i)


class Batcher:
    """Groups concurrent requests with the same parameters into batches of at most `max_texts` texts and runs
    them on `workers` model threads, off the event loop.

    A batch goes when it is full; when it holds `ready` texts (enough for every model thread) and a model
    thread is free; or when its oldest request has waited `max_wait` seconds. So a free core never waits out
    `max_wait` beside a queue that could feed it, and a busy model lets the queue grow into larger batches.
    A classifier's batch runs in length-sorted pieces spread over the free threads; a batch that runs as one
    call (generation) takes only its share of the queue, so that idle threads get the rest."""

    def __init__(self, holder: ModelHolder, max_texts: int, max_wait: float, observe: Callable[[int], None],
                 workers: int = 1, ready: int | None = None):
        self.holder, self.max_texts, self.max_wait, self.observe = holder, max_texts, max_wait, observe
        self.workers, self.ready = workers, min(ready or max_texts, max_texts)
        self.pending: deque[_Pending] = deque()
        self.size = 0  # texts pending
        self.running = 0  # model calls handed to the threads and not finished (queued ones included)
        self.batches = 0  # batches running
        self.arrived, self.go = asyncio.Event(), asyncio.Event()
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="tuneline-model")

    def enough(self) -> int:
        """Pending texts that make a batch go before `max_wait`."""
        piecewise = self.holder.current is not None and self.holder.current.pieces is not None
        return self.ready if piecewise and self.running < self.workers else self.max_texts

    def update(self) -> None:
        self.go.set() if self.pending and self.size >= self.enough() else self.go.clear()

    async def submit(self, texts: list[str], parameters: dict[str, Any] | None = None, seed: int | None = None,
                     ) -> tuple[LoadedModel, list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        parameters = parameters or {}
        self.pending.append(_Pending(texts, parameters, json.dumps(parameters, sort_keys=True), future, loop.time(),
                                     seed))
        self.size += len(texts)
        self.arrived.set()
        self.update()
        return await future

    def take(self, limit: int | None = None) -> list[_Pending]:
        """The oldest pending request and the next ones with the same parameters, up to `limit` texts
        (`max_texts` by default; one request at least, however large); the others keep their places."""
        limit = limit or self.max_texts
        batch, others, size, room = [], deque(), 0, True
        for item in self.pending:
            if not batch or (room and item.key == batch[0].key and size + len(item.texts) <= limit):
                batch.append(item)
                size += len(item.texts)
            else:
                room = room and item.key != batch[0].key  # first come, first served among the same settings
                others.append(item)
        self.pending = others
        self.size -= size
        if not self.pending:
            self.arrived.clear()
        self.update()
        return batch

    async def call(self, model: LoadedModel, texts: list[str], parameters: dict[str, Any],
                   seeds: list[tuple[int, int]] | None) -> list[dict[str, Any]]:
        """One `model.predict` on a model thread."""
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, model.predict, texts, parameters,
                                                                    seeds)
        finally:
            self.running -= 1
            self.update()  # a thread is free: a queue that could feed it goes now

    async def predict(self, model: LoadedModel, texts: list[str], parameters: dict[str, Any],
                      seeds: list[tuple[int, int]] | None) -> list[dict[str, Any]]:
        """`model.predict` on the model threads: the batch's pieces at once, or the whole batch in one call."""
        pieces = model.pieces(texts) if model.pieces else [list(range(len(texts)))]
        if len(pieces) == 1:
            return await self.call(model, texts, parameters, seeds)
        return in_order(pieces, await asyncio.gather(*(
            self.call(model, [texts[i] for i in piece], parameters, [seeds[i] for i in piece] if seeds else None)
            for piece in pieces)))

    async def run(self) -> None:
        """The batcher's work until cancelled: up to `workers` batches at once."""
        await asyncio.gather(*(self.work() for _ in range(self.workers)))

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrived.wait()
            if not self.pending:  # another worker took them while this one woke
                continue
            oldest = self.pending[0]
            wait = oldest.arrived + self.max_wait - loop.time()
            if not self.go.is_set() and wait > 0:
                try:
                    await asyncio.wait_for(self.go.wait(), wait)
                except TimeoutError:
                    pass
                if not self.pending or self.pending[0] is not oldest:  # another worker took it: wait anew
                    continue
            model = self.holder.current  # one version for the whole batch, even if a reload lands meanwhile
            idle = max(1, self.workers - self.batches)
            batch = self.take(self.max_texts if model.pieces else min(self.max_texts, math.ceil(self.size / idle)))
            self.batches += 1
            texts = [text for item in batch for text in item.texts]
            seeds = ([(item.seed, i) for item in batch for i in range(len(item.texts))]
                     if batch[0].seed is not None else None)
            self.observe(len(texts))
            try:
                outputs = await self.predict(model, texts, batch[0].parameters, seeds)
            except Exception as error:  # a model failure fails its requests, not the server
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finally:
                self.batches -= 1
            start = 0
            for item in batch:
                if not item.future.done():  # its client may have gone
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

    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
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
    batcher = Batcher(holder, settings.max_batch_size, settings.max_wait_ms / 1000, batch_sizes.observe,
                      settings.model_workers(), ready=settings.model_workers() * settings.texts_per_run)

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
        # What start-up allocated (MLflow, FastAPI, onnxruntime, the model) stays for good: out of the garbage
        # collector's sight, its full collections no longer stop every request in flight for ~130 ms (p99 at 32
        # users fell from 180-210 ms to 66-68 ms, benchmarks/README.md).
        gc.collect()
        gc.freeze()
        workers = [asyncio.create_task(batcher.run())]
        if settings.reload_interval_s and not holder.reference.isdigit():
            workers.append(asyncio.create_task(follow_alias()))
        yield
        for worker in workers:
            worker.cancel()
        batcher.executor.shutdown(wait=False)
        shutil.rmtree(scratch, ignore_errors=True)

    app = FastAPI(title="tuneline", lifespan=lifespan)
    token = os.environ.get(settings.token_env) or None
    expected = f"Bearer {token}".encode()
    open_paths = ("/v2/health/", "/metrics")

    class Guard:
        """Bearer token, body size limit and request metrics as plain ASGI: FastAPI's `@app.middleware`
        (BaseHTTPMiddleware) costs a task group and a streamed copy of the response per request."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            started, path, headers = time.perf_counter(), scope["path"], dict(scope["headers"])
            if token and not path.startswith(open_paths) and headers.get(b"authorization") != expected:
                return await reject(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > settings.max_body_bytes:
                return await reject(send, 413, f"request body of {int(length)} bytes is over the limit of "
                                               f"{settings.max_body_bytes}")
            status, received = 500, 0

            async def receiving():
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > settings.max_body_bytes:  # a chunked body has no content-length to check up front
                    raise HTTPException(413, f"request body is over the limit of {settings.max_body_bytes} bytes")
                return message

            async def sending(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receiving, sending)
            finally:
                route = scope.get("route")  # the template (/v2/models/{name}/infer): label values stay few
                endpoint = getattr(route, "path", "(no route)")
                requests.labels(endpoint, str(status)).inc()
                latency.labels(endpoint).observe(time.perf_counter() - started)

    async def reject(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
        requests.labels("(turned away)", str(status)).inc()
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                *headers]})
        await send({"type": "http.response.body", "body": body})

    app.add_middleware(Guard)

    def checked(texts: list[str]) -> list[str]:
        if len(texts) > settings.max_inputs:
            raise HTTPException(413, f"{len(texts)} inputs; at most {settings.max_inputs} per request")
        too_long = [i for i, text in enumerate(texts) if len(text) > settings.max_text_chars]
        if too_long and settings.over_length == "reject":
            raise HTTPException(413, f"inputs {too_long[:10]} are longer than {settings.max_text_chars} characters")
        return [text[: settings.max_text_chars] for text in texts]

    async def run(texts: list[str], parameters: dict[str, Any],
                  ) -> tuple[LoadedModel, list[dict[str, Any]], int | None]:
        """(the version that answered, one output per text, the seed a sampled request drew with)."""
        model = holder.current
        if model.task not in GENERATIVE_TASKS:
            if parameters:
                raise HTTPException(422, f"parameters apply to generation models; {model.name} is a {model.task} model")
            return *(await batcher.submit(texts)), None
        parameters = dict(parameters)
        seed = parameters.pop("seed", None)
        try:
            sampled = model.decoding(parameters).do_sample
            if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
                raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
            # Each sampled row draws from its own (seed, row) generator, so sampled requests batch like greedy
            # ones: with the requests of the same settings, and the same text for a seed alone or in any batch.
            seed = (secrets.randbits(63) if seed is None else seed) if sampled else None
            return *(await batcher.submit(texts, parameters, seed)), seed
        except (TypeError, ValueError) as error:  # decoding settings the model refuses (a batch shares them)
            raise HTTPException(422, f"parameters: {error}") from None

    def encoded(content: dict[str, Any]) -> Response:
        """The answer as JSON bytes: FastAPI's own path for a returned dict (jsonable_encoder, then a serializer
        built from the return type) cost 5% of the requests/s at 32 users (benchmarks/README.md)."""
        return Response(json.dumps(content).encode(), media_type="application/json")

    @app.post("/v1/predict")
    async def predict(body: PredictRequest) -> Response:
        model, outputs, seed = await run(checked(body.inputs), body.parameters)
        answer = {"model": model.name, "version": model.version, "task": model.task, "predictions": outputs}
        return encoded(answer if seed is None else answer | {"seed": seed})  # a seed sent back draws the same again

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
    async def infer(name: str, body: InferRequest) -> Response:
        served_model(name)
        tensor = body.inputs[0]
        if tensor.shape != [len(tensor.data)]:
            raise HTTPException(422, f"input {tensor.name!r} has shape {tensor.shape} but {len(tensor.data)} values")
        if not tensor.data:
            raise HTTPException(422, f"input {tensor.name!r} is empty")
        model, outputs, _ = await run(checked(tensor.data), {})
        columns = list(outputs[0])
        return encoded({"model_name": model.name, "model_version": model.version, "id": body.id,
                        "outputs": [{"name": column, "shape": [len(outputs)],
                                     "datatype": "BYTES" if isinstance(outputs[0][column], str) else "FP32",
                                     "data": [row[column] for row in outputs]} for column in columns]})

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted."""
    import uvicorn

    settings.reference()  # a malformed URI fails before anything starts
    # The model threads already run one batch piece per core: the tokenizer's own thread pool on top of them
    # only adds hand-offs (3-7% more CPU per text, benchmarks/README.md).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # loop and http "auto" (the defaults): uvloop and httptools, which the serving requirements install
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                access_log=settings.access_log)
