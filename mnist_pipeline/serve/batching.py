"""Micro-batching: requests that arrive together share one model call.

A call into the model costs about the same for 1 image as for 50 (the fixed cost is Python and
the runtime's dispatch), so one worker takes the requests waiting in the queue (up to `max_batch`
images), runs them as one batch in a thread (the event loop keeps accepting requests meanwhile, which
is what fills the next batch) and hands each request its rows. `max_batch=1` turns batching off: one
model call a request.

`window_seconds` > 0 makes a batch of fewer than `max_batch` images wait that long for more before it
runs. The service's default is 0, as Triton's dynamic batcher's: the requests that arrived while the
model ran make the next batch, and under load batches fill by themselves. A window only added its
length to every request's time: under `hey`'s 32 connections one process answered about half as many
requests with a 2 ms window as without (bench/serve_results.md).

At most `max_pending` requests are admitted at once (queued or in the running batch); one more gets
`ServiceBusy` straight away, which the app answers with 503, instead of waiting in an ever longer
queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Predict = Callable[[np.ndarray], tuple[str, np.ndarray]]  # images -> (model version, probabilities)


class ServiceBusy(Exception):
    """More requests than the queue admits are waiting; the client should retry shortly."""


@dataclass
class _Waiting:
    images: np.ndarray
    answer: asyncio.Future[tuple[str, np.ndarray]]


class MicroBatcher:
    def __init__(self, predict: Predict, max_batch: int, window_seconds: float, max_pending: int):
        self._predict = predict
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self.max_pending = max_pending
        self.pending = 0  # admitted requests not yet answered
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()

    async def predict(self, images: np.ndarray) -> tuple[str, np.ndarray]:
        """(version, probabilities [n, 10]) of uint8 images [n, 28, 28], from the batch they join."""
        if self.pending >= self.max_pending:
            raise ServiceBusy(
                f"the service is busy: {self.pending} requests are already waiting for the model "
                f"(at most {self.max_pending}); retry in a moment"
            )
        self.pending += 1
        try:
            answer: asyncio.Future[tuple[str, np.ndarray]] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Waiting(images, answer))
            return await answer
        finally:
            self.pending -= 1

    async def run(self) -> None:
        """The worker: collect a batch, run it, answer; forever (cancel the task to stop it)."""
        while True:
            batch = await self._collect()
            try:
                version, probabilities = await asyncio.to_thread(
                    self._predict, np.concatenate([waiting.images for waiting in batch])
                )
            except Exception as error:  # every request of the batch gets the failure
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(error)
                continue
            start = 0
            for waiting in batch:
                rows = probabilities[start : start + len(waiting.images)]
                start += len(waiting.images)
                if not waiting.answer.done():  # its client may have gone
                    waiting.answer.set_result((version, rows))

    async def _collect(self) -> list[_Waiting]:
        batch = [await self._queue.get()]
        images = len(batch[0].images)
        deadline = asyncio.get_running_loop().time() + self.window_seconds
        while images < self.max_batch:
            try:
                waiting = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    waiting = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(waiting)
            images += len(waiting.images)
        return batch
