"""The events console and the run's attempt timeline in real Chromium: read at a glance, filter, sort,
expand repeats; worker lanes, brush to zoom, a retry lit up with its step; screenshots at both widths
and both colour schemes."""

from __future__ import annotations

import heapq
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.conftest import login, shoot_all
from tests.conftest import drain, run_graph
from workflow.models import Event, Lease, Run, Step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



# -- events ------------------------------------------------------------------------------------------
def events_history(runtime: Any) -> str:
    run_graph(runtime, [{"id": "fetch", "kind": "noop"}, {"id": "charge", "kind": "fail", "deps": ["fetch"]}],
              name="Nightly invoices")
    drain(runtime)
    run_id = run_graph(runtime, [{"id": "extract", "kind": "noop"}], name="Warehouse import")
    run = Run.objects.get(pk=run_id)
    now = timezone.now()
    Event.objects.bulk_create([
        Event(created_at=now, kind="step_failed", severity="error", run=run, step_id=f"transform-{i:03d}",
              message="step failed with upstream_timeout", payload={"code": "upstream_timeout"})
        for i in range(12)])
    runtime.pause_queue("default", actor="otto")
    runtime.resume_queue("default", actor="otto")
    return run_id


def test_events__names_groups_multiselect_sort_and_a_one_row_filter_bar(page: Any, live_server: Any, runtime: Any,
                                                                        operator_user: Any) -> None:
    run_id = events_history(runtime)
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/ops/events/")

    # Run names, not uuid stumps; the uuid is one hover away.
    named = page.locator("#ev-rows a.ev-run", has_text="Warehouse import").first
    expect(named).to_be_visible()
    assert named.get_attribute("title") == f"Run {run_id}"
    # No message that repeats the kind: run_succeeded rows carry no "run succeeded" text.
    expect(page.locator("#ev-rows .ev-msg-cell", has_text=re.compile(r"^\s*run (succeeded|failed)\s*$"))).to_have_count(0)

    # Twelve failures in a row are one row, "× 12", that expands and folds back.
    toggle = page.locator("#ev-rows button.ev-repeat", has_text="× 12")
    expect(toggle).to_be_visible()
    members = page.locator(f'#ev-rows tr[data-member-of="{toggle.get_attribute("data-group-toggle")}"]')
    expect(members).to_have_count(11)
    expect(members.first).to_be_hidden()
    toggle.click()
    expect(members.nth(10)).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    shoot_all(page, "events-console-expanded")
    toggle.click()
    expect(members.first).to_be_hidden()

    # The filter bar is one row at 1440 px: every field ends on the same line.
    tops = page.locator("form.ev-filters > .field").evaluate_all(
        "els => els.map(e => Math.round(e.getBoundingClientRect().bottom))")
    assert len(set(tops)) == 1, tops
    shoot_all(page, "events-console")

    # Multi-select: two kinds, by checkbox; the URL repeats the parameter (a deep link).
    page.locator("#e-kind").click()
    page.locator('input[name=kind][value="step_failed"]').check()
    page.locator('input[name=kind][value="queue_paused"]').check()
    page.locator("h1").click()  # a click outside closes the menu
    expect(page.locator('input[name=kind][value="step_failed"]')).to_be_hidden()
    expect(page.locator("#e-kind")).to_have_text("queue_paused, step_failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"kind="))
    assert sorted(parse_qs(urlparse(page.url).query)["kind"]) == ["queue_paused", "step_failed"]
    kinds = set(page.locator("#ev-rows tr").evaluate_all("els => els.map(e => e.dataset.kind)"))
    assert kinds == {"step_failed", "queue_paused"}
    page.reload()  # the link alone rebuilds the filter
    expect(page.locator('input[name=kind][value="queue_paused"]')).to_be_checked()

    # Sort by kind from its header: A to Z, filters kept, the live tail off (it only fits newest-first).
    page.locator("#sort-kind").click()
    page.wait_for_url(re.compile(r"sort=kind"))
    assert sorted(parse_qs(urlparse(page.url).query)["kind"]) == ["queue_paused", "step_failed"]
    order = page.locator("#ev-rows tr:not([hidden])").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert order == sorted(order) and order[0] == "queue_paused"
    expect(page.locator("#ev-live-note")).to_contain_text("Sorted by kind")
    page.locator("#sort-time").click()
    page.wait_for_url(lambda url: "sort=" not in url)

    # On a phone the bar is a tidy grid, nothing sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator("#e-more").click()
    expect(page.locator("#e-queue")).to_be_visible()
    box = page.locator(".more-panel").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
    shoot_all(page, "events-console-filtered")


# -- the timeline ------------------------------------------------------------------------------------
WORKERS = {"worker-a@host-1": 4, "worker-b@host-2": 2, "worker-c@host-3": 1}
RETRIED = {"t-03", "t-11", "t-17"}


def lease_history(runtime: Any, *, steps: int = 30) -> str:
    """A run's attempts as three workers of 4, 2 and 1 threads would have made them, with retries."""
    run_id = run_graph(runtime, [{"id": f"t-{i:02d}", "kind": "noop"} for i in range(steps)], name="Lanes")
    drain(runtime)
    Lease.objects.filter(run_id=run_id).delete()
    t0 = timezone.now() - timedelta(minutes=3)
    free = [(0.0, w, n) for w, threads in WORKERS.items() for n in range(threads)]
    heapq.heapify(free)
    todo = [(f"t-{i:02d}", 1) for i in range(steps)]
    rows, k = [], 0
    while todo:
        step_id, attempt = todo.pop(0)
        at, worker, thread = heapq.heappop(free)
        seconds = 2.0 + (k * 7 % 9)
        k += 1
        outcome = "succeeded"
        if step_id in RETRIED and attempt == 1:
            outcome = "retried"
            todo.insert(min(3, len(todo)), (step_id, 2))
        elif step_id == "t-17" and attempt == 2:
            outcome = "failed"
        step = Step.objects.get(run_id=run_id, step_id=step_id)
        claimed = t0 + timedelta(seconds=at)
        rows.append(Lease(step=step, run_id=run_id, attempt=attempt, worker_id=worker, token=f"{step_id}-{attempt}",
                          claimed_at=claimed, expires_at=claimed + timedelta(seconds=30),
                          released_at=claimed + timedelta(seconds=seconds), outcome=outcome,
                          error_code="upstream_timeout" if outcome != "succeeded" else ""))
        heapq.heappush(free, (at + seconds + 0.3, worker, thread))
    Lease.objects.bulk_create(rows)
    return run_id


def view_box(page: Any) -> list[float]:
    return [float(v) for v in page.locator("svg[data-tl-lanes]").get_attribute("viewBox").split()]


def drag(page: Any, locator: Any, start: float, end: float) -> None:
    box = locator.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * (start + end) / 2, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * end, y, steps=4)
    page.mouse.up()


