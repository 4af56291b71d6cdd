"""The artifact store: a local folder (the default), or an S3-compatible bucket named by URL.

A URL location (`s3://bucket/prefix`) is the one place a team's pipeline state lives. Each machine
works on a local mirror of it, `$MNIST_CACHE_DIR/<scheme>/<bucket>/<key>` (default
~/.cache/mnist-pipeline): stages write their files there (TensorFlow's checkpoint and TensorBoard
writers need a real folder), then `publish` uploads them whole, and `fetch` downloads what another
machine wrote. The mirror is only a cache: everything in it can be deleted at any time. For a local
location every function here is the identity, and nothing is copied.

Between tasks the pipeline passes references: the URL of a file in the store, or a local path. They
hold no machine-local path in team mode, so Prefect's cache keys and results mean the same on every
machine.

`ObjectStore` adds the two conditional writes the registry builds on (S3 `If-None-Match: *` and
`If-Match: <ETag>`). Endpoint and credentials come from the usual AWS environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...), never from the
command line or the URL.
"""

from __future__ import annotations

import functools
import os
import posixpath
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from mnist_pipeline.core.support import settings
from mnist_pipeline.core.support.errors import PermanentError, PipelineError

CACHE_ENV_VAR = settings.CACHE_DIR
T = TypeVar("T")


class StoreError(PermanentError):
    """The store cannot be used as configured (unreachable, refused, missing bucket...)."""


class StoreUnavailable(PipelineError):
    """A transient failure talking to the store: a retry may succeed."""


class AlreadyExists(Exception):
    """A create-only write found the object there already."""


class Conflict(Exception):
    """A compare-and-swap write found the object changed since it was read."""


def is_url(location: str | os.PathLike[str]) -> bool:
    return "://" in str(location)


def cache_root() -> Path:
    return settings.cache_root()


def local_path(ref: str | os.PathLike[str]) -> Path:
    """Where `ref` is (a local path) or is mirrored on this machine (a URL); nothing is downloaded."""
    text = str(ref)
    if not is_url(text):
        return Path(text)
    scheme, rest = text.split("://", 1)
    return cache_root() / scheme / rest.strip("/")


def ref_of(path: str | os.PathLike[str]) -> str:
    """The reference of a local path: the URL it mirrors, or the path itself."""
    path = Path(path).resolve()
    try:
        scheme, *rest = path.relative_to(cache_root()).parts
    except ValueError:
        return str(path)
    return f"{scheme}://{'/'.join(rest)}"


def join(ref: str, *names: str) -> str:
    return posixpath.join(ref, *names) if is_url(ref) else str(Path(ref, *names))


def parent(ref: str) -> str:
    return posixpath.dirname(ref.rstrip("/")) if is_url(ref) else str(Path(ref).parent)


def fetch(ref: str | os.PathLike[str]) -> Path:
    """The local path of `ref`, downloaded first if it is a URL not yet mirrored. Meant for files that
    do not change once written (a run's files, a split, a registered version)."""
    path = local_path(ref)
    if is_url(ref) and not path.exists():
        ObjectStore.for_url(str(ref)).download(str(ref), path)
    return path


def fetch_tree(ref: str) -> Path:
    """`fetch` for a folder: every object below `ref` that is not mirrored yet."""
    path = local_path(ref)
    if is_url(ref):
        store = ObjectStore.for_url(ref)
        for url in store.find(ref):
            target = local_path(url)
            if not target.exists():
                store.download(url, target)
    return path


def mirror_tree(ref: str) -> Path:
    """A folder's local copy kept equal to the store: `fetch_tree`, and mirrored files no longer in the
    store removed. For folders whose files come and go (the reviewed corrections a training reads)."""
    path = fetch_tree(ref)
    if is_url(ref):
        listed = {local_path(url) for url in ObjectStore.for_url(ref).find(ref)}
        for stale in [file for file in path.rglob("*") if file.is_file() and file not in listed]:
            stale.unlink()
        path.mkdir(parents=True, exist_ok=True)
    return path


def publish(path: str | os.PathLike[str]) -> str:
    """Upload a mirrored file, or a folder's every file, and return its reference; a local path is
    returned as it is."""
    path = Path(path)
    ref = ref_of(path)
    if is_url(ref):
        store = ObjectStore.for_url(ref)
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            store.upload(file, ref_of(file))
    return ref


