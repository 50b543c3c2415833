"""The fixture ladder: a registry with test kinds -> a runtime on the test database -> helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.procapp.workflows import build_test_package
from tests.processes import ROOT, database_url
from workflow import Config, Package, Registry, Runtime
from workflow.stores.artifacts import FileArtifactStore
from workflow.stores.db import DjangoStore
from workflow.stores.projections import SQLiteProjectionStore


@pytest.fixture
def package_kinds() -> list[Callable[[Package], None]]:
    """Functions adding executors to the package "t"; a test module overrides this to add its own kinds."""
    return []


@pytest.fixture
def demo_package(package_kinds: list[Callable[[Package], None]]) -> Package:
    """The package "t" (the kinds of ``tests/procapp/workflows.py``) plus the kinds the module adds."""
    pkg = build_test_package()
    for add_kinds in package_kinds:
        add_kinds(pkg)
    return pkg


@pytest.fixture
def registry(demo_package: Package) -> Registry:
    return Registry([demo_package])


@pytest.fixture
def make_runtime(registry: Registry, tmp_path: Any) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(*, clock: Any = None, **config: Any) -> Runtime:
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
            **({"clock": clock} if clock else {}),
        )
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], transactional_db: Any) -> Runtime:
    return make_runtime()


class FakeClock:
    """A clock tests move by hand, for lease expiry and backoff."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def spawn(*args: str, name: str = "w") -> subprocess.Popen:
        env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
               "WFSITE_VAR_DIR": str(tmp_path)}
        log_path = tmp_path / f"{name}-{len(procs)}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "runworkers", "--worker-id", f"{name}-{len(procs)}", *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }


def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API leaves an event loop in the main thread, and
    Django's async test methods (async_to_sync) refuse to run beside one."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
