"""The HTTP face of the server (FastAPI): `/v1/predict`, the Open Inference Protocol v2 over REST, `/metrics`.

Bodies are read raw and parsed here, whatever their Content-Type says (curl's `-d` sends a form type, tritonclient
sends none), as Triton, KServe and MLServer do; errors are `{"error": "..."}`, as the protocol says.
"""


import asyncio
import gc
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneline.serving.core import Inference
from tuneline.serving.errors import BadRequest, DeadlineExceeded, Overloaded, ServingError, TooLarge
from tuneline.serving.model import ModelHolder
from tuneline.serving.settings import ServeSettings
from tuneline.serving.v2 import parse_rest, rest_response

log = logging.getLogger("tuneline.serving")


# -- the bodies, as the OpenAPI schema documents them
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(min_length=1, description="The texts to predict.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Decoding settings (generation models).")


class Prediction(BaseModel):
    label: str | None = None
    score: float | None = None
    value: float | None = None
    generated: str | None = None


class PredictResponse(BaseModel):
    model: str
    version: str
    task: str
    predictions: list[Prediction]
    seed: int | None = Field(None, description="Sampled generation: send it back to draw the same again.")


class Error(BaseModel):
    error: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = {}


class RequestInput(BaseModel):
    name: Literal["text"]
    datatype: Literal["BYTES"]
    shape: list[int] = Field(min_length=1, max_length=2)
    data: list[str] | None = Field(None, min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict, description="binary_data_size: the input's bytes in "
                                                                         "the binary part of the body")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict, description="binary_data: answer it in binary")


class InferRequestBody(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="timeout (microseconds), "
                                                                         "binary_data_output, decoding settings")
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[str | float] | None = None
    parameters: dict[str, Any] | None = None


class InferResponseBody(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class RepositoryEntry(BaseModel):
    name: str
    version: str | None = None
    state: str


ERRORS = {status: {"model": Error, "description": description} for status, description in (
    (400, "Malformed request: not JSON, a wrong tensor, an input that is not text"),
    (401, "Missing or wrong bearer token (when TUNELINE_SERVE_TOKEN is set)"),
    (404, "Unknown model or version"),
    (413, "Over a limit: inputs, characters or body bytes (the message names the setting)"),
    (422, "Parameters the model refuses"),
    (503, "Queue full (with Retry-After) or model still loading"),
    (504, "No answer within the request's deadline"),
)}
LOOKUP_ERRORS = {status: ERRORS[status] for status in (401, 404, 503)}


def body_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body that the route reads raw; the model's schemas join `components`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}}


def parse_json(body: bytes, model: type[BaseModel]):
    """The body as `model`, whatever the Content-Type; BadRequest naming the field otherwise."""
    try:
        # json.loads, not pydantic's parser: that one refuses a lone surrogate escape ("\ud800") as not JSON,
        # where it is JSON that is not text, and `Inference.checked` names the input that holds it.
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"the request body is not JSON: {error}") from None
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5])
        raise BadRequest(f"the request body does not fit {model.__name__}: {problems}") from None


