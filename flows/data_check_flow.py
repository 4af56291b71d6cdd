"""The change check: a cheap flow that decides whether the data moved on since the production model.

    fingerprint the data sources -> compare with production's -> emit `mnist.data.changed` if they differ

It reads checksums only (the MNIST files, the extra pictures), trains nothing and takes a second or
two. Scheduled nightly (prefect.yaml `nightly-data-check`); the training deployment
`retrain-on-change` has a trigger on the event, so a night with no new data runs no training.
"""

from __future__ import annotations

import functools
from typing import Any

from prefect import State, flow
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.states import Completed

from mnist_pipeline.core.data import extra_data
from mnist_pipeline.core.data.splits import data_fingerprint, source_checksums
from mnist_pipeline.core.modelling.parameters import DataParameters, takes_parameters, validate_parameters
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.storage.paths import ArtifactPaths
from mnist_pipeline.flows.mnist_flow import data_folders

DATA_CHANGED = "mnist.data.changed"
DATA_RESOURCE = "mnist.data"


@flow(name="mnist-data-check", log_prints=True)
@functools.partial(takes_parameters, model=DataParameters)
def check_data(**values: Any) -> State:
    """Emit `mnist.data.changed` when the data differ from what the production model was trained on.

    Ends in a `Completed` state named `Changed` or `Unchanged`.
    """
    params = validate_parameters(values, DataParameters)
    bundle_dir, extra_dir = data_folders(params)
    extra = extra_data.scan(extra_dir) if extra_dir else None
    current = data_fingerprint(source_checksums(params.data_source, bundle_dir), extra.fingerprint() if extra else ())
    paths = ArtifactPaths.resolve(params.artifacts_dir)
    registry = open_registry(paths.ref(paths.registry))
    production = registry.production()
    trained_on = registry.read_json(production, "params.json").get("data_fingerprint") if production else None
    log = get_run_logger()
    if current == trained_on:
        log.info("data unchanged since production %s was trained (fingerprint %s)", production, current[:12])
        return Completed(name="Unchanged", message=f"the data production {production} was trained on")
    why = (
        "no production model yet"
        if production is None
        else f"production {production} was trained on other data"
        if trained_on
        else f"production {production} has no data fingerprint (registered before fingerprints were kept)"
    )
    emit_event(
        event=DATA_CHANGED,
        resource={"prefect.resource.id": DATA_RESOURCE},
        payload={
            "fingerprint": current,
            "production": production,
            "extra_pictures": len(extra.pictures) if extra else 0,
        },
    )
    log.info("data changed (fingerprint %s): %s; emitted %s", current[:12], why, DATA_CHANGED)
    return Completed(name="Changed", message=why)
