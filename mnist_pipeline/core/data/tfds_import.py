"""Importing tensorflow-datasets without breaking the imports of the process's other threads.

tensorflow-datasets loads its optional dependencies lazily with etils' `epy.lazy_imports()`, a `with`
block around import statements in many of its modules, run as each module loads. That block swaps
`builtins.__import__` for the whole process (etils 1.15), so an import statement that another thread
runs meanwhile gets a lazy stand-in instead of the module or name it asked for. Seen in a flow run:
Prefect's log thread, whose `from prefect.settings import ...` got a stand-in that then failed, died
while the split stage imported tensorflow-datasets; every later log line of the run was lost, and the
process hung at its exit waiting for that thread's queue to drain.

`import_tfds` puts a version of the block in etils' place that makes the lazy imports for the thread
that entered it alone, then imports tensorflow-datasets. It makes the lazy stand-ins with etils' own
(private) `_lazy_import`: no public function of etils makes one, and the block must behave as etils'
does for tensorflow-datasets to load as it expects.
"""

from __future__ import annotations

import builtins
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_THIS_THREAD = threading.local()  # .lazy_import: the lazy import of a thread inside the block
_LOCK = threading.Lock()
_inside = 0  # threads inside the block; while any is, `_import` stands in for `builtins.__import__`
_plain_import: Callable[..., Any] = builtins.__import__


def _import(*args: Any, **kwargs: Any) -> Any:
    lazy = getattr(_THIS_THREAD, "lazy_import", None)
    return (lazy or _plain_import)(*args, **kwargs)


@contextmanager
def lazy_imports_of_this_thread(**options: Any) -> Iterator[None]:
    """etils' `epy.lazy_imports(**options)`, for the thread that enters it alone."""
    from etils.epy import lazy_imports_utils

    global _inside, _plain_import
    with _LOCK:
        if _inside == 0:
            _plain_import = builtins.__import__
            builtins.__import__ = _import
        _inside += 1
    _THIS_THREAD.lazy_import = functools.partial(
        lazy_imports_utils._lazy_import,
        error_callback=options.get("error_callback"),
        success_callback=options.get("success_callback"),
    )
    try:
        yield
    finally:
        _THIS_THREAD.lazy_import = None
        with _LOCK:
            _inside -= 1
            if _inside == 0:
                builtins.__import__ = _plain_import


def import_tfds() -> Any:
    """The `tensorflow_datasets` module, its lazy imports confined to the importing thread."""
    from etils import epy

    epy.lazy_imports = lazy_imports_of_this_thread  # tensorflow-datasets looks it up as each module loads
    import tensorflow_datasets

    return tensorflow_datasets
