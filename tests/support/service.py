"""The HTTP service (`mnist-pipeline serve`): requests it must refuse and how its answers compare with
`mnist-pipeline predict`."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from support.pictures import hand_made_zero, huge_png, png_bytes


def bad_service_requests() -> list[tuple[str, str, dict, int, str]]:
    """Requests the service must refuse: (what, path, httpx request arguments, status, part of the message)."""
    digit = png_bytes(hand_made_zero())
    png = {"content-type": "image/png"}
    return [
        (
            "not an image",
            "/v1/predict",
            {"content": b"this is not a picture", "headers": png},
            422,
            "not a picture that can be read",
        ),
        ("truncated PNG", "/v1/predict", {"content": digit[: len(digit) // 2], "headers": png}, 422, "truncated"),
        (
            "10000x10000 pixels",
            "/v1/predict",
            {"content": huge_png(10_000, 10_000), "headers": png},
            422,
            "10000 x 10000 pixels",
        ),
        ("empty body", "/v1/predict", {"content": b"", "headers": png}, 400, "the request has no body"),
        (
            "not JSON",
            "/v1/predict",
            {"content": b"{images", "headers": {"content-type": "application/json"}},
            400,
            "not JSON",
        ),
        ("no images key", "/v1/predict", {"json": {"pictures": []}}, 422, 'expected a JSON object {"images"'),
        (
            "JSON nested 200,000 deep",
            "/v1/predict",
            {
                "content": b'{"images": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                "headers": {"content-type": "application/json"},
            },
            400,
            "nested 200001 levels deep",
        ),
        ("wrong JSON shape", "/v1/predict", {"json": {"images": [[0] * 27] * 28}}, 422, "shape [28, 27]"),
        (
            "ragged JSON",
            "/v1/predict",
            {"json": {"images": [[0] * 28] * 27 + [[0] * 5]}},
            422,
            "not all the same shape",
        ),
        (
            "values above 255",
            "/v1/predict",
            {"json": {"images": [[256] * 28] * 28}},
            422,
            "expected whole pixel values 0-255",
        ),
        (
            "negative values",
            "/v1/predict",
            {"json": {"images": [[-1] * 28] * 28}},
            422,
            "expected whole pixel values 0-255",
        ),
        ("text values", "/v1/predict", {"json": {"images": [["a"] * 28] * 28}}, 422, "expected pixel values 0-255"),
        (
            "wrong content type",
            "/v1/predict",
            {"content": b"7", "headers": {"content-type": "text/plain"}},
            415,
            "cannot classify a text/plain",
        ),
        (
            "upload without a file field",
            "/v1/predict",
            {"files": {"picture": ("a.png", digit)}},
            422,
            "field named `file`",
        ),
        (
            "label not 0-9",
            "/v1/corrections",
            {"files": {"file": ("a.png", digit)}, "data": {"label": "12"}},
            422,
            "label '12' is not a digit 0-9",
        ),
        ("no label", "/v1/corrections", {"files": {"file": ("a.png", digit)}}, 422, "label '' is not a digit 0-9"),
        (
            "correction not an image",
            "/v1/corrections",
            {"files": {"file": ("a.png", b"GIF89")}, "data": {"label": "3"}},
            422,
            "not a picture that can be read",
        ),
    ]


def assert_same_answers(answer: dict, predicted: dict) -> None:
    """The service's answer carries the version, classes and probabilities of `predict --json --top-k 10`."""
    assert answer["version"] == predicted["model"]["version"]
    for mine, theirs in zip(answer["predictions"], predicted["predictions"], strict=True):
        probabilities = {top["class"]: top["probability"] for top in theirs["top"]}
        assert mine["class"] == theirs["top"][0]["class"]
        assert [top["class"] for top in mine["top"]] == [top["class"] for top in theirs["top"][:3]]
        np.testing.assert_allclose(mine["probabilities"], [probabilities[c] for c in range(10)], atol=2e-6)


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus' text format parsed: {(sample name, sorted label pairs): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
