"""The served model driven by clients nobody here wrote: Triton's reference clients (`tritonclient`, HTTP and gRPC,
sync and async), curl-style bodies, schemathesis on the server's own schema, and poisoned requests among good ones.

This module never imports tuneline's own protocol code (tuneline.serving.proto): what passes here passes for a
Triton or KServe user, whose clients carry their own copy of the protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import free_port
from tests.tuneline.test_serving import MODEL, TEXTS, home, registered_classifiers, start_server, stop  # noqa: F401

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(home):  # noqa: F811 - the fixture imported above
    """A server on HTTP and gRPC, a registered tiny classifier behind it: (http url, grpc address)."""
    grpc_port = free_port()
    process, url = start_server(home, "--grpc-port", str(grpc_port), "--reload-interval", "0", "--max-inputs", "64",
                                "--max-text-chars", "2000", "--max-wait-ms", "20")
    yield url, f"127.0.0.1:{grpc_port}"
    stop(process)


def v1_labels(url: str, texts: list[str]) -> list[str]:
    return [p["label"] for p in httpx.post(f"{url}/v1/predict", json={"inputs": texts}).json()["predictions"]]


def text_input(module, texts: list[str], shape: list[int] | None = None, binary: bool = True):
    array = np.array(texts, dtype=object).reshape(shape or [len(texts)])
    tensor = module.InferInput("text", list(array.shape), "BYTES")
    if module.__name__.endswith("http"):
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return tensor


def decoded(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


# -- tritonclient over HTTP

def test_every_tritonclient_http_call_a_triton_user_makes(served):
    import tritonclient.http as httpclient

    url, _ = served
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "7") and not client.is_model_ready("other")
    assert client.get_server_metadata()["name"] == "tuneline"
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL, "1")
    assert metadata["versions"] == ["1"] and [i["name"] for i in metadata["inputs"]] == ["text"]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "score"]
    assert client.get_model_config(MODEL)["input"][0]["data_type"] == "TYPE_STRING"
    assert client.get_model_repository_index() == [{"name": MODEL, "version": "1", "state": "READY"}]
    before = client.get_inference_statistics(MODEL)["model_stats"][0]["inference_stats"]["success"]["count"]

    expected = v1_labels(url, TEXTS)
    for binary in (True, False):  # the binary tensor extension (tritonclient's default), then plain JSON
        for shape in ([len(TEXTS)], [len(TEXTS), 1]):
            outputs = [httpclient.InferRequestedOutput("label", binary_data=binary),
                       httpclient.InferRequestedOutput("score", binary_data=binary)]
            result = client.infer(MODEL, [text_input(httpclient, TEXTS, shape, binary)], outputs=outputs,
                                  request_id="r1")
            assert decoded(result.as_numpy("label")) == expected, (binary, shape)
            assert result.as_numpy("label").shape == tuple(shape)
            scores = result.as_numpy("score")
            assert scores.dtype == np.float32 and np.all((scores > 0) & (scores <= 1))
            assert result.get_response()["id"] == "r1" and result.get_response()["model_version"] == "1"
    # no outputs named: all of them, binary (tritonclient asks binary_data_output)
    result = client.infer(MODEL, [text_input(httpclient, TEXTS)], model_version="1")
    assert decoded(result.as_numpy("label")) == expected and result.as_numpy("score") is not None
    # outputs named: only those
    only = client.infer(MODEL, [text_input(httpclient, TEXTS)], outputs=[httpclient.InferRequestedOutput("label")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["label"] and only.as_numpy("score") is None
    # async, as a Triton user fires several at once
    pending = [client.async_infer(MODEL, [text_input(httpclient, [text])]) for text in TEXTS]
    assert [decoded(p.get_result().as_numpy("label"))[0] for p in pending] == expected
    after = client.get_inference_statistics(MODEL)["model_stats"][0]["inference_stats"]["success"]["count"]
    assert after - before == 1 + 4 + 2 + len(TEXTS)  # v1 and v2 requests alike
    client.close()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda body: body["inputs"][0].update(name="sentence"), "unknown input 'sentence'"),
    (lambda body: body["inputs"][0].update(datatype="FP32"), "takes BYTES"),
    (lambda body: body["inputs"][0].update(shape=[3]), "has shape [3] but 2 elements"),
    (lambda body: body["inputs"][0].update(shape=[1, 2]), "is [N] or [N, 1]"),
    (lambda body: body.update(outputs=[{"name": "probabilities"}]), "unknown output 'probabilities'"),
    (lambda body: body["inputs"].append(dict(body["inputs"][0], name="extra")), "takes one input"),
    (lambda body: body["inputs"][0].update(data=["ok", 3]), "elements [1] are not strings"),
    (lambda body: body["inputs"][0].update(data=["ok", "\ud800"]), "input 1 is not valid Unicode text"),
    (lambda body: body.update(parameters={"timeout": "soon"}), "microseconds"),
])
def test_a_bad_v2_request_is_a_400_with_the_protocols_error_body(served, mutate, message):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    url, _ = served
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ok", "fine"]}]}
    mutate(body)
    response = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=json.dumps(body).encode())  # no Content-Type
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"] and message in response.json()["error"]
    assert response.headers.get("connection") != "close"
    # tritonclient decodes the error into its exception
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="unknown input 'sentence'"):
        tensor = httpclient.InferInput("sentence", [1], "BYTES")
        tensor.set_data_from_numpy(np.array(["ok"], dtype=object))
        client.infer(MODEL, [tensor])
    client.close()


def test_json_is_read_whatever_the_content_type_says(served):
    url, _ = served
    body = json.dumps({"inputs": TEXTS[:2]}).encode()
    expected = v1_labels(url, TEXTS[:2])
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
        response = httpx.post(f"{url}/v1/predict", content=body, headers=headers)
        assert response.status_code == 200, (headers, response.text)
        assert [p["label"] for p in response.json()["predictions"]] == expected
    response = httpx.post(f"{url}/v1/predict", content=b"inputs=a&inputs=b")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]


# -- tritonclient over gRPC

def test_every_tritonclient_grpc_call_sync_and_async(served):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url, address = served
    expected = v1_labels(url, TEXTS)
    client = grpcclient.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1") and not client.is_model_ready(MODEL, "7")
    assert client.get_server_metadata().name == "tuneline"
    metadata = client.get_model_metadata(MODEL)
    assert list(metadata.versions) == ["1"] and [o.name for o in metadata.outputs] == ["label", "score"]
    for shape in ([len(TEXTS)], [len(TEXTS), 1]):
        result = client.infer(MODEL, [text_input(grpcclient, TEXTS, shape)], request_id="g1")
        assert decoded(result.as_numpy("label")) == expected and result.as_numpy("label").shape == tuple(shape)
        assert result.as_numpy("score").dtype == np.float32 and result.get_response().id == "g1"
    only = client.infer(MODEL, [text_input(grpcclient, TEXTS)], outputs=[grpcclient.InferRequestedOutput("score")])
    assert only.as_numpy("label") is None and only.as_numpy("score").shape == (len(TEXTS),)

    answers, done = {}, threading.Semaphore(0)

    def callback(index):
        def receive(result, error):
            answers[index] = error or decoded(result.as_numpy("label"))[0]
            done.release()
        return receive

    for i, text in enumerate(TEXTS):
        client.async_infer(MODEL, [text_input(grpcclient, [text])], callback(i))
    for _ in TEXTS:
        assert done.acquire(timeout=30)
    assert [answers[i] for i in range(len(TEXTS))] == expected

    with pytest.raises(InferenceServerException, match="unknown input 'sentence'") as refused:
        tensor = grpcclient.InferInput("sentence", [1], "BYTES")
        tensor.set_data_from_numpy(np.array(["ok"], dtype=object))
        client.infer(MODEL, [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.infer("other", [text_input(grpcclient, TEXTS)])
    with pytest.raises(InferenceServerException, match="not UTF-8"):
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object))
        client.infer(MODEL, [tensor])
    client.close()


def test_tritonclient_grpc_aio(served):
    import tritonclient.grpc.aio as aioclient

    url, address = served
    expected = v1_labels(url, TEXTS)

    async def scenario():
        client = aioclient.InferenceServerClient(address)
        try:
            assert await client.is_model_ready(MODEL)
            results = await asyncio.gather(*(client.infer(MODEL, [text_input(aioclient, [text])]) for text in TEXTS))
            return [decoded(r.as_numpy("label"))[0] for r in results]
        finally:
            await client.close()

    assert asyncio.run(scenario()) == expected


# -- one bad request among good ones

def test_a_poisoned_request_in_every_batch_fails_alone(served):
    """16 clients on keep-alive connections; every fourth request carries a lone surrogate. The bad ones get a 400
    naming the input; every good one gets its answer; no connection is closed or reset."""
    url, _ = served
    expected = dict(zip(TEXTS, v1_labels(url, TEXTS)))
    bad_body = b'{"inputs": ["fine", "\\ud800 broken"]}'
    results, errors = [], []

    def user(number: int) -> None:
        with httpx.Client(timeout=30) as client:  # one connection, kept alive across its requests
            for i in range(24):
                text = TEXTS[(number + i) % len(TEXTS)]
                poisoned = (number + i) % 4 == 0
                try:
                    response = client.post(f"{url}/v1/predict", content=bad_body if poisoned else
                                           json.dumps({"inputs": [text]}).encode())
                except httpx.HTTPError as error:
                    errors.append(repr(error))
                    continue
                results.append((poisoned, text, response.status_code, response.text,
                                response.headers.get("connection")))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(user, range(16)))
    assert errors == []
    good = [r for r in results if not r[0]]
    bad = [r for r in results if r[0]]
    assert len(good) + len(bad) == 16 * 24 and bad
    assert [(status, json.loads(body)["predictions"][0]["label"]) for _, _, status, body, _ in good] == \
        [(200, expected[text]) for _, text, _, _, _ in good]
    assert {status for _, _, status, _, _ in bad} == {400}
    assert all("input 1 is not valid Unicode text" in body for _, _, _, body, _ in bad)
    assert {connection for *_, connection in results} <= {None, "keep-alive"}


# -- backpressure and deadlines

def test_a_full_queue_answers_503_with_retry_after_and_a_deadline_504(home):  # noqa: F811
    process, url = start_server(home, "--reload-interval", "0", "--workers", "1", "--max-batch-size", "4",
                                "--max-inputs", "8", "--max-queue-texts", "16", "--max-text-chars", "2000")
    try:
        long_texts = [" ".join(["word"] * 300)] * 8  # slow enough that 16 concurrent requests overflow the queue

        def one(_):
            return httpx.post(f"{url}/v1/predict", json={"inputs": long_texts}, timeout=60)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(one, range(16)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) == {200, 503}, statuses
        shed = [r for r in responses if r.status_code == 503]
        assert all(int(r.headers["retry-after"]) >= 1 and "max_queue_texts=16" in r.json()["error"] for r in shed)

        # the protocol's `timeout` parameter (microseconds) is a deadline the request cannot meet
        body = {"parameters": {"timeout": 1}, "inputs": [{"name": "text", "datatype": "BYTES", "shape": [8],
                                                          "data": long_texts}]}
        late = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=60)
        assert late.status_code == 504 and "deadline" in late.json()["error"]
        assert httpx.post(f"{url}/v1/predict", json={"inputs": ["still fine"]}).status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert f"tuneline_requests_shed_total {float(len(shed))}" in metrics
        assert "tuneline_requests_timed_out_total 1.0" in metrics
    finally:
        stop(process)


# -- the schema

def test_the_openapi_schema_and_docs_are_served(served):
    url, _ = served
    schema = httpx.get(f"{url}/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/predict", "/v2", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/ready"} <= set(paths)
    assert httpx.get(f"{url}/docs").status_code == 200


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(served, tmp_path):
    """schemathesis (pinned in the dev extra) generates requests from /openapi.json and checks every answer
    against it. positive_data_acceptance is left out: the schema cannot say that an infer request's shape must
    match its data, so a schema-valid request can be rightly refused."""
    url, _ = served
    # The served model's name and version as path parameters (half the requests still take random ones), so
    # generated requests reach the model, not only the 404 for an unknown name.
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.name" = "{MODEL}"\n"path.version" = "1"\n')
    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "25", "--seed", "1",
         "--request-timeout", "30", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert "Tested: 17" in result.stdout and cases and cases[1] == cases[2] and int(cases[1]) > 300, result.stdout


# -- the README's serving examples, as written

def readme_examples() -> tuple[list[str], str]:
    """The shell lines and the Python block of the README's serving section."""
    section = (ROOT / "README.md").read_text().split("\n## Serving\n", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line for line in shell.splitlines() if line.strip()], python


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_readmes_serving_examples_run_as_written(tiny_bert, tmp_path_factory, tmp_path):
    """The README's ports (8080, 8081) and model name, a tiny classifier registered under it."""
    shell, python = readme_examples()
    serve, *curls = shell
    assert serve.startswith("tuneline serve ") and all(line.startswith("curl -s localhost:8080/") for line in curls)
    if not (port_is_free(8080) and port_is_free(8081)):
        pytest.fail("the README's examples use ports 8080 and 8081; something on this machine listens there")
    home = registered_classifiers(tiny_bert, tmp_path_factory, "tuneline-classifier", versions=1)
    env = os.environ | {"TUNELINE_HOME": str(home),
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = serve.split("#")[0].strip().removesuffix("&")  # the line runs in the background, as `&` says
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(["bash", "-c", f"exec {command}"], env=env, cwd=tmp_path, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(240):
            try:
                if httpx.get("http://127.0.0.1:8080/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.25)
        answers = [json.loads(subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                                             timeout=60, check=True).stdout) for line in curls]
        predict, metadata, infer = answers
        assert [p["label"] for p in predict["predictions"]] == infer["outputs"][0]["data"]
        assert len(predict["predictions"]) == 2 and all(0 < p["score"] <= 1 for p in predict["predictions"])
        assert (metadata["name"], metadata["versions"]) == ("tuneline-classifier", ["1"])
        printed = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True, text=True,
                                 timeout=120)
        assert printed.returncode == 0, printed.stderr[-3000:]
        labels = [label.encode() for label in infer["outputs"][0]["data"]]
        assert printed.stdout.count(str(np.array(labels, dtype=object))) == 2, printed.stdout  # HTTP and gRPC
        log = (tmp_path / "server.log").read_text()
        assert "serving tuneline-classifier version 1" in log and "gRPC on port 8081" in log
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
