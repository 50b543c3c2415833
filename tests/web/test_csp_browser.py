"""In real Chromium: every page carries the CSP, htmx works under it, and nothing violates it."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.conftest import login
from tests.conftest import drain, run_graph
from workflow.models import Event

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_pages_work_under_the_csp_without_violations(page: Any, live_server: Any, runtime: Any,
                                                     operator_user: Any) -> None:
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail", "deps": ["a"]}],
                       name="Under CSP")
    drain(runtime)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.text} {m.location.get('url', '')}")
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico") else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    login(page, live_server.url)
    for path in ("/runs/", f"/runs/{run_id}/", "/ops/", "/ops/queues/", "/ops/events/", "/ops/packages/",
                 "/ops/steps/?state=failed", "/ops/steps/retry/?code=boom", f"/runs/{run_id}/steps/b/", "/records/", "/search/?q=nothing-matches-this", "/admin/"):
        response = page.goto(f"{live_server.url}{path}")
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "unsafe-eval" not in policy, path

    # htmx swaps still work: open a step from the graph into the side panel, without a page load.
    page.goto(f"{live_server.url}/runs/{run_id}/")
    page.evaluate("window.__marker = 'same-page'")
    page.locator('svg.workflow-graph a.node[data-step-id="b"]').click()
    expect(page.locator("#step-panel h2")).to_have_text("b")
    assert page.evaluate("window.__marker") == "same-page"
    # The graph's zoom and the relative times are dashboard.js too.
    before = page.locator("[data-graph-view]").get_attribute("data-scale")
    page.locator('[data-graph-action="zoom-out"]').click()
    assert page.locator("[data-graph-view]").get_attribute("data-scale") != before
    expect(page.locator("#run-live .facts time[data-when]").first).to_have_text(re.compile(r"just now|\d+ s ago|\d+ min ago"))

    # A retry answers with a toast; its close button (static JS, no hx-on) removes it.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Retry step").click()
    toast = page.locator("#toasts .toast").first
    expect(toast).to_contain_text("will run again")
    toast.locator(".toast-close").click()
    expect(page.locator("#toasts .toast")).to_have_count(0)

    # The events tail polls without eval: a new event appears at the top.
    page.goto(f"{live_server.url}/ops/events/")
    Event.objects.create(kind="worker_error", severity="error", message="fresh-under-csp", created_at=timezone.now())
    expect(page.locator("#ev-rows")).to_contain_text("fresh-under-csp", timeout=8000)

    # Logging out forgets the dashboard HTML htmx kept for the back button.
    page.goto(f"{live_server.url}/runs/{run_id}/")
    page.evaluate("localStorage.setItem('htmx-history-cache', '[{\"url\": \"/runs/\", \"content\": \"secret\"}]')")
    page.locator(".usermenu summary").click()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(lambda url: "/login/" in url)
    assert page.evaluate("localStorage.getItem('htmx-history-cache')") is None

    violations = [p for p in problems if "Content Security Policy" in p or "Refused to" in p or "eval" in p.lower()]
    assert not violations, violations
    assert not problems, problems
