"""An S3-compatible server for tests and tries: moto's server mode (`moto_server`, package
`moto[server]`, the `team` extra), with the team's bucket.

moto keeps every object in memory (gone when it stops) and takes any credentials; it supports S3's
conditional writes (`If-None-Match: *`, `If-Match: <ETag>`), which the registry relies on. In
production the store is real S3, MinIO, Ceph or R2: the pipeline reaches any of them through the same
environment variables, `env()`.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from devstack.ports import free_port
from devstack.team import TeamStackError
from devstack.team.processes import ProcessId, plain_env, spawn, stop_tree, wait_until_ready

HOST = "127.0.0.1"
REGION = "us-east-1"


class MotoS3Server:
    """`moto_server -H 127.0.0.1 -p PORT` with one bucket. `start()`, `stop()`, `endpoint_url`, `env()`.

    The credentials are made up (moto accepts any), but handled as real ones would be: the secret key
    is random, and only `env()` hands it out."""

    def __init__(
        self,
        log: Path,
        *,
        bucket: str = "mnist-team",
        port: int | None = None,
        access_key_id: str = "mnist-team",
        secret_access_key: str | None = None,
        cwd: Path | None = None,
    ):
        self.log = Path(log)
        self.bucket = bucket
        self.port = port or free_port()
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key or secrets.token_urlsafe(24)
        self.cwd = Path(cwd) if cwd else self.log.parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def store_url(self, prefix: str = "artifacts") -> str:
        """`s3://BUCKET/PREFIX`: an artifact store in the bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def env(self) -> dict[str, str]:
        """The environment any S3 client (boto3, s3fs, the AWS CLI) reads its endpoint and credentials from."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        try:
            import boto3
        except ModuleNotFoundError:
            raise TeamStackError(
                "boto3 is not installed: install the team extra, pip install -e '.[team]' (moto[server] and boto3)"
            ) from None
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=REGION,
        )

    def _answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 60) -> None:
        """Start the server and create the bucket (with boto3: s3fs' mkdir fails against moto)."""
        try:
            import moto.server  # noqa: F401  (only checks it is there: the server runs in its own process)
        except ModuleNotFoundError:
            raise TeamStackError(
                "moto's server is not installed: install the team extra, "
                "pip install -e '.[team]' (moto[server] and boto3)"
            ) from None
        self.process = spawn(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            self.log,
            cwd=self.cwd,
            env=plain_env(),
        )
        wait_until_ready(
            self._answers,
            f"moto's S3 server on {self.endpoint_url}",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )
        self.client().create_bucket(Bucket=self.bucket)

    def stop(self, timeout: float = 20) -> list[ProcessId]:
        if self.process is None:
            return []
        survivors = stop_tree(self.process, signals=((signal.SIGTERM, timeout),))
        self.process = None
        return survivors
