"""The worker's executor threads and step timeouts: run each claimed step, fail the overdue ones."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from .config import Clock
from .runner import CancelFlag, Runner
from .store import Store
from .values import ClaimedStep, ErrorInfo, Outcome

log = logging.getLogger("workflow.worker")

WAKE = object()  # on ``_done``: wake the loop
STOP = object()  # on ``_jobs``: a pool thread ends


@dataclass(slots=True)
class Running:
    step: ClaimedStep
    cancelled: CancelFlag = field(default_factory=CancelFlag)
    started: float | None = None  # monotonic time its executor began (set by the pool thread)
    started_at: datetime | None = None
    shown_executing: bool = True  # the store knows it started (false for a prefetched step until a heartbeat)
    finished: bool = False  # the pool thread handed in its outcome
    timed_out: bool = False  # the loop gave up on it: a late outcome is dropped
    thread: threading.Thread | None = None


class ExecutorPool:
    """The executor threads and the step timeouts of one worker, as a part of its ``Scheduler``.

    Threads take ``Running`` steps from ``_jobs`` and hand each outcome to ``_finished``; a step
    past its timeout is failed, and the thread stuck in it abandoned and replaced.
    """

    runner: Runner
    store: Store
    clock: Clock
    max_workers: int
    worker_id: str
    max_abandoned_threads: int
    exit_reason: str | None
    _jobs: queue.SimpleQueue[object]
    _done: queue.SimpleQueue[object]
    _threads: list[threading.Thread]
    _thread_count: int
    _in_flight: dict[str, Running]
    _pool_lock: threading.Lock
    _abandoned_threads: int
    _abandoning: threading.Event
    _loop_wakes_at: float

    def stop(self) -> None:
        raise NotImplementedError

    def _finished(self, outcome: Outcome) -> None:
        """A pool thread's outcome, on that thread: commit it or hand it to the loop."""
        raise NotImplementedError

    # -- timeouts ----------------------------------------------------------------------------
    def _next_timeout_in(self) -> float:
        """Seconds until the first running step may pass its timeout (inf: none has one)."""
        now = time.monotonic()
        first = math.inf
        for running in list(self._in_flight.values()):  # a pool thread's commit may change it meanwhile
            limit = running.step.timeout
            if limit is not None and not running.timed_out:
                began = running.started if running.started is not None else now
                first = min(first, began + limit.total_seconds() - now)
        return max(first, 0.0)

    def _time_out_overdue(self) -> list[Outcome]:
        """Fail attempts past their timeout; abandon and replace the threads stuck in them.

        The attempt's outcome is a retryable ``timeout`` committed now (freeing the queue slot);
        ``step.cancelled`` turns true so cooperative code stops; a late return is dropped.
        """
        now = time.monotonic()
        outcomes: list[Outcome] = []
        for running in list(self._in_flight.values()):
            limit = running.step.timeout
            if limit is None or running.started is None or running.timed_out:
                continue
            if now - running.started < limit.total_seconds():
                continue
            with self._pool_lock:
                if running.finished:
                    continue  # its outcome is already on the way
                running.timed_out = True
                self._abandoned_threads += 1
                abandoned = self._abandoned_threads
                if running.thread in self._threads:
                    self._threads.remove(running.thread)  # not joined at shutdown: it is stuck
            running.cancelled.set()
            step = running.step
            outcomes.append(self.runner.timed_out(step, limit, started_at=running.started_at))
            log.warning("step timed out run=%s step=%s attempt=%d timeout=%.3gs abandoned_threads=%d worker=%s",
                        step.run_id, step.step_id, step.attempt, limit.total_seconds(), abandoned, self.worker_id)
            self._add_thread()  # the stuck one keeps its executor; the pool keeps its size
            if abandoned > self.max_abandoned_threads and self.exit_reason is None:
                self.exit_reason = (f"{abandoned} executor threads are stuck past their step timeouts"
                                    f" (more than MAX_ABANDONED_THREADS={self.max_abandoned_threads})")
                log.error("worker draining: %s worker=%s", self.exit_reason, self.worker_id)
                self.stop()
        return outcomes


    # -- the pool --------------------------------------------------------------------------------
    def _start_pool(self) -> None:
        if self._threads:
            return
        for _ in range(self.max_workers):
            self._add_thread()

    def _add_thread(self) -> None:
        self._thread_count += 1
        thread = threading.Thread(target=self._work, name=f"workflow-executor-{self._thread_count}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _stop_pool(self) -> None:
        for _ in self._threads:
            self._jobs.put(STOP)
        # Daemon threads: one still inside a slow executor does not keep the process alive.
        for thread in self._threads:
            thread.join(timeout=0.05 if self._abandoning.is_set() else 0.5)
        self._threads = []

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is STOP:
                self.store.thread_done()
                return
            assert isinstance(item, Running)
            if item.cancelled.is_set():
                continue  # handed back before it started
            item.thread = threading.current_thread()
            item.started_at = self.clock()
            item.started = time.monotonic()
            if item.step.timeout is not None and (
                item.started + item.step.timeout.total_seconds() < self._loop_wakes_at
            ):
                self._done.put(WAKE)  # the loop's wait would outlast this step's timeout
            try:
                outcome = self.runner.execute(item.step, item.cancelled)
            except BaseException as exc:  # execute() catches executor errors; this is a bug guard
                log.exception("executor wrapper crashed run=%s step=%s", item.step.run_id, item.step.step_id)
                error = ErrorInfo(code="worker_error", message=repr(exc), retryable=True)
                outcome = self.runner.failure(item.step, error)
            with self._pool_lock:
                late = item.timed_out
                if late:
                    self._abandoned_threads -= 1
                else:
                    item.finished = True
            if late:
                # Its timeout was committed already; this thread was replaced, so it ends here.
                self.runner.discard_blobs(outcome.artifacts)
                log.info("late return of a timed-out step dropped run=%s step=%s attempt=%d", item.step.run_id,
                         item.step.step_id, item.step.attempt)
                self.store.thread_done()
                return
            self._finished(outcome)

