"""The HTTP service: FastAPI routes over the production model, micro-batched, and the drawing page.

    POST /v1/predict       pictures (multipart `file` fields, or one picture as the body) or JSON
                           {"images": [...]} of 28x28 pixel arrays -> classes, probabilities, version
    POST /v1/corrections   multipart `file` (a drawing) + `label` (0-9) -> queued for a person's review
                           (a token when one is set, a per-client rate limit: serve/guard.py)
    GET  /v1/model         the model served: version, accuracy, interval, since; a refused new model
    GET  /healthz          the process answers;  GET /readyz: a verified model is loaded
    GET  /                 the page (static/), to draw digits on;  GET /docs: the OpenAPI page,
                           its Swagger UI assets served from the installed swagger-ui-bundle (offline)
    GET  /metrics          Prometheus metrics (metrics.py)
    /v2/...                the Open Inference Protocol (v2.py)

Pictures are laid out by `core.pictures.read_picture`, as `mnist-pipeline predict` lays them out,
and so are refused for the same reasons (with the size read from the header before decoding). The
body is read up to `max_upload_bytes` and no further; nothing a request sends is used as a path.
JSON is parsed only when nested no deeper than a valid request (payloads.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from mnist_pipeline.core.data.pictures import InputError, Wording, as_images, read_picture
from mnist_pipeline.core.modelling.models import top_classes
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.serve import metrics, v2
from mnist_pipeline.serve.batching import MicroBatcher, ServiceBusy
from mnist_pipeline.serve.corrections import CorrectionsFull, CorrectionStore
from mnist_pipeline.serve.guard import RateLimiter, TokenGuard
from mnist_pipeline.serve.holder import ModelHolder
from mnist_pipeline.serve.payloads import PayloadError, parse_json

STATIC = Path(__file__).parent / "static"
MAX_IMAGES_PER_REQUEST = 256
TOP_K = 3
DIGITS = tuple("0123456789")
INLINE_BYTES = 16_384  # pictures up to this size are laid out on the event loop (~0.3 ms)
WORDING = Wording(readable="a picture", accepted="PNG or JPEG pictures", invert_option="?invert=true")
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")
MAX_JSON_DEPTH = 6  # {"images": [n, 28, 28, 1]}: an object and four levels of lists, and one to spare


@dataclass(frozen=True)
class ServeSettings:
    registry: str  # a folder, or a URL in an artifact store
    corrections: Path | str  # the review queue: a folder, or a URL in an artifact store
    corrections_max_bytes: int = 100_000_000
    corrections_token: str | None = None  # required for POST /v1/corrections when set
    corrections_per_minute: int = 30  # per client address
    max_upload_bytes: int = 10_000_000
    max_batch: int = 64  # images a model call; 1 turns micro-batching off
    batch_window_seconds: float = 0.0  # 0: a batch is what queued while the model ran (batching.py)
    max_pending: int = 256  # requests admitted at once; more get 503
    poll_seconds: float = 2.0
    model_name: str = "mnist"  # the model's name in the Open Inference Protocol (/v2/models/{name})


# What the API answers (for its OpenAPI page) ----------------------------------------------------


class Top(BaseModel):
    class_: int = Field(alias="class")
    probability: float


class ImagePrediction(BaseModel):
    index: int
    class_: int = Field(alias="class", description="the most probable class")
    top: list[Top] = Field(description=f"the {TOP_K} most probable classes, best first")
    probabilities: list[float] = Field(description="the probability of each class 0-9")


class PredictResponse(BaseModel):
    version: str
    predictions: list[ImagePrediction]


class JsonImages(BaseModel):
    """Raw pixel values 0-255, white digit on black, as MNIST: one [28, 28] image or a batch
    ([n, 28, 28], [n, 28, 28, 1] or [n, 784])."""

    images: list[Any]


def _request_body(form_fields: dict[str, Any], other_content: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI's `requestBody` of an endpoint that reads its request itself (FastAPI cannot infer it):
    a multipart form of `form_fields`, all required, and the other content types it takes."""
    form = {"schema": {"type": "object", "required": list(form_fields), "properties": form_fields}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": form, **(other_content or {})}}}


BINARY = {"type": "string", "format": "binary"}
PREDICT_BODY = _request_body(
    {
        "file": {
            "type": "array",
            "items": BINARY,
            "description": f"one or more pictures (at most {MAX_IMAGES_PER_REQUEST})",
        }
    },
    {
        "image/png": {"schema": BINARY},
        "image/jpeg": {"schema": BINARY},
        "application/json": {"schema": JsonImages.model_json_schema()},
    },
)
CORRECTION_BODY = _request_body(
    {
        "file": {**BINARY, "description": "the drawing the model got wrong"},
        "label": {"type": "integer", "minimum": 0, "maximum": 9, "description": "the digit it really is"},
    }
)


def create_app(settings: ServeSettings) -> FastAPI:
    holder = ModelHolder(open_registry(settings.registry), settings.poll_seconds)
    batcher = MicroBatcher(
        lambda images: _predict(holder, images), settings.max_batch, settings.batch_window_seconds, settings.max_pending
    )
    corrections = CorrectionStore(str(settings.corrections), settings.corrections_max_bytes)
    guard, limiter = TokenGuard(settings.corrections_token), RateLimiter(settings.corrections_per_minute)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.start()
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        await run_in_threadpool(holder.stop)

    app = _Service(
        title="MNIST digit classifier",
        lifespan=lifespan,
        description="The model registry's production model, followed as production moves.",
        docs_url=None,
        redoc_url=None,
    )

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        response_model_by_alias=True,
        openapi_extra=PREDICT_BODY,
        summary="Classify digits: pictures or 28x28 pixel arrays",
        responses={
            413: {"description": "body too large"},
            415: {"description": "not a picture or JSON"},
            422: {"description": "a picture or array that cannot be classified"},
            503: {"description": "no model loaded yet, or too many requests waiting"},
        },
    )
    async def predict(request: Request, invert: bool = False) -> Response:
        """`invert=true` for dark digits on a light background."""
        if holder.current is None:
            raise HTTPException(503, f"not ready: {_not_ready(holder)}")
        images = await _request_images(request, settings.max_upload_bytes, invert)
        try:
            version, probabilities = await batcher.predict(images)
        except ServiceBusy as error:
            raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from None
        return Response(_predictions_json(version, probabilities), media_type="application/json")

    v2.add_routes(
        app,
        holder,
        batcher,
        settings.model_name,
        lambda request: _read_body(request, settings.max_upload_bytes),
        MAX_IMAGES_PER_REQUEST,
    )

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException) -> Response:
        """The protocol's error shape on /v2 (e.g. a body over the upload limit); FastAPI's elsewhere."""
        if request.url.path.startswith("/v2"):
            return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)
        return await http_exception_handler(request, error)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/docs-openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/docs-openapi.json", include_in_schema=False)
    async def docs_schema() -> dict[str, Any]:
        """The API's schema for the Swagger UI of swagger-ui-bundle (4.15), which renders OpenAPI 3.0
        only: FastAPI's 3.1 schema, labelled 3.0 (this API uses nothing 3.0 cannot show)."""
        return {**app.openapi(), "openapi": "3.0.3"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        metrics.QUEUE_DEPTH.set(batcher.pending)
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="The process answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pending_requests": batcher.pending}

    @app.get("/readyz", summary="A verified model is loaded (503 until then)")
    async def readyz() -> JSONResponse:
        if holder.current is None:
            return JSONResponse({"ready": False, "reason": _not_ready(holder)}, status_code=503)
        return JSONResponse({"ready": True, "version": holder.current.version})

    @app.get("/v1/model", summary="The model served, and any newer one refused")
    async def model() -> dict[str, Any]:
        refused = holder.refused
        return {
            "serving": holder.current.info if holder.current else None,
            "refused": {"version": refused.version, "reason": refused.reason, "time": refused.time}
            if refused
            else None,
            "problem": holder.problem,
            "batching": {
                "max_batch": settings.max_batch,
                "window_ms": settings.batch_window_seconds * 1000,
                "max_pending": settings.max_pending,
            },
        }

    @app.post(
        "/v1/corrections",
        status_code=201,
        openapi_extra=CORRECTION_BODY,
        summary="Queue a drawing the model got wrong, with its right label, for a person's review",
        responses={401: {"description": "no token, or a wrong one"}, 429: {"description": "too many, see Retry-After"}},
    )
    async def correct(request: Request) -> dict[str, Any]:
        guard.check(request)
        client = request.client.host if request.client else "unknown"
        limiter.check(client)
        form = await _form(request, settings.max_upload_bytes)
        label = str(form.get("label", ""))
        if label not in DIGITS:
            raise HTTPException(422, f"label {label[:20]!r} is not a digit 0-9: send the digit the drawing shows")
        images = await _pictures(form.getlist("file")[:1], invert=False)
        version, top = None, []
        if holder.current is not None:  # what the model read, for the reviewer
            try:
                version, probabilities = await batcher.predict(images)
                top = top_classes(probabilities, TOP_K)[0]
            except ServiceBusy:
                pass  # queued without it rather than refused
        try:
            correction, new = await run_in_threadpool(
                lambda: corrections.save(images[0], int(label), client=client, model_version=version, model_top=top)
            )
        except CorrectionsFull as error:
            raise HTTPException(507, str(error)) from None
        return {"label": int(label), "id": correction.id, "status": "pending review", "new": new}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    predict_route = next(route for route in app.routes if getattr(route, "path", None) == "/v1/predict")
    # the outer one counts what the fast path answers too
    app.put_in_front(lambda fastapi: _Measured(_PictureFastPath(fastapi, holder, batcher, predict_route)))
    return app


