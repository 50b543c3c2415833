"""The package the benchmarks run: n independent no-ops, a chain of n, or a fan-out of n + a join."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from workflow import Package, RetryPolicy, RunBuilder, StepContext, require

bench = Package("bench", display_name="Benchmark shapes")
NO_RETRY_DELAY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(0), jitter=0)


@bench.entrypoint
def start(run: RunBuilder, params: dict) -> None:
    shape, n = params.get("shape", "independent"), int(params.get("n", 1))
    if shape == "independent":
        for i in range(n):
            run.step(f"s{i:06d}", None, kind="noop", retry=NO_RETRY_DELAY)
    elif shape == "chain":
        prev = None
        for i in range(n):
            prev = run.step(f"c{i:06d}", None, kind="noop", retry=NO_RETRY_DELAY,
                            depends_on=require(prev) if prev else ())
    elif shape == "fanout":
        run.step("fanout", {"n": n}, kind="fanout", retry=NO_RETRY_DELAY)
    elif shape == "capped":  # n long steps in the queue "capped" (the idle-at-cap scenario caps it)
        for i in range(n):
            run.step(f"l{i:06d}", {"seconds": float(params.get("seconds", 7))}, kind="sleep", queue="capped",
                     retry=NO_RETRY_DELAY)
    else:
        raise ValueError(f"unknown shape {shape!r}")


@bench.executor("noop")
def noop(step: StepContext) -> Any:
    return None


@bench.executor("sleep")
def sleep(step: StepContext) -> None:
    deadline = time.monotonic() + step.raw_input["seconds"]
    while time.monotonic() < deadline and not step.cancelled:
        time.sleep(0.05)


@bench.executor("fanout")
def fanout(step: StepContext) -> dict:
    n = step.raw_input["n"]
    kids = [step.emit(f"k{i:06d}", None, kind="noop", retry=NO_RETRY_DELAY) for i in range(n)]
    step.emit("join", None, kind="noop", depends_on=require(*kids), retry=NO_RETRY_DELAY)
    return {"emitted": n}
