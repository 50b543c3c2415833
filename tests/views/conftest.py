"""Users with the roles the dashboard knows, and runs in interesting states."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from tests.conftest import build_test_package, drain, run_graph
from workflow import Package, StepContext, permanent

GATE = {"open": False}  # the "gate" kind fails until a test opens it: retry, then succeed
EVIL = "<script>alert('xss')</script>"

VIEW_PERMS = ["view_run", "view_step", "view_dependency", "view_lease", "view_artifact", "view_record", "view_event",
              "view_queue", "view_worker", "view_schedule"]

FAILED_GRAPH = [
    {"id": "a", "kind": "noop", "input": {"n": 1}},
    {"id": "b", "kind": "fail", "deps": ["a"]},
    {"id": "c", "kind": "noop", "deps": ["b"]},
]


@dataclass(frozen=True)
class Charge:
    """The typed input of the "charge" kind: edit-and-retry checks an edited input against it."""

    amount: int
    currency: str = "EUR"


def add_dashboard_kinds(pkg: Package) -> None:
    """The kinds the dashboard tests need, beside the engine tests' kinds of package "t"."""

    @pkg.executor("charge")
    def charge(step: StepContext, params: Charge) -> dict:
        if params.amount <= 0:
            raise permanent("invalid_amount", f"amount must be positive, got {params.amount}")
        return {"charged": params.amount, "currency": params.currency}

    @pkg.executor("gate")
    def gate(step: StepContext) -> dict:
        step.logger.warning("checking the gate (attempt %d)", step.attempt)
        if not GATE["open"]:
            raise permanent("gate_closed", "the gate is closed", details={"gate": "main"})
        step.logger.info("gate open, passing")
        return {"passed": True}

    @pkg.executor("report")
    def report(step: StepContext) -> dict:
        step.artifact("table.csv", "text/csv", b"word,count\nalpha,3\n<b>beta</b>,2\n")
        step.artifact("summary.json", "application/json", b'{"distinct": 2, "top": ["alpha"]}')
        step.artifact("page.html", "text/html", f"<h1>hi</h1>{EVIL}".encode())
        step.artifact("pixel.png", "image/png", PNG_1PX)
        step.record("reports", step.step.step_id, {"rows": 2, "note": EVIL})
        return {"html": EVIL, "rows": 2}

    @pkg.executor("stored")
    def stored(step: StepContext) -> dict:
        step.store_artifact("table.csv", "text/csv", b"word,count\nalpha,3\n")
        return {"stored": True}


def build_dashboard_package() -> Package:
    """The engine tests' package "t" plus the dashboard's kinds (for registries built by hand)."""
    pkg = build_test_package()
    add_dashboard_kinds(pkg)
    return pkg


PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e221bc330000000049454e44ae426082"
)


@pytest.fixture
def package_kinds() -> list[Callable[[Package], None]]:
    return [add_dashboard_kinds]


@pytest.fixture(autouse=True)
def _close_gate() -> Any:
    GATE["open"] = False
    yield
    GATE["open"] = False


@pytest.fixture
def viewer(transactional_db: Any) -> User:
    user = User.objects.create_user("vera", password="pw-vera-123")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="workflow", codename__in=VIEW_PERMS))
    return user


@pytest.fixture
def operator_user(transactional_db: Any) -> User:
    # The data migration creates this group; transactional tests flush it, so make it again the same way.
    group, _ = Group.objects.get_or_create(name="Operators")
    group.permissions.add(*Permission.objects.filter(
        content_type__app_label="workflow", codename__in=["operate", *VIEW_PERMS]))
    user = User.objects.create_user("otto", password="pw-otto-123")
    user.groups.add(group)
    return user


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    c = Client()
    c.force_login(viewer)
    return c


@pytest.fixture
def operator_client(operator_user: User) -> Client:
    c = Client()
    c.force_login(operator_user)
    return c


@pytest.fixture
def failed_run(runtime: Any) -> str:
    run_id = run_graph(runtime, FAILED_GRAPH)
    drain(runtime)
    return run_id


@pytest.fixture
def active_run(runtime: Any) -> str:
    """A run with one step that never gets a worker in the test: it stays ready."""
    return run_graph(runtime, [{"id": "wait", "kind": "noop"}])


@pytest.fixture
def done_run(runtime: Any) -> str:
    run_id = run_graph(runtime, [{"id": "p", "kind": "produce"}, {"id": "q", "kind": "noop", "deps": ["p"]}])
    drain(runtime)
    return run_id


@pytest.fixture
def report_run(runtime: Any) -> str:
    run_id = run_graph(runtime, [{"id": "report", "kind": "report"}])
    drain(runtime)
    return run_id