class ObjectStore:
    """An S3-compatible bucket through fsspec/s3fs, with create-only and compare-and-swap writes."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        scheme = url.split("://", 1)[0]
        try:  # no listing cache: other machines change the store
            self.fs = fsspec.filesystem(scheme, skip_instance_cache=True, use_listings_cache=False)
        except (ImportError, ValueError) as error:
            raise StoreError(f"Artifact store {url}: no filesystem for {scheme}:// ({error}).") from error

    @classmethod
    def for_url(cls, url: str) -> ObjectStore:
        """The store of the bucket `url` is in (one per bucket and endpoint, reused)."""
        scheme, rest = url.split("://", 1)
        return _bucket_store(f"{scheme}://{rest.split('/', 1)[0]}", os.environ.get("AWS_ENDPOINT_URL"))

    def _path(self, url_or_key: str) -> str:
        text = url_or_key if is_url(url_or_key) else f"{self.url}/{url_or_key}"
        return text.split("://", 1)[1]

    def _call(self, action: Callable[..., T], what: str, *args: Any, **kwargs: Any) -> T:
        """Run one request, turning the store's failures into errors that say what to check (and
        never show a credential: botocore's messages name none)."""
        try:
            return action(*args, **kwargs)
        except (AlreadyExists, Conflict, FileNotFoundError, FileExistsError):
            raise
        except Exception as error:  # botocore and aiohttp raise under many names
            name = type(error).__name__
            if isinstance(error, PermissionError) or "Credentials" in name:
                raise StoreError(
                    f"Artifact store {self.url} refused to {what} ({error}): check the credentials "
                    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and that they may "
                    "read, write, list and delete in the bucket."
                ) from None
            if "Connect" in name or "Timeout" in name or isinstance(error, (ConnectionError, TimeoutError)):
                raise StoreUnavailable(
                    f"Artifact store {self.url} cannot be reached to {what} ({name}: {error}); "
                    "check AWS_ENDPOINT_URL and that the server is up."
                ) from None
            raise

    def read(self, url: str) -> bytes:
        return cast(bytes, self._call(self.fs.cat_file, f"read {url}", self._path(url)))

    def exists(self, url: str) -> bool:
        return bool(self._call(self.fs.exists, f"look for {url}", self._path(url)))

    def size(self, url: str) -> int:
        """The object's size in bytes."""
        return int(self._call(self.fs.size, f"look at {url}", self._path(url)))

    def find(self, url: str) -> list[str]:
        """The URLs of every object below `url`."""
        scheme = self.url.split("://", 1)[0]
        found = self._call(self.fs.find, f"list {url}", self._path(url))
        return [f"{scheme}://{name}" for name in found]

    def glob(self, pattern_url: str) -> list[str]:
        scheme = self.url.split("://", 1)[0]
        found = self._call(self.fs.glob, f"list {pattern_url}", self._path(pattern_url))
        return [f"{scheme}://{name}" for name in found]

    def write(self, url: str, data: bytes) -> None:
        """Replace the object whole (one PUT: readers see the old or the new object, never a part)."""
        self._call(self.fs.pipe_file, f"write {url}", self._path(url), data)

    def create(self, url: str, data: bytes) -> None:
        """Write the object only if there is none (`If-None-Match: *`); else raise AlreadyExists."""
        try:
            self._call(self.fs.pipe_file, f"write {url}", self._path(url), data, mode="create")
        except FileExistsError:
            raise AlreadyExists(url) from None

    def read_tagged(self, url: str) -> tuple[bytes, str] | None:
        """(the object's bytes, its ETag) read in one request, or None if there is no object."""
        from fsspec.asyn import sync

        bucket, key = self._path(url).split("/", 1)

        async def get() -> tuple[bytes, str]:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with response["Body"] as body:
                return await body.read(), response["ETag"]

        try:
            return cast("tuple[bytes, str]", self._call(sync, f"read {url}", self.fs.loop, get))
        except FileNotFoundError:
            return None

    def swap(self, url: str, data: bytes, etag: str | None) -> None:
        """Compare-and-swap: replace the object only if its ETag is still `etag` (`If-Match`), or, with
        `etag` None, create it only if there is none; else raise Conflict."""
        try:
            if etag is None:
                self.create(url, data)
            else:
                self._call(self.fs.pipe_file, f"write {url}", self._path(url), data, IfMatch=etag)
        except AlreadyExists:
            raise Conflict(url) from None
        except OSError as error:
            if "pre-condition" in str(error) or "PreconditionFailed" in str(error) or "412" in str(error):
                raise Conflict(url) from None
            raise

    def delete(self, url: str) -> None:
        self._call(self.fs.rm, f"delete {url}", self._path(url), recursive=True)

    def upload(self, path: Path, url: str) -> None:
        self._call(self.fs.put_file, f"write {url}", str(path), self._path(url))

    def download(self, url: str, path: Path) -> None:
        """Download to a temporary name beside `path`, then rename: a mirror file is whole or absent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self._call(self.fs.get_file, f"read {url}", self._path(url), str(partial))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def check(self) -> None:
        """Fail with a clear error, before any work, unless the store can be read, written and
        deleted, and honours both conditional writes."""
        probe = f"{self.url}/.probe-{uuid.uuid4().hex}"
        what = (
            f"Artifact store {self.url}: check the URL (the bucket must exist), AWS_ENDPOINT_URL "
            "and the credentials in the environment"
        )
        unconditional = StoreError(
            f"Artifact store {self.url} ignores conditional writes (If-None-Match / If-Match): the registry "
            "cannot be kept consistent on it. Use AWS S3, MinIO, or another store that supports them."
        )
        try:
            self.create(probe, b"1")
            try:
                self.create(probe, b"2")
                raise unconditional
            except AlreadyExists:
                pass
            tagged = self.read_tagged(probe)
            if tagged is None:
                raise FileNotFoundError(probe)
            self.swap(probe, b"3", tagged[1])
            try:
                self.swap(probe, b"4", tagged[1])
                raise unconditional
            except Conflict:
                pass
            self.delete(probe)
        except FileNotFoundError as error:
            raise StoreError(f"{what}: {error}.") from None
        except (StoreError, StoreUnavailable) as error:
            raise StoreError(str(error)) from None
        except Exception as error:
            raise StoreError(f"{what} ({type(error).__name__}: {error}).") from None


@functools.cache
def _bucket_store(bucket_url: str, endpoint: str | None) -> ObjectStore:
    return ObjectStore(bucket_url)
