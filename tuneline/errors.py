"""Typed errors. Each message says what is wrong, where, and what to do."""

from __future__ import annotations


class TunelineError(Exception):
    """Base of every error tuneline raises on purpose."""


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


# MLflow error codes that mean "the server is busy", not "the request is wrong". INTERNAL_ERROR is
# left out: it is MlflowException's default code, raised for plain bugs too.
_TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "ABORTED"}


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying: network, timeouts, a busy server. Never for bad data or config."""
    if isinstance(exc, TunelineError):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False  # the same call fails the same way
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    code = getattr(exc, "error_code", None)
    if code in _TRANSIENT_MLFLOW_CODES:
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
