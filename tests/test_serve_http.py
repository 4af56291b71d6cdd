"""`mnist-pipeline serve` as users run it: a uvicorn process on 127.0.0.1, called over real HTTP.

Real MNIST digits answered exactly as `mnist-pipeline predict` answers them; the model swapped on
promote and on rollback while clients keep sending (no failed request, each answer from the version
it names); a damaged new model refused; bad input refused with a 4xx while the service keeps serving;
the queue bound answered with 503 at once.
"""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from mnist_pipeline.core.data.pictures import read_picture
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.support.files import write_json_atomic
from support.commands import run_cli
from support.data import synthetic_digits
from support.pictures import hand_made_zero, png_bytes, write_png
from support.polling import wait_until
from support.servers import serving
from support.service import assert_same_answers, bad_service_requests

pytestmark = pytest.mark.slow

N_PICTURES = 300


def post_png(client: httpx.Client, url: str, png: bytes) -> httpx.Response:
    return client.post(f"{url}/v1/predict", content=png, headers={"content-type": "image/png"}, timeout=60)


def test_300_mnist_test_digits_as_pngs_are_answered_as_predict_answers_them(mlp_artifacts, split_files, tmp_path):
    images = split_files.load("test")[0][:N_PICTURES]
    files = [write_png(tmp_path / f"{i}.png", image) for i, image in enumerate(images)]
    result = run_cli("predict", "--json", "--top-k", "10", "--artifacts-dir", str(mlp_artifacts), *map(str, files))
    assert result.returncode == 0, result.stderr
    predicted = json.loads(result.stdout)

    # concurrent single pictures: answered from shared batches
    with (
        serving(mlp_artifacts, log=tmp_path / "serve.log") as url,
        httpx.Client() as client,
        ThreadPoolExecutor(16) as pool,
    ):
        answers = list(pool.map(lambda file: post_png(client, url, file.read_bytes()), files))
    assert all(answer.status_code == 200 for answer in answers)
    assert_same_answers(
        {
            "version": answers[0].json()["version"],
            "predictions": [answer.json()["predictions"][0] for answer in answers],
        },
        predicted,
    )
    assert {answer.json()["version"] for answer in answers} == {"v0001"}


def test_hot_swap_on_promote_and_rollback_while_clients_keep_sending(two_versions, tmp_path):
    registry = open_registry(two_versions / "registry")
    pictures = [png_bytes(image) for image in synthetic_digits(4, seed=9)[0]]
    laid_out = np.stack([read_picture(io.BytesIO(png)) for png in pictures])
    expected = {
        version: predict_probabilities(load_model(registry.model_path(version)), laid_out)
        for version in ("v0001", "v0002")
    }
    assert not np.allclose(expected["v0001"], expected["v0002"], atol=1e-3)  # answers tell the versions apart

    answers: list[list[tuple[int, str | None, list | None]]] = [[] for _ in pictures]
    stop = threading.Event()

    def keep_sending(client_number: int, url: str) -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                response = post_png(client, url, pictures[client_number])
                body = response.json() if response.status_code == 200 else {}
                answers[client_number].append(
                    (response.status_code, body.get("version"), body and body["predictions"][0]["probabilities"])
                )

    def latest_versions() -> set[str | None]:
        return {sent[-1][1] if sent else None for sent in answers}

    with serving(two_versions, log=tmp_path / "serve.log") as url:
        clients = [threading.Thread(target=keep_sending, args=(i, url)) for i in range(len(pictures))]
        for client in clients:
            client.start()
        try:
            wait_until(latest_versions, lambda seen: seen == {"v0001"}, timeout=120)
            registry.promote("v0002", "tester", "swap under load", force=True)
            wait_until(latest_versions, lambda seen: seen == {"v0002"}, timeout=120)
            registry.rollback("tester", "swap back under load")
            wait_until(latest_versions, lambda seen: seen == {"v0001"}, timeout=120)
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=120)

    for number, sent in enumerate(answers):
        assert [status for status, _, _ in sent] == [200] * len(sent), "a request failed during a swap"
        runs = [version for i, (_, version, _) in enumerate(sent) if i == 0 or sent[i - 1][1] != version]
        assert runs == ["v0001", "v0002", "v0001"], runs  # each client saw each swap once, in order
        for _, version, probabilities in sent:  # each answer is what the version it names computes
            np.testing.assert_allclose(probabilities, expected[version][number], atol=2e-6)


