"""Test kinds, installed as an app in ``tests.settings`` so worker subprocesses have them too."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from workflow import Package, RetryPolicy, StepContext, permanent, retryable


@dataclass(frozen=True)
class Pause:
    seconds: float = 0.0


def build_test_package() -> Package:
    """Kinds every engine test may use. Behaviour is chosen by the step's input."""
    pkg = Package("t", display_name="Test package")

    @pkg.entrypoint
    def start(run: Any, params: dict) -> None:
        # {"steps": [{"id", "kind", "input", "deps": [...], "optional": [...], "retry": n}]}
        from workflow import after, require

        for spec in params.get("steps", [{"id": "only", "kind": "noop"}]):
            deps = require(*spec.get("deps", ())) + after(*spec.get("optional", ()))
            retry = RetryPolicy(max_attempts=spec.get("retry", 3), initial_backoff=timedelta(0), jitter=0)
            run.step(spec["id"], spec.get("input"), kind=spec["kind"], depends_on=deps, retry=retry,
                     queue=spec.get("queue"), dedup_key=spec.get("dedup"),
                     **({"timeout": spec["timeout"]} if "timeout" in spec else {}))

    @pkg.executor("noop")
    def noop(step: StepContext) -> Any:
        return step.raw_input

    @pkg.executor("fail")
    def fail(step: StepContext) -> None:
        raise permanent("boom", "failed on purpose", details={"why": "test"})

    @pkg.executor("flaky")
    def flaky(step: StepContext) -> dict:
        # Fails retryably until the attempt given as input (default 2).
        until = (step.raw_input or {}).get("until", 2)
        if step.attempt < until:
            step.logger.warning("attempt %d failing", step.attempt)
            raise retryable("flaky", f"attempt {step.attempt} failed")
        return {"attempt": step.attempt}

    @pkg.executor("fail_while_file")
    def fail_while_file(step: StepContext) -> dict:
        # Fails permanently while the file named in the input exists: tests fix the "bug" by deleting it.
        if os.path.exists(step.raw_input["path"]):
            raise permanent("file_present", f"{step.raw_input['path']} exists")
        return {"fixed": True}

    @pkg.executor("chaos")
    def chaos(step: StepContext) -> dict:
        # A little work, and a retryable failure one time in ten.
        import random

        time.sleep(random.uniform(0, 0.004))
        if random.random() < 0.1:
            raise retryable("chaos", "random failure")
        return {"attempt": step.attempt}

    @pkg.executor("crash")
    def crash(step: StepContext) -> None:
        raise RuntimeError("unexpected")

    @pkg.executor("sleep")
    def sleep(step: StepContext, params: Pause) -> dict:
        deadline = time.monotonic() + params.seconds
        while time.monotonic() < deadline and not step.cancelled:
            time.sleep(0.01)
        return {"cancelled": step.cancelled}

    @pkg.executor("hang")
    def hang(step: StepContext, params: Pause) -> dict:
        # Ignores cancellation, as a call stuck in a C library or a socket would.
        time.sleep(params.seconds)
        return {"slept": params.seconds}

    @pkg.executor("fanout")
    def fanout(step: StepContext) -> dict:
        from workflow import require

        n = step.raw_input["n"]
        kids = [step.emit(None, {"i": i}, kind="noop") for i in range(n)]
        step.emit("join", {}, kind="noop", depends_on=require(*kids))
        return {"emitted": n}

    @pkg.executor("produce")
    def produce(step: StepContext) -> dict:
        step.record("things", step.step.step_id, {"v": 1})
        step.artifact("note.txt", "text/plain", b"hello")
        return {"ok": True}

    return pkg


t = build_test_package()

# The schedule process tests set this: every worker process of that test then fires it.
if os.environ.get("WF_TEST_SCHEDULE_CRON"):
    t.schedule("tick", cron=os.environ["WF_TEST_SCHEDULE_CRON"], input={"steps": [{"id": "only", "kind": "noop"}]},
               overlap="allow")

def _liveness_package() -> Package:
    from tests.procapp.liveness import build_liveness_package

    return build_liveness_package()


live = _liveness_package()  # the kinds of the randomized liveness test (tests/liveness)
