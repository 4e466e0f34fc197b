"""The model server, really started on loopback, serving versions from a real (SQLite) MLflow registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tuneline.config import ExportConfig, GenerationConfig
from tuneline.errors import RegistrationError
from tuneline.export.encoder import export_and_quantize
from tuneline.export.generative import export_generative_and_quantize
from tuneline.runtime.classifier import OnnxClassifier
from tuneline.runtime.generator import OnnxGenerator
from tuneline.serving import (Batcher, LoadedModel, ModelHolder, ServeSettings, files_to_serve, length_pieces, load_model,
                              run_sorted)

pytestmark = pytest.mark.e2e
MODEL = "tiny-served"
GENERATOR = "tiny-t5"
TEXTS = ["it works great", "broke after a day", "fine, I guess", "would buy again", "awful support"]


def registered_classifiers(tiny_bert, tmp_path_factory, name: str = MODEL, versions: int = 2) -> Path:
    """A registry (a new TUNELINE_HOME) holding `versions` versions of a tiny classifier under `name` (different
    weights), champion on version 1."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    home = tmp_path_factory.mktemp("serving-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELINE_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        from tuneline.registry import store as registry

        for seed in range(versions):
            folder = tmp_path_factory.mktemp(f"files-{seed}")
            torch.manual_seed(seed)
            model = BertForSequenceClassification.from_pretrained(tiny_bert)
            model.classifier.reset_parameters()  # a different head per version: different predictions
            model.save_pretrained(folder / "hf_model")
            AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder / "hf_model")
            export_and_quantize(folder / "hf_model", folder, ExportConfig(), 32, TEXTS)
            run_id = registry.start_run("serving", f"v{seed}", {}, "", {})
            registry.register_model(run_id, name, folder / "hf_model", folder / "model.onnx", folder / "model.int8.onnx",
                                    32, {"task": "classification"}, "# card")
            registry.finish_run(run_id)
        registry.move_alias(name, registry.CHAMPION, "1", "first")
    return home


@pytest.fixture(scope="module")
def home(tiny_bert, tmp_path_factory):
    """A registry holding two versions of a tiny classifier (different weights), champion on version 1; this
    module's tests read it."""
    home = registered_classifiers(tiny_bert, tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELINE_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home


@pytest.fixture(scope="module")
def generator_home(tiny_model, tmp_path_factory):
    """A registry holding a tiny T5 as an FP32 ONNX generator (FP32: a greedy text does not depend on the batch)."""
    home = tmp_path_factory.mktemp("generator-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELINE_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        from tuneline.registry import store as registry

        folder = tmp_path_factory.mktemp("t5-files")
        shutil.copytree(tiny_model("t5"), folder / "hf_model")
        exported = export_generative_and_quantize(folder / "hf_model", folder,
                                                  ExportConfig(quantization="none", parity_rows=2), 32, TEXTS, "seq2seq")
        run_id = registry.start_run("serving", "t5", {}, "", {})
        registry.register_model(run_id, GENERATOR, folder / "hf_model", exported.onnx_path, None, 32,
                                {"task": "seq2seq"}, "# card", task="seq2seq", generation={"max_new_tokens": 6})
        registry.finish_run(run_id)
        registry.move_alias(GENERATOR, registry.CHAMPION, "1", "first")
        yield home


def start_server(home: Path, *flags: str, token: str | None = None, model: str = MODEL):
    port = free_port()
    env = os.environ | {"TUNELINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("TUNELINE_SERVE_TOKEN", None)
    if token:
        env["TUNELINE_SERVE_TOKEN"] = token
    # A file, not a pipe: nobody reads a pipe while the server runs, and a full one (an access-log line per
    # request) would block the server's writes.
    log = home / f"server-{port}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tuneline")), "serve", "--model", f"models:/{model}@champion",
             "--port", str(port), *flags],
            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail("server exited during start-up:\n" + log.read_text()[-3000:])
        time.sleep(0.25)
    process.kill()
    pytest.fail("server did not become ready in 60 s")


def stop(process) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(home):
    process, url = start_server(home, "--reload-interval", "0.5", "--max-inputs", "8", "--max-text-chars", "200",
                                "--max-wait-ms", "20")
    yield url
    stop(process)


