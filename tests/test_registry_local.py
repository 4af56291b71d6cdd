"""What only the folder registry does: its file lock, completing another registration before adding
the next (nothing else can be writing under the lock), and the `registry check|repair` commands on it.
The behaviour it shares with the store is in test_registry_contract.py."""

from __future__ import annotations

import pytest
from filelock import FileLock, Timeout

from mnist_pipeline.core.registry import REPAIR_COMMAND, Registry
from support.commands import run_cli
from support.training import copy_run, register


def state(registry: Registry) -> tuple:
    backend = registry.backend
    return registry.versions(), backend.decision_log.read_text(), backend.production_file.read_text()


@pytest.mark.parametrize("operation", ["register", "promote", "rollback", "repair"])
def test_every_change_waits_for_the_registry_lock(registry, tiny_weak, synthetic_split, tmp_path, operation):
    changes = {
        "register": lambda: register(registry, copy_run(tiny_weak, tmp_path / "rerun"), synthetic_split),
        "promote": lambda: registry.promote("v0001", "alice", "x"),
        "rollback": lambda: registry.rollback("alice", "x"),
        "repair": registry.repair,
    }
    registry.promote("v0002", "alice", "so that a rollback has somewhere to go", force=True)
    registry.backend.lock = FileLock(registry.backend.lock.lock_file, timeout=0.2)
    before = state(registry)
    held_elsewhere = FileLock(registry.backend.root / ".lock")  # another registry user (another fd, as a process)
    with held_elsewhere, pytest.raises(Timeout):
        changes[operation]()
    assert state(registry) == before


def test_an_interrupted_registration_is_completed_before_the_next_is_added(
    registry, tiny_weak, synthetic_split, tmp_path
):
    """Under the lock no registration can be running, so the next change completes a dead one's
    (in the store, where one may be running on another machine, only `repair` does)."""
    log = registry.backend.decision_log
    log.write_text(log.read_text().splitlines()[0] + "\n")  # the process registering v0002 died before logging
    decision = register(registry, copy_run(tiny_weak, tmp_path / "rerun"), synthetic_split)
    assert decision.candidate == "v0003" and not decision.promoted
    registered = [(record.candidate, record.verdict) for record in registry.decisions() if record.action == "register"]
    assert registered == [("v0001", "promoted"), ("v0002", "rejected"), ("v0003", "rejected")]
    assert registry.check() == [] and registry.production() == "v0001"


def test_a_damaged_log_line_is_dropped_and_the_old_log_kept(registry):
    log = registry.backend.decision_log
    text = log.read_text()
    log.write_text(text[:-40])
    assert any("dropped 1 unreadable line(s)" in action for action in registry.repair())
    assert [backup.read_text() for backup in log.parent.glob("decisions.jsonl.damaged-*")] == [text[:-40]]


def test_check_and_repair_commands(registry):
    artifacts = ["--artifacts-dir", str(registry.backend.root.parent)]
    registry.backend.production_file.write_text('{"vers')
    check = run_cli("registry", "check", *artifacts)
    assert check.returncode == 1, check.stderr
    assert str(registry.backend.production_file) in check.stdout and REPAIR_COMMAND in check.stdout
    repair = run_cli("registry", "repair", *artifacts)  # exits 0 only if `check` then finds nothing
    assert repair.returncode == 0 and "production pointer set to v0001" in repair.stdout, repair.stderr
    assert registry.production() == "v0001" and registry.check() == []
