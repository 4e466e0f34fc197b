"""The Open Inference Protocol v2 (KServe's, Triton's), transport-neutral: what an infer request asks for and how its
answer's tensors are laid out, over REST (JSON and the binary tensor extension) and gRPC.

A tuneline model takes one input, `text` (BYTES, shape `[N]` or `[N, 1]`), and answers with the task's outputs
(the kind's `outputs`), each of shape `[N]` (`[N, 1]` when the input was). The binary tensor extension: the body is a JSON
header of `Inference-Header-Content-Length` bytes followed by the tensors' raw bytes; BYTES elements are each a
4-byte little-endian length and the bytes, FP32 elements little-endian floats.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneline.kinds import kind
from tuneline.serving.errors import BadRequest

INPUT = "text"
# A kind's output types as the protocol's datatypes.
DATATYPES = {"string": "BYTES", "double": "FP32"}
# Request parameters that are the protocol's, not the model's; everything else goes to the model (decoding).
PROTOCOL_PARAMETERS = {"binary_data_output", "timeout", "priority"}
EXTENSIONS = ["binary_tensor_data", "parameters", "model_repository", "model_configuration", "statistics"]


def outputs_of(task: str) -> tuple[tuple[str, str], ...]:
    """(name, datatype) of each output of the task's answers, in the order an answer lists them."""
    return tuple((name, DATATYPES[dtype]) for name, dtype in kind(task).outputs)


@dataclass
class InferRequest:
    """What a v2 infer request asks, whatever the transport."""

    texts: list[str]
    shape: list[int]  # the input's shape: [N] or [N, 1]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # the model's (decoding); protocol ones taken out
    timeout_s: float | None = None  # the request's own `timeout` parameter (microseconds on the wire)
    outputs: list[tuple[str, bool]] | None = None  # requested (name, binary); None: all
    binary_output: bool = False  # `binary_data_output`: every output binary unless it says otherwise


def serialize_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


def deserialize_bytes(raw: bytes, where: str) -> list[bytes]:
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"{where}: {len(raw) - offset} trailing bytes where a 4-byte element length belongs")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"{where}: element {len(values)} claims {length} bytes, {len(raw) - offset} remain")
        values.append(bytes(raw[offset : offset + length]))
        offset += length
    return values


def decode_texts(values: list[bytes], where: str) -> list[str]:
    texts = []
    for i, value in enumerate(values):
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise BadRequest(f"{where}: element {i} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return texts


def check_shape(shape: list[int], count: int) -> None:
    if not (1 <= len(shape) <= 2 and all(isinstance(d, int) and d >= 0 for d in shape)) or \
            (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(f"input {INPUT!r} has shape {shape}; a batch of texts is [N] or [N, 1]")
    if math.prod(shape) != count:
        raise BadRequest(f"input {INPUT!r} has shape {shape} but {count} elements")
    if count == 0:
        raise BadRequest(f"input {INPUT!r} is empty: send one text at least")


def check_input(name: str, datatype: str, model: str) -> None:
    if name != INPUT:
        raise BadRequest(f"unknown input {name!r}: model {model!r} takes one input, {INPUT!r} (BYTES)")
    if datatype != "BYTES":
        raise BadRequest(f"input {INPUT!r} is {datatype}; it takes BYTES (UTF-8 text)")


def split_parameters(parameters: dict[str, Any], request: InferRequest) -> None:
    """Take the protocol's parameters out of `parameters` into `request`; the rest are the model's."""
    request.binary_output = parameters.get("binary_data_output") is True
    if "timeout" in parameters:
        timeout = parameters["timeout"]
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            raise BadRequest(f"parameter 'timeout' is {timeout!r}: microseconds, a whole number >= 0")
        request.timeout_s = timeout / 1e6 if timeout else None
    request.parameters = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}


def check_outputs(requested: list[str], task: str, model: str) -> None:
    names = [name for name, _ in outputs_of(task)]
    unknown = [name for name in requested if name not in names]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}: model {model!r} ({task}) answers {names}")
    if len(set(requested)) != len(requested):
        raise BadRequest(f"outputs {requested} name one output twice")


def _flatten(data: Any) -> list:
    if isinstance(data, list):
        return [value for item in data for value in _flatten(item)]
    return [data]