def in_process(home: Path, version: str) -> list[tuple[str, float]]:
    from tuneline.registry import store as registry

    files = registry.download_version(MODEL, version, home / f"check-{version}")
    classifier = OnnxClassifier(files / "model.int8.onnx", files / "hf_model", 32)
    # INT8 dynamic quantization takes each activation's range per onnxruntime call, padding included, so a
    # score moves (by ~1e-4) with the texts run beside it: like the server, run the texts shortest first, in
    # pieces of its default texts per call.
    return run_sorted(classifier.predict, TEXTS, ServeSettings.model_fields["texts_per_run"].default)


def test_predictions_equal_in_process_onnxruntime(server, home, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    response = httpx.post(f"{server}/v1/predict", json={"inputs": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["task"]) == (MODEL, "1", "classification")
    expected = in_process(home, "1")
    assert [p["label"] for p in body["predictions"]] == [label for label, _ in expected]
    assert [p["score"] for p in body["predictions"]] == pytest.approx([score for _, score in expected], abs=1e-6)


def test_open_inference_protocol_v2_round_trip(server):
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    metadata = httpx.get(f"{server}/v2/models/{MODEL}").json()
    assert metadata["versions"] == ["1"] and metadata["inputs"][0]["datatype"] == "BYTES"
    request = {"id": "r1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS[:2]}]}
    result = httpx.post(f"{server}/v2/models/{MODEL}/infer", json=request).json()
    outputs = {o["name"]: o for o in result["outputs"]}
    assert result["id"] == "r1" and outputs["label"]["shape"] == [2] and outputs["score"]["datatype"] == "FP32"
    v1 = httpx.post(f"{server}/v1/predict", json={"inputs": TEXTS[:2]}).json()["predictions"]
    assert outputs["label"]["data"] == [p["label"] for p in v1]
    metrics = httpx.get(f"{server}/metrics").text  # labelled by route, not by path: the model name is not a label
    assert 'endpoint="/v2/models/{name}/infer",status="200"' in metrics and f"/v2/models/{MODEL}/" not in metrics


@pytest.mark.parametrize(("request_kwargs", "status", "message"), [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not JSON"),
    ({"content": b"inputs=a", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 400, "not JSON"),
    ({"json": {"inputs": [1, 2]}}, 400, "string"),
    ({"json": {"inputs": []}}, 400, "at least 1"),
    ({"json": {"texts": ["a"]}}, 400, "inputs"),
    ({"content": b'{"inputs": ["ok", "\\ud800"]}', "headers": {"content-type": "application/json"}}, 400,
     "input 1 is not valid Unicode text"),
    ({"json": {"inputs": ["a"] * 9}}, 413, "at most 8 per request"),
    ({"json": {"inputs": ["ok", "x" * 201]}}, 413, "inputs [1] are longer than 200"),
    ({"json": {"inputs": ["ok"], "parameters": {"temperature": 0.5}}}, 422, "apply to generation models"),
    ({"content": b"x" * 2_100_000, "headers": {"content-type": "application/json"}}, 413, "over the limit"),
])
def test_bad_input_gets_a_4xx_with_a_message(server, request_kwargs, status, message):
    response = httpx.post(f"{server}/v1/predict", **request_kwargs)
    assert response.status_code == status
    assert message in response.text.lower() or message in response.text


def test_a_chunked_body_over_the_limit_is_413(server):
    def chunks():  # no content-length: the limit must hold while reading
        for _ in range(25):
            yield b"x" * 100_000

    response = httpx.post(f"{server}/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over the limit of 2000000 bytes" in response.text


def test_unknown_model_name_is_404(server):
    response = httpx.post(f"{server}/v2/models/other/infer",
                          json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]})
    assert response.status_code == 404 and f"this server serves '{MODEL}'" in response.text


def test_concurrent_requests_are_batched_and_counted(server):
    def one(_):
        return httpx.post(f"{server}/v1/predict", json={"inputs": TEXTS[:1]}, timeout=30).status_code

    from concurrent.futures import ThreadPoolExecutor

    before = httpx.get(f"{server}/metrics").text
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    after = httpx.get(f"{server}/metrics").text

    def value(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    calls = value(after, "tuneline_batch_texts_count") - value(before, "tuneline_batch_texts_count")
    texts = value(after, "tuneline_batch_texts_sum") - value(before, "tuneline_batch_texts_sum")
    assert texts == 64 and calls < 64  # some model calls served several requests
    assert 'tuneline_model_version{model="tiny-served"}' in after


def test_a_promotion_during_traffic_is_picked_up_with_no_failed_request(server, home, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from tuneline.registry import store as registry

    seen, failures, done = [], [], threading.Event()

    def traffic():
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                response = client.post(f"{server}/v1/predict", json={"inputs": TEXTS})
                (seen if response.status_code == 200 else failures).append(
                    response.json()["version"] if response.status_code == 200 else response.text)

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(1)
    registry.move_alias(MODEL, registry.CHAMPION, "2", "better")
    deadline = time.time() + 30
    while httpx.get(f"{server}/v2/models/{MODEL}").json()["versions"] != ["2"] and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    done.set()
    for worker in workers:
        worker.join()
    assert failures == []
    assert "1" in seen and seen[-1] == "2"
    log = "".join(path.read_text() for path in home.glob("server-*.log"))  # the swap is logged, with both versions
    assert f"models:/{MODEL}@champion moved: now serving version 2 (was 1)" in log
    after = httpx.post(f"{server}/v1/predict", json={"inputs": TEXTS}).json()["predictions"]
    assert [p["label"] for p in after] == [label for label, _ in in_process(home, "2")]
    registry.move_alias(MODEL, registry.CHAMPION, "1", "back")  # leave the module's state as found


def test_bearer_token_is_required_when_configured(home):
    process, url = start_server(home, "--reload-interval", "0", token="s3cret")
    try:
        body = {"inputs": ["hello"]}
        assert httpx.post(f"{url}/v1/predict", json=body).status_code == 401
        assert httpx.post(f"{url}/v1/predict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.post(f"{url}/v1/predict", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # probes stay open
    finally:
        stop(process)


def test_the_serving_path_imports_neither_torch_nor_prefect(home):
    script = f"""
import sys
from tuneline.serving import ServeSettings, create_app, load_model
model = load_model({MODEL!r}, "1")
create_app(ServeSettings(model_uri="models:/{MODEL}@champion"))
print(model.predict(["fine"], {{}}))
heavy = sorted({{"torch", "prefect", "transformers"}} & set(sys.modules))
assert not heavy, heavy
"""
    env = os.environ | {"TUNELINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "label" in run.stdout


def test_only_the_files_serving_reads_are_downloaded(home, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = load_model(MODEL, "1", scratch=tmp_path, texts_per_run=2)
    downloaded = sorted(p.relative_to(model.folder).as_posix() for p in model.folder.rglob("*") if p.is_file())
    assert downloaded == ["MLmodel", "artifacts/hf_model/config.json", "artifacts/hf_model/tokenizer.json",
                          "artifacts/hf_model/tokenizer_config.json", "artifacts/model.int8.onnx"]
    expected = in_process(home, "1")  # the whole version, weights and FP32 ONNX included
    assert (home / "check-1" / "artifacts" / "hf_model" / "model.safetensors").is_file()
    # In length-sorted pieces of 2; dynamic INT8 scales activations per call, so other texts move a score a little.
    predictions = model.predict(TEXTS, {})
    assert [p["label"] for p in predictions] == [label for label, _ in expected]
    assert [p["score"] for p in predictions] == pytest.approx([score for _, score in expected], abs=0.02)


def test_files_to_serve_are_one_onnx_model_and_the_tokenizer():
    classifier = ["artifacts/hf_model", "artifacts/model.int8.onnx", "artifacts/model.onnx", "artifacts/model_card.md"]
    assert files_to_serve(classifier) == ["MLmodel", "artifacts/model.int8.onnx", "artifacts/hf_model/tokenizer.json",
                                          "artifacts/hf_model/tokenizer_config.json", "artifacts/hf_model/config.json"]
    assert files_to_serve(["artifacts/hf_model", "artifacts/model.onnx"])[1] == "artifacts/model.onnx"
    generator = ["artifacts/hf_model", "artifacts/generator", "artifacts/generator.int8", "artifacts/model_card.md"]
    assert files_to_serve(generator) == ["MLmodel", "artifacts/generator.int8"]  # its folder holds its tokenizer
    with pytest.raises(RegistrationError, match="no ONNX model to serve"):
        files_to_serve(["artifacts/hf_model", "artifacts/model_card.md"])


def test_run_sorted_runs_short_texts_together_and_keeps_the_order():
    pieces = []

    def shout(texts: list[str]) -> list[str]:
        pieces.append(texts)
        return [text.upper() for text in texts]

    texts = ["c" * 30, "a" * 10, "b" * 60, "d" * 12, "e" * 33]
    assert run_sorted(shout, texts, 2) == [text.upper() for text in texts]
    assert pieces == [["a" * 10, "d" * 12], ["c" * 30, "e" * 33], ["b" * 60]]


def test_a_long_text_runs_alone_rather_than_padding_short_ones():
    short, long = "x" * 40, "y" * 600
    # Padded together the three short texts would cost 3 x 560 characters; another call costs 36.
    assert length_pieces([long, short, short, short], 4) == [[1, 2, 3], [0]]
    # Texts of like length fill whole pieces: fewer calls beat a little padding.
    assert length_pieces(["x" * n for n in (41, 40, 44, 43, 42, 45, 46, 47)], 4) == [[1, 0, 4, 3], [2, 5, 6, 7]]
    # Cuts go where the lengths jump, not every `texts_per_run` texts.
    assert length_pieces(["x" * n for n in (10, 11, 200, 201, 202, 203)], 4) == [[0, 1], [2, 3, 4, 5]]
    assert length_pieces([], 4) == []


def test_full_batches_go_at_once_and_a_request_given_up_does_not_stop_the_batcher(tmp_path):
    import asyncio

    calls = []

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        calls.append(texts)
        time.sleep(0.05)  # the model is busy: the other requests queue
        return [{"echo": text} for text in texts]

    holder = ModelHolder(ServeSettings(model_uri="models:/m@champion"), tmp_path)
    holder.current = LoadedModel("m", "1", "classification", (), predict, tmp_path)

    async def scenario():
        batcher = Batcher(holder, max_texts=3, max_wait=60, observe=lambda _: None)
        worker = asyncio.create_task(batcher.run())
        requests = [asyncio.create_task(batcher.submit([f"t{i}"])) for i in range(10)]
        await asyncio.sleep(0)  # every request is queued
        requests[1].cancel()  # its client went away
        done = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 30)  # far below max_wait
        worker.cancel()
        batcher.executor.shutdown()
        return done

    results = asyncio.run(scenario())
    # The request given up before its batch went is not run: the batch takes the next request in its place.
    assert calls == [["t0", "t2", "t3"], ["t4", "t5", "t6"], ["t7", "t8", "t9"]]
    assert isinstance(results[1], asyncio.CancelledError)
    served = [result[1] for i, result in enumerate(results) if i != 1]
    assert served == [[{"echo": f"t{i}"}] for i in range(10) if i != 1]



def run_batcher(holder: ModelHolder, requests: list[tuple[list[str], dict]], **settings) -> list:
    """Submit `(texts, parameters)` requests at once to a running Batcher(holder, **settings); their results."""
    import asyncio

    async def scenario():
        batcher = Batcher(holder, observe=lambda _: None, **settings)
        worker = asyncio.create_task(batcher.run())
        done = await asyncio.wait_for(asyncio.gather(*(batcher.submit(*request) for request in requests)), 30)
        worker.cancel()
        batcher.executor.shutdown()
        return done

    return asyncio.run(scenario())


def test_a_batch_runs_in_pieces_on_every_model_thread_at_once(tmp_path):
    calls, started = [], threading.Barrier(2, timeout=5)

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        calls.append((threading.current_thread().name, texts))
        started.wait()  # both pieces must be running at the same time, or this times out
        return [{"echo": text} for text in texts]

    holder = ModelHolder(ServeSettings(model_uri="models:/m@champion"), tmp_path)
    holder.current = LoadedModel("m", "1", "classification", (), predict, tmp_path,
                                 pieces=lambda texts: [[3, 0], [1, 2]])

    results = run_batcher(holder, [([f"t{i}"], {}) for i in range(4)], max_texts=4, max_wait=60, workers=2)
    assert sorted(texts for _, texts in calls) == [["t1", "t2"], ["t3", "t0"]]
    assert len({thread for thread, _ in calls}) == 2
    assert [outputs for _, outputs in results] == [[{"echo": f"t{i}"}] for i in range(4)]  # back in request order


def test_a_batch_goes_before_max_wait_once_it_can_feed_every_free_thread(tmp_path):
    import asyncio

    calls, release = [], threading.Event()

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        calls.append(list(texts))
        if texts == ["busy"]:
            release.wait(10)  # one model thread stays busy; the other is free
        return [{"echo": text} for text in texts]

    holder = ModelHolder(ServeSettings(model_uri="models:/m@champion"), tmp_path)
    holder.current = LoadedModel("m", "1", "classification", (), predict, tmp_path,
                                 pieces=lambda texts: [list(range(len(texts)))])

    async def scenario():
        batcher = Batcher(holder, max_texts=32, max_wait=60, observe=lambda _: None, workers=2, ready=4)
        worker = asyncio.create_task(batcher.run())
        busy = asyncio.create_task(batcher.submit(["busy"]))
        await asyncio.sleep(0.3)
        alone = list(calls)  # an idle model does not wait for company: max_wait is a minute
        first = [asyncio.create_task(batcher.submit([f"t{i}"])) for i in range(3)]
        await asyncio.sleep(0.3)
        waited = list(calls)  # 3 texts: fewer than `ready` while a thread is busy, so they wait
        fourth = batcher.submit(["t3"])
        done = await asyncio.wait_for(asyncio.gather(*first, fourth), 10)  # far below max_wait
        release.set()
        await busy
        worker.cancel()
        batcher.executor.shutdown()
        return alone, waited, done

    alone, waited, done = asyncio.run(scenario())
    assert alone == waited == [["busy"]] and calls == [["busy"], ["t0", "t1", "t2", "t3"]]
    assert [outputs for _, outputs in done] == [[{"echo": f"t{i}"}] for i in range(4)]


def test_a_batch_that_runs_as_one_call_leaves_the_other_threads_their_share(tmp_path):
    calls = []

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        calls.append(list(texts))
        time.sleep(0.1)
        return [{"generated": text} for text in texts]

    holder = ModelHolder(ServeSettings(model_uri="models:/m@champion"), tmp_path)
    holder.current = LoadedModel("m", "1", "seq2seq", (), predict, tmp_path)  # no pieces: generation

    results = run_batcher(holder, [([f"t{i}"], {}) for i in range(6)], max_texts=32, max_wait=0.05, workers=2)
    assert sorted(calls) == [["t0", "t1", "t2"], ["t3", "t4", "t5"]]  # two threads, half the queue each
    assert [outputs for _, outputs in results] == [[{"generated": f"t{i}"}] for i in range(6)]


def test_model_threads_default_to_one_per_worker_and_a_worker_per_core():
    from tuneline.serving import available_cores

    settings = ServeSettings(model_uri="models:/m@champion")
    assert (settings.model_workers(), settings.model_threads()) == (available_cores(), 1)
    assert ServeSettings(model_uri="models:/m@champion", workers=1).model_threads() == available_cores()
    assert ServeSettings(model_uri="models:/m@champion", workers=1, threads=3).model_threads() == 3
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


def test_available_cores_follow_the_cgroup_cpu_quota(tmp_path):
    from tuneline.serving import available_cores

    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    for quota, cores in [("max 100000", affinity), ("50000 100000", 1), ("150000 100000", min(2, affinity)),
                         (f"{100000 * (affinity + 4)} 100000", affinity)]:
        cpu_max.write_text(quota + "\n")
        assert available_cores(cpu_max) == cores, quota
    assert available_cores(tmp_path / "no-cgroup-v2") == affinity


def test_greedy_generation_requests_with_the_same_settings_share_a_batch(generator_home, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(generator_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from concurrent.futures import ThreadPoolExecutor

    from tuneline.registry import store as registry

    files = registry.download_version(GENERATOR, "1", generator_home / "check")
    generator = OnnxGenerator(files / "generator")
    alone = [generator.generate([text], GenerationConfig(max_new_tokens=4))[0] for text in TEXTS]
    process, url = start_server(generator_home, "--reload-interval", "0", "--max-wait-ms", "300", model=GENERATOR)
    try:
        def generate(text: str) -> httpx.Response:
            return httpx.post(f"{url}/v1/predict", json={"inputs": [text], "parameters": {"max_new_tokens": 4}},
                              timeout=60)

        with ThreadPoolExecutor(len(TEXTS)) as pool:
            responses = list(pool.map(generate, TEXTS))
        assert [r.status_code for r in responses] == [200] * len(TEXTS)
        assert [r.json()["predictions"][0]["generated"] for r in responses] == alone
        calls, texts = batched(url)
        assert texts == len(TEXTS) and calls < len(TEXTS)  # through the batcher, some calls for several requests

        # Sampled requests batch too: each row draws from its own (seed, row) generator, so a request's texts
        # are those of the same seed alone, whatever ran beside it.
        hot = {"do_sample": True, "temperature": 5.0, "top_k": 0, "max_new_tokens": 6}
        seeds = [11, 12, 13, 11, 14]
        with ThreadPoolExecutor(len(TEXTS)) as pool:
            sampled = list(pool.map(lambda text, seed: httpx.post(
                f"{url}/v1/predict", json={"inputs": [text, text], "parameters": hot | {"seed": seed}}, timeout=60),
                TEXTS, seeds))
        assert [r.status_code for r in sampled] == [200] * len(TEXTS)
        assert [r.json()["seed"] for r in sampled] == seeds
        settings = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=5.0, top_k=0)
        drawn = [r.json()["predictions"] for r in sampled]
        assert drawn == [[{"generated": text} for text in generator.generate([t, t], settings, seed)]
                         for t, seed in zip(TEXTS, seeds)]
        assert any(a != b for a, b in drawn)  # two rows of one request draw differently
        assert batched(url)[0] < calls + len(TEXTS) and batched(url)[1] == texts + 2 * len(TEXTS)

        unseeded = httpx.post(f"{url}/v1/predict", json={"inputs": TEXTS[:1], "parameters": hot}, timeout=60).json()
        again = httpx.post(f"{url}/v1/predict", timeout=60,
                           json={"inputs": TEXTS[:1], "parameters": hot | {"seed": unseeded["seed"]}}).json()
        assert again["predictions"] == unseeded["predictions"]  # the seed sent back draws the same text again
        for seed in (-1, 2**63, "7", True):
            refused = httpx.post(f"{url}/v1/predict", json={"inputs": ["a"], "parameters": hot | {"seed": seed}})
            assert refused.status_code == 422 and "seed" in refused.text, seed

        invalid = httpx.post(f"{url}/v1/predict", json={"inputs": ["a"], "parameters": {"temperature": -1}})
        assert invalid.status_code == 422 and "temperature" in invalid.text
        unknown = httpx.post(f"{url}/v1/predict", json={"inputs": ["a"], "parameters": {"beam_width": 2}})
        assert unknown.status_code == 422 and "beam_width" in unknown.text
        beams = httpx.post(f"{url}/v1/predict", json={"inputs": ["a"], "parameters": {"num_beams": 2}})
        assert beams.status_code == 422 and "beam search is PyTorch-only" in beams.text  # refused in the batch
    finally:
        stop(process)


def batched(url: str) -> tuple[float, float]:
    """(model calls, texts) the batcher has run so far."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return tuple(sum(float(line.split()[-1]) for line in lines if line.startswith(f"tuneline_batch_texts_{name}"))
                 for name in ("count", "sum"))


def test_requests_share_a_batch_only_with_the_same_parameters(tmp_path):
    calls = []

    def predict(texts: list[str], parameters: dict, _seeds) -> list[dict]:
        calls.append((texts, parameters))
        return [{"generated": text} for text in texts]

    holder = ModelHolder(ServeSettings(model_uri="models:/m@champion"), tmp_path)
    holder.current = LoadedModel("m", "1", "seq2seq", (), predict, tmp_path)

    settings = [{"max_new_tokens": 4}, {"max_new_tokens": 8}, {"max_new_tokens": 4}, {}]
    results = run_batcher(holder, [([text], parameters) for text, parameters in zip("abcd", settings)],
                          max_texts=8, max_wait=0.1)
    assert calls == [(["a", "c"], {"max_new_tokens": 4}), (["b"], {"max_new_tokens": 8}), (["d"], {})]
    assert [outputs for _, outputs in results] == [[{"generated": text}] for text in "abcd"]


def settle(holder: ModelHolder, submit, **settings) -> tuple[list, object]:
    """Run `submit(batcher)` (a coroutine that submits requests) against a running Batcher; its results, with
    the exceptions of requests that failed, and the batcher."""
    import asyncio

    async def scenario():
        batcher = Batcher(holder, observe=lambda _: None, **settings)
        worker = asyncio.create_task(batcher.run())
        done = await asyncio.wait_for(submit(batcher), 30)
        worker.cancel()
        batcher.executor.shutdown()
        return done, batcher

    return asyncio.run(scenario())


def echo_holder(tmp_path, predict) -> ModelHolder:
    holder = ModelHolder(ServeSettings(model_uri="models:/m@champion"), tmp_path)
    holder.current = LoadedModel("m", "1", "classification", (), predict, tmp_path)
    return holder


def test_a_request_that_fails_in_a_batch_fails_alone_naming_its_input(tmp_path):
    import asyncio

    from tuneline.serving.errors import BadRequest

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        if any(text.startswith("poison") for text in texts):
            raise RuntimeError("the tokenizer cannot read it")
        return [{"echo": text} for text in texts]

    async def submit(batcher):
        requests = [(["a"],), (["b", "c", "poison!"],), (["d"],), (["poison?"],)]
        return await asyncio.gather(*(batcher.submit(*request) for request in requests), return_exceptions=True)

    # One batch holds all four requests; it fails, each runs alone, and only the poisoned ones fail.
    results, _ = settle(echo_holder(tmp_path, predict), submit, max_texts=8, max_wait=0.2)
    assert [r[1] for r in (results[0], results[2])] == [[{"echo": "a"}], [{"echo": "d"}]]
    assert isinstance(results[1], BadRequest) and "1 of the request's inputs (input 2: RuntimeError" in str(results[1])
    assert isinstance(results[3], BadRequest) and "input 0: RuntimeError" in str(results[3])


def test_a_large_request_queues_a_chunk_at_a_time_so_later_requests_get_their_turn(tmp_path):
    import asyncio

    calls = []

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        calls.append(list(texts))
        time.sleep(0.02)
        return [{"echo": text} for text in texts]

    async def submit(batcher):
        large = asyncio.create_task(batcher.submit([f"b{i}" for i in range(6)]))
        small = asyncio.create_task(batcher.submit(["s"]))  # arrives while the large one's first chunk waits
        return await asyncio.gather(large, small)

    (large, small), batcher = settle(echo_holder(tmp_path, predict), submit, max_texts=2, max_wait=0, workers=1)
    assert calls == [["b0", "b1"], ["s"], ["b2", "b3"], ["b4", "b5"]]  # not behind all six
    assert large[1] == [{"echo": f"b{i}"} for i in range(6)] and small[1] == [{"echo": "s"}]
    assert (batcher.size, batcher.waiting) == (0, 0)


def test_past_its_deadline_a_request_is_refused_and_never_run(tmp_path):
    import asyncio

    from tuneline.serving.errors import DeadlineExceeded, Overloaded

    calls = []

    def predict(texts: list[str], _parameters, _seeds) -> list[dict]:
        calls.append(list(texts))
        time.sleep(0.3)
        return [{"echo": text} for text in texts]

    async def submit(batcher):
        first = asyncio.create_task(batcher.submit(["slow"]))
        await asyncio.sleep(0)
        late = asyncio.create_task(batcher.submit(["late", "too"], timeout=0.05))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="max_queue_texts=3"):  # "slow" and "late, too" fill the queue
            await batcher.submit(["one more", "and another"])
        return await asyncio.gather(first, late, return_exceptions=True)

    (first, late), batcher = settle(echo_holder(tmp_path, predict), submit, max_texts=1, max_wait=0, workers=1,
                                    max_queue=3)
    assert first[1] == [{"echo": "slow"}] and isinstance(late, DeadlineExceeded)
    assert calls == [["slow"]] and batcher.shed == 1 and (batcher.size, batcher.waiting) == (0, 0)
