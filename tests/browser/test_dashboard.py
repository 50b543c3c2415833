"""The operator's main journeys in real Chromium: find a failure, read it, retry it, cancel, download."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import GATE, SCREENSHOTS, login
from tests.conftest import drain, run_graph
from workflow.models import Run, Step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_failed_run__open_step_from_graph_read_error_and_retry(page: Any, live_server: Any, runtime: Any,
                                                                operator_user: Any, shoot: Any) -> None:
    run_id = run_graph(runtime, [
        {"id": "fetch", "kind": "noop", "input": {"url": "https://example.test"}},
        {"id": "gate", "kind": "gate", "deps": ["fetch"], "retry": 1},
        {"id": "publish", "kind": "noop", "deps": ["gate"]},
        {"id": "audit", "kind": "noop", "optional": ["gate"]},
    ], name="Nightly import")
    drain(runtime)
    assert Run.objects.get(pk=run_id).state == "failed"

    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/")
    row = page.locator("tr", has_text="Nightly import")
    expect(row.locator("td .badge.state-failed").last).to_be_visible()
    shoot("runs_list")
    row.get_by_role("link", name="Nightly import").click()
    expect(page.locator("#run-live h1")).to_contain_text("Nightly import")
    expect(page.locator("#run-live .badge").first).to_have_text("failed")
    expect(page.locator('svg.workflow-graph a.node[data-step-id="publish"]')).to_contain_text("blocked")

    # Open the failed step from the graph: the panel loads beside it, no page load.
    page.evaluate("window.__marker = 'same-page'")
    page.locator('svg.workflow-graph a.node[data-step-id="gate"]').click()
    panel = page.locator("#step-panel")
    expect(panel.locator("h2")).to_have_text("gate")
    expect(panel).to_contain_text("gate_closed")
    expect(panel).to_contain_text("the gate is closed")
    expect(panel.locator("pre.code-log")).to_contain_text("checking the gate (attempt 1)")
    assert page.evaluate("window.__marker") == "same-page"
    assert re.search(r"\?step=gate", page.url)
    shoot("run_failed_step_panel")

    # Retry: confirm, the panel updates in place; a worker cycle later the step has succeeded.
    GATE["open"] = True
    page.once("dialog", lambda dialog: dialog.accept())
    panel.get_by_role("button", name="Retry step").click()
    expect(panel.locator(".panel-state .badge")).to_have_text("ready")
    expect(page.locator("#toasts")).to_contain_text("will run again")
    drain(runtime)
    assert Step.objects.get(run_id=run_id, step_id="gate").state == "succeeded"
    expect(panel.locator(".panel-state .badge")).to_have_text("succeeded", timeout=10_000)
    expect(panel.locator("pre.code-log").first).to_contain_text("gate open, passing")  # newest attempt first
    expect(panel.locator("article.attempt").first).to_contain_text("Attempt 2")
    panel.locator("details.attempt-diff summary").first.click()
    expect(panel.locator("pre.code-diff .dl-add").filter(has_text="gate open, passing")).to_be_visible()
    expect(panel.locator(".diff-facts")).to_contain_text("gate_closed")
    panel.screenshot(path=str(SCREENSHOTS / "step_panel_attempt_diff.png"))
    expect(page.locator("#run-live .badge").first).to_have_text("succeeded", timeout=10_000)
    expect(page.locator("#run-events")).to_contain_text("by otto")
    shoot("run_retried_succeeded")


def test_cancel_a_running_run(page: Any, live_server: Any, runtime: Any, operator_user: Any, shoot: Any) -> None:
    run_id = run_graph(runtime, [
        {"id": "first", "kind": "noop"},
        *({"id": f"part-{i}", "kind": "noop", "deps": ["first"]} for i in range(4)),
        {"id": "join", "kind": "noop", "deps": [f"part-{i}" for i in range(4)]},
    ], name="Running import")
    runtime.run_once()
    assert Run.objects.get(pk=run_id).state == "running"

    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/{run_id}/")
    expect(page.locator("#run-live .badge").first).to_have_text("running")
    shoot("run_running")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#run-live").get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-live .badge").first).to_have_text("canceled")
    expect(page.locator("#toasts")).to_contain_text("canceled")
    expect(page.locator("#run-events")).to_contain_text("canceled by otto")
    assert Run.objects.get(pk=run_id).state == "canceled"
    assert not Step.objects.filter(run_id=run_id, state__in=["ready", "pending"]).exists()
    shoot("run_canceled")


def test_preview_and_download_artifacts(page: Any, live_server: Any, runtime: Any, operator_user: Any,
                                        shoot: Any) -> None:
    run_id = run_graph(runtime, [{"id": "report", "kind": "report"}], name="Report run")
    drain(runtime)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/{run_id}/artifacts/")

    page.get_by_role("link", name="table.csv").click()
    pane = page.locator("#preview-pane")
    expect(pane.locator("table th").first).to_have_text("word")
    expect(pane.locator("table")).to_contain_text("<b>beta</b>")  # escaped, shown as text
    shoot("artifact_csv")

    page.get_by_role("link", name="page.html").click()
    expect(pane.locator("pre")).to_contain_text("<script>alert('xss')</script>")
    expect(pane).to_contain_text("shown as source")

    page.get_by_role("link", name="summary.json").click()
    expect(pane.locator("pre")).to_contain_text('"distinct": 2')
    selected = page.locator(".browser-list tr.selected")  # the highlight follows the previewed row
    expect(selected).to_have_count(1)
    expect(selected).to_contain_text("summary.json")

    page.get_by_role("link", name="pixel.png").click()
    expect(pane.locator("img")).to_be_visible()
    assert pane.locator("img").evaluate("img => img.naturalWidth") == 1
    shoot("artifact_image")

    with page.expect_download() as info:
        pane.get_by_role("link", name="Download").click()
    download = info.value
    assert download.suggested_filename == "pixel.png"
    with open(download.path(), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_phone_width__run_page_and_runs_list(browser: Any, live_server: Any, runtime: Any, operator_user: Any,
                                             shoot: Any) -> None:
    run_id = run_graph(runtime, [
        {"id": "fetch", "kind": "noop"},
        {"id": "gate", "kind": "gate", "deps": ["fetch"], "retry": 1},
        {"id": "publish", "kind": "noop", "deps": ["gate"]},
    ], name="Phone check")
    drain(runtime)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    phone = context.new_page()
    try:
        login(phone, live_server.url)
        phone.goto(f"{live_server.url}/runs/")
        expect(phone.locator("#runs-table")).to_contain_text("Phone check")
        shoot("phone_runs", phone)
        phone.goto(f"{live_server.url}/runs/{run_id}/?step=gate")
        expect(phone.locator("#step-panel")).to_contain_text("gate_closed")
        shoot("phone_run", phone)
        # Nothing wider than the screen except inside scrollable tables and the graph.
        overflow = phone.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 392, overflow
    finally:
        context.close()


def test_login_page_and_overview(page: Any, live_server: Any, runtime: Any, operator_user: Any, shoot: Any) -> None:
    run_graph(runtime, [{"id": "x", "kind": "fail"}])
    drain(runtime)
    page.goto(f"{live_server.url}/runs/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/runs/"))
    shoot("login")
    page.get_by_label("Username").fill("otto")
    page.get_by_label("Password").fill("pw-otto-123")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/runs/$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    expect(page.locator("main")).to_contain_text("boom")
    shoot("overview")
    page.locator(".usermenu summary").click()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/"))
