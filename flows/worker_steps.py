"""Deployment steps that the Prefect worker runs before each flow run (see prefect.yaml)."""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.steps.pull import set_working_directory


def enter_project_root() -> dict[str, str]:
    """Run the flow from the root of the checkout this code is in, wherever the worker was started.

    A process worker would otherwise run each flow in a temporary directory, where the entrypoint
    `flows/mnist_flow.py` is not found. Unlike a path written into prefect.yaml, this follows the
    checkout to wherever it is (the package is installed from it in editable mode).
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "prefect.yaml").is_file():
        raise RuntimeError(
            f"{root} is not a checkout of the project (no prefect.yaml): the deployments in prefect.yaml "
            "run from a checkout with the package installed in editable mode (scripts/setup.sh)."
        )
    return set_working_directory(str(root))
