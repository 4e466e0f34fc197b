"""The model server under load on loopback vs the same model called in-process.

    python benchmarks/serving_load.py                       # MiniLM classifier registered in a scratch home
    python benchmarks/serving_load.py --model models:/NAME@champion   # a version in your registry
    python benchmarks/serving_load.py --shared-cores       # the load generator on the server's cores too

One request = one SST-2 dev sentence. For each concurrency level a bounded
load (--requests, at most --seconds) runs against `tuneline serve` on
127.0.0.1; requests/s and p50/p99 latency are printed next to the
in-process onnxruntime throughput on the same sentences (tokenization
included on both sides). The ratio is what batching buys: the target is
server >= 85% of in-process at concurrency 16+.

The in-process figures: the served predictor (`tuneline.serving.load_model`,
the very function the server calls) on batches of the server's max batch size
in dataset order, called from as many threads at once as the server's model
workers, each thread with the server's onnxruntime threads; and, so that the
denominator is not a weak one, the same predictor one batch at a time on all
cores, and a plain `OnnxClassifier` with onnxruntime's defaults on batches of
1, 8 and 32. Each is
measured before and after the server runs, the faster run kept. Other work on
the machine moves every figure, so the served predictor is also timed right
before and right after each concurrency level: "vs in-process" divides by the
faster of those two, "vs best" by the fastest in-process figure of the run.
The levels run --rounds times, interleaved; each figure is the median of its
rounds.

The load generator gets a core of its own (the last one of this process's
affinity; the server and the in-process timings get the others), as a load
test keeps its clients off the machine under test: a core it shares would be
charged to the server and not to in-process. `--shared-cores` runs it on the
server's cores too. Either way it is made cheap: a separate process,
HTTP/1.1 keep-alive over raw asyncio streams, request bytes encoded up front,
responses read by their Content-Length. CPU seconds per request are measured
for the server process (from /proc) and for the client, and per row
in-process, to show where the cores go.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def register_minilm(home: Path, name: str) -> str:
    """MiniLM with a fresh 2-class head, exported (INT8 dynamic) and registered: serving speed needs no training."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneline import registry
    from tuneline.config import ExportConfig
    from tuneline.export import export_and_quantize
    from tuneline.training import resolve_model_source

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

    from tuneline import registry
    from tuneline.onnx_classifier import OnnxClassifier
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


