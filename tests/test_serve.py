"""`mnist-pipeline serve`, in process (FastAPI's TestClient, the real app and the tiny models of the
fast tier): answers as `mnist-pipeline predict` does, refuses bad input with a 4xx that says what was
wrong and keeps serving, follows production (a damaged new model refused), stores corrections, and
batches. The same service through real HTTP, on real MNIST and in a browser: test_serve_http.py,
test_serve_page.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from mnist_pipeline.cli.predict import predict_files
from mnist_pipeline.core.data.pictures import read_picture
from mnist_pipeline.core.data.review import open_queue
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.support.files import write_json_atomic
from mnist_pipeline.serve.app import MAX_IMAGES_PER_REQUEST, STATIC, ServeSettings, create_app
from mnist_pipeline.serve.batching import MicroBatcher, ServiceBusy
from mnist_pipeline.serve.guard import RateLimiter
from support.commands import imported_packages
from support.pictures import distinct_drawings, hand_made_zero, png_bytes, write_png
from support.polling import wait_until
from support.service import assert_same_answers, bad_service_requests, metric_samples


def start(artifacts: Path, **settings) -> TestClient:
    app = create_app(
        ServeSettings(
            registry=artifacts / "registry", corrections=artifacts / "corrections", poll_seconds=0.05, **settings
        )
    )
    client = TestClient(app).__enter__()  # runs the lifespan: the watcher and the batching worker
    wait_until(lambda: client.get("/readyz").status_code, lambda status: status == 200, timeout=120)
    return client


@pytest.fixture
def service(two_versions):
    """The app on the two_versions registry (v0001 production, v0002 rejected), ready."""
    client = start(two_versions)
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def unchanged_service(two_versions_template, tmp_path_factory):
    """One app for the tests that change nothing (bad input), on a copy of the two_versions registry."""
    artifacts = Path(shutil.copytree(two_versions_template, tmp_path_factory.mktemp("serve") / "artifacts"))
    client = start(artifacts)
    yield client
    client.__exit__(None, None, None)


def served_version(client: TestClient) -> str | None:
    serving = client.get("/v1/model").json()["serving"]
    return serving and serving["version"]


def classes(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [prediction["class"] for prediction in response.json()["predictions"]]


def test_ready_with_the_production_model_and_its_facts(service, two_versions):
    assert service.get("/healthz").json()["status"] == "ok"
    assert service.get("/readyz").json() == {"ready": True, "version": "v0001"}
    model = service.get("/v1/model").json()
    record = open_registry(two_versions / "registry").read_version("v0001")
    assert model["serving"]["version"] == "v0001"
    assert model["serving"]["test_accuracy"] == record["test_accuracy"]
    assert model["serving"]["accuracy_interval_95"] == record["accuracy_interval_95"]
    assert model["serving"]["model_sha256"] == record["model_sha256"]
    assert model["serving"]["production_since"] == record["decision"]["time"]
    assert model["refused"] is None and model["problem"] is None


def test_not_ready_without_a_production_model(tmp_path):
    client = TestClient(
        create_app(ServeSettings(registry=tmp_path / "registry", corrections=tmp_path / "c", poll_seconds=0.05))
    )
    with client:
        answer = wait_until(lambda: client.get("/readyz"), lambda r: "no production model yet" in r.text, timeout=30)
        assert answer.status_code == 503 and client.get("/healthz").status_code == 200
        response = client.post("/v1/predict", json={"images": hand_made_zero().tolist()})
        assert response.status_code == 503 and "no production model yet" in response.json()["detail"]


def test_pictures_and_arrays_are_classified_as_predict_classifies_them(
    service, two_versions, synthetic_split, tmp_path
):
    images, labels = synthetic_split.load("test")
    files = [write_png(tmp_path / f"{i}.png", image) for i, image in enumerate(images[:12])]
    np.save(tmp_path / "images.npy", images[:12])
    registry = open_registry(two_versions / "registry")
    pictures = json.loads(predict_files([str(f) for f in files], registry, None, 10, False, as_json=True))
    arrays = json.loads(predict_files([str(tmp_path / "images.npy")], registry, None, 10, False, as_json=True))

    uploads = [("file", (file.name, file.read_bytes(), "image/png")) for file in files]
    assert_same_answers(service.post("/v1/predict", files=uploads).json(), pictures)
    one_by_one = [
        service.post("/v1/predict", content=file.read_bytes(), headers={"content-type": "image/png"}).json()
        for file in files
    ]
    assert_same_answers(
        {"version": one_by_one[0]["version"], "predictions": [answer["predictions"][0] for answer in one_by_one]},
        pictures,
    )
    as_arrays = service.post("/v1/predict", json={"images": images[:12].tolist()}).json()
    assert_same_answers(as_arrays, arrays)
    assert [p["class"] for p in as_arrays["predictions"]] == labels[:12].tolist()  # a strong tiny model


def test_invert_reads_dark_digits_on_light_backgrounds(service):
    dark_on_light = png_bytes(255 - hand_made_zero())
    refused = service.post("/v1/predict", content=dark_on_light, headers={"content-type": "image/png"})
    assert refused.status_code == 422 and "pass ?invert=true" in refused.json()["detail"]
    inverted = service.post("/v1/predict?invert=true", content=dark_on_light, headers={"content-type": "image/png"})
    plain = service.post("/v1/predict", content=png_bytes(hand_made_zero()), headers={"content-type": "image/png"})
    assert inverted.json()["predictions"] == plain.json()["predictions"]


def test_picture_bodies_are_counted_as_predict_requests_however_they_are_answered(unchanged_service):
    """A small picture as the body is answered before FastAPI's routing when it can be (app.py's fast
    path), and by the route otherwise: both count as /v1/predict, with their status."""

    def counts() -> dict[str, float]:
        samples = metric_samples(unchanged_service.get("/metrics").text)
        return {
            status: samples.get(("mnist_requests_total", (("endpoint", "/v1/predict"), ("status", status))), 0)
            for status in ("200", "422")
        }

    png, digit = {"content-type": "image/png"}, png_bytes(hand_made_zero())
    before = counts()
    assert unchanged_service.post("/v1/predict", content=digit, headers=png).status_code == 200
    assert unchanged_service.post("/v1/predict?invert=false", content=digit, headers=png).status_code == 200
    assert (
        unchanged_service.post("/v1/predict", content=png_bytes(255 - hand_made_zero()), headers=png).status_code == 422
    )
    after = counts()
    assert (after["200"] - before["200"], after["422"] - before["422"]) == (2, 1)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, about the 10000x10000 one
@pytest.mark.parametrize(
    "what, path, request_args, status, message",
    bad_service_requests(),
    ids=[case[0] for case in bad_service_requests()],
)
def test_bad_input_gets_a_4xx_saying_what_is_wrong_and_the_service_keeps_serving(
    unchanged_service, what, path, request_args, status, message
):
    service = unchanged_service
    response = service.post(path, **request_args)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert classes(service.post("/v1/predict", json={"images": hand_made_zero().tolist()})) == [
        classes(
            service.post("/v1/predict", content=png_bytes(hand_made_zero()), headers={"content-type": "image/png"})
        )[0]
    ]


def test_bodies_over_the_upload_limit_are_refused_declared_or_streamed(two_versions):
    client = start(two_versions, max_upload_bytes=50_000)
    try:
        big = b"\x00" * 60_000
        declared = client.post("/v1/predict", content=big, headers={"content-type": "image/png"})
        streamed = client.post(
            "/v1/predict", content=iter([big[:30_000], big[30_000:]]), headers={"content-type": "image/png"}
        )  # chunked: no Content-Length
        for response in (declared, streamed):
            assert response.status_code == 413 and "larger than the service's limit of 0.05 MB" in response.text
        assert client.get("/readyz").status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_at_most_so_many_images_a_request(service):
    too_many = service.post("/v1/predict", json={"images": [[[0] * 28] * 28] * (MAX_IMAGES_PER_REQUEST + 1)})
    assert too_many.status_code == 422
    assert f"{MAX_IMAGES_PER_REQUEST + 1} images in one request; send at most {MAX_IMAGES_PER_REQUEST}" in too_many.text


def test_follows_production_and_refuses_a_damaged_new_model(service, two_versions):
    registry = open_registry(two_versions / "registry")
    registry.promote("v0002", "tester", "try the weaker one", force=True)
    wait_until(lambda: served_version(service), lambda version: version == "v0002", timeout=60)
    assert service.post("/v1/predict", json={"images": hand_made_zero().tolist()}).json()["version"] == "v0002"

    registry.rollback("tester", "back")
    wait_until(lambda: served_version(service), lambda version: version == "v0001", timeout=60)

    # production moved to a model file that is not the registered one (a pointer moved by hand or by a
    # copy from another store: the registry itself never promotes a damaged model)
    model = registry.version_dir("v0002") / "model.keras"
    model.write_bytes(model.read_bytes() + b"tampered")
    write_json_atomic(registry.backend.production_file, {"version": "v0002", "since": "now", "reason": "test"})
    report = wait_until(lambda: service.get("/v1/model").json(), lambda r: r["refused"] is not None, timeout=60)
    assert report["refused"]["version"] == "v0002" and "not the one registered as v0002" in report["refused"]["reason"]
    assert report["serving"]["version"] == "v0001"
    assert service.post("/v1/predict", json={"images": hand_made_zero().tolist()}).json()["version"] == "v0001"
    assert service.get("/readyz").json() == {"ready": True, "version": "v0001"}


def test_a_correction_waits_for_review_as_the_laid_out_png_with_what_the_model_read(service, two_versions):
    drawing = np.zeros((280, 280), np.uint8)
    drawing[60:220, 130:150] = 255  # a "1", ten times MNIST's size
    response = service.post("/v1/corrections", files={"file": ("drawing.png", png_bytes(drawing))}, data={"label": "7"})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending review" and response.json()["new"] is True
    queue = open_queue(two_versions / "corrections")
    [correction] = queue.pending()
    assert correction.id == response.json()["id"] and correction.label == 7 and correction.client == "testclient"
    assert correction.model_version == "v0001" and len(correction.model_top) == 3
    assert not (two_versions / "corrections" / "reviewed").exists()  # nothing trains before a person accepts it
    image = np.asarray(Image.open(io.BytesIO(queue.picture(correction))))
    assert np.array_equal(image, read_picture(io.BytesIO(png_bytes(drawing))))  # what the model was shown


def test_the_pending_corrections_are_capped(two_versions):
    client = start(two_versions, corrections_max_bytes=600)
    try:
        answers = [
            client.post(
                "/v1/corrections", files={"file": ("d.png", png_bytes(hand_made_zero(12.0 + i)))}, data={"label": "0"}
            )
            for i in range(4)
        ]
        statuses = [answer.status_code for answer in answers]
        assert 201 in statuses and statuses[-1] == 507 and "cap" in answers[-1].json()["detail"]
        stored = sum(path.stat().st_size for path in (two_versions / "corrections").rglob("*.png"))
        assert 0 < stored <= 600
    finally:
        client.__exit__(None, None, None)


def test_corrections_need_the_token_when_one_is_set(two_versions):
    client = start(two_versions, corrections_token="s3cret")
    drawing = {"file": ("d.png", png_bytes(hand_made_zero()))}
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            answer = client.post("/v1/corrections", files=drawing, data={"label": "0"}, headers=headers)
            assert answer.status_code == 401 and "Authorization: Bearer" in answer.json()["detail"], headers
            assert answer.headers["www-authenticate"] == "Bearer"
        assert not (two_versions / "corrections").exists()  # nothing stored
        answer = client.post(
            "/v1/corrections", files=drawing, data={"label": "0"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert answer.status_code == 201, answer.text
        assert (
            client.post("/v1/predict", json={"images": hand_made_zero().tolist()}).status_code == 200
        )  # predict asks none
    finally:
        client.__exit__(None, None, None)


def test_300_corrections_from_one_client_are_limited_and_none_trains(two_versions):
    client = start(two_versions, corrections_per_minute=20)
    started = time.monotonic()
    try:
        answers = [  # 300 different corrections: a repeated one is accepted but not queued twice
            client.post("/v1/corrections", files={"file": ("d.png", png_bytes(drawing))}, data={"label": str(i % 10)})
            for i, drawing in enumerate(distinct_drawings(300))
        ]
    finally:
        client.__exit__(None, None, None)
    refilled = (time.monotonic() - started) / 3  # one more each 3 s: a busy machine rightly accepts more
    statuses = [answer.status_code for answer in answers]
    assert statuses[:20] == [201] * 20 and 20 <= statuses.count(201) <= 20 + refilled, (statuses.count(201), refilled)
    assert statuses.count(429) == 300 - statuses.count(201)
    refused = answers[statuses.index(429)]
    assert int(refused.headers["retry-after"]) >= 1 and "at most 20 a minute" in refused.json()["detail"]
    assert not (two_versions / "corrections" / "reviewed").exists()
    assert len(open_queue(two_versions / "corrections").pending()) == statuses.count(201)


def test_the_rate_limit_is_per_client_and_refills():
    now = [0.0]
    limiter = RateLimiter(per_minute=6, clock=lambda: now[0])
    for _ in range(6):
        limiter.check("a")
    with pytest.raises(HTTPException) as refused:
        limiter.check("a")
    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "10"}
    limiter.check("b")  # another client has its own bucket
    now[0] = 10.0
    limiter.check("a")  # one refilled after 60/6 s


def test_the_page_is_served_and_loads_nothing_from_elsewhere(service):
    page = service.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    for name in ("page.js", "page.css"):
        assert service.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():
        assert not re.search(
            r"(src|href)=\"(https?:)?//|url\(\s*['\"]?(https?:)?//|import\s.*https?://", path.read_text()
        ), path


def run_batcher(batcher: MicroBatcher, requests: list[np.ndarray]) -> list:
    async def main():
        worker = asyncio.create_task(batcher.run())
        try:
            return await asyncio.gather(*(batcher.predict(images) for images in requests), return_exceptions=True)
        finally:
            worker.cancel()

    return asyncio.run(main())


def test_concurrent_requests_share_one_model_call_and_get_their_own_rows():
    calls = []

    def predict(images):
        calls.append(len(images))
        return "v0001", np.repeat(images.reshape(len(images), -1)[:, :1].astype(float), 10, axis=1)

    requests = [np.full((n, 28, 28), i, np.uint8) for i, n in enumerate([1, 3, 1, 2], start=1)]
    answers = run_batcher(MicroBatcher(predict, max_batch=64, window_seconds=0.05, max_pending=10), requests)
    assert calls == [7]
    for images, (version, rows) in zip(requests, answers, strict=True):
        assert version == "v0001" and rows.shape == (len(images), 10) and (rows == images[0, 0, 0]).all()

    calls.clear()
    run_batcher(MicroBatcher(predict, max_batch=1, window_seconds=0.05, max_pending=10), requests)
    assert calls == [1, 3, 1, 2]  # batching off: one call a request


def test_requests_past_the_queue_bound_are_refused_at_once():
    release = threading.Event()

    def predict(images):
        release.wait(30)
        return "v0001", np.zeros((len(images), 10))

    batcher = MicroBatcher(predict, max_batch=1, window_seconds=0, max_pending=2)

    async def main():
        worker = asyncio.create_task(batcher.run())
        admitted = [asyncio.create_task(batcher.predict(np.zeros((1, 28, 28), np.uint8))) for _ in range(2)]
        while batcher.pending < 2:  # both tasks admitted (no time involved: each runs at its first await)
            await asyncio.sleep(0)
        with pytest.raises(ServiceBusy, match="2 requests are already waiting.*at most 2.*retry"):
            await batcher.predict(np.zeros((1, 28, 28), np.uint8))
        release.set()
        answers = await asyncio.gather(*admitted)
        worker.cancel()
        return answers

    assert [version for version, _ in asyncio.run(main())] == ["v0001", "v0001"]
    assert batcher.pending == 0


def test_the_service_loads_no_prefect_and_its_help_loads_nothing_heavy():
    assert "prefect" not in imported_packages("-c", "import mnist_pipeline.serve.app")
    loaded = imported_packages("-m", "mnist_pipeline.cli.main", "serve", "--help")
    assert not loaded & {"prefect", "tensorflow", "keras", "fastapi", "uvicorn"}, loaded