def create_app(settings: ServeSettings, holder: ModelHolder | None = None):
    """The ASGI app. The model loads at start-up; `/v2/health/ready` says 200 once it has. With `grpc_port` set,
    the gRPC server starts beside it and shares its batcher."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from starlette.exceptions import HTTPException

    scratch = Path(tempfile.mkdtemp(prefix="tuneline-serve-"))
    holder = holder or ModelHolder(settings, scratch)
    metrics = CollectorRegistry()
    requests = Counter("tuneline_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=metrics)
    latency = Histogram("tuneline_request_seconds", "Request latency", ["endpoint"], registry=metrics,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    batch_sizes = Histogram("tuneline_batch_texts", "Texts per model call", registry=metrics,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
    served = Gauge("tuneline_model_version", "Registered version being served", ["model"], registry=metrics)
    shed = Counter("tuneline_requests_shed", "Requests refused because the queue was full (503)", registry=metrics)
    timed_out = Counter("tuneline_requests_timed_out", "Requests past their deadline (504)", registry=metrics)
    inference = Inference(settings, holder, batch_sizes.observe)

    def refused(error: ServingError) -> None:
        if isinstance(error, Overloaded):
            shed.inc()
        elif isinstance(error, DeadlineExceeded):
            timed_out.inc()

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
        grpc_server = None
        if settings.grpc_port is not None:
            from tuneline.serving.grpc_server import start_grpc

            grpc_server = start_grpc(inference, settings, asyncio.get_running_loop(), requests, latency, refused)
        # What start-up allocated (MLflow, FastAPI, onnxruntime, the model) stays for good: out of the garbage
        # collector's sight, its full collections no longer stop every request in flight for ~130 ms (p99 at 32
        # users fell from 180-210 ms to 66-68 ms, benchmarks/README.md).
        gc.collect()
        gc.freeze()
        workers = [asyncio.create_task(inference.batcher.run())]
        if settings.reload_interval_s and not holder.reference.isdigit():
            workers.append(asyncio.create_task(follow_alias()))
        log.info("ready: HTTP on %s:%s%s, batches of up to %d texts on %d model threads, queue of %d texts, "
                 "deadline %s", settings.host, settings.port,
                 f", gRPC on port {grpc_server.port}" if grpc_server else "", settings.max_batch_size,
                 settings.model_workers(), settings.max_queue_texts,
                 f"{settings.request_timeout_s:g} s" if settings.request_timeout_s else "none")
        yield
        log.info("stopping")
        if grpc_server is not None:
            grpc_server.stop(grace=1)
        for worker in workers:
            worker.cancel()
        inference.batcher.executor.shutdown(wait=False)
        shutil.rmtree(scratch, ignore_errors=True)

    app = FastAPI(title="tuneline", version=_version(), lifespan=lifespan,
                  description="Predictions of a registered tuneline model: `/v1/predict`, and the Open Inference "
                              "Protocol v2 (KServe, Triton) over REST and, with --grpc-port, gRPC.")
    token = os.environ.get(settings.token_env) or None
    expected = f"Bearer {token}".encode()
    open_paths = ("/v2/health/", "/metrics")

    class Guard:
        """Bearer token, body size limit, request metrics, and the last word on failures, as plain ASGI: FastAPI's
        `@app.middleware` (BaseHTTPMiddleware) costs a task group and a streamed copy of the response per request.
        An error that escapes the app is answered here as a 500 and not raised further: raised, uvicorn would
        close the connection, and a keep-alive client would lose the requests it had queued on it."""

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
                                               f"{settings.max_body_bytes} (max_body_bytes)")
            status, received, started_response = 500, 0, False

            async def receiving():
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > settings.max_body_bytes:  # a chunked body has no content-length to check up front
                    raise TooLarge(f"request body is over the limit of {settings.max_body_bytes} bytes "
                                   "(max_body_bytes)")
                return message

            async def sending(message):
                nonlocal status, started_response
                if message["type"] == "http.response.start":
                    status, started_response = message["status"], True
                await send(message)

            try:
                await self.app(scope, receiving, sending)
            except Exception as error:  # noqa: BLE001 - answered, logged, and kept from uvicorn (see above)
                log.exception("unexpected error on %s", path)
                if not started_response:
                    status = 500
                    await reject(send, 500, f"internal error: {type(error).__name__}: {error}"[:500], counted=False)
            finally:
                route = scope.get("route")  # the template (/v2/models/{name}/infer): label values stay few
                endpoint = getattr(route, "path", "(no route)")
                requests.labels(endpoint, str(status)).inc()
                latency.labels(endpoint).observe(time.perf_counter() - started)

    async def reject(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = (),
                     counted: bool = True) -> None:
        if counted:
            requests.labels("(turned away)", str(status)).inc()
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                *headers]})
        await send({"type": "http.response.body", "body": body})

    app.add_middleware(Guard)

    @app.exception_handler(ServingError)
    async def serving_error(_request, error: ServingError):
        refused(error)
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request, error: HTTPException):  # FastAPI's own: 404 no route, 405 wrong method
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        return JSONResponse({"error": f"invalid request: {problems}"}, 400)

    def encoded(content: dict[str, Any] | list, status: int = 200) -> Response:
        """The answer as JSON bytes: FastAPI's own path for a returned dict (jsonable_encoder, then a serializer
        built from the return type) cost 5% of the requests/s at 32 users (benchmarks/README.md)."""
        return Response(json.dumps(content).encode(), status, media_type="application/json")

    components: dict[str, Any] = {}

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS,
              openapi_extra=body_schema(PredictRequest, components))
    async def predict(request: Request):
        """Predict the texts of `inputs`: labels and scores, values, or generated texts."""
        body = parse_json(await request.body(), PredictRequest)
        model, outputs, seed = await inference.infer(body.inputs, body.parameters)
        answer = {"model": model.name, "version": model.version, "task": model.task, "predictions": outputs}
        return encoded(answer if seed is None else answer | {"seed": seed})  # a seed sent back draws the same again

    @app.get("/v2", response_model=ServerMetadata)
    async def server_metadata():
        """Server metadata: name, version, protocol extensions."""
        return encoded(inference.server_metadata())

    @app.get("/v2/health/live", response_model=Live)
    async def live():
        return encoded({"live": True})

    @app.get("/v2/health/ready", response_model=Ready, responses={503: {"model": Ready, "description": "Loading"}})
    async def ready():
        return encoded({"ready": holder.current is not None}, 200 if holder.current is not None else 503)

    async def model_metadata(name: str, version: str | None = None):
        """Model metadata: its version, inputs and outputs."""
        return encoded(inference.model_metadata(name, version))

    async def model_ready(name: str, version: str | None = None):
        inference.model(name, version)  # unknown: 404; loading: 503
        return encoded({"name": name, "ready": True})

    async def model_config(name: str, version: str | None = None):
        """Triton's model configuration extension."""
        return encoded(inference.model_config(name, version))

    async def model_statistics(name: str, version: str | None = None):
        """Triton's statistics extension: requests, texts and time, succeeded and failed."""
        return encoded(inference.model_statistics(name, version))

    async def infer(name: str, request: Request, version: str | None = None):
        """Open Inference Protocol v2 inference: one BYTES input `text` of shape [N] or [N, 1]."""
        model = inference.model(name, version)
        headers = request.headers
        v2 = parse_rest(await request.body(), headers.get("inference-header-content-length"),
                        headers.get("content-encoding"), name, model.task)
        answered, outputs, seed = await inference.infer(v2.texts, v2.parameters, v2.timeout_s)
        body, answer_headers = rest_response(v2, answered.name, answered.version, answered.task, outputs,
                                             {"seed": seed} if seed is not None else None)
        return Response(body, headers=answer_headers)

    # Triton's `GET /v2/models/stats`: every model's statistics (one here). Declared before /v2/models/{name},
    # which would match it otherwise (routes match in the order they are declared).
    @app.get("/v2/models/stats", response_model=dict[str, Any], responses={401: ERRORS[401]})
    async def all_statistics():
        return encoded(inference.model_statistics(holder.name))

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.get(prefix, response_model=ModelMetadata, responses=LOOKUP_ERRORS)(model_metadata)
        app.get(f"{prefix}/ready", response_model=ModelReady, responses=LOOKUP_ERRORS)(model_ready)
        app.get(f"{prefix}/config", response_model=dict[str, Any], responses=LOOKUP_ERRORS)(model_config)
        app.get(f"{prefix}/stats", response_model=dict[str, Any], responses=LOOKUP_ERRORS)(model_statistics)
        app.post(f"{prefix}/infer", response_model=InferResponseBody, responses=ERRORS,
                 openapi_extra=body_schema(InferRequestBody, components)
                 | {"description": "JSON, or the binary tensor extension: a JSON header of "
                                   "Inference-Header-Content-Length bytes, then the tensors' bytes."})(infer)

    @app.post("/v2/repository/index", response_model=list[RepositoryEntry], responses={401: ERRORS[401]})
    async def repository_index():
        """The model repository extension's index: the one model this server serves, and its state."""
        return encoded(inference.repository_index())

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        """Prometheus text: requests by route and status, latency, batch sizes, shed and timed-out requests."""
        return PlainTextResponse(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def _version() -> str:
    import tuneline

    return tuneline.__version__


def configure_logging() -> None:
    """Our INFO lines (start-up, version swaps, failures) on stderr, beside uvicorn's."""
    logger = logging.getLogger("tuneline")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted."""
    import uvicorn

    settings.reference()  # a malformed URI fails before anything starts
    configure_logging()
    # The model threads already run one batch piece per core: the tokenizer's own thread pool on top of them
    # only adds hand-offs (3-7% more CPU per text, benchmarks/README.md).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a log, not a terminal: our lines say it
    log.info("starting: %s", settings.model_uri)
    # loop and http "auto" (the defaults): uvloop and httptools, which the serving requirements install
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                access_log=settings.access_log)