def parse_rest(body: bytes, header_length: str | None, content_encoding: str | None, model: str,
               task: str) -> InferRequest:
    """A REST infer request: JSON, or a JSON header and binary tensors. BadRequest says what is wrong and where."""
    if content_encoding in ("gzip", "deflate"):
        try:
            body = gzip.decompress(body) if content_encoding == "gzip" else zlib.decompress(body)
        except (OSError, zlib.error, EOFError) as error:
            raise BadRequest(f"the body is not valid {content_encoding} (Content-Encoding): {error}") from None
    elif content_encoding not in (None, "", "identity"):
        raise BadRequest(f"Content-Encoding {content_encoding!r} is not supported; use gzip, deflate or none")
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                             f"{len(body)}-byte body")
        header, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        header, binary = body, b""
    try:
        document = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"the request body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object with an 'inputs' list")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a list of one tensor: {\"name\": \"text\", \"datatype\": \"BYTES\", "
                         "\"shape\": [N], \"data\": [...]}")
    if len(inputs) > 1:
        names = [i.get("name") if isinstance(i, dict) else i for i in inputs]
        raise BadRequest(f"{len(inputs)} inputs {names}: model {model!r} takes one input, {INPUT!r}")
    tensor = inputs[0]
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) or \
            not isinstance(tensor.get("datatype"), str) or not isinstance(tensor.get("shape"), list):
        raise BadRequest("inputs[0] must have a 'name', a 'datatype' and a 'shape'")
    check_input(tensor["name"], tensor["datatype"], model)
    tensor_parameters = tensor.get("parameters") or {}
    if not isinstance(tensor_parameters, dict):
        raise BadRequest("inputs[0].parameters must be an object")
    size = tensor_parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > len(binary):
            raise BadRequest(f"input {INPUT!r}: binary_data_size {size!r} does not fit the {len(binary)} binary "
                             "bytes after the JSON header")
        texts = decode_texts(deserialize_bytes(binary[:size], f"input {INPUT!r}"), f"input {INPUT!r}")
    elif "data" in tensor:
        values = _flatten(tensor["data"])
        wrong = [i for i, value in enumerate(values) if not isinstance(value, str)]
        if wrong:
            raise BadRequest(f"input {INPUT!r}: elements {wrong[:10]} are not strings (BYTES data is text)")
        texts = values
    else:
        raise BadRequest(f"input {INPUT!r} has neither 'data' nor a binary_data_size parameter")
    shape = tensor["shape"]
    check_shape(shape, len(texts))
    request = InferRequest(texts, shape)
    if "id" in document:
        if not isinstance(document["id"], str):
            raise BadRequest(f"'id' must be a string, got {document['id']!r}")
        request.id = document["id"]
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    split_parameters(parameters, request)
    outputs = document.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
        check_outputs([o["name"] for o in outputs], task, model)
        request.outputs = [(o["name"], bool((o.get("parameters") or {}).get("binary_data", request.binary_output)))
                           for o in outputs]
    return request


def output_values(outputs: list[dict[str, Any]], task: str, requested: list[tuple[str, bool]] | None,
                  binary_output: bool) -> list[tuple[str, str, list, bool]]:
    """(name, datatype, values, binary) of each output the request asked for, in its order."""
    datatypes = dict(outputs_of(task))
    chosen = requested or [(name, binary_output) for name in datatypes]
    return [(name, datatypes[name], [row[name] for row in outputs], binary) for name, binary in chosen]


def raw_tensor(datatype: str, values: list) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes([str(value).encode("utf-8") for value in values])
    return np.asarray(values, dtype="<f4").tobytes()


def rest_response(request: InferRequest, name: str, version: str, task: str, outputs: list[dict[str, Any]],
                  parameters: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """The answer's body and its headers: JSON, or with binary outputs a JSON header and the tensors' bytes."""
    shape = [len(outputs), *request.shape[1:]]
    tensors, binary = [], []
    for output, datatype, values, as_binary in output_values(outputs, task, request.outputs, request.binary_output):
        tensor: dict[str, Any] = {"name": output, "datatype": datatype, "shape": shape}
        if as_binary:
            raw = raw_tensor(datatype, values)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": tensors}
    if request.id is not None:
        answer["id"] = request.id
    if parameters:
        answer["parameters"] = parameters
    header = json.dumps(answer).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + b"".join(binary), {"content-type": "application/octet-stream",
                                       "inference-header-content-length": str(len(header))}