async def generate_load(port: int, bodies: list[bytes], concurrency: int, requests: int, seconds: float) -> dict:
    """`concurrency` keep-alive connections, each sending its next request when the last one is answered."""
    requests_bytes = [b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body) for body in bodies]
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(requests))

    async def user() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                start = time.perf_counter()
                writer.write(requests_bytes[i % len(requests_bytes)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if head[9:12] != b"200" or len(json.loads(body).get("predictions", [])) != 1:
                    failures.append((head[9:12] + b" " + body[:200]).decode(errors="replace"))
        finally:
            writer.close()

    deadline = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return {"latencies": latencies, "failures": failures, "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu}


def client_main() -> None:
    """`--client`: read the load's spec as JSON on stdin, run it, print the result as JSON."""
    spec = json.loads(sys.stdin.read())
    bodies = [json.dumps({"inputs": [text]}).encode() for text in spec["texts"]]
    result = asyncio.run(generate_load(spec["port"], bodies, spec["concurrency"], spec["requests"], spec["seconds"]))
    print(json.dumps(result))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_texts(url: str) -> tuple[float, float]:
    """(model calls, texts) the server has counted so far."""
    import httpx

    lines = httpx.get(f"{url}/metrics").text.splitlines()
    value = lambda name: sum(float(line.split()[-1]) for line in lines if line.startswith(name))  # noqa: E731
    return value("tuneline_batch_texts_count"), value("tuneline_batch_texts_sum")


def run_level(server: subprocess.Popen, port: int, texts: list[str], concurrency: int, args) -> dict:
    spec = {"port": port, "texts": texts, "concurrency": concurrency, "requests": args.requests,
            "seconds": args.seconds}
    client = [sys.executable, __file__, "--client"]
    # --client-cores: the load generator on cores of its own (the server and in-process timings keep the others)
    pin = (lambda: os.sched_setaffinity(0, args.client_cores)) if args.client_cores else None
    subprocess.run(client, input=json.dumps(spec | {"requests": 2 * concurrency}), text=True, check=True,
                   capture_output=True, preexec_fn=pin)  # warm-up: connections, first batches
    url = f"http://127.0.0.1:{port}"
    calls, batched = batch_texts(url)
    cpu = process_cpu_seconds(server.pid)
    result = json.loads(subprocess.run(client, input=json.dumps(spec), text=True, check=True, capture_output=True,
                                       preexec_fn=pin).stdout)  # one process: one core at most
    server_cpu = process_cpu_seconds(server.pid) - cpu
    calls_after, batched_after = batch_texts(url)
    latencies = sorted(result["latencies"])
    done = len(latencies)
    if result["failures"]:
        print(f"concurrency {concurrency}: {len(result['failures'])} failures, first: {result['failures'][0]}")
    return {"requests": done, "failures": len(result["failures"]), "requests/s": done / result["elapsed"],
            "p50 ms": 1000 * latencies[done // 2], "p99 ms": 1000 * latencies[int(0.99 * (done - 1))],
            "texts per model call": (batched_after - batched) / max(calls_after - calls, 1),
            "server CPU ms/request": 1000 * server_cpu / done, "client CPU ms/request": 1000 * result["cpu"] / done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="models:/NAME@alias; omit to register MiniLM in a scratch home")
    parser.add_argument("--eval", type=Path, default=SHARED / "dev.tsv")
    parser.add_argument("--concurrency", default="1,8,16,32")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per level at most")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--texts-per-run", type=int, default=4, help="texts per onnxruntime call (server's)")
    parser.add_argument("--workers", type=int, default=None, help="server's model threads (default: its own)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per model thread (server "
                                                                  "and in-process; default: the server's own)")
    parser.add_argument("--rounds", type=int, default=3, help="times each level runs, interleaved; medians reported")
    cores = lambda text: {int(core) for core in text.split(",")}  # noqa: E731
    parser.add_argument("--server-cores", type=cores, help="e.g. 0: the server and the in-process timings run on "
                                                           "these cores only (Linux affinity)")
    parser.add_argument("--client-cores", type=cores, help="e.g. 1: the load generator runs on these cores only")
    parser.add_argument("--shared-cores", action="store_true", help="the load generator on the server's cores "
                        "(by default it gets the last core, the server the others)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main()

    import httpx
    import pandas as pd

    load_before = os.getloadavg()
    available = sorted(os.sched_getaffinity(0))
    if not (args.shared_cores or args.server_cores or args.client_cores) and len(available) > 1:
        args.server_cores, args.client_cores = set(available[:-1]), {available[-1]}
    if args.server_cores:  # this process times in-process, and the server inherits the affinity
        os.sched_setaffinity(0, args.server_cores)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as `tuneline serve` runs: in-process gets it too
    texts = pd.read_csv(args.eval, sep="\t", quoting=3, dtype=str, keep_default_na=False)["sentence"].tolist()
    scratch = Path(tempfile.mkdtemp(prefix="tuneline-serving-bench-"))
    if not args.model:
        os.environ["TUNELINE_HOME"] = str(scratch)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    model_uri = args.model or register_minilm(scratch, "serving-bench")
    predictors = in_process_predictors(model_uri, args)
    in_process = {name: time_in_process(predict, batch, texts, workers)
                  for name, (batch, workers, predict) in predictors.items()}

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
             "--texts-per-run", str(args.texts_per_run), "--reload-interval", "0",
             *(["--workers", str(args.workers)] if args.workers else []),
             *(["--threads", str(args.threads)] if args.threads else [])]
    server = subprocess.Popen([str(Path(sys.executable).with_name("tuneline")), "serve", "--model", model_uri,
                               "--port", str(port), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        runs: dict[int, list[dict]] = {level: [] for level in map(int, args.concurrency.split(","))}
        batch, workers, served = predictors[next(iter(predictors))]
        for _ in range(args.rounds):
            for level, results in runs.items():
                before = time_in_process(served, batch, texts, workers)
                result = run_level(server, port, texts, level, args)
                result["in-process rows/s beside"] = max(before, time_in_process(served, batch, texts, workers))[0]
                result["vs in-process"] = result["requests/s"] / result["in-process rows/s beside"]
                results.append(result)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name, (batch, workers, predict) in predictors.items():  # again after the server: keep the faster run
        in_process[name] = max(in_process[name], time_in_process(predict, batch, texts, workers))

    best = max(max(rows for rows, _ in in_process.values()),
               *(result["in-process rows/s beside"] for results in runs.values() for result in results))
    print(f"\n{date.today()} | {platform.machine()}, {os.cpu_count()} cores | load average before "
          f"{', '.join(f'{v:.2f}' for v in load_before)}, after {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
          f" | {model_uri}")
    print(f"server: one sentence per request, max batch {args.max_batch_size}, max wait {args.max_wait_ms} ms, "
          f"{args.texts_per_run} texts per onnxruntime call, {next(iter(predictors)).split(', ')[1]}"
          + (f"; server and in-process on cores {sorted(args.server_cores)}" if args.server_cores else "")
          + (f", load generator on cores {sorted(args.client_cores)}" if args.client_cores else "") + "\n")
    print(pd.DataFrame([{"in-process": name, "rows/s": round(rows, 1), "CPU ms/row": round(cpu, 2)}
                        for name, (rows, cpu) in in_process.items()]).to_markdown(index=False))
    print()
    rows = []
    for level, results in runs.items():
        median = {key: statistics.median(result[key] for result in results) for key in results[0]}
        rows.append({"concurrency": level, **{key: round(value, 2 if "CPU" in key else 1) for key, value in median.items()
                                              if not key.startswith("vs")},
                     "vs in-process": f"{median['vs in-process']:.0%}", "vs best": f"{median['requests/s'] / best:.0%}"})
    print(f"medians of {args.rounds} rounds; best in-process: {best:.1f} rows/s")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