def test_timeline__worker_lanes_brush_zoom_and_a_retry_lit_with_its_step(page: Any, live_server: Any, runtime: Any,
                                                                        operator_user: Any) -> None:
    run_id = lease_history(runtime)
    total = Lease.objects.filter(run_id=run_id).count()
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/runs/{run_id}/")
    timeline = page.locator("#run-timeline")
    timeline.scroll_into_view_if_needed()

    # One lane per worker, as tall as the threads it ran at once; every attempt drawn, the whole run.
    labels = timeline.locator(".tl-lane-label")
    expect(labels).to_have_count(3)
    assert [labels.nth(i).get_attribute("title").split(":")[0] for i in range(3)] == list(WORKERS)
    assert labels.first.inner_text().startswith("…a@host-1")  # the shared "worker-" is not repeated
    heights = [labels.nth(i).bounding_box()["height"] for i in range(3)]
    assert heights[0] == 4 * 16 and heights[1] == 2 * 16 and heights[2] == 16, heights
    expect(timeline.locator("rect.tl-b")).to_have_count(total)
    expect(timeline.locator("#tl-summary")).to_contain_text(f"{total} attempts on 3 workers")
    expect(timeline.locator(".tl-legend")).to_contain_text("failed, will retry 3")
    expect(timeline).not_to_contain_text("latest")

    # Hover a retried attempt: the step's other attempt lights up, joined by a line.
    first = timeline.locator('rect.tl-b[data-step="t-11"][data-attempt="1"]')
    first.hover()
    expect(timeline.locator('rect.tl-b.hl[data-step="t-11"]')).to_have_count(2)
    expect(timeline.locator('line.tl-link.hl[data-step="t-11"]')).to_have_count(1)
    assert timeline.locator('rect.tl-b.hl:not([data-step="t-11"])').count() == 0
    assert "attempt 1 on" in first.locator("title").text_content()
    assert "failed, will retry (upstream_timeout)" in first.locator("title").text_content()
    shoot_all(page, "timeline-lanes", focus="#run-timeline")

    # Brush on the overview strip: the lanes show that range; the axis and the note follow.
    overview = timeline.locator("svg[data-tl-overview]")
    drag(page, overview, 0.2, 0.5)
    x, _, w, _ = view_box(page)
    assert 190 < x < 210 and 290 < w < 310, (x, w)
    expect(timeline.locator("[data-tl-range]")).to_contain_text("×3")
    expect(timeline.locator("[data-tl-reset]")).to_be_enabled()
    # Drag the window along the strip: a pan, same width.
    drag(page, overview, 0.3, 0.4)
    x2, _, w2, _ = view_box(page)
    assert abs(w2 - w) < 0.5 and 290 < x2 < 310, (x2, w2)
    # Drag on the lanes themselves zooms further, without opening the bar it ends on.
    lanes = timeline.locator("svg[data-tl-lanes]")
    drag(page, lanes, 0.25, 0.75)
    x3, _, w3, _ = view_box(page)
    assert abs(w3 - w2 / 2) < 3 and x3 > x2, (x3, w3)
    shoot_all(page, "timeline-zoomed", focus="#run-timeline")
    timeline.locator("[data-tl-reset]").click()
    assert view_box(page)[0] == 0 and view_box(page)[2] == 1000
    expect(timeline.locator("[data-tl-range]")).to_have_text("whole run")
    # The keyboard on the strip: + zooms, arrows pan, 0 resets.
    overview.focus()
    page.keyboard.press("+")
    assert view_box(page)[2] == 500
    page.keyboard.press("ArrowRight")
    assert view_box(page)[0] > 250
    page.keyboard.press("0")
    assert view_box(page)[2] == 1000

    # A click on a bar opens its step.
    timeline.locator('rect.tl-b[data-step="t-17"][data-attempt="2"]').click()
    expect(page.locator("#step-panel")).to_contain_text("t-17")
    assert "step=t-17" in page.url