def test_a_damaged_new_model_is_refused_and_the_old_one_keeps_serving(two_versions, tmp_path):
    registry = open_registry(two_versions / "registry")
    digit = png_bytes(hand_made_zero())
    with serving(two_versions, log=tmp_path / "serve.log") as url, httpx.Client() as client:
        model = registry.version_dir("v0002") / "model.keras"
        model.write_bytes(model.read_bytes()[:-100])  # cut short, e.g. by an interrupted copy
        # a pointer moved without the registry's checks (by hand, or copied from another store)
        write_json_atomic(registry.backend.production_file, {"version": "v0002", "since": "now", "reason": "test"})
        report = wait_until(
            lambda: client.get(f"{url}/v1/model").json(), lambda r: r["refused"] is not None, timeout=120
        )
        assert report["refused"]["version"] == "v0002"
        assert "is missing or is not the one registered as v0002" in report["refused"]["reason"]
        assert report["serving"]["version"] == "v0001"
        answer = post_png(client, url, digit)
        assert answer.status_code == 200 and answer.json()["version"] == "v0001"
        assert client.get(f"{url}/readyz").json() == {"ready": True, "version": "v0001"}
    assert "refused v0002 as production model (v0001 keeps serving)" in (tmp_path / "serve.log").read_text()


def test_bad_input_over_http_gets_a_4xx_and_the_service_keeps_serving(two_versions, tmp_path):
    log = tmp_path / "serve.log"
    digit = png_bytes(hand_made_zero())
    with (
        serving(two_versions, "--max-upload-mb", "1", log=log) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert f"Uvicorn running on {url}" in log.read_text()  # 127.0.0.1 unless --host says otherwise
        for what, path, request_args, status, message in bad_service_requests():
            response = client.post(path, **request_args)
            assert (response.status_code, message in response.json()["detail"]) == (status, True), (what, response.text)
            assert post_png(client, url, digit).status_code == 200, f"not serving after {what}"
        too_large = client.post("/v1/predict", content=b"\x00" * 1_500_000, headers={"content-type": "image/png"})
        assert too_large.status_code == 413 and "limit of 1 MB" in too_large.json()["detail"]
        assert post_png(client, url, digit).status_code == 200


def test_requests_past_the_queue_bound_get_503_at_once(two_versions, tmp_path):
    """With a batch window of 10 s, the first two requests wait in the queue (bound: 2); a third is
    answered 503 straight away, and the two are answered when their batch runs."""
    digit = png_bytes(hand_made_zero())
    options = ("--queue-size", "2", "--batch-window-ms", "10000", "--max-batch", "64")
    with serving(two_versions, *options, log=tmp_path / "serve.log") as url, httpx.Client(timeout=120) as client:
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(post_png, client, url, digit) for _ in range(2)]
            wait_until(lambda: client.get(f"{url}/healthz").json()["pending_requests"], lambda n: n == 2, timeout=60)
            refused = post_png(client, url, digit)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert "the service is busy: 2 requests are already waiting" in refused.json()["detail"]
            assert [future.result().status_code for future in waiting] == [200, 200]
        assert post_png(client, url, digit).status_code == 200


def test_a_port_in_use_is_an_error_naming_it(two_versions):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_cli("serve", "--artifacts-dir", str(two_versions), "--port", port, timeout=300)
    assert result.returncode == 1
    assert f"error: the service could not start on 127.0.0.1:{port}" in result.stderr
    assert "address already in use" in result.stderr
