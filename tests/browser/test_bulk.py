# ruff: noqa: F811  (site_registry, a fixture from tests/views/test_bulk.py, is a parameter here)
"""Bulk recovery in real Chromium: retry all the failures of a code from a preview, and edit-and-retry one step."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, shoot_all
from tests.conftest import drain, run_graph
from tests.views.conftest import GATE
from tests.views.test_bulk import GRAPH_A, GRAPH_B, site_registry  # noqa: F401  (a fixture)
from workflow import Registry
from workflow.models import Event, Step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]




def _count(page: Any, name: str) -> int:
    text = page.locator(f'[data-count="{name}"] .stat-value').inner_text()
    return int(text.replace(",", "").replace("≥", "").strip())


def test_bulk_retry__preview_counts_match_what_reruns(page: Any, live_server: Any, runtime: Any, operator_user: Any) -> None:
    run_graph(runtime, GRAPH_A, name="Run A")
    run_graph(runtime, GRAPH_B, name="Run B")
    drain(runtime)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/ops/steps/?code=gate_closed")
    expect(page.locator("#steps-table tbody tr")).to_have_count(3)
    shoot_all(page, "steps-console-failures", full_page=True)
    page.get_by_role("link", name="Retry all these…").click()
    expect(page).to_have_url(re.compile(r"/ops/steps/retry/\?state=failed&code=gate_closed"))
    expect(page.locator("#bulk-steps tbody tr")).to_have_count(3)
    steps, dependents, total = _count(page, "steps"), _count(page, "dependents"), _count(page, "total")
    assert (steps, dependents, total) == (3, 4, 7)
    expect(page.locator("#bulk-filters")).to_contain_text("gate_closed")
    shoot_all(page, "bulk-retry-preview", full_page=True)
    assert not Event.objects.filter(kind="step_retried").exists()  # the preview wrote nothing

    before = set(Step.objects.exclude(state="succeeded").values_list("id", flat=True))
    page.get_by_role("button", name="Retry 3 steps").click()
    expect(page).to_have_url(re.compile(r"/ops/steps/\?state=failed&code=gate_closed"))
    expect(page.locator("#toasts")).to_contain_text("Retried 3 failed steps in 1 batch")
    assert sorted(Event.objects.filter(kind="step_retried").values_list("actor", flat=True)) == ["otto"] * 3
    GATE["open"] = True
    drain(runtime)
    assert Step.objects.filter(id__in=before, state="succeeded").count() == total
    page.reload()
    expect(page.locator("#steps-table")).to_contain_text("No steps match")


def test_edit_and_retry__validation_errors_then_a_fixed_input_runs(page: Any, live_server: Any, runtime: Any,
                                                                  operator_user: Any, site_registry: Registry) -> None:
    run_id = run_graph(runtime, [{"id": "charge", "kind": "charge", "input": {"amount": 0}},
                                 {"id": "ship", "kind": "noop", "deps": ["charge"]}], name="Order 7")
    drain(runtime)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/{run_id}/steps/charge/")
    page.get_by_text("Edit input and retry", exact=True).click()
    box = page.get_by_label(re.compile("New input"))
    expect(box).to_have_value(re.compile(r'"amount": 0'))

    box.fill('{"amount": "ten"}')
    page.get_by_role("button", name="Retry with this input").click()
    error = page.locator("#edit-input-error")
    expect(error).to_contain_text("input.amount: expected an integer")
    box = page.get_by_label(re.compile("New input"))
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_have_value('{"amount": "ten"}')  # what was typed stays, to fix it
    shoot_all(page, "edit-and-retry-error", full_page=True)
    box.fill('{"amount": 5')
    page.get_by_role("button", name="Retry with this input").click()
    expect(page.locator("#edit-input-error")).to_contain_text("not valid JSON")
    step = Step.objects.get(run_id=run_id, step_id="charge")
    assert (step.state, step.input, step.original_input) == ("failed", {"amount": 0}, None)

    page.get_by_label(re.compile("New input")).fill('{"amount": 5, "currency": "SEK"}')
    page.get_by_role("button", name="Retry with this input").click()
    expect(page.locator("#toasts")).to_contain_text("will run again with the edited input")
    drain(runtime)
    page.reload()
    expect(page.locator(".panel-state")).to_contain_text("succeeded")
    expect(page.locator("#step-input")).to_contain_text("Edited 1 time, last by otto")
    page.get_by_text("Original input").click()
    expect(page.locator(".original-input pre")).to_contain_text('"amount": 0')
    expect(page.locator("#step-panel")).to_contain_text("step_input_edited")
    shoot_all(page, "edit-and-retry-done", full_page=True)
    assert Step.objects.get(run_id=run_id, step_id="charge").result == {"charged": 5, "currency": "SEK"}
