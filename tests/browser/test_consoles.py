"""The operator consoles in real Chromium: triage a failure code, pause and resume a queue, start a run, watch events."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.conftest import build_dashboard_package, login
from tests.conftest import drain, run_graph
from wfsite.workflows import demo
from workflow import Registry
from workflow.conf import reset_runtime
from workflow.models import Event, Queue, Run, Step, Worker

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def registry() -> Registry:
    """The test runtime knows the dashboard's kinds and the site's demo package (started from the form)."""
    return Registry([build_dashboard_package(), demo])


@pytest.fixture(autouse=True)
def _fresh_site_runtime() -> Iterator[None]:
    reset_runtime()
    yield
    reset_runtime()


def _worker(worker_id: str = "browser-worker", site: str = "") -> Worker:
    now = timezone.now()
    return Worker.objects.update_or_create(id=worker_id, defaults={
        "host": "ci", "pid": os.getpid(), "queues": None, "site": site, "max_workers": 4, "running": 0,
        "started_at": now, "seen_at": now + timezone.timedelta(minutes=10)})[0]  # stays live through the test


def test_overview__click_a_failure_code_to_its_failing_steps(page: Any, live_server: Any, runtime: Any,
                                                             operator_user: Any, shoot: Any) -> None:
    for n in range(3):
        run_graph(runtime, [{"id": f"fetch-{n}", "kind": "noop"}, {"id": f"charge-{n}", "kind": "fail", "deps": [f"fetch-{n}"]},
                            {"id": f"ship-{n}", "kind": "noop", "deps": [f"charge-{n}"]}], name=f"Order {n}")
    run_graph(runtime, [{"id": "gate", "kind": "gate", "retry": 1}], name="Gate")
    run_graph(runtime, [{"id": f"ok-{i}", "kind": "noop"} for i in range(12)], name="Bulk")
    drain(runtime)
    run_graph(runtime, [{"id": "waiting", "kind": "noop", "queue": "io"}], name="Queued")
    _worker()

    login(page, live_server.url)
    page.goto(f"{live_server.url}/ops/?window=15m")
    groups = page.locator("#failure-groups")
    expect(groups).to_contain_text("boom")
    expect(groups).to_contain_text("gate_closed")
    boom_row = groups.locator("tr", has_text="boom")
    expect(boom_row.locator("td.num").nth(1)).to_have_text("3")  # last day
    expect(page.locator(".tp-legend")).to_contain_text("succeeded 15")
    shoot("consoles-overview")

    boom_row.get_by_role("link", name="boom").click()
    expect(page).to_have_url(re.compile(r"/ops/steps/\?state=failed&code=boom"))
    table = page.locator("#steps-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    for n in range(3):
        expect(table).to_contain_text(f"charge-{n}")
    expect(table).not_to_contain_text("gate")
    shoot("consoles-failing-steps")
    table.get_by_role("link", name="charge-1").click()
    expect(page).to_have_url(re.compile(r"/steps/charge-1/"))


def test_queue_monitor__pause_then_resume_a_queue(page: Any, live_server: Any, runtime: Any, operator_user: Any,
                                                 shoot: Any) -> None:
    run_id = run_graph(runtime, [{"id": f"fetch-{i}", "kind": "noop", "queue": "io"} for i in range(4)], name="Crawl")
    _worker()
    page.on("dialog", lambda dialog: dialog.accept())

    login(page, live_server.url)
    page.goto(f"{live_server.url}/ops/queues/")
    card = page.locator('section[data-queue="io"]')
    expect(card.locator('[data-figure="ready"]')).to_contain_text("4")
    card.get_by_role("button", name="Pause").click()
    expect(card.locator("[data-status]")).to_have_text("paused")
    expect(card.locator(".q-reasons")).to_contain_text("Paused: 4 ready steps wait until an operator resumes the queue.")
    expect(page.locator("#toasts")).to_contain_text("Queue io paused")
    assert Queue.objects.get(pk="io").paused
    assert Event.objects.get(kind="queue_paused").actor == "otto"

    # A worker cycle claims nothing from a paused queue: the steps wait.
    assert runtime.run_once().claimed == 0
    assert Step.objects.filter(run_id=run_id, state="ready").count() == 4
    page.reload()
    expect(card.locator('[data-figure="ready"]')).to_contain_text("4")
    shoot("consoles-queues-paused")

    card.get_by_role("button", name="Resume").click()
    expect(card.locator("[data-status]")).not_to_have_text("paused")
    assert not Queue.objects.get(pk="io").paused
    assert drain(runtime) == 4
    assert Run.objects.get(pk=run_id).state == "succeeded"
    # The monitor refreshes itself: nothing ready, four finished in the chart.
    expect(card.locator('[data-figure="ready"]')).to_have_text("0", timeout=10_000)
    expect(card.locator(".q-chart")).to_contain_text("4 succeeded", timeout=10_000)
    shoot("consoles-queues-resumed")


def test_start_run__bad_field_then_good_input_runs_to_the_end(page: Any, live_server: Any, runtime: Any,
                                                              operator_user: Any, shoot: Any) -> None:
    login(page, live_server.url)
    page.goto(f"{live_server.url}/ops/packages/")
    pkg = page.locator("#pkg-demo")
    expect(pkg).to_contain_text("Demo: word report")
    expect(pkg).to_contain_text("demo.count")
    shoot("consoles-packages")
    pkg.get_by_role("link", name="Start a run").click()
    expect(page.locator("h1")).to_contain_text("Start a run of Demo: word report")

    page.get_by_label("chunks").fill("1.5")
    page.get_by_role("button", name="Start run").click()
    row = page.locator('[data-field="chunks"]')
    expect(row.locator(".field-error")).to_contain_text("expected a whole number")
    expect(page.get_by_label("chunks")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-errors")).to_contain_text("Nothing was started")
    assert Run.objects.count() == 0
    shoot("consoles-start-error")

    page.get_by_label("chunks").fill("2")
    page.get_by_label("work seconds").fill("0")
    page.get_by_label("Run name").fill("Report from the browser")
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/runs/demo-[0-9a-f-]+/$"))
    run = Run.objects.get()
    assert run.metadata["started_by"] == "otto" and run.input["chunks"] == 2
    expect(page.locator("h1").first).to_contain_text("Report from the browser")

    deadline = time.monotonic() + 30
    while Run.objects.get(pk=run.pk).is_active and time.monotonic() < deadline:
        if runtime.run_once().claimed == 0:
            time.sleep(0.2)  # the flaky dictionary step backs off for a second
    assert Run.objects.get(pk=run.pk).state == "succeeded"

    page.goto(f"{live_server.url}/ops/packages/demo/start/")
    recent = page.locator("#submissions")
    expect(recent.locator(f'tr[data-run="{run.id}"] [data-state]')).to_contain_text("succeeded")
    shoot("consoles-start-submitted")


def test_events__a_new_event_appears_live_and_pausing_holds_it(page: Any, live_server: Any, runtime: Any,
                                                               operator_user: Any, shoot: Any) -> None:
    run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail", "deps": ["a"]}], name="Events")
    drain(runtime)

    login(page, live_server.url)
    page.goto(f"{live_server.url}/ops/events/")
    rows = page.locator("#ev-rows tr")
    expect(rows.first).to_be_visible()
    before = rows.count()

    run_graph(runtime, [{"id": "late", "kind": "noop"}], name="Late arrival")
    fresh = page.locator('#ev-rows tr[data-kind="run_created"]', has_text="Late arrival")  # the run's name
    expect(fresh).to_be_visible(timeout=10_000)
    assert rows.count() == before + 1
    expect(rows.first).to_have_attribute("data-kind", "run_created")

    failed = page.locator('#ev-rows tr[data-kind="step_failed"]').first
    failed.locator("summary", has_text="payload").click()
    expect(failed.locator("pre")).to_contain_text('"code": "boom"')
    shoot("consoles-events")

    page.locator("#ev-pause").check()
    time.sleep(0.3)
    runtime.pause_queue("default", actor="someone")
    time.sleep(3)
    expect(page.locator('#ev-rows tr[data-kind="queue_paused"]')).to_have_count(0)
    page.locator("#ev-pause").uncheck()
    expect(page.locator('#ev-rows tr[data-kind="queue_paused"]')).to_have_count(1, timeout=10_000)

    page.locator("#e-kind").click()
    page.locator('input[name=kind][value="step_failed"]').check()
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#ev-rows tr")).to_have_count(1)


def test_engine_status__page_renders_database_and_settings(page: Any, live_server: Any, runtime: Any,
                                                           operator_user: Any, shoot: Any) -> None:
    run_graph(runtime, [{"id": "a", "kind": "noop", "queue": "io"}], name="One")
    drain(runtime)
    _worker()
    login(page, live_server.url)
    page.goto(f"{live_server.url}/ops/engine/")
    expect(page.locator('[data-fact="vendor"]')).to_contain_text("sqlite")
    expect(page.locator("#settings-table")).to_contain_text("lease_duration")
    expect(page.locator('#row-counts tr[data-table="workflow_run"] td.num')).to_have_text("1")
    shoot("consoles-engine")