class _Service(FastAPI):
    """FastAPI, with plain ASGI layers put in front of all of its own (its OpenTelemetry check,
    Starlette's error and exception middleware, the routing) rather than among them as middleware: so
    the fast path answers without any of them. They took about a twentieth of the service's time per
    request under load (py-spy on bench/serve.py's run)."""

    _front: ASGIApp

    def put_in_front(self, layers: Callable[[ASGIApp], ASGIApp]) -> None:
        """Requests go to `layers(FastAPI itself)`."""
        self._front = layers(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


def _predictions_json(version: str, probabilities: np.ndarray) -> bytes:
    """A predict answer, encoded here as PredictResponse lays it out: FastAPI's validation of the answer
    against that model (kept for the OpenAPI page) took a tenth of a request's time, and orjson encodes
    it in a tenth of the time `json` takes (~4 against ~39 us)."""
    answer = {
        "version": version,
        "predictions": [
            {
                "index": i,
                "class": top[0][0],
                "top": [{"class": c, "probability": round(p, 6)} for c, p in top],
                "probabilities": [round(p, 6) for p in row],
            }
            for i, (row, top) in enumerate(zip(probabilities.tolist(), top_classes(probabilities, TOP_K), strict=True))
        ],
    }
    return orjson.dumps(answer)


def _predict(holder: ModelHolder, images: np.ndarray) -> tuple[str, np.ndarray]:
    served = holder.current  # taken once: a swap during this call changes nothing for this batch
    if served is None:  # `predict` answers 503 before queueing while no model is loaded
        raise RuntimeError("no model is loaded")
    metrics.BATCH_IMAGES.observe(len(images))
    return served.version, served.predict(images)


class _PictureFastPath:
    """`POST /v1/predict` with one small picture as its body and no query, answered before FastAPI's
    exception layers, routing and parameter parsing, which took about a sixth of the service's time per
    request under load (py-spy on bench/serve.py's run). It is what the drawing page sends.

    Only answers of 200 are made here. Anything else - another request, a picture that cannot be read,
    no model loaded, a full queue - goes on to the routes with the body already read, and is answered
    there as it always was; so the route stays the one place that says what is wrong.
    """

    def __init__(self, app: ASGIApp, holder: ModelHolder, batcher: MicroBatcher, route: Any):
        self.app, self.holder, self.batcher, self.route = app, holder, batcher, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._takes(scope):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        answer = await self._answer(body)
        if answer is None:
            await self.app(scope, _replaying(body, receive), send)
            return
        scope["route"] = self.route  # for the metrics, as the router sets it
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _takes(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/predict":
            return False
        if scope["query_string"] or self.holder.current is None:
            return False
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        length = headers.get(b"content-length", b"")
        return kind in IMAGE_MEDIA_TYPES and length.isdigit() and 0 < int(length) <= INLINE_BYTES

    async def _answer(self, picture: bytes) -> bytes | None:
        try:
            version, probabilities = await self.batcher.predict(_laid_out([picture], invert=False))
        except (InputError, ServiceBusy):
            return None
        return _predictions_json(version, probabilities)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` with `body`, already read from it, handed out first."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _Measured:
    """Counts each request by its route's template and status, and times it (a plain ASGI middleware:
    Starlette's BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            metrics.REQUESTS.labels(endpoint, str(status)).inc()
            metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - start)


def _not_ready(holder: ModelHolder) -> str:
    refused = holder.refused
    return holder.problem or (f"{refused.version} was refused: {refused.reason}" if refused else "loading")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes, declared or not."""
    declared = request.headers.get("content-length", "")
    too_large = f"the request body is larger than the service's limit of {limit / 1e6:g} MB"
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{too_large} ({int(declared) / 1e6:g} MB)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, too_large)
    if not body:
        raise HTTPException(
            400,
            "the request has no body: send pictures as multipart/form-data `file` fields, "
            "one picture as the body (Content-Type image/png or image/jpeg), or JSON "
            '{"images": [...]} of 28x28 pixel arrays',
        )
    return bytes(body)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form(request: Request, limit: int) -> FormData:
    """A multipart form read within `limit` bytes (Starlette would spool an upload of any size)."""
    if _media_type(request) != "multipart/form-data":
        raise HTTPException(415, f"expected multipart/form-data, got {_media_type(request) or 'no Content-Type'}")
    body = await _read_body(request, limit)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return await Request(request.scope, receive).form(max_files=MAX_IMAGES_PER_REQUEST, max_fields=10)


async def _request_images(request: Request, limit: int, invert: bool) -> np.ndarray:
    """The images a predict request sends, as uint8 [n, 28, 28]."""
    kind = _media_type(request)
    if kind == "multipart/form-data":
        return await _pictures((await _form(request, limit)).getlist("file"), invert)
    if kind in IMAGE_MEDIA_TYPES:
        body = await _read_body(request, limit)
        if len(body) <= INLINE_BYTES:  # a small picture is laid out faster than a thread is handed it
            return _laid_out([body], invert)
        return await run_in_threadpool(_laid_out, [body], invert)
    if kind == "application/json":
        return await run_in_threadpool(_json_images, await _read_body(request, limit), invert)
    raise HTTPException(
        415,
        f"cannot classify a {kind or 'body without Content-Type'}: send pictures "
        f"(multipart/form-data `file` fields, or {', '.join(IMAGE_MEDIA_TYPES)}) or "
        "application/json",
    )


async def _pictures(uploads: list[Any], invert: bool) -> np.ndarray:
    files = [upload for upload in uploads if hasattr(upload, "read")]
    if not files:
        raise HTTPException(422, "no picture: send it as a multipart/form-data field named `file`")
    return await run_in_threadpool(_laid_out, [await upload.read() for upload in files], invert)


def _laid_out(pictures: list[bytes], invert: bool) -> np.ndarray:
    if len(pictures) > MAX_IMAGES_PER_REQUEST:
        raise HTTPException(422, f"{len(pictures)} pictures in one request; send at most {MAX_IMAGES_PER_REQUEST}")
    names = [f"picture {i + 1}" for i in range(len(pictures))]
    return np.stack([read_picture(data, invert, name, WORDING) for name, data in zip(names, pictures, strict=True)])


def _json_images(body: bytes, invert: bool) -> np.ndarray:
    try:
        payload = parse_json(body, MAX_JSON_DEPTH, '{"images": [...]} of 28x28 arrays')
    except PayloadError as error:
        raise HTTPException(400, str(error)) from None
    if not isinstance(payload, dict) or "images" not in payload:
        raise HTTPException(
            422, 'expected a JSON object {"images": [...]}: one 28x28 array of pixel values 0-255, or a list of them'
        )
    try:
        array = np.asarray(payload["images"])
    except ValueError:
        raise HTTPException(
            422, "images: the arrays are not all the same shape; each image must be 28 rows of 28 pixel values"
        ) from None
    images = as_images(array, "images")
    if len(images) > MAX_IMAGES_PER_REQUEST:
        raise HTTPException(422, f"{len(images)} images in one request; send at most {MAX_IMAGES_PER_REQUEST}")
    return 255 - images if invert else images
