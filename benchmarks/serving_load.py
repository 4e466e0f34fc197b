"""tuneline serve under load on loopback, beside the servers a user would pick instead and the same model in-process.

    python benchmarks/serving_load.py --setup-peers          # MiniLM registered in a scratch home; installs MLServer once
    python benchmarks/serving_load.py --model models:/NAME@champion   # a version in your registry
    python benchmarks/serving_load.py --requests 200 --seconds 3 --rounds 1   # a quick check, no figures
    python benchmarks/serving_load.py --shared-cores         # the load generator on the servers' cores too

Last full run, 2026-12-03, 2 cores (AMD EPYC), load average 1.43 before and 3.51 after (other sessions' tests ran
too), the run's own medians at concurrency 16: tuneline 237 requests/s, 76% of in-process, 2.00x the better peer
(`mlflow models serve`, 121/s; MLServer 100/s), p99 0.37x its; 0 valid requests failed with 5% poisoned. The table
and what it means: benchmarks/README.md, "serving_load.py".

One request = one sentence of the evaluation data (`eval_data.eval_texts`: --eval PATH, else the shared SST-2 dev
copy, else SST-2 through `datasets`, else the shipped sample). Targets, each a (server, protocol):

- `tuneline`: `tuneline serve`, `POST /v1/predict {"inputs": [text]}`; `tuneline-v2`: the same server's Open
  Inference Protocol route (`POST /v2/models/NAME/infer`, one BYTES input).
- `mlflow`: `mlflow models serve -m MODEL --env-manager local` (MLflow's pyfunc server, this venv),
  `POST /invocations {"dataframe_split": {"columns": ["text"], "data": [[text]]}}`.
- `mlserver`: MLServer 1.7.1 with `mlserver_mlflow.MLflowRuntime` on the same version, downloaded to a folder,
  from its own venv under .tuneline/peers/mlserver (`--setup-peers` makes it), Open Inference Protocol REST.
- `tuneline-grpc`: the same server over gRPC (`--grpc-port`, KServe's `grpc_predict_v2.proto`, `ModelInfer` from
  `grpc.aio`), measured whenever `tuneline serve --help` has `--grpc-port` (`--no-grpc` to skip it).

All servers serve the same registered version (the peers run its pyfunc model: the INT8 ONNX with onnxruntime and
tokenizers) on the same cores, started once and kept up together: each concurrency level (--concurrency) runs every
target in turn, a bounded load each (--requests, at most --seconds), --rounds times interleaved, the targets'
order rotating; figures are medians of rounds. A non-2xx answer, or a 2xx without exactly one prediction, or a
dropped connection, is an error of that server. Then a poisoned run per target (--poison-rate of the requests, at
--poison-concurrency, carry a lone surrogate `"\\ud800"`, valid JSON): how many VALID requests failed, and what the
poisoned ones got.

onnxruntime's default thread pool pins one thread to every core of the machine, outside the process's affinity:
the peers (which use its defaults through the pyfunc model) get a sitecustomize that gives such a session as many
threads as the process has cores, what they would get on a machine of that many cores; tuneline sets its own.

In-process: the served predictor (`tuneline.serving.load_model`, the very function the server calls) on batches of
the server's max batch size in dataset order, called from as many threads at once as the server's model
workers, each thread with the server's onnxruntime threads; and, so that the denominator is not a weak one, the
same predictor one batch at a time on all cores, and a plain `OnnxClassifier` with onnxruntime's defaults on
batches of 1, 8 and 32. Each is measured before and after the servers run, the faster run kept; the served
predictor is also timed right before and right after each concurrency level: "vs in-process" divides by the
faster of those two. Tokenization is included on both sides.

The load generator gets a core of its own (the last one of this process's affinity; the servers and the in-process
timings get the others), as a load test keeps its clients off the machine under test. `--shared-cores` runs it
on the servers' cores too. It is cheap: a separate process per load, HTTP/1.1 keep-alive over raw asyncio streams
(a protocol is a class with `prepare` and `connect`: gRPC is one more), request bytes built up front. CPU seconds
per request are measured for the server's process tree (from /proc) and for the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from eval_data import eval_texts  # noqa: E402  (benchmarks/, this script's folder, is on sys.path)


# ---------------------------------------------------------------- the peers' venv

PEERS = REPO / ".tuneline" / "peers"  # ignored by git, like all of .tuneline/
MLSERVER_VENV = PEERS / "mlserver"
MLSERVER_PACKAGES = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1")
# What the registered pyfunc model imports (tuneline/runtime/pyfunc.py, tuneline.config), pinned to this venv's versions,
# but pandas: see MLSERVER_PINS.
PYFUNC_NEEDS = ("onnxruntime", "tokenizers", "numpy", "mlflow", "pydantic", "PyYAML")
# Where MLServer 1.7.1 (June 2025) fails with what is newer than it:
# - uvloop 0.22+: its inference workers call asyncio.get_event_loop() before any loop runs, which uvloop 0.22+
#   refuses ("RuntimeError: There is no current event loop in thread 'MainThread'"), so the model never loads;
# - pandas 3: a string column's dtype is `str` (kind 'O'), which MLServer's pandas codec cannot map to a datatype, so
#   every prediction is answered 500 {"error": "builtins.KeyError: 'O'"}. pandas 2.3 runs the pyfunc model the same.
MLSERVER_PINS = ("uvloop<0.22", "pandas<3")


def setup_peers() -> None:
    """MLServer and mlserver-mlflow in a venv of their own (they pin an older fastapi, starlette and protobuf than
    tuneline's), with what the pyfunc model imports at this venv's versions and tuneline itself without deps."""
    from importlib.metadata import version

    constraints = "".join(f"{name}=={version(name)}\n" for name in PYFUNC_NEEDS) + "".join(
        f"{pin}\n" for pin in MLSERVER_PINS)
    marker = MLSERVER_VENV / ".installed"
    wanted = constraints + "\n".join(MLSERVER_PACKAGES) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        print(f"peers: MLServer already installed in {MLSERVER_VENV}")
        return
    print(f"peers: installing {', '.join(MLSERVER_PACKAGES)} into {MLSERVER_VENV} (a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True)
    (MLSERVER_VENV / "constraints.txt").write_text(constraints)
    pip = [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for command in ([*pip, "-c", str(MLSERVER_VENV / "constraints.txt"), *MLSERVER_PACKAGES, *PYFUNC_NEEDS, "pandas"],
                    [*pip, "--no-deps", "-e", str(REPO)]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"peers: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    marker.write_text(wanted)


POISON = "\ud800"  # a lone surrogate: valid JSON as the escape "\ud800", not encodable as UTF-8
REQUEST_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- protocols: how a target is spoken to


class HttpJson:
    """One JSON POST per request over keep-alive HTTP/1.1 on raw asyncio streams, request bytes built up front.

    `body(text)` is the request's JSON; `answers(parsed body)` how many predictions a 2xx answer holds (an answer
    is right when it is one)."""

    port = "http"  # which of the server's ports it speaks to

    def __init__(self, path: str, body, answers):
        self.path, self.body, self.answers = path, body, answers

    def prepare(self, text: str) -> bytes:
        body = json.dumps(self.body(text)).encode()  # ensure_ascii: the surrogate travels as "\ud800"
        return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (self.path.encode(), len(body), body))

    async def connect(self, port: int) -> HttpConnection:
        return HttpConnection(self, *await asyncio.open_connection("127.0.0.1", port))


class HttpConnection:
    def __init__(self, protocol: HttpJson, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.protocol, self.reader, self.writer, self.closed = protocol, reader, writer, False

    async def call(self, request: bytes) -> tuple[str, bool, bytes]:
        """(status, right answer?, body): the status is the HTTP code as text."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                key, value = line.split(b":", 1)
                headers[key.strip().lower()] = value.strip().lower()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readuntil(b"\r\n")
        else:  # no length: the body runs to the end of the connection
            body, self.closed = await self.reader.read(), True
        if headers.get(b"connection") == b"close":
            self.closed = True
        status = head[9:12].decode()
        ok = False
        if status.startswith("2"):
            try:
                ok = self.protocol.answers(json.loads(body)) == 1
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                ok = False
        return status, ok, body

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class GrpcInfer:
    """KServe's Open Inference Protocol over gRPC (`grpc_predict_v2.proto`, `tuneline serve --grpc-port N`):
    `ModelInfer` on a `grpc.aio` channel per user, one BYTES input "text" of shape [1]; a request is serialized up
    front. The poisoned text travels as its UTF-8 bytes with the surrogate kept (b"\\xed\\xa0\\x80": invalid
    UTF-8, what a lone surrogate becomes in a protobuf BYTES tensor)."""

    port = "grpc"
    method = "/inference.GRPCInferenceService/ModelInfer"

    def __init__(self, model: str):
        self.model = model

    def prepare(self, text: str) -> bytes:
        from tuneline.serving.proto import inference_pb2 as pb

        request = pb.ModelInferRequest(model_name=self.model)
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode("utf-8", "surrogatepass"))
        return request.SerializeToString()

    async def connect(self, port: int) -> GrpcConnection:
        import grpc

        from tuneline.serving.proto import inference_pb2 as pb

        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        # no request serializer: the prepared bytes go as they are
        return GrpcConnection(channel, channel.unary_unary(self.method,
                                                           response_deserializer=pb.ModelInferResponse.FromString))


