"""The Open Inference Protocol v2 over gRPC (`tuneline serve --grpc-port N`), as KServe's grpc_predict_v2.proto
defines it: what `tritonclient.grpc` and KServe's clients speak.

grpcio's own threads take the calls; each call hands its request to the HTTP server's event loop, so gRPC and REST
requests share one batcher, one queue and one version (a swap reaches both at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from tuneline.serving.core import Inference
from tuneline.serving.errors import BadRequest, DeadlineExceeded, ServingError
from tuneline.serving.proto import inference_pb2 as pb
from tuneline.serving.settings import ServeSettings
from tuneline.serving.v2 import (INPUT, InferRequest, check_input, check_outputs, check_shape, decode_texts,
                                 deserialize_bytes, output_values, raw_tensor, split_parameters)

log = logging.getLogger("tuneline.serving")
SERVICE = "inference.GRPCInferenceService"


def parameter_value(parameter: pb.InferParameter) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def parse_grpc(request: pb.ModelInferRequest, model: str, task: str) -> InferRequest:
    if len(request.inputs) != 1:
        raise BadRequest(f"{len(request.inputs)} inputs {[i.name for i in request.inputs]}: model {model!r} takes "
                         f"one input, {INPUT!r}")
    tensor = request.inputs[0]
    check_input(tensor.name, tensor.datatype, model)
    if request.raw_input_contents:
        values = deserialize_bytes(request.raw_input_contents[0], f"input {INPUT!r}")
    else:
        values = list(tensor.contents.bytes_contents)
    texts = decode_texts(values, f"input {INPUT!r}")
    check_shape(list(tensor.shape), len(texts))
    infer = InferRequest(texts, list(tensor.shape), id=request.id or None)
    split_parameters({key: parameter_value(value) for key, value in request.parameters.items()}, infer)
    if request.outputs:
        check_outputs([o.name for o in request.outputs], task, model)
        infer.outputs = [(o.name, True) for o in request.outputs]
    return infer


def grpc_response(request: InferRequest, name: str, version: str, task: str, outputs: list[dict[str, Any]],
                  seed: int | None) -> pb.ModelInferResponse:
    """Outputs as raw contents, as Triton answers (tritonclient's `as_numpy` reads either form)."""
    shape = [len(outputs), *request.shape[1:]]
    answer = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id or "")
    if seed is not None:
        answer.parameters["seed"].int64_param = seed
    for output, datatype, values, _ in output_values(outputs, task, request.outputs, True):
        answer.outputs.add(name=output, datatype=datatype, shape=shape)
        answer.raw_output_contents.append(raw_tensor(datatype, values))
    return answer


class Servicer:
    """The six calls of the protocol's core, each a plain function of (request, context)."""

    def __init__(self, inference: Inference, loop: asyncio.AbstractEventLoop, requests, latency, refused):
        self.inference, self.loop = inference, loop
        self.requests, self.latency, self.refused = requests, latency, refused

    def handlers(self) -> grpc.GenericRpcHandler:
        calls = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        }
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(self.counted(name, function),
                                                      request_deserializer=request.FromString,
                                                      response_serializer=response.SerializeToString)
            for name, (function, request, response) in calls.items()})

    def counted(self, name: str, function):
        endpoint = f"grpc:{name}"

        def call(request, context):
            started, status = time.perf_counter(), "OK"
            try:
                return function(request, context)
            except ServingError as error:
                self.refused(error)
                status = error.grpc_code
                context.abort(getattr(grpc.StatusCode, error.grpc_code), error.message)
            except Exception as error:  # noqa: BLE001 - a failed call, not a failed server
                log.exception("unexpected error in %s", endpoint)
                status = "INTERNAL"
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"[:500])
            finally:
                self.requests.labels(endpoint, status).inc()
                self.latency.labels(endpoint).observe(time.perf_counter() - started)

        return call

    def server_live(self, _request, _context):
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, _request, _context):
        return pb.ServerReadyResponse(ready=self.inference.holder.current is not None)

    def model_ready(self, request, _context):
        try:
            self.inference.model(request.name, request.version)
        except ServingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def server_metadata(self, _request, _context):
        return pb.ServerMetadataResponse(**self.inference.server_metadata())

    def model_metadata(self, request, _context):
        metadata = self.inference.model_metadata(request.name, request.version)
        answer = pb.ModelMetadataResponse(name=metadata["name"], versions=metadata["versions"],
                                          platform=metadata["platform"])
        for tensor in metadata["inputs"]:
            answer.inputs.add(**tensor)
        for tensor in metadata["outputs"]:
            answer.outputs.add(**tensor)
        return answer

    def model_infer(self, request, context):
        model = self.inference.model(request.model_name, request.model_version)
        infer = parse_grpc(request, request.model_name, model.task)
        remaining = context.time_remaining()  # the client's deadline, when it set one
        deadlines = [t for t in (infer.timeout_s, remaining) if t is not None and t < 1e8]
        work = asyncio.run_coroutine_threadsafe(
            self.inference.infer(infer.texts, infer.parameters, min(deadlines, default=None)), self.loop)
        try:
            answered, outputs, seed = work.result()
        except asyncio.CancelledError:
            raise DeadlineExceeded("the request was given up") from None
        return grpc_response(infer, answered.name, answered.version, answered.task, outputs, seed)


class GrpcServer:
    def __init__(self, server: grpc.Server, port: int):
        self.server, self.port = server, port

    def stop(self, grace: float = 1) -> None:
        self.server.stop(grace).wait(grace + 1)


def start_grpc(inference: Inference, settings: ServeSettings, loop: asyncio.AbstractEventLoop, requests, latency,
               refused) -> GrpcServer:
    """Start the gRPC server on `settings.grpc_port` (0: any free port; the bound one is logged)."""
    # A thread per call in flight: each waits on the event loop's batcher, so threads are cheap waiters, and
    # as many as the queue may hold keep gRPC from refusing calls that REST would queue.
    threads = max(16, min(settings.max_queue_texts, 256))
    options = [("grpc.max_receive_message_length", settings.max_body_bytes),
               ("grpc.max_send_message_length", 64 * 1024 * 1024)]
    server = grpc.server(ThreadPoolExecutor(threads, thread_name_prefix="tuneline-grpc"), options=options,
                         maximum_concurrent_rpcs=threads * 4)
    server.add_generic_rpc_handlers((Servicer(inference, loop, requests, latency, refused).handlers(),))
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"gRPC could not bind {settings.host}:{settings.grpc_port} (grpc_port)")
    server.start()
    return GrpcServer(server, port)

