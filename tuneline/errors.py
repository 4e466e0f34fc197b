"""Typed errors. Each message says what is wrong, where, and what to do."""

from __future__ import annotations


class TunelineError(Exception):
    """Base of every error tuneline raises on purpose.

    `transient` says whether the same call may succeed later (a server that did not answer); our errors are
    deterministic (bad data, bad config) unless a subclass says otherwise.
    """

    transient: bool = False


class ConfigError(TunelineError, ValueError):
    """The configuration is invalid; the message names the field."""


class DataLoadError(TunelineError, ValueError):
    """The data could not be read or lacks a mapped column."""


class DataValidationError(TunelineError):
    """The data broke its expectation suite; nothing downstream ran.

    `failures` holds one entry per failed expectation: its type, column,
    unexpected count and example rows.
    """

    def __init__(self, message: str, failures: list[dict]):
        super().__init__(message)
        self.failures = failures


class DataDriftError(DataValidationError):
    """The batch moved too far from the data the champion was trained on (data.drift bounds); nothing trained.

    `failures` holds one entry per measure beyond its bound, with the labels or words that moved most.
    """


class SplitError(TunelineError, ValueError):
    """The data cannot be split as configured (too few rows of a label, leakage)."""


class TrainingError(TunelineError):
    """Fine-tuning failed in a way the message explains (e.g. a data-parallel worker died)."""


class ExportParityError(TunelineError):
    """The exported ONNX model disagrees with PyTorch beyond the tolerance."""


class GateError(TunelineError):
    """A promotion was refused by the quality gate, or the gate could not compare the models."""


class RegistrationError(TunelineError):
    """A model version could not be registered; nothing half-registered is left."""


class UnsafeModelError(TunelineError):
    """A model folder holds pickled weights (`.bin`, `.pt`) instead of safetensors; tuneline does not load it."""


class TrackingServerError(TunelineError):
    """The MLflow server did not answer (refused, reset, timed out, kept answering 5xx) after MLflow's own retries.

    Transient: Prefect retries the task that raised it. The message names the server, what was being done
    and where the run's local files are kept.
    """

    transient = True


class PrefectServerError(TunelineError):
    """The Prefect server in PREFECT_API_URL stopped answering during a run, after its client's own retries."""

    transient = True


# MLflow error codes that mean "the server is busy", not "the request is wrong". INTERNAL_ERROR is
# left out: it is MlflowException's default code, raised for plain bugs too (see `is_unreachable`).
_TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "ABORTED"}
# HTTP answers worth another try: timeout, rate limit, server-side faults (MLflow retries the same codes).
_TRANSIENT_HTTP_STATUS = {408, 429, 500, 502, 503, 504}
# How MLflow's http_request words a request that got no usable answer, for an exception that lost its chain
# (e.g. one that crossed a process boundary): `API request to URL failed with exception ...Max retries exceeded...`.
_UNANSWERED = ("Max retries exceeded", "failed with timeout exception", "Failed to establish a new connection",
               "Connection refused", "Connection aborted", "Read timed out")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from or while handling, nearest first (MLflow raises without `from`)."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not other for other in seen) and len(seen) < 16:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _transport_fault(exc: BaseException) -> bool:
    """A socket, requests, urllib3 or httpx error saying the server did not answer properly (never a 4xx)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_HTTP_STATUS
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    package = type(exc).__module__.split(".")[0]
    if package in ("requests", "urllib3") and isinstance(exc, OSError):  # ConnectionError, Timeout, RetryError
        return True
    return package == "httpx" and type(exc).__name__ in {"TransportError", "ConnectError", "ReadTimeout",
                                                         "ConnectTimeout", "RemoteProtocolError", "ReadError",
                                                         "WriteError", "PoolTimeout"}


def is_unreachable(exc: BaseException) -> bool:
    """True for an MlflowException raised because the tracking server gave no usable answer.

    MLflow wraps every transport failure as `MlflowException("API request to URL failed with exception ...")`
    with the default code INTERNAL_ERROR, raised inside the `except` that caught requests' ConnectionError,
    Timeout or RetryError (5xx/429 retries used up): the chain, or failing that the wording, tells it
    apart from a bug that also carries INTERNAL_ERROR.
    """
    if getattr(exc, "error_code", None) != "INTERNAL_ERROR" or not hasattr(exc, "message"):
        return False
    if any(_transport_fault(cause) for cause in _chain(exc)[1:]):
        return True
    message = str(exc)
    return "API request to" in message and any(marker in message for marker in _UNANSWERED)


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying: network, timeouts, a busy or unreachable server. Never for bad data or config."""
    if isinstance(exc, TunelineError):
        return exc.transient
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False  # the same call fails the same way
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):  # requests' HTTPError (an OSError): a 404 or 403 answers the same next time
        return status in _TRANSIENT_HTTP_STATUS
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    code = getattr(exc, "error_code", None)
    if code in _TRANSIENT_MLFLOW_CODES or is_unreachable(exc):
        return True
    # httpx (Prefect's client) and sqlite "database is locked" under concurrent writers
    name = type(exc).__name__
    return name in {"TransportError", "ConnectError", "ReadTimeout", "RemoteProtocolError"} or (
        name == "OperationalError" and "locked" in str(exc)
    )


class QuantizationAccuracyError(TunelineError):
    """The quantized model lost more on the test split than `export.max_accuracy_drop`; nothing was registered."""


class TuningError(TunelineError):
    """A study that cannot go on: every trial failed, or it cannot resume with a changed setup."""
