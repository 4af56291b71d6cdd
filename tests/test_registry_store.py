"""What only the registry in an S3-compatible store does, on a real server (moto's server mode, a process
on 127.0.0.1, stopped by its id; conftest's `s3_server`): the objects it writes, two "machines" (two
mirrors), a compare-and-swap refused and retried against the new production, a process dying between
moving production and logging, the store failing mid-registration, the CLI and the service reading it,
and the store's bad-input errors. The behaviour it shares with the folder registry is in
test_registry_contract.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devstack.team.object_store import MotoS3Server
from mnist_pipeline.core.registry import ObjectStoreBackend, Registry, open_registry
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.storage.store import ObjectStore, StoreError
from support.training import register

pytestmark = pytest.mark.slow


@pytest.fixture
def registry_url(s3_env) -> str:
    return s3_env.store_url(f"registry-{uuid.uuid4().hex[:8]}")


def on_machine(name: str, tmp_path: Path, monkeypatch, url: str) -> Registry:
    """The registry at `url` as another machine sees it: an empty mirror of its own."""
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / name))
    return open_registry(url)


def test_a_registration_is_whole_in_the_store_and_read_on_another_machine(
    registry_url, tiny_strong, synthetic_split, tmp_path, monkeypatch
):
    registry = open_registry(registry_url)
    assert isinstance(registry.backend, ObjectStoreBackend)
    decision = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    assert decision.promoted and decision.candidate == "v0001"
    objects = ObjectStore.for_url(registry_url)
    names = {url.rsplit(registry_url, 1)[1] for url in objects.find(registry_url)}
    assert {
        "/production.json",
        "/versions/v0001/version.json",
        "/versions/v0001/model.keras",
        "/versions/v0001/.claim",
    } <= names
    assert [name for name in names if name.startswith("/decisions/")] == ["/decisions/00000001-0-register-v0001.json"]

    other = on_machine("machine-b", tmp_path, monkeypatch, registry_url)
    assert other.production() == "v0001" and other.versions() == ["v0001"]
    assert other.model_path("v0001").is_file()  # downloaded, and checked against the registered SHA-256
    assert [record.action for record in other.decisions()] == ["register"]
    assert other.check() == []


@pytest.mark.parametrize("first_in", ["weak", "strong"])
def test_a_compare_and_swap_conflict_is_retried_against_the_new_production(
    first_in, registry_url, tiny_strong, tiny_weak, synthetic_split, tmp_path, monkeypatch
):
    """Machine A's registration has applied the gate and is about to move production when machine B's
    registration moves it first: A's swap is refused, and A applies the gate again against B's model."""
    runs = {"strong": tiny_strong, "weak": tiny_weak}
    late = "strong" if first_in == "weak" else "weak"
    machine_a = on_machine("machine-a", tmp_path, monkeypatch, registry_url)
    machine_b = on_machine("machine-b", tmp_path, monkeypatch, registry_url)
    swap, swaps = machine_a.backend.write_pointer, []

    def b_moves_production_first(version, reason, record, token):
        if not swaps:
            assert register(machine_b, runs[first_in], synthetic_split, flow_run_id=first_in).promoted
        swaps.append(record)
        return swap(version, reason, record, token)

    monkeypatch.setattr(machine_a.backend, "write_pointer", b_moves_production_first)
    decision = register(machine_a, runs[late], synthetic_split, flow_run_id=late)

    assert machine_a.versions() == ["v0001", "v0002"]
    b_version = "v0002"  # A claimed v0001 before B registered
    assert decision.candidate == "v0001" and decision.production_before == b_version
    if late == "strong":  # better than B's: promoted over it, on the second try
        assert decision.promoted and machine_a.production() == "v0001" and len(swaps) == 2
    else:  # worse than B's model, which A did not know when it first applied the gate
        assert not decision.promoted and "worse than production v0002" in decision.reason
        assert machine_a.production() == "v0002" and len(swaps) == 1
    history = [(record.action, record.candidate, record.promoted) for record in machine_a.decisions()]
    assert history == [("register", "v0002", True), ("register", "v0001", late == "strong")]
    assert machine_a.check() == []


def test_a_registration_that_died_after_moving_production_is_completed(
    registry_url, tiny_strong, synthetic_split, monkeypatch
):
    """The process dies between moving the pointer and logging the decision: the next operation logs it."""
    registry = open_registry(registry_url)
    monkeypatch.setattr(
        registry.backend, "append_decision", lambda record, pointer: (_ for _ in ()).throw(SystemExit("killed"))
    )
    with pytest.raises(SystemExit):
        register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    fresh = open_registry(registry_url)
    assert fresh.production() == "v0001" and fresh.decisions() == []
    assert fresh.repair() == ["applied the decision on v0001 (promoted)"]
    assert [record.candidate for record in fresh.decisions()] == ["v0001"] and fresh.check() == []


def test_a_store_outage_mid_registration_leaves_the_registry_as_it_was_and_a_retry_registers(
    registry_url, tiny_strong, tiny_weak, synthetic_split, monkeypatch
):
    registry = open_registry(registry_url)
    register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    before = (registry.versions(), registry.production(), len(registry.decisions()))
    uploads, upload = [], registry.backend.store.upload

    def fails_on_the_third(path, url):
        uploads.append(url)
        if len(uploads) == 3:
            raise store.StoreUnavailable("the store went away")
        upload(path, url)

    monkeypatch.setattr(registry.backend.store, "upload", fails_on_the_third)
    with pytest.raises(store.StoreUnavailable):
        register(registry, tiny_weak, synthetic_split, flow_run_id="run-2", attempt=1)
    assert (registry.versions(), registry.production(), len(registry.decisions())) == before
    assert registry.check() == []

    decision = register(registry, tiny_weak, synthetic_split, flow_run_id="run-2", attempt=2)  # the task's retry
    assert decision.candidate == "v0002" and registry.versions() == ["v0001", "v0002"] and registry.check() == []


def test_predict_registry_show_and_the_service_read_the_registry_in_the_store(
    s3_env, tiny_strong, tiny_weak, synthetic_split, tmp_path
):
    from fastapi.testclient import TestClient

    from mnist_pipeline.serve.app import ServeSettings, create_app
    from support.commands import run_cli
    from support.data import synthetic_digits
    from support.pictures import png_bytes
    from support.polling import wait_until

    artifacts = s3_env.store_url(f"artifacts-{uuid.uuid4().hex[:8]}")
    registry = open_registry(f"{artifacts}/registry")
    register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
    env = {**s3_env.env(), "MNIST_ARTIFACTS_DIR": artifacts, store.CACHE_ENV_VAR: str(tmp_path / "cli")}
    picture = tmp_path / "digit.png"
    picture.write_bytes(png_bytes(synthetic_digits(1, seed=5)[0][0]))
    predicted = run_cli("predict", str(picture), "--json", env=env)
    assert predicted.returncode == 0 and '"version": "v0001"' in predicted.stdout, predicted.stdout + predicted.stderr
    shown = run_cli("registry", "show", "1", env=env)
    assert shown.returncode == 0 and "v0001  (promoted, production)" in shown.stdout, shown.stdout + shown.stderr

    service = TestClient(
        create_app(ServeSettings(registry=f"{artifacts}/registry", corrections=tmp_path / "c", poll_seconds=0.05))
    ).__enter__()
    try:
        version = lambda: (service.get("/v1/model").json()["serving"] or {}).get("version")  # noqa: E731
        assert wait_until(version, lambda name: name is not None, timeout=60) == "v0001"
        register(open_registry(f"{artifacts}/registry"), tiny_weak, synthetic_split, flow_run_id="run-2")
        registry.promote("v0002", "ana", "a try", force=True)  # another machine moves production: the service follows
        assert wait_until(version, lambda name: name == "v0002", timeout=60) == "v0002"
    finally:
        service.__exit__(None, None, None)


# The store's bad input: a clear error naming the URL and what to check, before any work -------------


def test_a_missing_bucket_is_named(s3_env):
    with pytest.raises(StoreError, match=r"s3://no-such-bucket-here/x.*the bucket must exist"):
        ObjectStore("s3://no-such-bucket-here/x").check()


def test_an_unreachable_store_is_named(s3_env, monkeypatch):
    from support.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match=r"s3://mnist-team/x cannot be reached.*AWS_ENDPOINT_URL"):
        ObjectStore("s3://mnist-team/x").check()


def test_a_store_that_ignores_conditional_writes_is_refused(s3_env, monkeypatch):
    """As a server that ignores If-None-Match / If-Match does: the requests reach moto without them."""
    objects = ObjectStore(s3_env.store_url("x"))
    unconditional = objects.fs.pipe_file
    monkeypatch.setattr(
        objects.fs, "pipe_file", lambda path, data, mode="overwrite", IfMatch=None: unconditional(path, data)
    )
    with pytest.raises(StoreError, match="ignores conditional writes"):
        objects.check()


def test_wrong_credentials_are_refused_and_the_secret_is_not_shown(tmp_path, monkeypatch):
    """A server that checks credentials (moto with authentication on after the bucket is made)."""
    server = MotoS3Server(tmp_path / "moto.log")
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "1")  # the bucket's creation; then every request is checked
    server.start()
    try:
        for name, value in {**server.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret-1234"}.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StoreError, match=r"s3://mnist-team/artifacts.*check the credentials") as refused:
            ObjectStore(server.store_url()).check()
        assert "wrong-secret-1234" not in str(refused.value) and server.secret_access_key not in str(refused.value)
    finally:
        assert not server.stop()
