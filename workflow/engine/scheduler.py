"""The worker loop: claim under fenced leases, execute on a thread pool, heartbeat, commit.

The loop claims, heartbeats, reclaims, times out and commits batches; pool threads run
executors. A finished step is committed together with the next claim, in one transaction,
so a dependent made ready by a commit is claimed by the same worker at once, without waiting
for a poll. When the step a pool thread finished is the only one in flight (a chain), that
thread commits it and claims the next itself, then runs what it claimed: a hop then crosses
no thread, where handing the outcome to the loop and the next step back would wake two.
Commits in one process take turns under one lock, so the store sees one at a time.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

from .config import Clock, Config, PeriodicHook
from .context import install_log_capture
from .errors import StoreConflict, StoreUnavailable
from .observer import NullObserver, Observer
from .pool import WAKE, ExecutorPool, Running
from .rules import claim_capacity, heartbeat_interval
from .runner import Runner
from .store import ClaimResult, Store, WorkerInfo
from .values import ClaimedStep, ClaimRequest, CommitReport, CycleResult, ErrorInfo, Outcome, StepState

log = logging.getLogger("workflow.worker")

# --burst waits for steps due soon (a retry's backoff), not for a step scheduled hours ahead.
BURST_MAX_WAIT_SECONDS = 60.0

_T = TypeVar("_T")



def _log_outcome(outcome: Outcome, routine_level: int, worker_id: str) -> None:
    """One line per committed attempt: a success at ``routine_level``, a retry or failure at INFO."""
    level = routine_level if outcome.next_state == StepState.SUCCEEDED else logging.INFO
    if not log.isEnabledFor(level):
        return
    step = outcome.step
    duration = (
        (outcome.finished_at - outcome.started_at).total_seconds() * 1000
        if outcome.started_at and outcome.finished_at else 0.0
    )
    state = {StepState.READY: "retrying"}.get(outcome.next_state, str(outcome.next_state))
    extra = f" code={outcome.error.code}" if outcome.error else ""
    log.log(level, "step %s run=%s step=%s kind=%s attempt=%d duration_ms=%.1f worker=%s%s", state, step.run_id,
            step.step_id, step.kind, step.attempt, duration, worker_id, extra)


class Scheduler(ExecutorPool):
    """One worker process's loop. ``run`` until ``stop``; ``cycle`` for a single pass.

    It is handed what it needs, not the ``Runtime``: the store it drives, the runner of one
    attempt, the clock, the observer and the periodic hooks; ``on_start`` runs once as the loop starts.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        runner: Runner,
        clock: Clock,
        observer: Observer | None = None,
        periodic_hooks: Sequence[tuple[PeriodicHook, timedelta]] = (),
        on_start: Callable[[], object] | None = None,
        queues: Sequence[str] | None = None,
        site: str | None = None,
        max_workers: int | None = None,
        poll_interval: timedelta | None = None,
        lease_duration: timedelta | None = None,
        grace_period: timedelta | None = None,
        burst: bool = False,
        max_cycles: int | None = None,
        worker_id: str | None = None,
        log_steps: bool = False,
    ) -> None:
        self.store = store
        # Routine per-step lines (claimed, succeeded) at INFO only when asked (runworkers --log-steps),
        # else at DEBUG: formatting two lines per step costs the hot path. Retries and failures stay INFO.
        self.step_log_level = logging.INFO if log_steps else logging.DEBUG
        self.runner = runner
        self.clock = clock
        self.observer: Observer = observer if observer is not None else NullObserver()
        self.periodic_hooks = tuple(periodic_hooks)
        self._on_start = on_start
        self.queues = tuple(queues) if queues else None
        self.site = site or None
        self.max_workers = max_workers or config.max_workers
        self._fixed_prefetch = config.prefetch
        self._avg_exec_seconds = 1.0  # an estimate of step duration, updated from outcomes
        self.poll_seconds = (poll_interval or config.poll_interval).total_seconds()
        self.lease_duration = lease_duration or config.lease_duration
        self.heartbeat_seconds = heartbeat_interval(self.lease_duration, config.effective_heartbeat).total_seconds()
        self.grace_seconds = (grace_period if grace_period is not None else config.grace_period).total_seconds()
        self.burst = burst
        self.max_cycles = max_cycles
        self.worker_id = worker_id or config.default_worker_id()
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._thread_count = 0
        self._in_flight: dict[str, Running] = {}
        self._stopping = threading.Event()
        self._abandoning = threading.Event()
        self._pool_lock = threading.Lock()  # a step's outcome against its timeout
        # Held by whoever commits, claims or touches leases (the loop, or a pool thread committing
        # its own step): ``_in_flight`` and the store's per-process caches change only under it.
        self._commit_lock = threading.Lock()
        self._commit_in_pool = False  # pool threads may commit their own step (``run`` only)
        self._pool_may_commit = False
        self._due_at = 0.0  # monotonic time the next claim is worth trying (the last claim's wake_in)
        self._loop_wakes_at = 0.0  # when the loop's current wait ends, if it is waiting
        self._recheck_leases = False  # a pool thread's commit lost its reply: look for unknown leases
        self._abandoned_threads = 0  # pool threads stuck in an executor past its timeout
        self.max_abandoned_threads = config.max_abandoned_threads
        self.exit_reason: str | None = None  # set when the worker stopped itself because it is unhealthy
        self.totals = CycleResult()
        install_log_capture()

    # -- control from other threads ------------------------------------------------------
    def wake(self) -> None:
        """Wake the loop (a NOTIFY arrived, or a test wants an immediate claim)."""
        self._done.put(WAKE)

    def stop(self) -> None:
        """Stop claiming, let running steps finish within the grace period, hand back the rest."""
        self._stopping.set()
        self.wake()

    def abandon(self) -> None:
        """Hand back running steps now (a second signal)."""
        self._abandoning.set()
        self._stopping.set()
        self.wake()

    # -- one pass, for Runtime.run_once and tests --------------------------------------------
    def cycle(self) -> CycleResult:
        result = CycleResult()
        self._start_pool()
        try:
            result.reclaimed = self._reclaim()
            _, claimed = self._commit_and_claim([], self.max_workers)
            result.claimed = len(claimed.steps)
            outcomes: list[Outcome] = []
            next_beat = time.monotonic() + self.heartbeat_seconds
            while len(outcomes) < len(claimed.steps):
                outcomes.extend(self._collect(min(self.heartbeat_seconds, 1.0, self._next_timeout_in())))
                outcomes.extend(self._time_out_overdue())
                if time.monotonic() >= next_beat:
                    self._heartbeat()
                    next_beat = time.monotonic() + self.heartbeat_seconds
            report, _ = self._commit_and_claim(outcomes, 0)
            result.add(report)
        finally:
            self._stop_pool()
        return result

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> CycleResult:
        if self._on_start is not None:
            self._on_start()
        self._start_pool()
        self._pool_may_commit = self.store.keeps_thread_connections()
        self._call_store(
            lambda: self.store.register_worker(
                WorkerInfo(
                    worker_id=self.worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    queues=self.queues,
                    site=self.site,
                    max_workers=self.max_workers,
                ),
                self.clock(),
            )
        )
        stoppers = [stop for stop in (self.store.listen(self.wake), self.store.start_checkpointer()) if stop]
        log.info("worker started worker=%s max_workers=%d queues=%s site=%s", self.worker_id, self.max_workers,
                 ",".join(self.queues) if self.queues else "*", self.site or "-")
        outcomes: list[Outcome] = []
        cycles = 0
        next_reclaim = next_beat = next_check = next_adopt = 0.0
        hooks_due = [0.0] * len(self.periodic_hooks)
        stop_deadline: float | None = None
        failures = 0
        try:
            while True:
                free = self.capacity - len(self._in_flight)
                if not outcomes:
                    now = time.monotonic()
                    timeout = self._wait_seconds(now, free, min(next_beat, next_check))
                    # Announce the wait, then work it out again: a pool thread's claim that moved
                    # the due time sooner (or dispatched steps) either sees this wait and wakes
                    # the loop, or is seen here.
                    self._loop_wakes_at = now + timeout
                    timeout = min(timeout, self._wait_seconds(now, free, min(next_beat, next_check)))
                    outcomes.extend(self._collect(timeout))
                else:
                    outcomes.extend(self._collect(0))
                if self._abandoning.is_set():
                    break
                outcomes.extend(self._time_out_overdue())
                clock = time.monotonic()
                if self._stopping.is_set() and stop_deadline is None:
                    stop_deadline = clock + self.grace_seconds
                    log.info("worker stopping worker=%s running=%d grace=%.0fs", self.worker_id,
                             len(self._in_flight), self.grace_seconds)
                if clock >= next_reclaim:
                    with self._commit_lock:
                        self.totals.reclaimed += self._reclaim()
                    next_reclaim = clock + min(self.heartbeat_seconds, 5.0)
                self._run_periodic_hooks(clock, hooks_due)
                if clock >= next_adopt and self.queues is None:  # an all-queues worker sees every queue
                    self._call_store(lambda: self.store.adopt_queues(self.clock()))
                    next_adopt = clock + 60.0
                if clock >= next_beat:
                    with self._commit_lock:
                        self._heartbeat()
                    next_beat = clock + self.heartbeat_seconds
                elif self._in_flight and clock >= next_check:
                    with self._commit_lock:
                        self._check_cancellations()
                    next_check = clock + min(1.0, self.heartbeat_seconds)
                try:
                    with self._commit_lock:
                        limit = 0 if self._stopping.is_set() else self.capacity - len(self._in_flight) + len(outcomes)
                        if outcomes or limit > 0:
                            _, claimed = self._commit_and_claim(outcomes, limit)
                        else:  # full, or stopping, with nothing finished: no transaction to open
                            claimed = ClaimResult(steps=(), wake_in=0.0)
                            self._due_at = 0.0
                        self._commit_in_pool = self._pool_may_commit and not self._stopping.is_set()
                        # Only once this claim is dispatched (``_commit_and_claim`` did) can "leased
                        # to us but unknown" mean a lost reply.
                        handed_back = self._release_unknown_leases() if failures or self._recheck_leases else 0
                        if handed_back:
                            self._due_at = 0.0
                        idle = not (self._in_flight or claimed.steps or handed_back)
                except StoreConflict as exc:
                    # The database broke a deadlock by rolling this transaction back: retry it soon.
                    failures += 1
                    delay = random.uniform(0.005, 0.05) * min(failures, 10)
                    what = "deadlock detected" if exc.kind == "deadlock" else f"commit conflict ({exc.kind})"
                    log.warning("%s worker=%s retry_in=%.3fs error=%s", what, self.worker_id, delay,
                                str(exc).splitlines()[0] if str(exc) else "")
                    time.sleep(delay)
                    continue
                except StoreUnavailable as exc:
                    failures += 1
                    delay = min(0.1 * 2**failures, 10.0)
                    log.warning("database unavailable worker=%s retry_in=%.1fs error=%s", self.worker_id, delay, exc)
                    time.sleep(delay)
                    continue  # keep the outcomes: they commit once the database is back
                outcomes = []
                failures = 0
                cycles += 1
                if self.max_cycles and cycles >= self.max_cycles:
                    self._stopping.set()
                if self._stopping.is_set():
                    if not self._in_flight:
                        break
                    if stop_deadline is not None and clock >= stop_deadline:
                        break
                elif self.burst and idle and (claimed.wake_in is None or claimed.wake_in > BURST_MAX_WAIT_SECONDS):
                    break
        finally:
            with self._commit_lock:
                self._commit_in_pool = False
            for stop in stoppers:
                stop()
            with self._commit_lock:
                self._hand_back_all()
            self._stop_pool()
            self._call_store(lambda: self.store.worker_stopped(self.worker_id, self.clock()))
            log.info("worker stopped worker=%s claimed=%d succeeded=%d retried=%d failed=%d discarded=%d",
                     self.worker_id, self.totals.claimed, self.totals.succeeded, self.totals.retried,
                     self.totals.failed, self.totals.discarded)
        return self.totals

    def _wait_seconds(self, now: float, free: int, upkeep_at: float) -> float:
        """How long the loop may wait for an outcome: until a claim is due, or the upkeep of
        what is in flight (heartbeats, cancellation checks, timeouts) is."""
        timeout = min(max(self._due_at - now, 0.0), self.poll_seconds)
        if free <= 0 or self._stopping.is_set():
            timeout = min(self.poll_seconds, 0.5)
        if self._in_flight:
            timeout = min(timeout, max(upkeep_at - now, 0.0), self._next_timeout_in())
        return timeout

    @property
    def capacity(self) -> int:
        """Threads plus prefetch (``rules.claim_capacity``): short steps are claimed in batches."""
        if self._fixed_prefetch:
            return self.max_workers + self._fixed_prefetch
        return claim_capacity(self.max_workers, self._avg_exec_seconds)

    def _learn(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.started_at and outcome.finished_at:
                seconds = (outcome.finished_at - outcome.started_at).total_seconds()
                self._avg_exec_seconds += 0.2 * (seconds - self._avg_exec_seconds)

    # -- pieces ------------------------------------------------------------------------------
    def _commit_and_claim(self, outcomes: list[Outcome], limit: int) -> tuple[CommitReport, ClaimResult]:
        """Commit the outcomes and claim up to ``limit`` steps in one transaction; dispatch what it claimed.

        The caller holds ``_commit_lock`` (``cycle`` runs alone).
        """
        request = None
        if limit > 0:
            request = ClaimRequest(
                worker_id=self.worker_id,
                limit=limit,
                lease_duration=self.lease_duration,
                queues=self.queues,
                site=self.site,
                clock=self.clock,
                start_now=max(0, self.max_workers - (len(self._in_flight) - len(outcomes))),
            )
        try:
            report, claimed = self.store.complete_and_claim(outcomes, request, self.clock())
        except StoreUnavailable:
            raise
        except Exception:
            # A bad outcome must not take the batch, or the loop, down with it: commit one by one.
            log.exception("commit failed; retrying one step at a time worker=%s", self.worker_id)
            report = self._commit_each(outcomes)
            claimed = ClaimResult(steps=(), wake_in=self.poll_seconds)
        for outcome in outcomes:
            self._in_flight.pop(outcome.step.lease.token, None)
            if outcome.lease_outcome != "expired":
                _log_outcome(outcome, self.step_log_level, self.worker_id)
        for step in claimed.steps if log.isEnabledFor(self.step_log_level) else ():
            log.log(self.step_log_level, "step claimed run=%s step=%s kind=%s attempt=%d worker=%s", step.run_id,
                    step.step_id, step.kind, step.attempt, self.worker_id)
        # The claimed steps go to the pool before the bookkeeping below: a thread wakes while it runs.
        self._dispatch(claimed.steps)
        if limit <= 0 or len(claimed.steps) >= limit:  # more may be ready: claim again once there is room
            self._due_at = 0.0
        else:
            self._due_at = math.inf if claimed.wake_in is None else time.monotonic() + claimed.wake_in
        self.totals.add(report)
        self.totals.claimed += len(claimed.steps)
        self._learn(outcomes)
        self._observe(outcomes, report, claimed)
        for outcome in outcomes:
            if outcome.step.lease.token in report.rejected:
                self.runner.discard_blobs(outcome.artifacts)  # its artifact rows never committed
        return report, claimed

    def _observe(self, outcomes: Sequence[Outcome], report: CommitReport, claimed: ClaimResult) -> None:
        """Tell the observer (metrics) what this commit and claim did; it must never stop the loop."""
        observer = self.observer
        try:
            for outcome in outcomes:
                if outcome.step.lease.token in report.rejected:
                    observer.commit_rejected(outcome)
                else:
                    observer.step_finished(outcome)
            if claimed.steps:
                observer.steps_claimed(claimed.steps, self.clock())
            for queue_name, reason in claimed.throttled:
                observer.queue_throttled(queue_name, reason)
        except Exception:
            log.exception("metrics observer failed worker=%s", self.worker_id)

    def _commit_each(self, outcomes: list[Outcome]) -> CommitReport:
        total = CycleResult()
        rejected: set[str] = set()
        for outcome in outcomes:
            try:
                report, _ = self.store.complete_and_claim([outcome], None, self.clock())
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.exception("commit of one step failed run=%s step=%s", outcome.step.run_id, outcome.step.step_id)
                self.runner.discard_blobs(outcome.artifacts)
                error = ErrorInfo(code="commit_error", message=f"{type(exc).__name__}: {exc}", retryable=False)
                fallback = self.runner.failure(outcome.step, error, log=outcome.log)
                try:
                    report, _ = self.store.complete_and_claim([fallback], None, self.clock())
                except Exception:  # the lease expires and another attempt runs: nothing is lost
                    log.exception("could not record the commit error run=%s step=%s", outcome.step.run_id,
                                  outcome.step.step_id)
                    continue
            total.add(report)
            rejected |= report.rejected
        return CommitReport(succeeded=total.succeeded, retried=total.retried, failed=total.failed,
                            discarded=total.discarded, runs_finished=tuple(total.runs_finished),
                            rejected=frozenset(rejected))

    def _dispatch(self, steps: Sequence[ClaimedStep]) -> None:
        # The store marked the first ``free`` of them executing; the rest wait for a thread.
        free = max(0, self.max_workers - len(self._in_flight))
        for n, step in enumerate(steps):
            running = Running(step, shown_executing=n < free)
            self._in_flight[step.lease.token] = running
            self._jobs.put(running)

    def _collect(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` for the first finished step, then take whatever else is done."""
        got: list[Outcome] = []
        try:
            item = self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait()
        except queue.Empty:
            return got
        while True:
            if isinstance(item, Outcome):
                got.append(item)
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return got

    def _reclaim(self) -> int:
        """Turn expired leases into failed attempts: a reclaim counts, so poison steps end."""
        now = self.clock()
        expired = self._call_store(lambda: self.store.expired_leases(now, 500)) or []
        if not expired:
            return 0
        outcomes = [self.runner.lease_expired(step, now=now) for step in expired]
        report = self._call_store(lambda: self.store.complete_and_claim(outcomes, None, now))
        if report is None:
            return 0
        for outcome in outcomes:
            log.warning("step lease expired run=%s step=%s attempt=%d next=%s", outcome.step.run_id,
                        outcome.step.step_id, outcome.step.attempt, outcome.next_state)
        self._observe(outcomes, report[0], ClaimResult(steps=(), wake_in=None))
        try:
            self.observer.leases_reclaimed(report[0].committed)
        except Exception:
            log.exception("metrics observer failed worker=%s", self.worker_id)
        return report[0].committed

    def _run_periodic_hooks(self, clock: float, due: list[float]) -> None:
        """The periodic hooks (schedule ticks): each at most once per its interval."""
        if self._stopping.is_set():
            return
        for n, (hook, interval) in enumerate(self.periodic_hooks):
            if clock < due[n]:
                continue
            due[n] = clock + interval.total_seconds()
            try:
                hook(self.clock())
            except Exception as exc:
                log.warning("periodic hook failed worker=%s hook=%s error=%s: %s", self.worker_id,
                            getattr(hook, "__name__", hook), type(exc).__name__, exc)

    def _heartbeat(self) -> None:
        now = self.clock()
        executing = sum(1 for r in self._in_flight.values() if r.started is not None)
        self._call_store(lambda: self.store.worker_seen(self.worker_id, executing, now))
        if not self._in_flight:
            return
        tokens = list(self._in_flight)
        started = [
            token for token, running in self._in_flight.items()
            if not running.shown_executing and running.started is not None
        ]
        live = self._call_store(lambda: self.store.heartbeat(tokens, now, now + self.lease_duration,
                                                             started=started))
        if live is not None:
            self._mark_lost(tokens, live)
            for token in started:
                self._in_flight[token].shown_executing = True

    def _check_cancellations(self) -> None:
        tokens = list(self._in_flight)
        live = self._call_store(lambda: self.store.live_tokens(tokens))
        if live is not None:
            self._mark_lost(tokens, live)

    def _mark_lost(self, tokens: list[str], live: set[str]) -> None:
        for token in tokens:
            running = self._in_flight.get(token)
            if running is not None and token not in live and not running.cancelled.is_set():
                running.cancelled.set()
                log.info("step lease lost or run canceled run=%s step=%s worker=%s", running.step.run_id,
                         running.step.step_id, self.worker_id)

    def _release_unknown_leases(self) -> int:
        """After a lost connection: a commit may have gone through with a claim we never heard of.

        Those steps are leased to us but nothing runs them; hand them back now rather than
        leaving them to the lease expiry.
        """
        self._recheck_leases = False
        held = self._call_store(lambda: self.store.leased_to(self.worker_id)) or set()
        unknown = sorted(held - set(self._in_flight))
        if unknown:
            self._call_store(lambda: self.store.hand_back(unknown, self.clock()))
            log.warning("handed back %d steps claimed by a commit whose reply was lost worker=%s", len(unknown),
                        self.worker_id)
        return len(unknown)

    def _hand_back_all(self) -> None:
        if not self._in_flight:
            return
        tokens = list(self._in_flight)
        for running in self._in_flight.values():
            running.cancelled.set()
        handed = self._call_store(lambda: self.store.hand_back(tokens, self.clock()))
        log.info("handed back %s unfinished steps worker=%s", handed, self.worker_id)
        self._in_flight.clear()

    def _call_store(self, call: Callable[[], _T]) -> _T | None:
        """Run one store call off the commit path; a failure is logged and reads as None."""
        try:
            return call()
        except Exception as exc:
            log.warning("store call failed worker=%s error=%s: %s", self.worker_id, type(exc).__name__, exc,
                        exc_info=exc)
            return None

    def _finished(self, outcome: Outcome) -> None:
        if not self._commit_here(outcome):
            self._done.put(outcome)

    def _commit_here(self, outcome: Outcome) -> bool:
        """Commit a finished step on its own pool thread, with the next claim, when it is the only
        step in flight and no one else is committing; False hands it to the loop instead.

        Only a lone step: with others in flight the loop commits their outcomes in batches,
        which is what throughput wants; a chain has one step at a time, and latency wants this.
        """
        if not self._commit_in_pool or not self._commit_lock.acquire(blocking=False):
            return False
        try:
            token = outcome.step.lease.token
            if not self._commit_in_pool or self._stopping.is_set() or len(self._in_flight) != 1 \
                    or token not in self._in_flight:
                return False
            try:
                self._commit_and_claim([outcome], self.capacity)
            except StoreUnavailable as exc:
                # The loop retries it with its backoff. A lost reply may hide a claim that went through.
                if not isinstance(exc, StoreConflict):  # a conflict rolled back: nothing went through
                    self._recheck_leases = True
                log.info("commit on the pool thread failed; the loop retries it worker=%s error=%s: %s",
                         self.worker_id, type(exc).__name__, exc)
                return False
            # Steps the loop does not know of now need heartbeats, and a claim may be due sooner
            # than the loop's wait ends: wake it then (``run`` reads these again after announcing a wait).
            wake_by = self._due_at
            if self._in_flight:
                wake_by = min(wake_by, time.monotonic() + min(self.heartbeat_seconds, 1.0))
            elif self.burst:
                wake_by = 0.0  # nothing left in flight: let a burst worker see whether it is done
            if wake_by < self._loop_wakes_at:
                self._done.put(WAKE)
            return True
        finally:
            self._commit_lock.release()