class GrpcConnection:
    closed = False

    def __init__(self, channel, infer):
        self.channel, self.infer = channel, infer

    async def call(self, request: bytes) -> tuple[str, bool, bytes]:
        """(status, right answer?, detail): the status is the gRPC code's name."""
        import grpc

        try:
            answer = await self.infer(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, False, (exc.details() or "").encode()
        return "OK", bool(answer.outputs) and list(answer.outputs[0].shape[:1]) == [1], b""

    async def close(self) -> None:
        await self.channel.close()


def v2_body(text: str) -> dict:
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def v2_answers(answer: dict) -> int:
    return len(answer["outputs"][0]["data"])


def protocol(name: str, model: str):
    """The protocol of a target, for the model `model` (its name in the server)."""
    if name == "v1":
        return HttpJson("/v1/predict", lambda text: {"inputs": [text]}, lambda answer: len(answer["predictions"]))
    if name == "v2":
        return HttpJson(f"/v2/models/{model}/infer", v2_body, v2_answers)
    if name == "mlflow":
        return HttpJson("/invocations", lambda text: {"dataframe_split": {"columns": ["text"], "data": [[text]]}},
                        lambda answer: len(answer["predictions"]))
    if name == "grpc":
        return GrpcInfer(model)
    raise ValueError(f"unknown protocol {name!r}")


# ---------------------------------------------------------------- the load generator (a process of its own)


async def generate_load(spec: dict) -> dict:
    """`concurrency` users, each on its own connection sending its next request when the last one is answered;
    a dropped connection counts as an error and the user reconnects."""
    speaker = protocol(spec["protocol"], spec["model"])
    texts, requests = spec["texts"], spec["requests"]
    rng = random.Random(spec.get("seed", 0))
    poisoned = set(rng.sample(range(requests), round(spec.get("poison_rate", 0) * requests)))
    bodies = [speaker.prepare(text) for text in texts]
    poison = speaker.prepare(POISON) if poisoned else None
    latencies: list[float] = []
    statuses = {"valid": Counter(), "poisoned": Counter()}
    right = Counter()  # requests answered right, by kind
    wrong: list[str] = []  # first few valid requests that failed
    counter = iter(range(requests))

    async def user() -> None:
        connection = None
        try:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                kind = "poisoned" if i in poisoned else "valid"
                start = time.perf_counter()
                try:
                    if connection is None:
                        connection = await speaker.connect(spec["port"])
                    status, ok, body = await asyncio.wait_for(
                        connection.call(poison if kind == "poisoned" else bodies[i % len(bodies)]), REQUEST_TIMEOUT_S)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                    status, ok, body = ("dropped" if not isinstance(exc, TimeoutError) else "timeout"), False, b""
                    if connection is not None:
                        await connection.close()
                    connection = None
                else:
                    if connection.closed:
                        await connection.close()
                        connection = None
                if kind == "valid":
                    latencies.append(time.perf_counter() - start)
                    if not ok and len(wrong) < 3:
                        wrong.append(f"{status} {body[:200].decode(errors='replace')}")
                right[kind] += ok
                answered = status == "OK" or status.startswith("2")  # the protocol's success, maybe a wrong answer
                statuses[kind][status if ok or not answered else f"{status} (wrong answer)"] += 1
        finally:
            if connection is not None:
                await connection.close()

    deadline = time.perf_counter() + spec["seconds"]
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(user() for _ in range(spec["concurrency"])))
    return {"latencies": latencies, "statuses": statuses, "right": right, "wrong": wrong, "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu}


def client_main() -> None:
    """`--client`: read the load's spec as JSON on stdin, run it, print the result as JSON."""
    print(json.dumps(asyncio.run(generate_load(json.loads(sys.stdin.read())))))


# ---------------------------------------------------------------- the servers


ORT_THREADS_SITE = '''"""benchmarks/serving_load.py, for the peers: an onnxruntime session left to its default thread count gets as
many threads as this process has cores (its default pins one thread to every core of the machine, outside the
process's affinity)."""
import os

try:
    import onnxruntime as _ort
except ImportError:
    _ort = None

if _ort is not None and not getattr(_ort, "_serving_load_patched", False):
    _Session = _ort.InferenceSession

    class InferenceSession(_Session):
        def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
            sess_options = sess_options if sess_options is not None else _ort.SessionOptions()
            if not sess_options.intra_op_num_threads:
                sess_options.intra_op_num_threads = len(os.sched_getaffinity(0))
            super().__init__(path_or_bytes, sess_options, *args, **kwargs)

    _ort.InferenceSession = InferenceSession
    _ort._serving_load_patched = True
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads, and of its waited-for children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its live descendants (uvicorn under `mlflow models serve`, MLServer's
    inference workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += process_cpu_seconds(pid)
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return total


@dataclass
class Server:
    name: str
    command: list[str]
    ready: str  # a path that answers 200 once the model is loaded
    ports: dict[str, int]
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    process: subprocess.Popen | None = None

    def start(self) -> None:
        # a session of its own: stop() ends the server's whole process group (workers included), nothing else
        with open(self.log, "ab") if self.log else open(os.devnull, "wb") as out:
            self.process = subprocess.Popen(self.command, env=os.environ | self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, seconds: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; its log: {self.log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports['http']}{self.ready}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {seconds:.0f} s; its log: {self.log}")

    def cpu(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def tuneline_server(model_uri: str, args, scratch: Path) -> Server:
    ports = {"http": free_port()} | ({"grpc": free_port()} if args.grpc else {})
    flags = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
             "--texts-per-run", str(args.texts_per_run), "--reload-interval", "0",
             *(["--workers", str(args.workers)] if args.workers else []),
             *(["--threads", str(args.threads)] if args.threads else []),
             *(["--grpc-port", str(ports["grpc"])] if args.grpc else [])]
    return Server("tuneline", [str(Path(sys.executable).with_name("tuneline")), "serve", "--model", model_uri,
                               "--port", str(ports["http"]), *flags], "/v2/health/ready", ports,
                  log=scratch / "tuneline.log")


def peer_env(scratch: Path, venv_bin: Path) -> dict[str, str]:
    """PATH with the peer's venv first (`mlflow models serve` starts `uvicorn` from PATH), the onnxruntime thread
    sitecustomize, and the tracking store this process uses."""
    from tuneline.settings import tracking_uri

    site = scratch / "peer-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(ORT_THREADS_SITE)
    return {"PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(site),
            "MLFLOW_TRACKING_URI": tracking_uri(), "MLFLOW_REGISTRY_URI": tracking_uri(),
            "TOKENIZERS_PARALLELISM": "false"}


def mlflow_server(model_uri: str, scratch: Path) -> Server:
    bin_dir = Path(sys.executable).parent
    port = free_port()
    return Server("mlflow", [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)], "/ping", {"http": port},
                  env=peer_env(scratch, bin_dir), log=scratch / "mlflow.log")


def mlserver_server(model_uri: str, name: str, scratch: Path) -> Server:
    """MLServer on a folder holding the version's files (downloaded with MLflow) and a model-settings.json."""
    import mlflow

    from tuneline.settings import tracking_uri

    if not (MLSERVER_VENV / "bin" / "mlserver").is_file():
        raise FileNotFoundError(f"no MLServer in {MLSERVER_VENV}: run once with --setup-peers")
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    folder = scratch / "mlserver"
    model_dir = folder / name
    model_dir.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(model_dir / "model"))
    (model_dir / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": "./model"}}))
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    (folder / "settings.json").write_text(json.dumps(
        {"http_port": ports["http"], "grpc_port": ports["grpc"], "metrics_port": ports["metrics"]}))
    return Server("mlserver", [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)],
                  f"/v2/models/{name}/ready", ports, env=peer_env(scratch, MLSERVER_VENV / "bin"),
                  log=scratch / "mlserver.log")


# target -> (server, protocol)
TARGETS = {"tuneline": ("tuneline", "v1"), "tuneline-v2": ("tuneline", "v2"), "tuneline-grpc": ("tuneline", "grpc"),
           "mlflow": ("mlflow", "mlflow"), "mlserver": ("mlserver", "v2")}
PEERS_OF = ("mlflow", "mlserver")


# ---------------------------------------------------------------- in-process


def register_minilm(home: Path, name: str) -> str:
    """MiniLM with a fresh 2-class head, exported (INT8 dynamic) and registered: serving speed needs no training."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneline.registry import store as registry
    from tuneline.config import ExportConfig
    from tuneline.export.encoder import export_and_quantize
    from tuneline.training.modeling import resolve_model_source

    source = resolve_model_source("builtin:minilm-l6")
    folder = home / "files"
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).save_pretrained(folder / "hf_model")
    AutoTokenizer.from_pretrained(source).save_pretrained(folder / "hf_model")
    export_and_quantize(folder / "hf_model", folder, ExportConfig(), 128, ["a parity sentence", "another one here"])
    run_id = registry.start_run("serving-bench", "minilm", {}, "", {})
    registry.register_model(run_id, name, folder / "hf_model", folder / "model.onnx", folder / "model.int8.onnx", 128,
                            {"task": "classification"}, "# benchmark model")
    registry.finish_run(run_id)
    registry.move_alias(name, registry.CHAMPION, "1", "benchmark")
    return f"models:/{name}@champion"


def in_process_predictors(model_uri: str, args) -> dict[str, tuple[int, int, object]]:
    """name -> (batch size, threads calling it at once, texts -> predictions): the served predictor as the
    server runs it, the same with one batch at a time on every core, and plain onnxruntime ones."""
    import yaml

    from tuneline.registry import store as registry
    from tuneline.runtime.classifier import OnnxClassifier
    from tuneline.serving import ServeSettings, available_cores, load_model

    settings = ServeSettings(model_uri=model_uri, workers=args.workers, threads=args.threads)
    name, reference = settings.reference()
    version = str(registry.resolve_version(name, reference).version)
    workers, threads = settings.model_workers(), settings.model_threads()
    served = load_model(name, version, threads, texts_per_run=args.texts_per_run)
    predictors = {f"served predictor, {workers} x {threads} thread(s), batches of {args.max_batch_size}":
                  (args.max_batch_size, workers, lambda texts: served.predict(texts, {}))}
    cores = available_cores()
    if (workers, threads) != (1, cores):
        one_at_a_time = load_model(name, version, cores, texts_per_run=args.texts_per_run)
        predictors[f"served predictor, 1 x {cores} thread(s), batches of {args.max_batch_size}"] = (
            args.max_batch_size, 1, lambda texts: one_at_a_time.predict(texts, {}))
    files = served.folder / "artifacts"
    onnx = next(p for p in (files / "model.int8.onnx", files / "model.onnx") if p.is_file())
    config = yaml.safe_load((served.folder / "MLmodel").read_text())["flavors"]["python_function"]["config"]
    # onnxruntime's defaults; but its default thread pool pins a thread to every core of the machine, outside
    # this process's affinity, so under --server-cores it gets as many threads as it has cores, no more.
    plain = OnnxClassifier(onnx, files / "hf_model", int(config["max_length"]), cores if args.server_cores else None)
    for batch in sorted({1, 8, 32}):
        predictors[f"plain OnnxClassifier, batches of {batch}"] = (
            batch, 1, lambda texts: plain.predict(texts, len(texts)))
    return predictors


def time_in_process(predict, batch: int, texts: list[str], workers: int = 1) -> tuple[float, float]:
    """(rows/s, CPU ms per row) of `predict` over `texts` in batches of `batch`, `workers` threads each taking
    the next batch as it finishes one (as the server's model threads do)."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [texts[offset : offset + batch] for offset in range(0, len(texts), batch)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(predict, batches[:workers]))  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        list(pool.map(predict, batches))
    return len(texts) / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / len(texts)


def batch_texts(url: str) -> tuple[float, float]:
    """(model calls, texts) the server has counted so far."""
    import httpx

    lines = httpx.get(f"{url}/metrics").text.splitlines()
    value = lambda name: sum(float(line.split()[-1]) for line in lines if line.startswith(name))  # noqa: E731
    return value("tuneline_batch_texts_count"), value("tuneline_batch_texts_sum")




# ---------------------------------------------------------------- one load against one target


def run_load(target: str, servers: dict[str, Server], texts: list[str], concurrency: int, args, *,
             requests: int | None = None, poison_rate: float = 0.0) -> dict:
    """Warm up, then one bounded load from a client process; the server's CPU (process tree) around it."""
    server_name, protocol_name = TARGETS[target]
    server = servers[server_name]
    spec = {"protocol": protocol_name, "model": args.model_name, "texts": texts, "concurrency": concurrency,
            "port": server.ports[protocol(protocol_name, args.model_name).port], "seconds": args.seconds,
            "requests": requests or args.requests, "poison_rate": poison_rate, "seed": 0}
    client = [sys.executable, __file__, "--client"]
    # --client-cores: the load generator on cores of its own (the servers and in-process timings keep the others)
    pin = (lambda: os.sched_setaffinity(0, args.client_cores)) if args.client_cores else None
    load = lambda spec: subprocess.run(client, input=json.dumps(spec), text=True, check=True,  # noqa: E731
                                       capture_output=True, preexec_fn=pin).stdout
    load(spec | {"requests": 2 * concurrency, "poison_rate": 0})  # warm-up: connections, first batches
    url = f"http://127.0.0.1:{server.ports['http']}"
    counted = batch_texts(url) if server_name == "tuneline" else (0.0, 0.0)
    others = {name: other.cpu() for name, other in servers.items() if other is not server}
    cpu = server.cpu()
    result = json.loads(load(spec))  # one process: one core at most
    server_cpu = server.cpu() - cpu
    others_cpu = sum(servers[name].cpu() - before for name, before in others.items())
    counted_after = batch_texts(url) if server_name == "tuneline" else (0.0, 0.0)
    valid = Counter(result["statuses"]["valid"])
    done = sum(valid.values())
    ok = result["right"].get("valid", 0)
    latencies = sorted(result["latencies"]) or [float("nan")]
    if done > ok:
        print(f"  {target}, concurrency {concurrency}: {done - ok} of {done} valid requests failed "
              f"({dict(valid)}); first: {result['wrong'][0] if result['wrong'] else '?'}", flush=True)
    return {"requests": done, "errors": done - ok, "requests/s": ok / result["elapsed"],
            "p50 ms": 1000 * latencies[len(latencies) // 2],
            "p99 ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "texts per model call": ((counted_after[1] - counted[1]) / max(counted_after[0] - counted[0], 1)
                                     if server_name == "tuneline" else float("nan")),
            "server CPU ms/request": 1000 * server_cpu / max(done, 1),
            "client CPU ms/request": 1000 * result["cpu"] / max(done, 1),
            "idle servers CPU %": 100 * others_cpu / result["elapsed"],
            "valid": dict(valid), "poisoned": result["statuses"]["poisoned"]}


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("onnxruntime", "mlflow", "uvicorn"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found) + (f"; peers venv: {', '.join(MLSERVER_PACKAGES)}" if MLSERVER_VENV.is_dir() else "")


def percent(value: float) -> str:
    return "-" if value != value else f"{value:.0%}"


def times(value: float) -> str:
    return "-" if value != value else f"{value:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="models:/NAME@alias; omit to register MiniLM in a scratch home")
    parser.add_argument("--eval", help="a file of sentences (CSV / TSV / JSONL / Parquet, column `sentence` or "
                                       "`text`) or builtin:sample-reviews; default: see eval_data.py")
    parser.add_argument("--text-column", help="the column of --eval to send (default: sentence, else text)")
    parser.add_argument("--targets", default="tuneline,mlflow,mlserver",
                        help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--grpc", action=argparse.BooleanOptionalAction, default=None,
                        help="measure tuneline-grpc too (default: when `tuneline serve --help` has --grpc-port)")
    parser.add_argument("--setup-peers", action="store_true", help=f"first install MLServer into {MLSERVER_VENV} "
                                                                   "(once; skipped when it is there)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per level at most")
    parser.add_argument("--poison-rate", type=float, default=0.05, help="share of poisoned requests in the poisoned "
                                                                        "run (0: no poisoned run)")
    parser.add_argument("--poison-concurrency", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--texts-per-run", type=int, default=4, help="texts per onnxruntime call (server's)")
    parser.add_argument("--workers", type=int, default=None, help="server's model threads (default: its own)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per model thread (server "
                                                                  "and in-process; default: the server's own)")
    parser.add_argument("--rounds", type=int, default=3, help="times each level runs, interleaved; medians reported")
    cores = lambda text: {int(core) for core in text.split(",")}  # noqa: E731
    parser.add_argument("--server-cores", type=cores, help="e.g. 0: the servers and the in-process timings run on "
                                                           "these cores only (Linux affinity)")
    parser.add_argument("--client-cores", type=cores, help="e.g. 1: the load generator runs on these cores only")
    parser.add_argument("--shared-cores", action="store_true", help="the load generator on the servers' cores "
                        "(by default it gets the last core, the servers the others)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main()

    targets = [target.strip() for target in args.targets.split(",") if target.strip()]
    if args.grpc is not False and "tuneline-grpc" not in targets:
        help_text = subprocess.run([str(Path(sys.executable).with_name("tuneline")), "serve", "--help"],
                                   capture_output=True, text=True).stdout
        if "--grpc-port" in help_text:
            targets.insert(targets.index("tuneline") + 1 if "tuneline" in targets else 0, "tuneline-grpc")
        elif args.grpc:
            sys.exit("--grpc: `tuneline serve --help` shows no --grpc-port")
    args.grpc = "tuneline-grpc" in targets
    if unknown := [target for target in targets if target not in TARGETS]:
        sys.exit(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    if "tuneline" not in targets:
        sys.exit("--targets must include tuneline (the ratios are tuneline's)")
    if args.setup_peers and "mlserver" in targets:
        setup_peers()

    load_before = os.getloadavg()
    available = sorted(os.sched_getaffinity(0))
    if not (args.shared_cores or args.server_cores or args.client_cores) and len(available) > 1:
        args.server_cores, args.client_cores = set(available[:-1]), {available[-1]}
    if args.server_cores:  # this process times in-process, and the servers inherit the affinity
        os.sched_setaffinity(0, args.server_cores)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as `tuneline serve` runs: in-process gets it too
    texts, source = eval_texts(args.eval, args.text_column)
    scratch = Path(tempfile.mkdtemp(prefix="tuneline-serving-bench-"))
    if not args.model:
        os.environ["TUNELINE_HOME"] = str(scratch)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    model_uri = args.model or register_minilm(scratch, "serving-bench")
    from tuneline.serving import ServeSettings

    args.model_name = ServeSettings(model_uri=model_uri).reference()[0]
    predictors = in_process_predictors(model_uri, args)
    in_process = {name: time_in_process(predict, batch, texts, workers)
                  for name, (batch, workers, predict) in predictors.items()}

    makers = {"tuneline": lambda: tuneline_server(model_uri, args, scratch),
              "mlflow": lambda: mlflow_server(model_uri, scratch),
              "mlserver": lambda: mlserver_server(model_uri, args.model_name, scratch)}
    servers: dict[str, Server] = {}
    unavailable: dict[str, str] = {}
    levels = list(map(int, args.concurrency.split(",")))
    runs: dict[tuple[int, str], list[dict]] = {}
    beside: dict[int, list[float]] = {level: [] for level in levels}
    poisoned: dict[str, dict] = {}
    try:
        for name in dict.fromkeys(TARGETS[target][0] for target in targets):
            try:
                servers[name] = makers[name]()
                servers[name].start()
            except Exception as exc:  # noqa: BLE001 (a peer that cannot start is reported, the rest go on)
                unavailable[name] = f"{type(exc).__name__}: {exc}"
        for name, server in list(servers.items()):
            try:
                server.wait_ready()
            except RuntimeError as exc:
                tail = server.log.read_text(errors="replace").strip().splitlines()[-15:] if server.log else []
                unavailable[name] = f"{exc}\n" + "\n".join(tail)
                server.stop()
                del servers[name]
        if "tuneline" not in servers:
            sys.exit(f"tuneline serve did not start: {unavailable.get('tuneline')}")
        targets = [target for target in targets if TARGETS[target][0] in servers]
        for name, reason in unavailable.items():
            print(f"{name}: not measured: {reason}", flush=True)
        batch, workers, served = predictors[next(iter(predictors))]
        for round_ in range(args.rounds):
            order = targets[round_ % len(targets):] + targets[: round_ % len(targets)]
            for level in levels:
                before = time_in_process(served, batch, texts, workers)
                for target in order:
                    runs.setdefault((level, target), []).append(run_load(target, servers, texts, level, args))
                beside[level].append(max(before, time_in_process(served, batch, texts, workers))[0])
                print(f"round {round_ + 1}, concurrency {level}: " + ", ".join(
                    f"{target} {runs[level, target][-1]['requests/s']:.1f}/s" for target in order)
                    + f", in-process {beside[level][-1]:.1f} rows/s", flush=True)
        if args.poison_rate > 0:
            for target in targets:
                poisoned[target] = run_load(target, servers, texts, args.poison_concurrency, args,
                                            poison_rate=args.poison_rate)
    finally:
        for server in servers.values():
            server.stop()
    for name, (batch, workers, predict) in predictors.items():  # again after the servers: keep the faster run
        in_process[name] = max(in_process[name], time_in_process(predict, batch, texts, workers))
    report(args, targets, levels, runs, beside, in_process, poisoned, unavailable, predictors, load_before,
           model_uri, source, len(texts))
    if unavailable:  # the servers' logs stay for the reader
        print(f"\nscratch folder kept, with the servers' logs: {scratch}")
    else:  # a registered model, its ONNX files and MLServer's copy: about 0.6 GB
        shutil.rmtree(scratch, ignore_errors=True)


def report(args, targets, levels, runs, beside, in_process, poisoned, unavailable, predictors, load_before,
           model_uri, source, rows) -> None:
    import pandas as pd

    print(f"\n{date.today()} | {cpu_model()}, nproc {os.cpu_count()} | load average before "
          f"{', '.join(f'{v:.2f}' for v in load_before)}, after {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{model_uri} | {rows} sentences from {source} | {versions()}")
    print(f"tuneline: one sentence per request, max batch {args.max_batch_size}, max wait {args.max_wait_ms} ms, "
          f"{args.texts_per_run} texts per onnxruntime call, {next(iter(predictors)).split(', ')[1]}"
          + (f"; servers and in-process on cores {sorted(args.server_cores)}" if args.server_cores else "")
          + (f", load generator on cores {sorted(args.client_cores)}" if args.client_cores else "") + "\n")
    print(pd.DataFrame([{"in-process": name, "rows/s": round(rows_s, 1), "CPU ms/row": round(cpu, 2)}
                        for name, (rows_s, cpu) in in_process.items()]).to_markdown(index=False))
    median = lambda results, key: statistics.median(result[key] for result in results)  # noqa: E731
    table = []
    for level in levels:
        for target in targets:
            results = runs[level, target]
            row = {"concurrency": level, "target": target}
            for key in ("requests/s", "p50 ms", "p99 ms", "server CPU ms/request", "client CPU ms/request",
                        "texts per model call", "idle servers CPU %"):
                value = median(results, key)
                row[key] = "-" if value != value else round(value, 2 if "CPU ms" in key else 1)
            row["errors"] = sum(result["errors"] for result in results)
            row["requests"] = sum(result["requests"] for result in results)
            row["vs in-process"] = percent(statistics.median(
                result["requests/s"] / rows_s for result, rows_s in zip(results, beside[level])))
            table.append(row)
    print(f"\nmedians of {args.rounds} round(s); errors and requests: all rounds; \"vs in-process\": the served "
          f"predictor timed beside the level")
    print(pd.DataFrame(table).to_markdown(index=False))

    peers = [target for target in targets if target in PEERS_OF]
    ours_all = [target for target in targets if target not in PEERS_OF]
    ratios, verdicts = [], []
    for level in levels:
        best = max(peers, key=lambda peer: median(runs[level, peer], "requests/s")) if peers else None
        for target in ours_all:
            ours = runs[level, target]
            share = statistics.median(result["requests/s"] / rows_s for result, rows_s in zip(ours, beside[level]))
            row = {"concurrency": level, "target": target, "vs in-process": percent(share)}
            verdict = [f"{'>=' if share >= 0.9 else '<'} 90% of in-process ({share:.0%})"]
            if best:
                theirs = runs[level, best]
                speed = statistics.median(a["requests/s"] / b["requests/s"] if b["requests/s"] else float("inf")
                                          for a, b in zip(ours, theirs))
                tail = statistics.median(a["p99 ms"] / b["p99 ms"] for a, b in zip(ours, theirs))
                row |= {"better peer": best, "its requests/s": round(median(theirs, "requests/s"), 1),
                        "vs it, requests/s": times(speed), "its p99 ms": round(median(theirs, "p99 ms"), 1),
                        "p99 / its p99": times(tail)}
                verdict += [f"{'>=' if speed >= 3 else '<'} 3x {best} ({speed:.2f}x)",
                            f"p99 {'<=' if tail <= 0.5 else '>'} half of its ({tail:.2f}x)"]
            ratios.append(row)
            if level == 16:
                met = sum(part.startswith((">=", "p99 <=")) for part in verdict)
                verdicts.append(f"{target}: {', '.join(verdict)}: {met} of {len(verdict)} met")
    print("\nratios against in-process and the better peer (by requests/s) at each level; each the median of the "
          "rounds' own ratios")
    print(pd.DataFrame(ratios).to_markdown(index=False))
    if verdicts:
        print("\ntargets at concurrency 16 (>= 90% of in-process, >= 3x the better peer, p99 <= half of its):\n- "
              + "\n- ".join(verdicts))
    if poisoned:
        print(f"\npoisoned run: {args.poison_rate:.0%} of the requests carry a lone surrogate, concurrency "
              f"{args.poison_concurrency}, at most {args.requests} requests / {args.seconds:g} s per target")
        print(pd.DataFrame([{"target": target, "valid sent": result["requests"], "valid failed": result["errors"],
                             "valid statuses": ", ".join(f"{k}: {v}" for k, v in sorted(result["valid"].items())),
                             "poisoned sent": sum(result["poisoned"].values()),
                             "poisoned statuses": ", ".join(f"{k}: {v}" for k, v in
                                                            sorted(result["poisoned"].items())),
                             "valid requests/s": round(result["requests/s"], 1)}
                            for target, result in poisoned.items()]).to_markdown(index=False))
    for name, reason in unavailable.items():
        print(f"\n{name}: not measured: {reason}")


if __name__ == "__main__":
    main()
