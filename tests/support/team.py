"""What the team-mode tests read off a team stack: a clone's git state, the files it wrote for people
to read, and whether a secret shows in any of them."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(clone), *args], capture_output=True, text=True, check=True).stdout.strip()


def written_by(folder: Path) -> dict[str, str]:
    """{path: text} of every file the stack wrote for people to read: its logs and Prefect's homes."""
    roots = [folder / "logs", folder / "prefect-home", *(folder / "machines").glob("*/prefect-home")]
    return {str(path): path.read_text(errors="replace") for root in roots for path in root.rglob("*") if path.is_file()}


def assert_no_secret_in(texts: dict[str, str], secrets: dict[str, str]) -> None:
    for name, secret in secrets.items():
        assert len(secret) >= 16
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"{name} appears in {leaks}"
