"""Dynamic batching: concurrent requests share model calls, a full queue sheds load, a bad request fails alone."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tuneline.serving.errors import BadRequest, DeadlineExceeded, Overloaded, ServingError
from tuneline.serving.model import LoadedModel, ModelHolder, in_order


@dataclass(eq=False)
class _Pending:
    """One chunk of a request (at most a batch of texts): what the batcher queues."""

    texts: list[str]
    parameters: dict[str, Any]
    key: str  # requests run together only with the same parameters
    future: asyncio.Future
    arrived: float
    seed: int | None = None  # sampling: row i of this request draws from (seed, i)
    offset: int = 0  # the request's index of this chunk's first text
    next: _Pending | None = None  # the request's next chunk, queued when this one is taken


def _fatal(error: BaseException) -> bool:
    """Errors that must stop the server rather than fail a request. Everything else fails only its requests,
    BaseExceptions included: the tokenizer's Rust panics (pyo3's PanicException) derive from BaseException."""
    return isinstance(error, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit))


class Batcher:
    """Groups concurrent requests with the same parameters into batches of at most `max_texts` texts and runs
    them on `workers` model threads, off the event loop.

    A batch goes when it is full; when it holds `ready` texts (enough for every model thread) and a model
    thread is free; or when its oldest request has waited `max_wait` seconds. So a free core never waits out
    `max_wait` beside a queue that could feed it, and a busy model lets the queue grow into larger batches.
    A classifier's batch runs in length-sorted pieces spread over the free threads; a batch that runs as one
    call (generation) takes only its share of the queue, so that idle threads get the rest.

    A request of more than `max_texts` texts queues one chunk at a time: its next chunk joins the back of the
    queue when the previous one is taken, so requests that came later get their turn in between instead of
    waiting behind all of it. Past `max_queue` waiting texts a request is refused (Overloaded, 503). When a
    batch fails, each of its requests runs again alone: only those that fail alone fail, and a request that
    fails alone is searched for the input that does (BadRequest naming its index)."""

    def __init__(self, holder: ModelHolder, max_texts: int, max_wait: float, observe: Callable[[int], None],
                 workers: int = 1, ready: int | None = None, max_queue: int | None = None):
        self.holder, self.max_texts, self.max_wait, self.observe = holder, max_texts, max_wait, observe
        self.workers, self.ready = workers, min(ready or max_texts, max_texts)
        self.max_queue = max_queue
        self.pending: deque[_Pending] = deque()
        self.size = 0  # texts in `pending`
        self.waiting = 0  # texts submitted and not yet taken, later chunks of large requests included
        self.running = 0  # model calls handed to the threads and not finished (queued ones included)
        self.batches = 0  # batches running
        self.shed = 0  # requests refused for a full queue
        self.rate = 0.0  # texts per second the model got through lately (for Retry-After)
        self.arrived, self.go = asyncio.Event(), asyncio.Event()
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="tuneline-model")

    def enough(self) -> int:
        """Pending texts that make a batch go before `max_wait`. A classifier: any when the model is idle (waiting
        for company only pays when requests come faster than the model answers, and then it is busy: at one user
        197 against 77-86 requests/s, and no loss at 16, benchmarks/README.md), else `ready` while a model thread
        is free, else a full batch. Generation waits for company: a decoding step of 8 rows costs about what one
        of 1 row does, and a request takes long beside `max_wait`."""
        piecewise = self.holder.current is not None and self.holder.current.pieces is not None
        if piecewise and self.running == 0 and self.batches == 0:
            return 1
        return self.ready if piecewise and self.running < self.workers else self.max_texts

    def update(self) -> None:
        self.go.set() if self.pending and self.size >= self.enough() else self.go.clear()

    def retry_after(self) -> int:
        """Seconds until the queue has drained at the recent rate (1 at least)."""
        return max(1, math.ceil(self.waiting / self.rate)) if self.rate else 1

    def queue(self, item: _Pending) -> None:
        self.pending.append(item)
        self.size += len(item.texts)
        self.arrived.set()

    async def submit(self, texts: list[str], parameters: dict[str, Any] | None = None, seed: int | None = None,
                     timeout: float | None = None) -> tuple[LoadedModel, list[dict[str, Any]]]:
        """The version that answered and one output per text; Overloaded when the queue is full, DeadlineExceeded
        when `timeout` seconds pass first (its chunks not yet run are dropped)."""
        if self.max_queue is not None and self.waiting and self.waiting + len(texts) > self.max_queue:
            self.shed += 1
            raise Overloaded(f"the server's queue is full ({self.waiting} texts waiting, max_queue_texts="
                             f"{self.max_queue}); retry after {self.retry_after()} s", self.retry_after())
        loop = asyncio.get_running_loop()
        parameters = parameters or {}
        key, now = json.dumps(parameters, sort_keys=True), loop.time()
        chunks = [_Pending(texts[i : i + self.max_texts], parameters, key, loop.create_future(), now, seed, i)
                  for i in range(0, len(texts), self.max_texts)]
        for chunk, following in zip(chunks, chunks[1:]):
            chunk.next = following
        self.waiting += len(texts)
        self.queue(chunks[0])
        self.update()
        try:
            results = await asyncio.wait_for(asyncio.gather(*(chunk.future for chunk in chunks)), timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within the request's deadline of {timeout:g} s (request_timeout_s "
                                   "or the request's timeout); the server is busy or the request is large") from None
        finally:
            for chunk in chunks:  # a request given up (deadline, client gone, a failed chunk) runs no further
                if not chunk.future.done():
                    chunk.future.cancel()
        return results[0][0], [output for _, outputs in results for output in outputs]

    def take(self, limit: int | None = None) -> list[_Pending]:
        """The oldest pending request and the next ones with the same parameters, up to `limit` texts
        (`max_texts` by default; one request at least); the others keep their places. Chunks of requests
        given up are dropped, with the rest of their request."""
        limit = limit or self.max_texts
        batch, others, size, room = [], deque(), 0, True
        for item in self.pending:
            if item.future.done():  # given up: it and its later chunks leave the queue
                self.size -= len(item.texts)
                chunk = item
                while chunk is not None:
                    self.waiting -= len(chunk.texts)
                    chunk = chunk.next
            elif not batch or (room and item.key == batch[0].key and size + len(item.texts) <= limit):
                batch.append(item)
                size += len(item.texts)
            else:
                room = room and item.key != batch[0].key  # first come, first served among the same settings
                others.append(item)
        self.pending = others
        self.size -= size
        self.waiting -= size
        for item in batch:
            if item.next is not None:  # its request's next chunk waits behind everyone queued meanwhile
                item.next.arrived = asyncio.get_running_loop().time()
                self.queue(item.next)
        if not self.pending:
            self.arrived.clear()
        self.update()
        return batch

    async def call(self, model: LoadedModel, texts: list[str], parameters: dict[str, Any],
                   seeds: list[tuple[int, int]] | None) -> list[dict[str, Any]]:
        """One `model.predict` on a model thread."""
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, model.predict, texts, parameters,
                                                                    seeds)
        finally:
            self.running -= 1
            self.update()  # a thread is free: a queue that could feed it goes now

    async def predict(self, model: LoadedModel, texts: list[str], parameters: dict[str, Any],
                      seeds: list[tuple[int, int]] | None) -> list[dict[str, Any]]:
        """`model.predict` on the model threads: the batch's pieces at once, or the whole batch in one call."""
        pieces = model.pieces(texts) if model.pieces else [list(range(len(texts)))]
        if len(pieces) == 1:
            return await self.call(model, texts, parameters, seeds)
        return in_order(pieces, await asyncio.gather(*(
            self.call(model, [texts[i] for i in piece], parameters, [seeds[i] for i in piece] if seeds else None)
            for piece in pieces)))

    async def run(self) -> None:
        """The batcher's work until cancelled: up to `workers` batches at once."""
        await asyncio.gather(*(self.work() for _ in range(self.workers)))

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrived.wait()
            if not self.pending:  # another worker took them while this one woke
                continue
            oldest = self.pending[0]
            wait = oldest.arrived + self.max_wait - loop.time()
            if not self.go.is_set() and wait > 0:
                try:
                    await asyncio.wait_for(self.go.wait(), wait)
                except TimeoutError:
                    pass
                if not self.pending or self.pending[0] is not oldest:  # another worker took it: wait anew
                    continue
            model = self.holder.current  # one version for the whole batch, even if a reload lands meanwhile
            idle = max(1, self.workers - self.batches)
            batch = self.take(self.max_texts if model.pieces else min(self.max_texts, math.ceil(self.size / idle)))
            if not batch:  # all it held had been given up
                continue
            self.batches += 1
            started = time.perf_counter()
            try:
                await self.answer(model, batch)
            finally:
                self.batches -= 1
            rate = sum(len(item.texts) for item in batch) / max(time.perf_counter() - started, 1e-6)
            self.rate = 0.8 * self.rate + 0.2 * rate if self.rate else rate  # recent texts/s, for Retry-After

    def seeds(self, items: list[_Pending]) -> list[tuple[int, int]] | None:
        if items[0].seed is None:
            return None
        return [(item.seed, item.offset + i) for item in items for i in range(len(item.texts))]

    async def answer(self, model: LoadedModel, batch: list[_Pending]) -> None:
        """Run a batch and set each request's result; when the batch fails, its requests run alone."""
        texts = [text for item in batch for text in item.texts]
        self.observe(len(texts))
        try:
            outputs = await self.predict(model, texts, batch[0].parameters, self.seeds(batch))
        except BaseException as error:
            if _fatal(error):
                raise
            for item in batch:
                await self.answer_alone(model, item, error)
            return
        start = 0
        for item in batch:
            if not item.future.done():  # its client may have gone
                item.future.set_result((model, outputs[start : start + len(item.texts)]))
            start += len(item.texts)

    async def answer_alone(self, model: LoadedModel, item: _Pending, batch_error: BaseException) -> None:
        """One request of a failed batch on its own; if it fails too, the inputs that fail alone are named."""
        if item.future.done():
            return
        if len(item.texts) > 0:
            try:
                outputs = await self.predict(model, item.texts, item.parameters, self.seeds([item]))
            except BaseException as error:
                if _fatal(error):
                    raise
                batch_error = error
            else:
                if not item.future.done():
                    item.future.set_result((model, outputs))
                return
        bad = []
        for i, text in enumerate(item.texts):
            try:
                await self.call(model, [text], item.parameters,
                                [(item.seed, item.offset + i)] if item.seed is not None else None)
            except BaseException as error:
                if _fatal(error):
                    raise
                bad.append((item.offset + i, error))
        if item.future.done():
            return
        if len(bad) == len(item.texts) and isinstance(bad[0][1], (TypeError, ValueError)):
            item.future.set_exception(bad[0][1])  # refused whatever its texts: the request's parameters
        elif bad:
            where = ", ".join(f"input {index}: {type(error).__name__}: {error}"[:300] for index, error in bad[:5])
            item.future.set_exception(BadRequest(f"the model cannot run {len(bad)} of the request's inputs ({where})"))
        else:
            item.future.set_exception(ServingError(f"the model failed: {type(batch_error).__name__}: {batch_error}"))
