"""`mnist-pipeline serve` speaking the Open Inference Protocol (V2) to the real `tritonclient` HTTP
client, in JSON and in binary mode; its Prometheus metrics parsed as Prometheus would; `/docs` from
the service's own assets; bad requests refused with the protocol's 4xx while it keeps serving. One
service process (light models, no TensorFlow in it) for the whole module."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from support.commands import run_cli
from support.servers import serving
from support.service import metric_samples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(two_versions_template, tmp_path_factory):
    """(base URL, artifacts folder) of one service on a copy of the two-version registry."""
    import shutil

    artifacts = Path(shutil.copytree(two_versions_template, tmp_path_factory.mktemp("v2") / "artifacts"))
    with serving(artifacts, log=artifacts.parent / "serve.log") as url:
        yield url, artifacts


@pytest.fixture(scope="module")
def client(service):
    with triton.InferenceServerClient(service[0].removeprefix("http://")) as client:
        yield client


@pytest.fixture(scope="module")
def images(synthetic_split) -> np.ndarray:
    return synthetic_split.load("test")[0][:12]


def predicted(artifacts: Path, images: np.ndarray, tmp_path: Path, *version: str) -> tuple[str, np.ndarray]:
    """(version, probabilities [n, 10]) as `mnist-pipeline predict --json` answers."""
    np.save(tmp_path / "images.npy", images)
    result = run_cli(
        "predict", "--json", "--top-k", "10", "--artifacts-dir", str(artifacts), str(tmp_path / "images.npy"), *version
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    rows = np.zeros((len(images), 10))
    for row, prediction in zip(rows, answer["predictions"], strict=True):
        for top in prediction["top"]:
            row[top["class"]] = top["probability"]
    return answer["model"]["version"], rows


def infer(client, images: np.ndarray, binary: bool, *version: str):
    tensor = triton.InferInput("image", list(images.shape), "UINT8" if images.dtype == np.uint8 else "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "class")]
    return client.infer("mnist", [tensor], *version, outputs=outputs)


def test_health_and_metadata_as_the_protocol_says(client):
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("mnist")
    assert metadata["versions"] == ["v0001", "v0002"] and metadata["platform"] == "litert"
    assert metadata["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("probabilities", "FP32", [-1, 10]),
        ("class", "INT64", [-1]),
    ]
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", "2")
    assert not client.is_model_ready("mnist", "9") and not client.is_model_ready("digits")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_answers_equal_predict_in_both_modes_and_by_version(client, service, images, tmp_path, binary):
    for version, flattened in ((), False), (("2",), True):
        sent = images.reshape(len(images), 784).astype(np.float32) if flattened else images
        result = infer(client, sent, binary, *version)
        expected_version, expected = predicted(
            service[1], images, tmp_path, *[arg for v in version for arg in ("--version", v)]
        )
        probabilities = result.as_numpy("probabilities")
        assert result.get_response()["model_version"] == expected_version == ("v0002" if version else "v0001")
        assert probabilities.dtype == np.float32 and probabilities.shape == (len(images), 10)
        assert np.abs(probabilities - expected).max() <= 5e-7  # predict rounds to 6 decimals
        assert np.array_equal(result.as_numpy("class"), expected.argmax(axis=1))


@pytest.mark.parametrize(
    ("what", "tensor", "model", "message"),
    [
        ("wrong shape", np.zeros((2, 27, 28), np.uint8), "mnist", "shape [2, 27, 28] is not accepted"),
        ("a labels vector", np.zeros((10,), np.uint8), "mnist", "send [n, 28, 28] or [n, 784]"),
        ("unknown model", np.zeros((1, 28, 28), np.uint8), "digits", "unknown model 'digits'"),
        ("wrong datatype", np.zeros((1, 28, 28), np.int16), "mnist", "datatype 'INT16' is not accepted"),
        ("over the batch limit", np.zeros((257, 784), np.uint8), "mnist", "257 images in one request"),
        ("scaled floats", np.full((1, 28, 28), 0.5, np.float32), "mnist", "multiply by 255"),
    ],
)
def test_bad_requests_raise_the_clients_exception_with_the_services_message(client, what, tensor, model, message):
    datatype = {np.uint8: "UINT8", np.float32: "FP32", np.int16: "INT16"}[tensor.dtype.type]
    sent = triton.InferInput("image", list(tensor.shape), datatype)
    sent.set_data_from_numpy(tensor)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [sent])
    assert message in raised.value.message() and raised.value.status() in ("400", "404"), raised.value
    assert client.is_model_ready("mnist")  # and it keeps serving


def test_raw_bad_bodies_get_a_4xx_naming_what_is_wrong(service):
    url = service[0]
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8", "parameters": {"binary_data_size": 784}}]}
    ).encode()
    deep = b"[" * 200_000 + b"]" * 200_000
    cases = [
        (
            "/v2/models/mnist/infer",
            {"content": header + bytes(700), "headers": {"Inference-Header-Content-Length": str(len(header))}},
            400,
            "binary_data_size 784 and the 700 bytes",
        ),
        ("/v2/models/mnist/infer", {"json": {"outputs": []}}, 400, 'no "inputs" list'),
        (
            "/v2/models/mnist/infer",
            {"json": {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8", "data": [300] * 784}]}},
            400,
            "whole numbers 0-255",
        ),
        ("/v2/models/mnist/versions/7/infer", {"json": {"inputs": []}}, 404, "has no version '7'"),
        (
            "/v2/models/mnist/infer",
            {"content": b'{"inputs": ' + deep + b"}", "headers": {"content-type": "application/json"}},
            400,
            "nested 200001 levels deep",
        ),
        (
            "/v1/predict",
            {"content": b'{"images": ' + deep + b"}", "headers": {"content-type": "application/json"}},
            400,
            "nested 200001 levels deep",
        ),
        ("/v2/models/mnist/infer", {"content": bytes(11_000_000)}, 413, "larger than the service's limit"),
    ]
    with httpx.Client(base_url=url, timeout=60) as http:
        for path, request, status, message in cases:
            answer = http.post(path, **request)
            assert answer.status_code == status and message in answer.json()["error" if "v2" in path else "detail"], (
                path,
                answer.text[:300],
            )
        flat = http.post("/v1/predict", json={"images": [0] * 300 + [255] * 184 + [0] * 300})  # one image as [784]
        assert flat.status_code == 200 and len(flat.json()["predictions"]) == 1


def test_metrics_parse_and_count_what_was_served(service, client, images):
    infer(client, images[:3], True)
    with httpx.Client(base_url=service[0]) as http:
        http.post("/v2/models/digits/infer", json={})
        text = http.get("/metrics").text
    samples = metric_samples(text)
    infer_ok = (("endpoint", "/v2/models/{name}/infer"), ("status", "200"))
    assert samples[("mnist_requests_total", infer_ok)] >= 1
    assert samples[("mnist_requests_total", (("endpoint", "/v2/models/{name}/infer"), ("status", "404")))] >= 1
    assert samples[("mnist_served_version_info", (("runtime", "litert"), ("version", "v0001")))] == 1
    assert samples[("mnist_model_swaps_total", ())] == 1 and samples[("mnist_model_refusals_total", ())] == 0
    assert samples[("mnist_batch_images_count", ())] >= 1 and ("mnist_queue_depth", ()) in samples
    latency = [
        v
        for (name, labels), v in samples.items()
        if name == "mnist_request_seconds_bucket" and ("le", "0.005") in labels
    ]
    assert latency and max(latency) >= 1  # buckets fit for milliseconds


def test_docs_are_served_offline_and_the_service_has_no_tensorflow(service):
    with httpx.Client(base_url=service[0]) as http:
        page = http.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs-openapi.json"):
            assert http.get(asset).status_code == 200, asset
    port = service[0].rsplit(":", 1)[1]
    [pid] = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _serves_on(p, port)]
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "litert" in maps.lower() and "libtensorflow" not in maps and "_pywrap_tensorflow" not in maps


def _serves_on(process: Path, port: str) -> bool:
    try:
        arguments = (process / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in arguments and port.encode() in arguments


def test_two_workers_give_one_metrics_view_and_both_follow_production(two_versions, tmp_path):
    from mnist_pipeline.core.registry import open_registry
    from support.polling import wait_until

    digits = {"images": np.zeros((1, 784), np.uint8).tolist()}
    with serving(two_versions, "--workers", "2", log=tmp_path / "serve.log") as url, httpx.Client(base_url=url) as http:
        port = int(url.rsplit(":", 1)[1])
        listening = [c for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == "LISTEN"]
        assert len(listening) == 2, listening  # a socket each (SO_REUSEPORT): the kernel spreads connections
        held = _connections_held_by_each_process(url, 32)
        assert sorted(held)[0] == 0 and len(held) == 3 and sum(held) == 32, held  # the parent holds none
        assert min(sorted(held)[1:]) >= 4, f"connections not spread over the workers: {held}"
        assert {http.post("/v1/predict", json=digits).json()["version"] for _ in range(20)} == {"v0001"}
        samples = metric_samples(http.get("/metrics").text)
        assert samples[("mnist_served_version_info", (("runtime", "litert"), ("version", "v0001")))] == 2
        assert samples[("mnist_requests_total", (("endpoint", "/v1/predict"), ("status", "200")))] == 20

        open_registry(two_versions / "registry").promote("v0002", "ana", "two workers follow", force=True)
        wait_until(
            lambda: metric_samples(http.get("/metrics").text),
            lambda now: now.get(("mnist_served_version_info", (("runtime", "litert"), ("version", "v0002")))) == 2,
            timeout=30,
        )
        assert {http.post("/v1/predict", json=digits).json()["version"] for _ in range(20)} == {"v0002"}


def _connections_held_by_each_process(url: str, connections: int) -> list[int]:
    """Open `connections` connections to the service at once, as a load generator does, have each
    answered once, then count the ones each of its processes holds. Spread at random over two workers,
    a worker holds fewer than 4 of 32 about once in 400,000 tries."""
    import socket

    port = url.rsplit(":", 1)[1]
    opened: list[socket.socket] = []
    try:
        opened += [socket.create_connection(("127.0.0.1", int(port)), timeout=10) for _ in range(connections)]
        for connection in opened:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: service\r\n\r\n")
        assert all(connection.recv(4096).startswith(b"HTTP/1.1 200") for connection in opened)
        processes = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _serves_on(p, port)]
        return [
            sum(c.laddr.port == int(port) and c.status == "ESTABLISHED" for c in psutil.Process(pid).net_connections())
            for pid in processes
        ]
    finally:
        for connection in opened:
            connection.close()
