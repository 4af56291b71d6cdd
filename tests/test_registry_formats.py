"""A registry written before the registry became one policy over two backends (commit 5e89607) reads
and works after it: production.json, decisions.jsonl and the version folders of a local registry; the
pointer, decision and `.claim` objects of one in the store. The registries were written by that
commit's code (tests/data/registry-5e89607/make.py says how)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mnist_pipeline.cli.registry import list_versions, show_version
from mnist_pipeline.core.registry import Registry, open_registry
from mnist_pipeline.core.storage.store import ObjectStore
from support.training import BACKENDS

WRITTEN_BEFORE = Path(__file__).parent / "data" / "registry-5e89607"

pytestmark = pytest.mark.parametrize("registry_kind", BACKENDS, indirect=True)


@pytest.fixture
def old_registry(registry_kind, registry_location, tmp_path) -> Registry:
    """A copy of the registry the old code wrote, where `registry_kind` keeps registries."""
    if registry_kind == "folder":
        shutil.copytree(WRITTEN_BEFORE / "folder", registry_location)
    else:
        objects = ObjectStore.for_url(registry_location)
        for path in sorted(p for p in (WRITTEN_BEFORE / "store").rglob("*") if p.is_file()):
            objects.upload(path, f"{registry_location}/{path.relative_to(WRITTEN_BEFORE / 'store').as_posix()}")
    return open_registry(registry_location)


def test_a_registry_written_before_is_listed_shown_checked_and_promoted_in(old_registry):
    registry = old_registry
    assert registry.versions() == ["v0001", "v0002"] and registry.production() == "v0001"
    assert [(record.action, record.candidate) for record in registry.decisions()] == [
        ("register", "v0001"),
        ("register", "v0002"),
        ("promote", "v0002"),
        ("rollback", "v0001"),
    ]
    assert registry.production_history() == ["v0001"]
    assert registry.statuses() == {"v0001": "promoted", "v0002": "rolled back"}
    assert registry.check() == []
    for version in registry.versions():
        assert registry.model_path(version).is_file()  # the file registered, by its SHA-256
    listed = list_versions(registry)
    assert "v0001" in listed and "<- production" in listed and "rolled back" in listed
    shown = show_version(registry, "v0002")
    assert shown.startswith("v0002  (rolled back)") and "# Model card" in shown and "forced past the gate" in shown

    refused = registry.promote("v0002", "ana", "by the gate")  # worse than v0001 on the same test images
    assert not refused.promoted and "worse than production v0001" in refused.reason
    assert registry.promote("v0002", "ana", "once more", force=True).promoted
    assert registry.production() == "v0002" and registry.production_history() == ["v0001", "v0002"]
    assert registry.rollback("ana", "and back").candidate == "v0001"
    assert registry.check() == [] and registry.production() == "v0001"
    assert [record.action for record in open_registry(registry.location).decisions()][-3:] == [
        "promote",
        "promote",
        "rollback",
    ]


def test_the_old_formats_are_the_ones_still_written(old_registry, registry_kind):
    """What the new code writes beside the old files is in the same shapes (the store's names order the log)."""
    registry = old_registry
    registry.promote("v0002", "ana", "x", force=True)
    if registry_kind == "folder":
        assert {path.name for path in Path(registry.location).iterdir()} >= {
            "production.json",
            "decisions.jsonl",
            "versions",
        }
        assert set(json.loads(registry.backend.production_file.read_text())) == {"version", "since", "reason"}
    else:
        names = sorted(url.rsplit("/", 1)[1] for url in registry.backend.store.find(registry.backend.log_location))
        assert names[-1] == "00000004-0-promote-v0002.json" and len(names) == 5
