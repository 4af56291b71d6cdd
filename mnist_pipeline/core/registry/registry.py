"""The model registry's policy: numbered versions, a production pointer and a decision log, over a
storage backend (backend.py) that is a local folder (local.py) or an S3-compatible store
(object_store.py). Each backend's module docstring describes its format.

The registry owns its protocol: `register`, `promote`, `rollback` and `repair` each run in the
backend's transaction, first complete a registration that a dying process left half done, then decide
and record. A version is published whole or not at all; the gate's decision is stored inside it before
production moves, so it can be completed. Production moves only by a conditional write of the pointer
read before: where another writer got there first (the store has no lock), the operation reads
production again and, for a registration, applies the gate again against the new production model,
so two registrations racing give two versions and production is the better one that passed.

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
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mnist_pipeline.core.data.mnist import read_bundle
from mnist_pipeline.core.data.splits import SplitFiles
from mnist_pipeline.core.evaluation.gate import GateSettings, Scored, Verdict, gate
from mnist_pipeline.core.evaluation.scoring import (
    PREDICTIONS,
    Evaluation,
    probabilities_on_test_split,
    read_predictions,
)
from mnist_pipeline.core.modelling.export import export_saved_model
from mnist_pipeline.core.modelling.light import convert_verified
from mnist_pipeline.core.modelling.litert import LIGHT_MODEL_FILE
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.registry.backend import REPAIR_COMMAND, VERSION_PATTERN, Backend, Pointer, RegistryError
from mnist_pipeline.core.registry.decisions import DecisionRecord, now_iso
from mnist_pipeline.core.registry.report import render_model_card
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.storage.paths import bundled_mnist_dir
from mnist_pipeline.core.support.faults import crash_point, inject_fault
from mnist_pipeline.core.support.files import sha256_file, write_json_atomic
from mnist_pipeline.core.support.quiet_tensorflow import import_tensorflow

USER_VERSION_PATTERN = re.compile(r"^[vV]?(\d{1,9})$")
SAVED_MODEL_DIR = "saved_model"
# A version registered before light models keeps its record beside version.json (never rewritten):
# `convert` adds model.tflite, then this file, create-only.
LIGHT_RECORD_FILE = "light_model.json"
MAX_SWAPS = 20  # production moved this often while one operation tried: something is wrong


def version_name(text: str) -> str:
    """The version a user means by `3`, `v3` or `v0003`: `v0003`."""
    match = USER_VERSION_PATTERN.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise RegistryError(f"{text!r} is not a version; give its number: 3, v3 or v0003")
    return f"v{int(match.group(1)):04d}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RegistryError(f"Registry file {path} is unreadable ({error}).") from error
    if not isinstance(content, dict):
        raise RegistryError(f"Registry file {path} is unreadable (not a JSON object).")
    return content


@dataclass(frozen=True)
class Candidate:
    """A trained and evaluated model offered to the registry by one run."""

    trained: TrainedModel
    evaluation: Evaluation
    data: SplitFiles
    gate: GateSettings
    run_params: dict[str, Any]
    flow_run_id: str | None = None

    @property
    def source_run(self) -> str:
        """The run folder the model comes from: its URL in the artifact store, or its path."""
        return store.ref_of(Path(self.trained.model_path).parent)


class Registry:
    def __init__(self, backend: Backend, splits_dir: Path | None = None):
        """`splits_dir` is where `promote` looks for a version's data split, to re-test production on
        it when the two were tested on different test splits."""
        self.backend = backend
        self.splits_dir = Path(splits_dir) if splits_dir is not None else None

    @property
    def location(self) -> str:
        """How messages name the registry: its folder or URL."""
        return self.backend.location

    @property
    def decision_log(self) -> str:
        """How messages name the decision log."""
        return self.backend.log_location

    # Reading -----------------------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        """A local folder holding the version's files."""
        _check_name(version)
        return self.backend.version_folder(version)

    def versions(self) -> list[str]:
        return self.backend.versions()

    def require(self, version: str) -> None:
        """Fail, listing the registered versions, unless `version` is one of them."""
        if version not in self.versions():
            known = ", ".join(self.versions()) or "none yet"
            raise RegistryError(f"No version {version} in the registry {self.location} (registered: {known}).")

    def read_json(self, version: str, name: str) -> dict[str, Any]:
        """One JSON file of a version (version.json, metrics.json, params.json)."""
        _check_name(version)
        try:
            path = self.backend.version_file(version, name)
        except FileNotFoundError as error:
            raise RegistryError(
                f"Registry file {store.join(self.location, 'versions', version, name)} is missing."
            ) from error
        return _read_json(path)

    def read_version(self, version: str) -> dict[str, Any]:
        return self.read_json(version, "version.json")

    def production(self) -> str | None:
        """The production version's name, or None before the first promotion."""
        return self._production().version

    def _production(self) -> Pointer:
        """The pointer, checked: it is readable and names a version that exists (or none)."""
        pointer = self.backend.read_pointer()
        where = self.backend.pointer_location
        version = pointer.version
        if pointer.problem is not None or (version is not None and not VERSION_PATTERN.match(version)):
            raise RegistryError(
                f"Production pointer {where} is unreadable ({pointer.problem or f'{version!r} is not a version'}). "
                f"Run `{REPAIR_COMMAND}` to rebuild it from the decision log."
            )
        if version is not None and version not in self.versions():
            raise RegistryError(
                f"Production pointer {where} names {version}, which is not in {store.join(self.location, 'versions')}. "
                f"Restore that version, or run `{REPAIR_COMMAND}` to point production at the last promoted "
                "version that exists."
            )
        return pointer

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

    def light_record(self, version: str) -> dict[str, Any] | None:
        """What version.json (or, for a version converted after it was registered, its
        light_model.json) says of the version's light model; None for a version never converted."""
        record = self.read_version(version).get("light_model")
        if record is None:
            try:
                path = self.backend.version_file(version, LIGHT_RECORD_FILE)
            except FileNotFoundError:  # the store has no such object
                return None
            if not path.is_file():  # the folder has no such file
                return None
            record = _read_json(path)
        return dict(record)

    def light_model_path(self, version: str) -> Path | None:
        """The version's light model (`model.tflite`), after checking that it and the `.keras` model it
        was verified against are the files registered (a damaged version is not served at all); None
        when it has none (registered before light models, or its conversion failed or disagreed)."""
        self.model_path(version)
        record = self.light_record(version)
        if record is None or not record.get("file"):
            return None
        path = self.backend.version_file(version, str(record["file"]))
        if not path.is_file() or sha256_file(path) != record.get("sha256"):
            raise RegistryError(
                f"Light model {path} is missing or is not the one registered for {version} (SHA-256 "
                f"{record.get('sha256')}); it will not be used. Restore the version folder from a backup."
            )
        return path

    def decisions(self) -> list[DecisionRecord]:
        records = []
        for entry in self.backend.decision_entries():
            try:
                records.append(DecisionRecord.from_json(entry.text))
            except (ValueError, KeyError, TypeError) as error:
                raise RegistryError(
                    f"{entry.where} is not a decision record ({error}): cut short or edited by hand. Run "
                    f"`{REPAIR_COMMAND}` (it sets it aside and keeps a copy)."
                ) from error
        return records

    def production_history(self) -> list[str]:
        """The versions production has moved to, oldest first, with rolled-back ones taken off:
        the last is production, the one before it is where a rollback goes."""
        history: list[str] = []
        for record in self.decisions():
            if record.action == "rollback" and history:
                history.pop()
            elif record.moves_production and record.candidate is not None:
                history.append(record.candidate)
        return history

    def statuses(self) -> dict[str, str]:
        """Each version's status: promoted or rejected by its last decision, or rolled back."""
        status = {version: str(self.read_version(version)["status"]) for version in self.versions()}
        for record in self.decisions():
            if record.action == "rollback" and record.production_before is not None:
                status[record.production_before] = record.verdict
            elif record.candidate is not None and (
                record.action == "register" or (record.action == "promote" and record.promoted)
            ):
                status[record.candidate] = record.verdict  # a refused manual promotion changes nothing
        return status

    # Changing (each operation in the backend's transaction) -----------------------------------

    def register(self, candidate: Candidate, *, attempt: int = 1) -> DecisionRecord:
        """Add the candidate as a new version and apply the gate, exactly once however often this is
        called for the same run's model: a retry finds the version by its model's checksum and run
        folder, and completes what is missing (production pointer, log entry). `attempt` (from 1) is
        for fault injection."""
        model_sha256 = sha256_file(Path(candidate.trained.model_path))
        with self.backend.transaction():
            self._complete_pending()
            version = self._find(model_sha256, candidate.source_run)
            if identical := self._identical(candidate, version):
                return self._unchanged(candidate, identical)
            if version is None:
                version = self._add_version(candidate, model_sha256)
                crash_point("register:added")  # the version exists; production has not moved; nothing is logged
                inject_fault("register", attempt)
            return self._apply(self._stored_decision(version))

    def promote(self, version: str, who: str, why: str, *, force: bool = False, **settings: Any) -> DecisionRecord:
        """Make `version` production if it passes the gate with the settings it was registered with
        (any of `GateSettings`' fields given here and not None replace them, e.g. `threshold=0.98`),
        or past the gate with `force`; the decision is logged either way. A damaged model is never
        made production, not even forced."""
        return self._retrying(lambda: self._promote(version, who, why, force, settings))

    def _promote(self, version: str, who: str, why: str, force: bool, settings: dict[str, Any]) -> DecisionRecord:
        with self.backend.transaction():
            self._complete_pending()
            self.require(version)
            self.model_path(version)
            pointer = self._production()
            if version == pointer.version:
                raise RegistryError(f"{version} is already the production model; nothing to promote")
            metrics = self.read_json(version, "metrics.json")
            limits = replace(
                self._registered_settings(version),
                **{name: value for name, value in settings.items() if value is not None},
            )
            try:
                verdict, _ = self._gate_version(version, limits)
            except RegistryError as error:
                if not force:
                    raise
                verdict = Verdict(False, f"the gate could not be applied: {error}", (), None)
            passed = verdict.promoted
            record = DecisionRecord(
                action="promote",
                candidate=version,
                production_before=pointer.version,
                time=now_iso(),
                candidate_accuracy=metrics["correct"] / metrics["total"],
                threshold=limits.threshold,
                who=who,
                why=why,
                **{
                    **_decided(verdict),
                    "promoted": passed or force,
                    "forced": force and not passed,
                    "reason": verdict.reason if passed or not force else f"forced past the gate: {verdict.reason}",
                },
            )
            if record.promoted:
                pointer = self._set_production(pointer, version, f"promoted by {who}: {why}", record)
            self._log(record, pointer)
        return record

    def rollback(self, who: str, why: str) -> DecisionRecord:
        """Move production back to the version that was production before it."""
        return self._retrying(lambda: self._rollback(who, why))

    def _rollback(self, who: str, why: str) -> DecisionRecord:
        with self.backend.transaction():
            self._complete_pending()
            pointer, history = self._production(), self.production_history()
            current = pointer.version
            if current is None:
                raise RegistryError("There is no production model to roll back.")
            if not history or history[-1] != current:
                raise RegistryError(
                    f"Production pointer {self.backend.pointer_location} names {current}, but the decision log "
                    f"{self.decision_log} says {history[-1] if history else 'none'}; was one edited by hand? "
                    "Fix the pointer, or set production explicitly with `registry promote N --force`."
                )
            if len(history) < 2:
                raise RegistryError(
                    f"{current} is the first production model; there is no earlier one to roll back to."
                )
            previous = history[-2]
            self.model_path(previous)
            record = DecisionRecord(
                action="rollback",
                candidate=previous,
                production_before=current,
                promoted=True,
                reason=f"production rolled back from {current} to {previous}",
                time=now_iso(),
                who=who,
                why=why,
            )
            pointer = self._set_production(pointer, previous, f"rolled back from {current} by {who}: {why}", record)
            self._log(record, pointer)
        return record

    def _retrying(self, operation: Callable[[], DecisionRecord]) -> DecisionRecord:
        """Run `operation` again while its conditional write of the pointer is refused."""
        for _ in range(MAX_SWAPS):
            try:
                return operation()
            except store.Conflict:
                continue  # production moved meanwhile: decide again on what it is now
        raise RegistryError(
            f"Production in {self.location} moved {MAX_SWAPS} times while this operation tried to change it; try again."
        )

    def convert(self, version: str) -> dict[str, Any]:
        """Give a version registered before light models its light model, verified on the test split
        it was tested on (found under `splits_dir`), else on MNIST's test images; returns its record.
        The version's own files are never changed: the light model and its record are added beside."""
        with self.backend.transaction():
            self.require(version)
            if (known := self.light_record(version)) is not None:
                return known
            model = self.model_path(version)
            try:
                images = self._split_of(version).load("test")[0]
            except RegistryError:
                images = read_bundle(bundled_mnist_dir())["test"][0]
            with tempfile.TemporaryDirectory() as scratch:
                folder = Path(scratch)
                record = {**convert_verified(model, folder, images), "converted": now_iso()}
                (folder / LIGHT_RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
                added = [LIGHT_MODEL_FILE] if record["file"] else []
                self.backend.add_files(version, {name: folder / name for name in [*added, LIGHT_RECORD_FILE]})
        return record

    # Checking and repairing ----------------------------------------------------------------------

    def check(self) -> list[str]:
        """Every inconsistency found, each naming the file and what to do; empty when all is well."""
        problems = [
            f"{leftover}: left by an interrupted registration; `{REPAIR_COMMAND}` removes it"
            for leftover in self.backend.leftovers()
        ]
        for version in self.versions():
            try:
                self.light_model_path(version)  # checks model.keras first
            except RegistryError as error:
                problems.append(str(error))
        try:
            pending = self._pending()
            history = self.production_history()
        except RegistryError as error:
            return problems + [str(error)]
        problems += [
            f"{store.join(self.location, 'versions', str(record.candidate))}: registered but its decision "
            f"({record.verdict}) was never applied (the process died); `{REPAIR_COMMAND}` applies it"
            for record in pending
        ]
        try:
            production = self.production()
        except RegistryError as error:
            return problems + [str(error)]
        if history and production != history[-1]:
            problems.append(
                f"Production pointer {self.backend.pointer_location} names {production}, but the "
                f"decision log says {history[-1]}; `{REPAIR_COMMAND}` follows the log"
            )
        return problems

    def repair(self) -> list[str]:
        """Bring the registry back to a consistent state from its versions and decision log; returns
        what was done. Versions themselves are never changed or removed."""
        done = []
        with self.backend.transaction():
            for leftover in self.backend.leftovers():
                self.backend.remove_leftover(leftover)
                done.append(f"removed {leftover}")
            damaged = [entry for entry in self.backend.decision_entries() if not _is_record(entry.text)]
            done += self.backend.set_aside(damaged) if damaged else []
            done += [
                f"applied the decision on {record.candidate} ({record.verdict})"
                for record in self._complete_pending(everything=True)
            ]
            done += self._rebuild_production_pointer()
        return done

    # Internals (callers are in the transaction) ------------------------------------------------

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
        if logged := self._logged("unchanged", identical, candidate.flow_run_id):
            return logged
        pointer = self._production()
        production = pointer.version
        record = DecisionRecord(
            action="unchanged",
            candidate=identical,
            production_before=production,
            promoted=False,
            reason=f"identical to {identical} (the same weights, trained on the same data): no new version; "
            f"production stays {production or 'unset'}",
            time=now_iso(),
            candidate_accuracy=candidate.evaluation.accuracy,
            threshold=candidate.gate.threshold,
            flow_run_id=candidate.flow_run_id,
        )
        self._log(record, pointer)
        return record

    def _logged(self, action: str, candidate: str | None, flow_run_id: str | None = None) -> DecisionRecord | None:
        """The last logged decision of this action on `candidate` (for that flow run, if given)."""
        for record in reversed(self.decisions()):
            if (record.action, record.candidate) == (action, candidate) and (
                flow_run_id is None or record.flow_run_id == flow_run_id
            ):
                return record
        return None

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

    def _gate_version(self, version: str, limits: GateSettings) -> tuple[Verdict, str | None]:
        """The gate's verdict on a registered version against today's production, and production's name."""
        test_split = self.read_json(version, "metrics.json")["test_split_sha256"]
        split = functools.partial(self._split_of, version)  # found only if a model must be re-tested
        champion = self._champion(test_split, split)
        verdict = gate(self._scored(version, test_split, split), champion, limits)
        return verdict, champion.version if champion else None

    def _registered_settings(self, version: str) -> GateSettings:
        """The gate settings `version` was registered with; those it was registered without (it
        predates them) are today's defaults."""
        defaults = PipelineParameters.model_validate({}).model_dump()
        return GateSettings.of({**defaults, **self.read_json(version, "params.json")})

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
        """Gate the candidate against production, then publish it whole as the next version."""
        trained, evaluation = candidate.trained, candidate.evaluation
        metrics = _read_json(Path(evaluation.metrics_path))
        scored = Scored("candidate", *read_predictions(Path(evaluation.predictions_path)))
        champion = self._champion(metrics["test_split_sha256"], lambda: candidate.data)
        verdict = gate(scored, champion, candidate.gate)
        decision = DecisionRecord(
            action="register",
            candidate=None,
            production_before=champion.version if champion else None,
            time=now_iso(),
            candidate_accuracy=evaluation.accuracy,
            threshold=candidate.gate.threshold,
            flow_run_id=candidate.flow_run_id,
            **_decided(verdict),
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
        files = {
            "model.keras": Path(trained.model_path),
            "metrics.json": Path(evaluation.metrics_path),
            PREDICTIONS: Path(evaluation.predictions_path),
            "history.json": Path(trained.history_path),
            **{Path(p).name: Path(p) for p in evaluation.plot_paths},
        }
        with tempfile.TemporaryDirectory() as scratch:
            record["light_model"] = convert_verified(trained.model_path, Path(scratch), candidate.data.load("test")[0])
            if record["light_model"]["file"]:
                files[LIGHT_MODEL_FILE] = Path(scratch) / LIGHT_MODEL_FILE
            texts = {
                "params.json": json.dumps(params, indent=2, sort_keys=True) + "\n",
                "model_card.md": render_model_card(record, params, metrics, decision),
            }

            def assemble(folder: Path, version: str) -> None:
                write_version(folder, version, files, texts, record, decision, trained.model_path)
                crash_point("register:staged")  # complete, not yet published

            return self.backend.publish(assemble, candidate.flow_run_id)

    def _stored_decision(self, version: str) -> DecisionRecord:
        """The gate's decision made when `version` was added, as stored in its version.json."""
        # schema 1 stored it without the version's name
        return DecisionRecord.from_dict({**self.read_version(version)["decision"], "candidate": version})

    def _apply(self, record: DecisionRecord) -> DecisionRecord:
        """Move production (if promoted) and log a registration's decision, unless this was done
        already; returns the decision applied. If production moved since the gate was applied (another
        writer, where nothing keeps them out), the gate is applied again against the production model
        of now; a refused conditional write of the pointer starts over."""
        for _ in range(MAX_SWAPS):
            if logged := self._logged("register", record.candidate):
                return logged
            pointer = self.backend.read_pointer()
            moved_by = pointer.decision or {}
            if (moved_by.get("action"), moved_by.get("candidate")) == ("register", record.candidate):
                self._log_production_move(pointer)  # this registration moved production; its log entry is missing
                continue
            if pointer.problem is None and pointer.version != record.production_before:
                record = self._gate_again(record)
            try:
                if record.promoted and record.candidate is not None:
                    pointer = self._set_production(pointer, record.candidate, record.reason, record)
                self._log(record, pointer)
                return record
            except store.Conflict:
                continue
        raise RegistryError(
            f"Production in {self.location} moved {MAX_SWAPS} times while {record.candidate} was "
            f"being registered; `{REPAIR_COMMAND}` applies its decision."
        )

    def _gate_again(self, record: DecisionRecord) -> DecisionRecord:
        """`record`'s registration decided again against today's production model."""
        version = str(record.candidate)
        verdict, champion = self._gate_version(version, self._registered_settings(version))
        return replace(record, production_before=champion, time=now_iso(), **_decided(verdict))

    def _pending(self) -> list[DecisionRecord]:
        """Registrations whose decision was never logged: their process died after adding the version
        (or, where nothing keeps other writers out, is registering it right now)."""
        logged = {record.candidate for record in self.decisions() if record.action == "register"}
        return [self._stored_decision(version) for version in self.versions() if version not in logged]

    def _complete_pending(self, everything: bool = False) -> list[DecisionRecord]:
        """Complete what dead processes left half done; returns the decisions applied. The decision
        that last moved production is logged if it is not. Pending registrations are applied, oldest
        first, where no registration can be running now (the backend's transaction is exclusive), or
        with `everything` (repair: the user says none is). Each was made against the production model
        of its time; `_apply` applies the gate again if production moved since."""
        done = self._log_production_move(self.backend.read_pointer())
        if everything or self.backend.exclusive:
            done += [self._apply(record) for record in self._pending()]
        return done

    def _log_production_move(self, pointer: Pointer) -> list[DecisionRecord]:
        """Log the decision carried by the pointer (the store's), if its process died before logging it."""
        if not pointer.decision:
            return []
        record = DecisionRecord.from_dict(pointer.decision)
        if record in self.decisions():
            return []
        self._log(record, pointer)
        return [record]

    def _set_production(self, pointer: Pointer, version: str | None, reason: str, record: DecisionRecord) -> Pointer:
        """Point production at `version` as `record` decided, if it is still `pointer` (else
        `store.Conflict`); the caller logs `record` next."""
        return self.backend.write_pointer(version, reason, record, pointer.token)

    def _log(self, record: DecisionRecord, pointer: Pointer) -> None:
        self.backend.append_decision(record, pointer)

    def _rebuild_production_pointer(self) -> list[str]:
        """Point production at the newest version the log made production that is still whole."""
        pointer = self.backend.read_pointer()
        try:
            current = self._production().version
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
            self._log_repair(
                pointer,
                version,
                current,
                f"production pointer rebuilt from the decision log: {version}",
                "rebuilt from the decision log by registry repair",
            )
            return [f"production pointer set to {version}, as the decision log says"]
        if pointer.version is not None or pointer.problem is not None:
            reason = "production pointer removed: no promoted version is whole"
            self._log_repair(pointer, None, current, reason, reason)
            return [f"removed {self.backend.pointer_location}: no promoted version is whole"]
        return []

    def _log_repair(
        self, pointer: Pointer, version: str | None, before: str | None, reason: str, pointer_reason: str
    ) -> None:
        """Point production at `version` (None: at nothing) for `pointer_reason`, and log the repair."""
        # A repair follows the log, so it is not itself a move in production's history (promoted=False).
        record = DecisionRecord(
            action="repair", candidate=version, production_before=before, promoted=False, reason=reason, time=now_iso()
        )
        pointer = self._set_production(pointer, version, pointer_reason, record)
        self._log(record, pointer)


def write_version(
    folder: Path,
    version: str,
    files: dict[str, Path],
    texts: dict[str, str],
    record: dict[str, Any],
    decision: DecisionRecord,
    model_path: str,
) -> None:
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


def _check_name(version: str) -> None:
    if not VERSION_PATTERN.match(version):
        raise RegistryError(f"{version!r} is not a version name; versions look like v0001")


def _is_record(text: str) -> bool:
    try:
        DecisionRecord.from_json(text)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def _decided(verdict: Verdict) -> dict[str, Any]:
    """A decision record's fields that the gate's verdict gives: the one place they are copied."""
    comparison = verdict.comparison  # production's accuracy on the candidate's test split, if compared
    champion_accuracy = comparison.production_correct / comparison.total if comparison else None
    return {
        "promoted": verdict.promoted,
        "reason": verdict.reason,
        "champion_accuracy": champion_accuracy,
        **verdict.record_fields(),
    }


def _framework_versions() -> dict[str, str]:
    tf = import_tensorflow()
    import keras

    return {"tensorflow": tf.__version__, "keras": keras.__version__}
