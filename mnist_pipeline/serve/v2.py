"""The Open Inference Protocol (V2, KServe's and Triton's REST API) over the registry's models.

    GET  /v2/health/live, /v2/health/ready           the process answers / production is loaded
    GET  /v2                                         server metadata (name, version, extensions)
    GET  /v2/models/{name}[/versions/{v}]            model metadata: inputs and outputs, -1 the batch
    GET  /v2/models/{name}[/versions/{v}]/ready      200 when it can answer
    POST /v2/models/{name}[/versions/{v}]/infer      input `image`, UINT8 or FP32, [n, 28, 28] or
                                                     [n, 784] -> `probabilities` FP32 [n, 10] and
                                                     `class` INT64 [n]; `model_version` says which

The bare name is production, micro-batched with `/v1/predict`; a version (`v0003` or `3`) is any
registered one, loaded on first use and kept (a few at most). Errors are a 4xx with `{"error": ...}`.

The binary tensor data extension: a request whose `Inference-Header-Content-Length` header says how
long its JSON part is carries tensors as raw little-endian bytes after it (`parameters.binary_data_size`
on each); outputs come back the same way when asked (`binary_data` on an output, or the request's
`binary_data_output`), as `tritonclient` asks by default.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from mnist_pipeline.core.data.pictures import InputError, as_images
from mnist_pipeline.core.registry import RegistryError, version_name
from mnist_pipeline.serve.batching import MicroBatcher, ServiceBusy
from mnist_pipeline.serve.holder import LoadedModel, ModelHolder, load_verified
from mnist_pipeline.serve.payloads import PayloadError, parse_json

INPUT = "image"
OUTPUTS = {"probabilities": "FP32", "class": "INT64"}  # name: datatype
DATATYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("u1"), "FP32": np.dtype("<f4")}
SHAPES = "[n, 28, 28] or [n, 784]"
MAX_DEPTH = 8  # {"inputs": [{"data": [[[...]]]}]}: an object, a list, an object, 3 levels of data, slack
HEADER_LENGTH = "inference-header-content-length"
CACHED_VERSIONS = 4  # non-production versions kept loaded


class V2Error(Exception):
    """A request the protocol refuses: answered `status` with {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Inference:
    images: np.ndarray  # uint8 [n, 28, 28]
    outputs: list[tuple[str, bool]]  # (output name, binary?) in the order asked
    request_id: str | None


def add_routes(
    app: FastAPI, holder: ModelHolder, batcher: MicroBatcher, model_name: str, read_body: Any, max_images: int
) -> None:
    """Add the V2 routes to `app`; `read_body(request)` reads a body within the upload limit."""
    versions = _Versions(holder)

    @app.exception_handler(V2Error)
    async def refused(request: Request, error: V2Error) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    def model(name: str) -> None:
        if name != model_name:
            raise V2Error(404, f"unknown model {name[:100]!r}: this service serves {model_name!r}")

    def registered(version: str) -> str:
        try:
            name = version_name(version)
            holder.registry.require(name)
        except RegistryError as error:
            raise V2Error(404, f"model {model_name!r} has no version {version[:40]!r}: {error}") from None
        return name

    @app.get("/v2/health/live", summary="V2: the process answers")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="V2: production is loaded (400 until then)")
    async def ready() -> dict[str, bool]:
        if holder.current is None:
            raise V2Error(400, "not ready: the production model is not loaded yet")
        return {"ready": True}

    @app.get("/v2", summary="V2: server metadata")
    async def server() -> dict[str, Any]:
        return {
            "name": "mnist-pipeline",
            "version": package_version("mnist-pipeline"),
            "extensions": ["binary_tensor_data"],
        }

    @app.get("/v2/models/{name}", summary="V2: model metadata (production)")
    async def metadata(name: str) -> dict[str, Any]:
        model(name)
        return _metadata(model_name, await run_in_threadpool(holder.registry.versions), holder.current)

    @app.get("/v2/models/{name}/versions/{version}", summary="V2: model metadata (one version)")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        model(name)
        return _metadata(model_name, [await run_in_threadpool(registered, version)], None)

    @app.get("/v2/models/{name}/ready", summary="V2: production can answer")
    async def model_ready(name: str) -> dict[str, Any]:
        model(name)
        if holder.current is None:
            raise V2Error(400, "not ready: the production model is not loaded yet")
        return {"name": model_name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready", summary="V2: a version can answer")
    async def version_ready(name: str, version: str) -> dict[str, Any]:
        model(name)
        await run_in_threadpool(versions.get, await run_in_threadpool(registered, version))
        return {"name": model_name, "ready": True}

    @app.post("/v2/models/{name}/infer", summary="V2: classify with production")
    async def infer(name: str, request: Request) -> Response:
        model(name)
        if holder.current is None:
            raise V2Error(503, "not ready: the production model is not loaded yet")
        inference = await _inference(request, read_body, max_images)
        try:
            served, probabilities = await batcher.predict(inference.images)
        except ServiceBusy as error:
            raise V2Error(503, str(error)) from None
        return _answer(model_name, served, probabilities, inference)

    @app.post("/v2/models/{name}/versions/{version}/infer", summary="V2: classify with one version")
    async def infer_version(name: str, version: str, request: Request) -> Response:
        model(name)
        wanted = await run_in_threadpool(registered, version)
        inference = await _inference(request, read_body, max_images)
        loaded = await run_in_threadpool(versions.get, wanted)
        return _answer(model_name, wanted, await run_in_threadpool(loaded.predict, inference.images), inference)


class _Versions:
    """Registered versions loaded on demand (production's loaded model reused), the last few kept."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str) -> LoadedModel:
        current = self.holder.current
        if current is not None and current.version == version:
            return current
        with self._lock:
            if version not in self._loaded:
                try:
                    self._loaded[version] = load_verified(self.holder.registry, version)
                except RegistryError as error:
                    raise V2Error(400, f"version {version} cannot be served: {error}") from None
                if len(self._loaded) > CACHED_VERSIONS:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(version)
            return self._loaded[version]


def _metadata(name: str, versions: list[str], current: LoadedModel | None) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
        "platform": current.info["runtime"] if current else "litert",
        "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": [-1, 28, 28]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "class", "datatype": "INT64", "shape": [-1]},
        ],
    }


async def _inference(request: Request, read_body: Any, max_images: int) -> Inference:
    body: bytes = await read_body(request)
    header = request.headers.get(HEADER_LENGTH)
    if header is None:
        json_part, binary = body, b""
    elif header.isdigit() and int(header) <= len(body):
        json_part, binary = body[: int(header)], body[int(header) :]
    else:
        raise V2Error(
            400, f"Inference-Header-Content-Length {header[:20]!r} is not a length within the body's {len(body)} bytes"
        )
    return await run_in_threadpool(_parse, json_part, binary, max_images)


def _parse(json_part: bytes, binary: bytes, max_images: int) -> Inference:
    try:
        payload = parse_json(json_part, MAX_DEPTH, f'{{"inputs": [{{"name": "image", "shape": {SHAPES}, ...}}]}}')
    except PayloadError as error:
        raise V2Error(400, str(error)) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise V2Error(
            400,
            'the request has no "inputs" list: send {"inputs": [{"name": "image", "shape": [n, 28, 28], "datatype": "UINT8", "data": [...]}]}',
        )
    if len(payload["inputs"]) != 1 or not isinstance(payload["inputs"][0], dict):
        raise V2Error(400, f'the model takes one input, "{INPUT}"; the request has {len(payload["inputs"])}')
    tensor = payload["inputs"][0]
    if tensor.get("name") != INPUT:
        raise V2Error(400, f'unknown input {str(tensor.get("name"))[:40]!r}: the model\'s input is "{INPUT}"')
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise V2Error(400, f"input {INPUT}: datatype {str(datatype)[:20]!r} is not accepted; send UINT8 or FP32")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape)) or not (
        (len(shape) == 3 and shape[1:] == [28, 28]) or (len(shape) == 2 and shape[1] == 784)
    ):
        raise V2Error(400, f"input {INPUT}: shape {str(shape)[:60]} is not accepted; send {SHAPES}")
    if shape[0] > max_images:
        raise V2Error(400, f"input {INPUT}: {shape[0]} images in one request; send at most {max_images}")
    count, dtype = int(np.prod(shape)), DATATYPES[datatype]
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(400, f'input {INPUT}: "parameters" must be an object')
    array = (
        _binary(parameters, binary, count, dtype) if "binary_data_size" in parameters else _listed(tensor, count, dtype)
    )
    try:
        images = as_images(array.reshape(shape), f"input {INPUT}")
    except InputError as error:
        raise V2Error(400, str(error)) from None
    return Inference(images, _outputs(payload), str(payload["id"]) if "id" in payload else None)


def _binary(parameters: dict[str, Any], binary: bytes, count: int, dtype: np.dtype[Any]) -> np.ndarray:
    size = parameters["binary_data_size"]
    expected = count * dtype.itemsize
    if size != expected or len(binary) != expected:
        raise V2Error(
            400,
            f"input {INPUT}: binary_data_size {size} and the {len(binary)} bytes after the JSON header must both be "
            f"{expected} ({count} {dtype.name} values of the shape given)",
        )
    return np.frombuffer(binary, dtype)


def _listed(tensor: dict[str, Any], count: int, dtype: np.dtype[Any]) -> np.ndarray:
    if "data" not in tensor:
        raise V2Error(400, f'input {INPUT}: no "data" (nor parameters.binary_data_size with the binary extension)')
    try:
        array = np.asarray(tensor["data"], dtype=np.float64).ravel()
    except (ValueError, TypeError):
        raise V2Error(400, f"input {INPUT}: data is not a list of numbers of one shape") from None
    if array.size != count:
        raise V2Error(400, f"input {INPUT}: {array.size} values in data, but the shape given holds {count}")
    if dtype == np.uint8 and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array))):
        raise V2Error(
            400, f"input {INPUT}: UINT8 values must be whole numbers 0-255; got {array.min():g} to {array.max():g}"
        )
    return array


def _outputs(payload: dict[str, Any]) -> list[tuple[str, bool]]:
    default = bool((payload.get("parameters") or {}).get("binary_data_output", False))
    asked = payload.get("outputs")
    if asked is None:
        return [(name, default) for name in OUTPUTS]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise V2Error(400, '"outputs" must be a list of {"name": ...}')
    unknown = [str(o.get("name"))[:40] for o in asked if o.get("name") not in OUTPUTS]
    if unknown:
        raise V2Error(400, f"unknown output {unknown[0]!r}: the model's outputs are {', '.join(OUTPUTS)}")
    return [(o["name"], bool((o.get("parameters") or {}).get("binary_data", default))) for o in asked]


def _answer(name: str, version: str, probabilities: np.ndarray, inference: Inference) -> Response:
    values = {"probabilities": probabilities.astype("<f4"), "class": probabilities.argmax(axis=1).astype("<i8")}
    outputs, chunks = [], []
    for output, binary in inference.outputs:
        array = values[output]
        entry: dict[str, Any] = {"name": output, "datatype": OUTPUTS[output], "shape": list(array.shape)}
        if binary:
            chunks.append(array.tobytes())
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if inference.request_id is not None:
        header["id"] = inference.request_id
    text = json.dumps(header).encode()
    if not chunks:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )
