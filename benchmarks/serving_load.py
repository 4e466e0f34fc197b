"""The model server under load on loopback vs the same model called in-process.

    python benchmarks/serving_load.py                       # MiniLM classifier registered in a scratch home
    python benchmarks/serving_load.py --model models:/NAME@champion   # a version in your registry

One request = one SST-2 dev sentence. For each concurrency level a bounded
load (--requests, at most --seconds) runs against `tuneline serve` on
127.0.0.1; requests/s and p50/p99 latency are printed next to the
in-process onnxruntime throughput on the same sentences at the server's
batch size (tokenization included on both sides). The ratio is what
batching buys: the target is server >= 85% of in-process at concurrency 16+.
The load generator runs on the same cores as the server.
"""

from __future__ import annotations

import argparse
import asyncio
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

import pandas as pd

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


def in_process(model_uri: str, texts: list[str], batch: int, threads: int | None) -> float:
    """Rows/s of the served ONNX file called directly, batches of `batch`, tokenization included."""
    from tuneline import registry
    from tuneline.serving import ServeSettings, load_model

    name, reference = ServeSettings(model_uri=model_uri).reference()
    model = load_model(name, str(registry.resolve_version(name, reference).version), threads)
    model.predict(texts[:batch], {})  # warm-up
    start = time.perf_counter()
    for offset in range(0, len(texts), batch):
        model.predict(texts[offset : offset + batch], {})
    return len(texts) / (time.perf_counter() - start)


async def load(url: str, texts: list[str], concurrency: int, requests: int, seconds: float) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(requests))

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in counter:
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            response = await client.post(f"{url}/v1/predict", json={"inputs": [texts[i % len(texts)]]})
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(f"{url}/v1/predict", json={"inputs": texts[:1]})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests": len(latencies), "failures": failures, "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="models:/NAME@alias; omit to register MiniLM in a scratch home")
    parser.add_argument("--eval", type=Path, default=SHARED / "dev.tsv")
    parser.add_argument("--concurrency", default="1,8,16,32")
    parser.add_argument("--requests", type=int, default=600, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=60, help="seconds per level at most")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (server and in-process)")
    args = parser.parse_args()

    texts = pd.read_csv(args.eval, sep="\t", quoting=3, dtype=str, keep_default_na=False)["sentence"].tolist()
    scratch = Path(tempfile.mkdtemp(prefix="tuneline-serving-bench-"))
    if not args.model:
        os.environ["TUNELINE_HOME"] = str(scratch)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    model_uri = args.model or register_minilm(scratch, "serving-bench")
    baseline = in_process(model_uri, texts, args.max_batch_size, args.threads)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
             "--reload-interval", "0", *(["--threads", str(args.threads)] if args.threads else [])]
    server = subprocess.Popen([str(Path(sys.executable).with_name("tuneline")), "serve", "--model", model_uri,
                               "--port", str(port), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(240):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        rows = []
        for level in [int(c) for c in args.concurrency.split(",")]:
            result = asyncio.run(load(url, texts, level, args.requests, args.seconds))
            rows.append({"concurrency": level, **{k: round(v, 1) for k, v in result.items()},
                         "vs in-process": f"{result['rps'] / baseline:.0%}"})
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\n{date.today()} | {platform.machine()}, {os.cpu_count()} cores | load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} | {model_uri}")
    print(f"in-process onnxruntime, batches of {args.max_batch_size}: {baseline:.1f} rows/s; server: one sentence "
          f"per request, max batch {args.max_batch_size}, max wait {args.max_wait_ms} ms\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
