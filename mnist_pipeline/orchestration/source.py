"""The code a team deployment runs: a repository URL and a commit, fixed when it is deployed.

prefect.yaml's `team-on-demand` deployment calls `pin_source` as its build step (at `prefect deploy`,
on the deploying machine) and writes its answer into its `git_clone` pull step, so every worker, on
any machine, clones that repository at that commit before each run. (Prefect 3.9 resolves
`{{ $VARIABLE }}` in pull steps only when a run starts, from the worker's environment: the commit
would then be whatever each worker has set, not one pinned in the deployment.)

    MNIST_REPO_URL      the repository the workers clone (default: this checkout's `origin`, or the
                        checkout itself when it has none: reachable from this machine only)
    MNIST_REPO_COMMIT   the commit they check out (default: this checkout's HEAD)

Deployed from a folder that is not a git checkout, without them, the deployment is still created
(so `prefect deploy --all` deploys the rest) but its runs fail at the clone, naming MNIST_REPO_URL.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mnist_pipeline.core.support import settings

REPO_URL_ENV = settings.REPO_URL
REPO_COMMIT_ENV = settings.REPO_COMMIT


def _git(*args: str, cwd: Path) -> str | None:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def pin_source(directory: str = ".") -> dict[str, str]:
    """Prefect build step: `{"repository": URL, "commit": SHA}` (see the module's docstring)."""
    here = Path(directory).resolve()
    repository = (
        settings.read(REPO_URL_ENV)
        or _git("remote", "get-url", "origin", cwd=here)
        or _git("rev-parse", "--show-toplevel", cwd=here)
    )
    commit = settings.read(REPO_COMMIT_ENV) or _git("rev-parse", "HEAD", cwd=here)
    if not repository or not commit:  # not fatal: `prefect deploy --all` must still deploy the rest
        print(
            f"warning: no repository to pin the team deployment to ({here} is not a git checkout with a commit): "
            f"its runs will fail until it is deployed again with {REPO_URL_ENV} and {REPO_COMMIT_ENV} set"
        )
        return {"repository": f"{REPO_URL_ENV}-was-not-set-at-deploy-time", "commit": ""}
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ValueError(
            f"{REPO_COMMIT_ENV}={commit!r} is not a full commit id (40 hex digits): pin a commit, "
            "not a branch or tag, e.g. the output of `git rev-parse HEAD`"
        )
    if settings.read(REPO_COMMIT_ENV) is None and _git("status", "--porcelain", "--untracked-files=no", cwd=here):
        print(f"note: the team deployment runs commit {commit[:12]}; this checkout's uncommitted changes are not in it")
    return {"repository": repository, "commit": commit}
