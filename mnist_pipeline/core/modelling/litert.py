"""Running a version's light model (`model.tflite`) with LiteRT, without TensorFlow.

Importing `ai_edge_litert` takes about a tenth of a second and no TensorFlow; the same CNN runs about
as fast as under Keras for big batches and several times faster for the small ones a service sees
(bench/serve_results.md). The model takes raw uint8 images [n, 28, 28], as the `.keras` file does
(its first layer scales them), and returns the probabilities [n, 10].

An interpreter is not thread-safe and holds its tensors' buffers: one lock per model serialises the
calls (the service makes one model call at a time anyway). The input tensor is resized to each
batch's size: that costs microseconds, where padding a small batch to a fixed size costs the whole
batch's compute.

Nothing here imports TensorFlow; `tests/test_light_runtime.py` checks it in a fresh process. Nor
anything of this project: a version mirrored to MLflow carries a copy of this file as its pyfunc
loader (`_load_pyfunc`, see `core/tracking/model_sync.py`), so that a team loads it with
`mlflow.pyfunc.load_model` where only numpy and `ai-edge-litert` are installed.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np

LIGHT_MODEL_FILE = "model.tflite"
RUNTIME = "litert"
# One thread a call: on this 2-core machine a second thread made every batch size slower (the other
# core serves HTTP), and the service's parallelism is its micro-batches and processes.
THREADS = 1


class LightModel:
    """A LiteRT model of raw uint8 images [n, 28, 28] -> probabilities [n, 10]."""

    def __init__(self, path: str | Path, quiet: bool = False):
        """`quiet`: without LiteRT's line on stderr (`_without_stderr`); only for a process that has no
        other thread writing to stderr while the model loads, such as `mnist-pipeline predict`."""
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=THREADS)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        if quiet:
            _without_stderr(self._interpreter.allocate_tensors)
        else:
            self._interpreter.allocate_tensors()
        self._size = -1
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities [n, 10] (float32) of uint8 images [n, 28, 28]."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        with self._lock:
            if len(images) != self._size:
                self._interpreter.resize_tensor_input(self._input, images.shape, strict=False)
                self._interpreter.allocate_tensors()
                self._size = len(images)
            self._interpreter.set_tensor(self._input, images)
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output))  # a copy: the buffer is reused


def _without_stderr(call) -> None:
    """Run `call` with the process's stderr (file descriptor 2) pointed at /dev/null.

    The first allocation of an interpreter's tensors applies LiteRT's XNNPACK delegate, and its C++
    runtime then writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to the
    file descriptor: nothing in the Python API turns that off. It would be the first line `predict`
    prints. What another thread writes to stderr in those milliseconds is lost: the service, whose
    model loads while uvicorn starts, lost uvicorn's "address already in use" that way, so the
    service does not ask for it.
    """
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon's closed descriptor): nothing to keep quiet
        call()
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        call()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Pyfunc:
    """MLflow's pyfunc face of a light model. MLflow checks the input against the model's signature
    first, and then hands a named tensor as {name: array}."""

    def __init__(self, model: LightModel):
        self.model = model

    def predict(self, data: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        if isinstance(data, dict):
            if len(data) != 1:
                raise ValueError(f"one array of images [n, 28, 28] expected, got {len(data)}: {sorted(data)}")
            [data] = data.values()
        return self.model.predict(data)


def _load_pyfunc(path: str) -> _Pyfunc:
    """MLflow's pyfunc entry point (the flavour's `loader_module`): the light model at `path`."""
    return _Pyfunc(LightModel(path))
