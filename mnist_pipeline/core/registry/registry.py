"""The model registry on disk: numbered versions, a production pointer and a decision log.

    registry/
      versions/v0001/   model.keras, metrics.json, predictions.npz, params.json, plots, model_card.md,
                        version.json, saved_model/
      production.json   which version serves (replaced atomically)
      decisions.jsonl   one `DecisionRecord` per line: gate verdicts, promotions, rollbacks, repairs
      .lock             held by every operation that changes anything

The registry owns its protocol: `register`, `promote`, `rollback` and `repair` each take the lock,
first complete a registration that a dying process left half done, then decide and record. A version
folder is assembled under a temporary name and renamed into place, so a version either exists whole
or not at all; its decision is stored inside it before production moves, so it can be completed.

The gate (core/evaluation/gate.py) compares a candidate with production image by image, so each version keeps
its predictions on its test split (`predictions.npz`). Production is re-tested on the candidate's
test split when it was tested on another one, or has no stored predictions (versions registered
before they were kept).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from filelock import FileLock

from mnist_pipeline.core.storage import store
from mnist_pipeline.core.registry.decisions import DecisionRecord, now_iso
from mnist_pipeline.core.support.errors import PermanentError
from mnist_pipeline.core.modelling.export import export_saved_model
from mnist_pipeline.core.support.faults import crash_point, inject_fault
from mnist_pipeline.core.support.files import append_line_durably, fsync_dir, sha256_file, write_json_atomic, write_text_atomic
from mnist_pipeline.core.evaluation.gate import GateSettings, Scored, Verdict, gate
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry.report import render_model_card
from mnist_pipeline.core.evaluation.scoring import PREDICTIONS, Evaluation, probabilities_on_test_split, read_predictions
from mnist_pipeline.core.data.splits import SplitFiles
from mnist_pipeline.core.modelling.training import TrainedModel

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
USER_VERSION_PATTERN = re.compile(r"^[vV]?(\d{1,9})$")
REPAIR_COMMAND = "mnist-pipeline registry repair"
SAVED_MODEL_DIR = "saved_model"


class RegistryError(PermanentError):
    pass


def version_name(text: str) -> str:
    """The version a user means by `3`, `v3` or `v0003`: `v0003`."""
    match = USER_VERSION_PATTERN.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise RegistryError(f"{text!r} is not a version; give its number: 3, v3 or v0003")
    return f"v{int(match.group(1)):04d}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RegistryError(f"Registry file {path} is unreadable ({error}).") from error


@dataclass(frozen=True)
class Candidate:
    """A trained and evaluated model offered to the registry by one run."""

    trained: TrainedModel
    evaluation: Evaluation
    data: SplitFiles
    gate: GateSettings
    run_params: dict
    flow_run_id: str | None = None

    @property
    def source_run(self) -> str:
        """The run folder the model comes from: its URL in the artifact store, or its path."""
        return store.ref_of(Path(self.trained.model_path).parent)


class Registry:
    def __init__(self, root: Path, splits_dir: Path | None = None):
        """`splits_dir` is where `promote` looks for a version's data split, to re-test production on
        it when the two were tested on different test splits."""
        self.root = Path(root)
        self.location = str(self.root)  # how messages name the registry
        self.splits_dir = Path(splits_dir) if splits_dir is not None else None
        self.versions_dir = self.root / "versions"
        self.production_file = self.root / "production.json"
        self.decision_log = self.root / "decisions.jsonl"
        self.lock = FileLock(self.root / ".lock")

    # Reading -----------------------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version):
            raise RegistryError(f"{version!r} is not a version name; versions look like v0001")
        return self.versions_dir / version

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if VERSION_PATTERN.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def require(self, version: str) -> None:
        """Fail, listing the registered versions, unless `version` is one of them."""
        if version not in self.versions():
            known = ", ".join(self.versions()) or "none yet"
            raise RegistryError(f"No version {version} in the registry {self.location} (registered: {known}).")

    def read_json(self, version: str, name: str) -> dict:
        """One JSON file of a version (version.json, metrics.json, params.json)."""
        return _read_json(self.version_dir(version) / name)

    def read_version(self, version: str) -> dict:
        return self.read_json(version, "version.json")

    def production(self) -> str | None:
        """The production version's name, or None before the first promotion."""
        if not self.production_file.exists():
            return None
        try:
            version = json.loads(self.production_file.read_text())["version"]
            self.version_dir(version)
        except (OSError, ValueError, KeyError, TypeError, RegistryError) as error:
            raise RegistryError(
                f"Production pointer {self.production_file} is unreadable ({error}). Run "
                f"`{REPAIR_COMMAND}` to rebuild it from the decision log."
            ) from error
        if not (self.version_dir(version) / "version.json").is_file():
            raise RegistryError(
                f"Production pointer {self.production_file} names {version}, which is not in "
                f"{self.versions_dir}. Restore that version, or run `{REPAIR_COMMAND}` to point "
                "production at the last promoted version that exists."
            )
        return version

    def model_path(self, version: str) -> Path:
        """The version's `model.keras`, after checking it is the file that was registered."""
        path = self.version_dir(version) / "model.keras"
        expected = self.read_version(version).get("model_sha256")
        if not path.is_file() or sha256_file(path) != expected:
            raise RegistryError(
                f"Model file {path} is missing or is not the one registered as {version} (SHA-256 "
                f"{expected}); it will not be served. Restore the version folder from a backup, or "
                "promote another version with `mnist-pipeline registry promote N`."
            )
        return path

    def decisions(self) -> list[DecisionRecord]:
        if not self.decision_log.exists():
            return []
        decisions = []
        for number, line in enumerate(self.decision_log.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                decisions.append(DecisionRecord.from_json(line))
            except (ValueError, KeyError, TypeError) as error:
                raise RegistryError(
                    f"Decision log {self.decision_log} line {number} is not a decision record ({error}): cut "
                    f"short or edited by hand. Run `{REPAIR_COMMAND}` (it drops that line and keeps a backup)."
                ) from error
        return decisions

    def production_history(self) -> list[str]:
        """The versions production has moved to, oldest first, with rolled-back ones taken off:
        the last is production, the one before it is where a rollback goes."""
        history: list[str] = []
        for record in self.decisions():
            if record.action == "rollback" and history:
                history.pop()
            elif record.moves_production:
                history.append(record.candidate)
        return history

    def statuses(self) -> dict[str, str]:
        """Each version's status: promoted or rejected by its last decision, or rolled back."""
        status = {version: self.read_version(version)["status"] for version in self.versions()}
        for record in self.decisions():
            if record.action == "rollback":
                status[record.production_before] = record.verdict
            elif record.action == "register" or (record.action == "promote" and record.promoted):
                status[record.candidate] = record.verdict  # a refused manual promotion changes nothing
        return status

    # Changing (each operation holds the lock) ----------------------------------------------------

    def register(self, candidate: Candidate, *, attempt: int = 1) -> DecisionRecord:
        """Add the candidate as a new version and apply the gate, exactly once however often this is
        called for the same run's model: a retry finds the version by its model's checksum and run
        folder, and completes what is missing (production pointer, log line). `attempt` (from 1) is
        for fault injection."""
        model_sha256 = sha256_file(Path(candidate.trained.model_path))
        with self.lock:
            self._complete_pending()
            version = self._find(model_sha256, candidate.source_run)
            if identical := self._identical(candidate, version):
                return self._unchanged(candidate, identical)
            if version is None:
                version = self._add_version(candidate, model_sha256)
                crash_point("register:added")  # the version exists; production has not moved; nothing is logged
                inject_fault("register", attempt)
            record = self._apply(self._stored_decision(version))
        return record

    def promote(self, version: str, who: str, why: str, *, force: bool = False, **settings) -> DecisionRecord:
        """Make `version` production if it passes the gate with the settings it was registered with
        (any of `GateSettings`' fields given here and not None replace them, e.g. `threshold=0.98`),
        or past the gate with `force`; the decision is logged either way. A damaged model is never
        made production, not even forced."""
        with self.lock:
            self._complete_pending()
            self.require(version)
            self.model_path(version)
            current = self.production()
            if version == current:
                raise RegistryError(f"{version} is already the production model; nothing to promote")
            metrics = self.read_json(version, "metrics.json")
            limits = replace(self._registered_settings(version),
                             **{name: value for name, value in settings.items() if value is not None})
            try:
                split = functools.partial(self._split_of, version)  # found only if a model must be re-tested
                candidate = self._scored(version, metrics["test_split_sha256"], split)
                verdict = gate(candidate, self._champion(metrics["test_split_sha256"], split), limits)
            except RegistryError as error:
                if not force:
                    raise
                verdict = Verdict(False, f"the gate could not be applied: {error}", (), None)
            passed = verdict.promoted
            record = DecisionRecord(
                action="promote", candidate=version, production_before=current, promoted=passed or force,
                reason=verdict.reason if passed or not force else f"forced past the gate: {verdict.reason}",
                time=now_iso(), candidate_accuracy=metrics["correct"] / metrics["total"],
                champion_accuracy=_production_accuracy(verdict), threshold=limits.threshold,
                forced=force and not passed, who=who, why=why, **verdict.record_fields(),
            )
            if record.promoted:
                self._set_production(version, f"promoted by {who}: {why}", record)
            self._log(record)
        return record

    def rollback(self, who: str, why: str) -> DecisionRecord:
        """Move production back to the version that was production before it."""
        with self.lock:
            self._complete_pending()
            current, history = self.production(), self.production_history()
            if current is None:
                raise RegistryError("There is no production model to roll back.")
            if not history or history[-1] != current:
                raise RegistryError(
                    f"Production pointer {self.production_file} names {current}, but the decision log "
                    f"{self.decision_log} says {history[-1] if history else 'none'}; was one edited by hand? "
                    "Fix the pointer, or set production explicitly with `registry promote N --force`."
                )
            if len(history) < 2:
                raise RegistryError(f"{current} is the first production model; there is no earlier one to roll back to.")
            previous = history[-2]
            self.model_path(previous)
            record = DecisionRecord(
                action="rollback", candidate=previous, production_before=current, promoted=True,
                reason=f"production rolled back from {current} to {previous}", time=now_iso(), who=who, why=why,
            )
            self._set_production(previous, f"rolled back from {current} by {who}: {why}", record)
            self._log(record)
        return record

    # Checking and repairing ----------------------------------------------------------------------

    def check(self) -> list[str]:
        """Every inconsistency found, each naming the file and what to do; empty when all is well."""
        problems = [f"{path}: left by an interrupted registration; `{REPAIR_COMMAND}` removes it"
                    for path in self._leftovers()]
        for version in self.versions():
            try:
                self.model_path(version)
            except RegistryError as error:
                problems.append(str(error))
        try:
            pending = self._pending()
            history = self.production_history()
        except RegistryError as error:
            return problems + [str(error)]
        problems += [f"{self.version_dir(record.candidate)}: registered but its decision ({record.verdict}) was "
                     f"never applied (the process died); `{REPAIR_COMMAND}` applies it" for record in pending]
        try:
            production = self.production()
        except RegistryError as error:
            return problems + [str(error)]
        if history and production != history[-1]:
            problems.append(f"Production pointer {self.production_file} names {production}, but the decision "
                            f"log says {history[-1]}; `{REPAIR_COMMAND}` follows the log")
        return problems

    def repair(self) -> list[str]:
        """Bring the registry back to a consistent state from its version folders and decision log;
        returns what was done. Version folders themselves are never changed or removed."""
        done = []
        with self.lock:
            for leftover in self._leftovers():
                self._remove_leftover(leftover)
                done.append(f"removed {leftover}")
            done += self._drop_damaged_log_lines()
            done += [f"applied the decision on {record.candidate} ({record.verdict})"
                     for record in self._complete_pending()]
            done += self._rebuild_production_pointer()
        return done

    # Internals (callers hold the lock) -----------------------------------------------------------

    def _identical(self, candidate: Candidate, found: str | None) -> str | None:
        """The version this candidate is a copy of, when it comes from another flow run: the same model
        file (a training taken from Prefect's cache), or the same weights trained on the same data."""
        if found is not None:  # registered from this model file already: by this run (a retry) or another
            return found if self.read_version(found).get("flow_run_id") != candidate.flow_run_id else None
        weights = candidate.trained.weights_sha256
        for version in self.versions() if weights else ():
            record = self.read_version(version)
            if record.get("weights_sha256") == weights and record.get("data_sha256") == candidate.data.data_sha256:
                return version
        return None

    def _unchanged(self, candidate: Candidate, identical: str) -> DecisionRecord:
        """Record that a run produced no new model (once per flow run, however often it retries)."""
        for logged in reversed(self.decisions()):
            if (logged.action, logged.candidate, logged.flow_run_id) == ("unchanged", identical, candidate.flow_run_id):
                return logged
        production = self.production()
        record = DecisionRecord(
            action="unchanged", candidate=identical, production_before=production, promoted=False,
            reason=f"identical to {identical} (the same weights, trained on the same data): no new version; "
                   f"production stays {production or 'unset'}",
            time=now_iso(), candidate_accuracy=candidate.evaluation.accuracy, threshold=candidate.gate.threshold,
            flow_run_id=candidate.flow_run_id,
        )
        self._log(record)
        return record

    def _find(self, model_sha256: str, source_run: str) -> str | None:
        """The version already registered from this run's model (a retried registration), if any."""
        for version in self.versions():
            record = self.read_version(version)
            if record.get("model_sha256") == model_sha256 and record.get("source_run") == source_run:
                return version
        return None

    def _champion(self, test_split_sha256: str, split: Callable[[], SplitFiles]) -> Scored | None:
        """Production's predictions on the test split of that hash (see `_scored`), or None before the
        first promotion."""
        version = self.production()
        return None if version is None else self._scored(version, test_split_sha256, split)

    def _scored(self, version: str, test_split_sha256: str, split: Callable[[], SplitFiles]) -> Scored:
        """`version`'s predictions on the test split of that hash: as stored if it was tested on that
        split, else made now by its model on `split()`."""
        stored = self.version_dir(version) / PREDICTIONS
        if self.read_json(version, "metrics.json").get("test_split_sha256") == test_split_sha256 and stored.is_file():
            try:
                return Scored(version, *read_predictions(stored))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                raise RegistryError(
                    f"Predictions file {stored} is unreadable ({error}). Restore the version folder from a "
                    f"backup, or delete the file to have {version} re-tested on its test split."
                ) from error
        labels, probabilities = probabilities_on_test_split(self.model_path(version), split())
        return Scored(version, labels, probabilities.argmax(axis=1))

    def _registered_settings(self, version: str) -> GateSettings:
        """The gate settings `version` was registered with; those it was registered without (it
        predates them) are today's defaults."""
        return GateSettings.of({**PipelineParameters().model_dump(), **self.read_json(version, "params.json")})

    def _split_of(self, version: str) -> SplitFiles:
        """The data split `version` was trained and tested on, found under `splits_dir` by its hash."""
        data_sha256 = self.read_version(version)["data_sha256"]
        for manifest in sorted(self.splits_dir.glob("*/manifest.json")) if self.splits_dir else []:
            if sha256_file(manifest) == data_sha256:
                return SplitFiles(str(manifest), data_sha256)
        raise RegistryError(
            f"The gate compares {version} and production on the same test images, but they were tested on "
            f"different test splits (or one was registered before test predictions were kept), and {version}'s "
            f"split (manifest SHA-256 {data_sha256[:12]}...) is not under {self.splits_dir} to re-test them "
            "on it. Rebuild it by running the pipeline with the seed and validation fraction in "
            f"`mnist-pipeline registry show {version}`, or pass --force to promote without the gate."
        )

    def _add_version(self, candidate: Candidate, model_sha256: str) -> str:
        """Gate the candidate against production, then write it whole as the next version."""
        trained, evaluation = candidate.trained, candidate.evaluation
        metrics = _read_json(Path(evaluation.metrics_path))
        scored = Scored("candidate", *read_predictions(Path(evaluation.predictions_path)))
        champion = self._champion(metrics["test_split_sha256"], lambda: candidate.data)
        verdict = gate(scored, champion, candidate.gate)
        decision = DecisionRecord(
            action="register", candidate=None, production_before=champion.version if champion else None,
            promoted=verdict.promoted, reason=verdict.reason, time=now_iso(), candidate_accuracy=evaluation.accuracy,
            champion_accuracy=_production_accuracy(verdict), threshold=candidate.gate.threshold,
            flow_run_id=candidate.flow_run_id, **verdict.record_fields(),
        )
        record = {
            "created": decision.time,
            "status": decision.verdict,
            "model_sha256": model_sha256,
            "weights_sha256": trained.weights_sha256,
            "source_run": candidate.source_run,
            "preset": trained.config.preset,
            "test_accuracy": evaluation.accuracy,
            "accuracy_interval_95": list(evaluation.interval_95),
            "data_sha256": candidate.data.data_sha256,
            "test_split_sha256": metrics["test_split_sha256"],
            "flow_run_id": candidate.flow_run_id,
            "versions": _framework_versions(),
        }
        params = {"training": asdict(trained.config), **candidate.gate.to_dict(), **candidate.run_params}
        files = {"model.keras": Path(trained.model_path), "metrics.json": Path(evaluation.metrics_path),
                 PREDICTIONS: Path(evaluation.predictions_path), "history.json": Path(trained.history_path),
                 **{Path(p).name: Path(p) for p in evaluation.plot_paths}}
        texts = {"params.json": json.dumps(params, indent=2, sort_keys=True) + "\n",
                 "model_card.md": render_model_card(record, params, metrics, decision)}
        return self._write_version(files, texts, record, decision, trained.model_path)

    def _write_version(self, files: dict[str, Path], texts: dict[str, str], record: dict,
                       decision: DecisionRecord, model_path: str) -> str:
        """Assemble the next version folder under a temporary name, then rename it into place."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
        staging = self.versions_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        try:
            assemble_version(staging, version, files, texts, record, decision, model_path)
            crash_point("register:staged")
            staging.rename(self.versions_dir / version)
            fsync_dir(self.versions_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def _stored_decision(self, version: str) -> DecisionRecord:
        """The gate's decision made when `version` was added, as stored in its version.json."""
        # schema 1 stored it without the version's name
        return DecisionRecord.from_dict({**self.read_version(version)["decision"], "candidate": version})

    def _apply(self, record: DecisionRecord) -> DecisionRecord:
        """Move production (if promoted) and log a registration's decision, unless this was done already;
        returns the decision applied."""
        for logged in self.decisions():
            if logged.action == "register" and logged.candidate == record.candidate:
                return logged
        if record.promoted:
            self._set_production(record.candidate, record.reason, record)
        self._log(record)
        return record

    def _pending(self) -> list[DecisionRecord]:
        """Registrations whose process died after adding the version, before logging its decision."""
        logged = {record.candidate for record in self.decisions() if record.action == "register"}
        return [self._stored_decision(version) for version in self.versions() if version not in logged]

    def _complete_pending(self) -> list[DecisionRecord]:
        """Apply pending decisions, oldest first. Each was made under the lock against the production
        model of its time, which nothing has moved since (every change completes them first)."""
        pending = self._pending()
        for record in pending:
            self._apply(record)
        return pending

    def _set_production(self, version: str, reason: str, record: DecisionRecord) -> None:
        """Point production at `version`, as `record` decided (the caller logs `record` next)."""
        write_json_atomic(self.production_file, {"version": version, "since": now_iso(), "reason": reason})

    def _remove_production(self) -> None:
        self.production_file.unlink()

    def _pointer_exists(self) -> bool:
        return self.production_file.exists()

    def _log(self, record: DecisionRecord) -> None:
        append_line_durably(self.decision_log, record.to_json())

    def _remove_leftover(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def _leftovers(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(self.versions_dir.glob(".staging-*"))

    def _drop_damaged_log_lines(self) -> list[str]:
        if not self.decision_log.exists():
            return []
        lines = [line for line in self.decision_log.read_text().splitlines() if line.strip()]
        kept = []
        for line in lines:
            try:
                DecisionRecord.from_json(line)
                kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass
        dropped = len(lines) - len(kept)
        if not dropped:
            return []
        backup = self.decision_log.with_name(f"{self.decision_log.name}.damaged-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(self.decision_log, backup)
        write_text_atomic(self.decision_log, "".join(line + "\n" for line in kept))
        return [f"dropped {dropped} unreadable line(s) from {self.decision_log} (the old file is {backup})"]

    def _rebuild_production_pointer(self) -> list[str]:
        """Point production at the newest version the log made production that is still whole."""
        try:
            current = self.production()
        except RegistryError:
            current = None
        history = self.production_history()
        if not history and current is not None:  # no log to follow: keep a pointer whose model is whole
            try:
                self.model_path(current)
                return []
            except RegistryError:
                pass
        for version in reversed(history):
            try:
                self.model_path(version)
            except RegistryError:
                continue
            if version == current:
                return []
            self._log_repair(version, current, f"production pointer rebuilt from the decision log: {version}",
                             "rebuilt from the decision log by registry repair")
            return [f"production pointer set to {version}, as the decision log says"]
        if self._pointer_exists():
            self._remove_production()
            self._log_repair(None, current, "production pointer removed: no promoted version is whole")
            return [f"removed {self.production_file}: no promoted version is whole"]
        return []

    def _log_repair(self, version: str | None, before: str | None, reason: str, pointer_reason: str = "") -> None:
        """Log a repair, first pointing production at `version` when `pointer_reason` says why."""
        # A repair follows the log, so it is not itself a move in production's history (promoted=False).
        record = DecisionRecord(action="repair", candidate=version, production_before=before, promoted=False,
                                reason=reason, time=now_iso())
        if pointer_reason:
            self._set_production(version, pointer_reason, record)
        self._log(record)


def assemble_version(folder: Path, version: str, files: dict[str, Path], texts: dict[str, str], record: dict,
                     decision: DecisionRecord, model_path: str) -> None:
    """Write a version's files into a new `folder`, its `version.json` last, all fsynced."""
    folder.mkdir(parents=True)
    for name, source in files.items():
        shutil.copyfile(source, folder / name)
    for name, text in texts.items():
        (folder / name).write_text(text)
    export_saved_model(model_path, folder / SAVED_MODEL_DIR)
    decision = replace(decision, candidate=version)
    write_json_atomic(folder / "version.json", {**record, "version": version, "decision": decision.to_dict()})
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def open_registry(location: str | Path, splits_dir: Path | None = None) -> Registry:
    """The registry at `location`: a folder (`Registry`, guarded by a file lock), or a URL in an
    S3-compatible store (`SharedRegistry`, kept consistent by conditional writes)."""
    if store.is_url(location):
        from mnist_pipeline.core.registry.shared_registry import SharedRegistry

        return SharedRegistry(str(location), splits_dir)
    return Registry(Path(location), splits_dir)


def _production_accuracy(verdict: Verdict) -> float | None:
    """Production's accuracy on the candidate's test split, if the gate compared the two."""
    comparison = verdict.comparison
    return comparison.production_correct / comparison.total if comparison else None


def _framework_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}
