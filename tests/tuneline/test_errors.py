import sqlite3

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from tuneline.errors import DataValidationError, is_transient


def test_network_and_busy_server_faults_are_transient():
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert is_transient(sqlite3.OperationalError("database is locked"))


def test_bad_data_and_bad_requests_are_not():
    assert not is_transient(DataValidationError("bad rows", failures=[]))
    assert not is_transient(FileNotFoundError("x.csv"))
    assert not is_transient(ValueError("nope"))
    assert not is_transient(MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(sqlite3.OperationalError("no such table: runs"))
    assert not is_transient(MlflowException("a bug"))  # default code INTERNAL_ERROR


def test_an_unreachable_tracking_server_is_transient_even_when_the_chain_is_lost():
    from tuneline.errors import TrackingServerError

    # What MLflow raises when nobody listens, after its exception chain was lost (e.g. crossing processes).
    unanswered = MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/get failed with exception "
                                 "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url")
    assert is_transient(unanswered)
    assert is_transient(TrackingServerError("the MLflow server at http://127.0.0.1:5000 is unreachable"))
    assert not is_transient(MlflowException("API request to http://h/api failed: bad request"))