def test_timeline__zoom_survives_a_live_update(page: Any, live_server: Any, runtime: Any, operator_user: Any) -> None:
    run_id = lease_history(runtime, steps=12)
    Run.objects.filter(pk=run_id).update(state="running", finished_at=None)
    Step.objects.filter(run_id=run_id, step_id="t-11").update(state="pending", finished_at=None)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/{run_id}/")
    overview = page.locator("svg[data-tl-overview]")
    overview.scroll_into_view_if_needed()
    drag(page, overview, 0.1, 0.3)
    before = view_box(page)
    section = page.locator("#run-timeline").element_handle()
    with page.expect_response(lambda r: "fragment=live" in r.url or "v=" in r.url, timeout=10_000):
        Step.objects.filter(run_id=run_id, step_id="t-11").update(updated_at=timezone.now())
    page.wait_for_function("el => !el.isConnected", arg=section, timeout=10_000)  # the section was replaced
    after = view_box(page)
    assert abs(after[0] - before[0]) < 2 and abs(after[2] - before[2]) < 2, (before, after)
    expect(page.locator("[data-tl-reset]")).to_be_enabled()


def test_timeline__a_big_run_is_bounded_and_says_so(page: Any, live_server: Any, runtime: Any,
                                                   operator_user: Any) -> None:
    run_id = run_graph(runtime, [{"id": "seed", "kind": "noop"}], name="Big")
    drain(runtime)
    run = Run.objects.get(pk=run_id)
    t0 = timezone.now() - timedelta(hours=2)
    steps = Step.objects.bulk_create([Step(run=run, step_id=f"p-{i:05d}", kind="noop", queue="default",
                                           state="succeeded", available_at=t0, created_at=t0, updated_at=t0)
                                      for i in range(2000)])
    Lease.objects.bulk_create([
        Lease(step=s, run=run, attempt=1, worker_id=f"worker-{i % 7 * 3 % 7}", token=f"p-{i}",
              claimed_at=t0 + timedelta(seconds=i * 3), expires_at=t0 + timedelta(seconds=i * 3 + 30),
              released_at=t0 + timedelta(seconds=i * 3 + 5 + i % 4), outcome="retried" if i % 97 == 0 else "succeeded")
        for i, s in enumerate(steps)])
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/runs/{run_id}/")
    timeline = page.locator("#run-timeline")
    expect(timeline.locator("#tl-sampled")).to_contain_text("of 2001 attempts, sampled evenly across the whole run")
    bars = timeline.locator("rect.tl-b").count()
    assert bars <= 420
    timeline.scroll_into_view_if_needed()
    shoot_all(page, "timeline-sampled", focus="#run-timeline")
