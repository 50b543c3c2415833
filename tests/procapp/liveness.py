"""The ``live`` package: the kinds the randomized liveness test (tests/liveness) builds sites from.

Every behaviour is chosen by the step's input, so a generated configuration is plain JSON that a
real ``runworkers`` process can execute.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from workflow import Package, RetryPolicy, StepContext, permanent, retryable

# The collection a database trigger refuses (tests/liveness installs it): a commit that rolls back.
REFUSED_COLLECTION = "liveness_refused"
REFUSED_MESSAGE = "liveness trigger: the database refused this record"

_barriers: dict[str, threading.Barrier] = {}
_barriers_lock = threading.Lock()


def _rendezvous(name: str, parties: int, timeout: float) -> None:
    """Wait until ``parties`` steps of this process reach ``name``, so they finish (and commit) together.

    Steps claimed by another process never arrive: then the wait times out and each goes on alone.
    """
    with _barriers_lock:
        barrier = _barriers.setdefault(name, threading.Barrier(parties))
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        pass


def _work(step: StepContext, spec: dict[str, Any]) -> None:
    """Sleep ``seconds`` (cooperatively), then fail as the spec says."""
    deadline = time.monotonic() + float(spec.get("seconds", 0))
    while time.monotonic() < deadline and not step.cancelled:
        time.sleep(min(0.02, max(deadline - time.monotonic(), 0)))
    if spec.get("permanent"):
        raise permanent("planned_permanent", "fails permanently on purpose")
    if step.attempt < int(spec.get("fail_until", 1)):
        raise retryable("planned_retryable", f"attempt {step.attempt} fails on purpose")


def build_liveness_package() -> Package:
    pkg = Package("live", display_name="Liveness test sites")

    @pkg.entrypoint
    def start(run: Any, params: dict) -> None:
        # {"steps": [{"id", "kind", "input", "queue", "site", "deps", "optional", "retry": {...}, "dedup"}]}
        from workflow import after, require

        for spec in params["steps"]:
            retry = spec.get("retry") or {}
            policy = RetryPolicy(
                max_attempts=retry.get("max_attempts", 3),
                initial_backoff=timedelta(seconds=retry.get("initial_backoff", 0)),
                backoff_coefficient=retry.get("backoff_coefficient", 2.0),
                backoff=retry.get("backoff", "exponential"),
                jitter=retry.get("jitter", 0),
            )
            deps = require(*spec.get("deps", ())) + after(*spec.get("optional", ()))
            run.step(spec["id"], spec.get("input") or {}, kind=spec["kind"], depends_on=deps,
                     retry=policy, queue=spec.get("queue"), site=spec.get("site") or "", dedup_key=spec.get("dedup"))

    @pkg.executor("work")
    def work(step: StepContext) -> dict:
        _work(step, step.raw_input)
        return {"attempt": step.attempt}

    @pkg.executor("fan")
    def fan(step: StepContext) -> dict:
        # Emit children with dedup keys (shared between fan-outs, so some are aliases) and a join.
        from workflow import require

        spec = step.raw_input
        _work(step, spec)
        kids = [
            step.emit(f"{step.step.step_id}:{child['key']}", child["input"], kind="work", queue=child["queue"],
                      dedup_key=child["key"])
            for child in spec["children"]
        ]
        step.emit(f"{step.step.step_id}:join", {}, kind="work", queue=spec["join_queue"], depends_on=require(*kids))
        return {"emitted": len(kids)}

    @pkg.executor("refused")
    def refused(step: StepContext) -> dict:
        # Its record makes the commit transaction fail; it meets its batch siblings first.
        spec = step.raw_input
        _rendezvous(spec["group"], spec["parties"], spec.get("timeout", 2.0))
        step.record(REFUSED_COLLECTION, step.step.step_id, {"v": 1})
        return {"refused": True}

    @pkg.executor("emit_new_queue")
    def emit_new_queue(step: StepContext) -> dict:
        # A good sibling of a refused step: its child goes to a queue no row exists for yet.
        spec = step.raw_input
        _rendezvous(spec["group"], spec["parties"], spec.get("timeout", 2.0))
        step.emit(f"{step.step.step_id}:child", {}, kind="work", queue=spec["child_queue"])
        return {"queue": spec["child_queue"]}

    return pkg
