"""The fixture ladder: a registry with test kinds -> a runtime on the test database -> helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from workflow import Config, Package, Registry, RetryPolicy, Runtime, StepContext, permanent, retryable
from workflow.artifacts import FileArtifactStore
from workflow.dbstore import DjangoStore
from workflow.projections import SQLiteProjectionStore

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(0), jitter=0)


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
                     queue=spec.get("queue"), dedup_key=spec.get("dedup"))

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

    @pkg.executor("crash")
    def crash(step: StepContext) -> None:
        raise RuntimeError("unexpected")

    @pkg.executor("sleep")
    def sleep(step: StepContext, params: Pause) -> dict:
        deadline = time.monotonic() + params.seconds
        while time.monotonic() < deadline and not step.cancelled:
            time.sleep(0.01)
        return {"cancelled": step.cancelled}

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


@pytest.fixture
def test_package() -> Package:
    return build_test_package()


@pytest.fixture
def registry(test_package: Package) -> Registry:
    return Registry([test_package])


@pytest.fixture
def make_runtime(registry: Registry, tmp_path: Any) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**config: Any) -> Runtime:
        defaults: dict[str, Any] = {
            "max_workers": 4,
            "poll_interval": timedelta(milliseconds=50),
            "lease_duration": timedelta(seconds=30),
        }
        rt = Runtime(
            Config(**{**defaults, **config}),
            store=DjangoStore(),
            registry=registry,
            artifact_store=FileArtifactStore(tmp_path / "artifacts"),
            projection_store=SQLiteProjectionStore(tmp_path / "projections"),
        )
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], transactional_db: Any) -> Runtime:
    return make_runtime()


def drain(rt: Runtime, *, max_cycles: int = 200) -> int:
    """Run cycles until one claims nothing; return the number of steps claimed."""
    claimed = 0
    for _ in range(max_cycles):
        result = rt.run_once()
        claimed += result.claimed
        if result.claimed == 0 and result.reclaimed == 0:
            return claimed
    raise AssertionError(f"still claiming after {max_cycles} cycles")


def run_graph(rt: Runtime, steps: list[dict], **options: Any) -> str:
    return rt.start_run("t", {"steps": steps}, **options).id


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }
