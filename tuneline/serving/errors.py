"""What a request can be refused for, once for both transports: each error knows its HTTP status and gRPC code."""

from __future__ import annotations


class ServingError(Exception):
    """A refused or failed request. REST answers `{"error": message}` with `status`; gRPC aborts with `grpc_code`."""

    status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.headers = message, headers or {}


class BadRequest(ServingError):
    """The request is malformed: not JSON, wrong tensor, a text the tokenizer cannot read."""

    status, grpc_code = 400, "INVALID_ARGUMENT"


class NotFound(ServingError):
    status, grpc_code = 404, "NOT_FOUND"


class TooLarge(ServingError):
    """Over a configured limit (inputs, characters, body bytes): the message names the setting."""

    status, grpc_code = 413, "INVALID_ARGUMENT"


class Unprocessable(ServingError):
    """Well-formed, but the model refuses it (decoding parameters out of range, parameters a classifier has none of)."""

    status, grpc_code = 422, "INVALID_ARGUMENT"


class Overloaded(ServingError):
    """The queue is full: come back after `retry_after` seconds."""

    status, grpc_code = 503, "UNAVAILABLE"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class NotReady(ServingError):
    status, grpc_code = 503, "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    status, grpc_code = 504, "DEADLINE_EXCEEDED"
