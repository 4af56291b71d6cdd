"""When a failed stage is worth another attempt."""

from __future__ import annotations

from typing import Any

from mnist_pipeline.core.support.errors import PermanentError


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry any failure except a `PermanentError` (the same input fails
    the same way every time)."""
    try:
        state.result()
    except PermanentError:
        return False
    except BaseException:
        return True
    return True
