"""How the server runs (`ServeSettings`): `tuneline serve --help` lists these fields as its flags."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class ServeSettings(BaseModel):
    """How the server runs; `tuneline serve --help` lists them as flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = Field(description="models:/NAME@alias (followed as it moves) or models:/NAME/VERSION.")
    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 unless you mean to expose it.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port to listen on.")
    grpc_port: int | None = Field(None, ge=0, le=65535, description="Also serve the Open Inference Protocol over "
                                                                     "gRPC on this port (KServe's grpc_predict_v2, "
                                                                     "what tritonclient.grpc speaks); empty: no gRPC.")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Texts run together at most.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="How long a batch waits for more requests.")
    max_inputs: int = Field(256, ge=1, description="Texts one request may send.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text accepted, in characters.")
    max_request_chars: int = Field(100_000, ge=1, description="Characters one request may send in all: a budget "
                                                              "that bounds its tokens (a token is one character at "
                                                              "least), so one request cannot hold the model for long.")
    max_queue_texts: int = Field(1024, ge=1, description="Texts waiting for the model at most; a request that would "
                                                         "queue more is answered 503 with Retry-After.")
    request_timeout_s: float = Field(30.0, ge=0, description="Deadline of a request, queue and model together; 504 "
                                                             "past it; 0: none. A v2 request's `timeout` parameter "
                                                             "(microseconds) or a gRPC deadline can only shorten it.")
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

    @model_validator(mode="after")
    def _limits_agree(self) -> "ServeSettings":
        if self.max_queue_texts < self.max_inputs:
            raise ValueError(f"max_queue_texts={self.max_queue_texts} is below max_inputs={self.max_inputs}: a "
                             "request within every limit could never be queued")
        if self.grpc_port is not None and self.grpc_port == self.port and self.port != 0:
            raise ValueError(f"grpc_port and port are both {self.port}: HTTP and gRPC need a port each")
        return self

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



class PredictSettings(BaseModel):
    """`tuneline predict`'s options (the CLI's flags are these fields); `predict_file` checks the values and names
    the flag of a bad one."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(description="models:/NAME@alias or models:/NAME/VERSION.")
    text_column: str = Field("text", description="The column of texts to score.")
    chunk_rows: int = Field(1024, description="Rows read and scored together (one model call).")
    runner: str = Field("local", description="local (this process), dask or ray (an existing cluster at --address).")
    address: str | None = Field(None, description=(
        "The cluster: a Dask scheduler (tcp://host:8786) or a Ray address (ray://host:10001). Its workers read the "
        "registry through their own MLFLOW_TRACKING_URI / TUNELINE_HOME."))
    output_prefix: str = Field("", description=(
        "Put before the output columns' names (label, score / value / generated), e.g. predicted_; needed when "
        "INPUT already has such a column."))


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
