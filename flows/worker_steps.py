"""Deployment steps that the Prefect worker runs before each flow run (see prefect.yaml)."""

from __future__ import annotations

from prefect.deployments.steps import set_working_directory

from tasks.paths import PROJECT_ROOT


def enter_project_root() -> dict[str, str]:
    """Run the flow from this project's root, wherever the worker was started.

    A process worker would otherwise run each flow in a temporary directory, where the entrypoint
    `flows/mnist_flow.py` is not found. Unlike a path written into prefect.yaml, this follows the
    project to wherever it is checked out.
    """
    return set_working_directory(str(PROJECT_ROOT))
