"""The events console read at a glance: multi-select filters, index-served sorts, run names, grouped repeats;
and the run page's attempt timeline in worker lanes."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from workflow import forms
from workflow.models import Event, Lease, Run, Step
from workflow.read import event_rows
from workflow.read import timeline as read_timeline

pytestmark = pytest.mark.django_db
_ids = count(1)
URL = "/ops/events/"


def make_run(name: str = "") -> Run:
    now = timezone.now()
    return Run.objects.create(id=f"0190e5c1-7b3a-7c1e-9d2f-{next(_ids):012d}", name=name, package="t",
                              state="running", created_at=now, updated_at=now)


def make_event(kind: str = "step_failed", **fields: Any) -> Event:
    return Event.objects.create(created_at=fields.pop("created_at", timezone.now()), kind=kind, **fields)


def head_ids(html: str) -> list[int]:
    """The ids of the rows shown (a group counts once: its folded members are hidden rows)."""
    return [int(i) for i in re.findall(r'<tr class="ev (?!ev-member)[^"]*" data-id="(\d+)"', html)]


def all_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="ev [^"]*" data-id="(\d+)"', html)]


def get(client: Client, params: Any) -> str:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content[:300]
    return response.content.decode()


# -- filters -----------------------------------------------------------------------------------------
def test_events__kind_and_severity_repeat_and_deep_link(viewer_client: Client) -> None:
    a = make_event("run_created", message="run created with 2 steps")
    b = make_event("queue_paused", severity="warning", queue="io")
    c = make_event("step_failed", severity="error", message="boom")
    make_event("worker_started", severity="debug")

    assert all_ids(get(viewer_client, {"kind": ["run_created", "step_failed"]})) == [c.id, a.id]
    assert all_ids(get(viewer_client, {"severity": ["warning", "error"]})) == [c.id, b.id]
    html = get(viewer_client, {"kind": ["run_created", "queue_paused"], "severity": "info"})
    assert all_ids(html) == [a.id]
    # The form shows what the link asked for, so the page is its own deep link.
    assert re.search(r'name="kind" value="run_created" checked', html)
    assert re.search(r'name="kind" value="queue_paused" checked', html)
    assert not re.search(r'name="kind" value="step_failed" checked', html)
    assert re.search(r'name="severity" value="info" checked', html)
    assert "run_created, queue_paused" in html  # the closed menu says what is picked


def test_events__bad_filter_values_are_messages_not_500(viewer_client: Client) -> None:
    make_event()
    html = get(viewer_client, {"severity": ["error", "loud"]})
    assert "loud is not a severity" in html and 'id="e-sev-error"' in html
    html = get(viewer_client, {"sort": "by-vibes"})
    assert 'id="e-sort-error"' in html and "by-vibes is not a sort" in html
    html = get(viewer_client, {"kind": [f"k{i}" for i in range(31)]})
    assert "Pick at most 30 values" in html
    html = get(viewer_client, {"kind": "k" * 51})
    assert 'id="e-kind-error"' in html
    assert viewer_client.get(URL, {"kind": "a\x00b"}).status_code == 400
    # A cursor made for one sort does not fit another: a 400 with a message, not a 500.
    make_event()
    page = get(viewer_client, {"sort": "kind"})
    cursor = read_cursor(page) or _kind_cursor()
    bad = viewer_client.get(URL, {"after": cursor})
    assert bad.status_code == 400 and b"page link" in bad.content


def _kind_cursor() -> str:
    from workflow.read.pages import encode_cursor

    return encode_cursor("step_failed", 5)


def read_cursor(html: str) -> str | None:
    match = re.search(r'after=([^"&]+)[^"]*" rel="next"', html)
    return match.group(1) if match else None


# -- sorting ------------------------------------------------------------------------------------------
def test_events__sort_by_kind_pages_through_every_row_once(viewer_client: Client) -> None:
    kinds = ["step_failed", "run_created", "queue_paused"]
    events = [make_event(kinds[i % 3], message=f"m{i}") for i in range(230)]
    expected = [e.id for e in sorted(events, key=lambda e: (e.kind, -e.id))]

    seen: list[int] = []
    html = get(viewer_client, {"sort": "kind"})
    pages = [html]
    while (cursor := read_cursor(html)) is not None:
        html = get(viewer_client, {"sort": "kind", "after": cursor})
        pages.append(html)
    for page in pages:
        seen += all_ids(page)
    assert seen == expected and len(pages) == 3
    # Back from the last page gives the second again.
    back = re.search(r'before=([^"&]+)[^"]*" rel="prev"', pages[-1]).group(1)
    assert all_ids(get(viewer_client, {"sort": "kind", "before": back})) == all_ids(pages[1])
    assert 'aria-sort="ascending"' in pages[0] and "Sorted by kind" in pages[0]


def test_events__oldest_first_and_sort_links_keep_filters(viewer_client: Client) -> None:
    events = [make_event("step_failed", message=f"m{i}", severity="error") for i in range(3)]
    html = get(viewer_client, {"sort": "oldest", "severity": "error"})
    assert all_ids(html) == [e.id for e in events]
    newest = re.search(r'id="sort-time" href="([^"]+)"', html).group(1)
    assert "severity=error" in newest and "sort=" not in newest
    kind = re.search(r'id="sort-kind" href="([^"]+)"', html).group(1)
    assert "severity=error" in kind and "sort=kind" in kind
    assert 'id="ev-poller"' not in html  # only the default order is live


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's plan")
def test_events__kind_sort_walks_the_kind_index_without_sorting() -> None:
    make_event()
    filters = forms.EventFilters.from_params({"sort": "kind"}, timezone.now())
    fields, directions = filters.order
    from workflow.read.pages import keyset_page

    with CaptureQueriesContext(connection) as ctx:
        keyset_page(Event.objects.all(), fields=fields, descending=directions, limit=100)
    sql = ctx.captured_queries[-1]["sql"]
    assert "LIMIT 101" in sql
    with connection.cursor() as cur:
        cur.execute("EXPLAIN QUERY PLAN " + sql)
        plan = " ".join(str(row[-1]) for row in cur.fetchall())
    assert "event_kind_idx" in plan and "TEMP B-TREE" not in plan, plan


def test_events__api_takes_repeated_kind_and_severity_and_sort(as_viewer_api: Any) -> None:
    a = make_event("run_created")
    b = make_event("queue_paused", severity="warning")
    c = make_event("step_failed", severity="error")
    body = as_viewer_api.get("/events", {"kind": ["run_created", "step_failed"]}).json()
    assert [e["id"] for e in body["items"]] == [c.id, a.id]
    body = as_viewer_api.get("/events", {"severity": ["warning", "error"], "sort": "oldest"}).json()
    assert [e["id"] for e in body["items"]] == [b.id, c.id]
    body = as_viewer_api.get("/events", {"sort": "kind"}).json()
    assert [e["kind"] for e in body["items"]] == ["queue_paused", "run_created", "step_failed"]
    assert as_viewer_api.get("/events", {"sort": "sideways"}).status_code == 422
    assert as_viewer_api.get("/events", {"severity": ["error", "loud"]}).status_code == 422
    assert as_viewer_api.get("/events", {"kind": ["x" * 60]}).status_code == 422
    kind_page = as_viewer_api.get("/events", {"sort": "kind", "limit": 1}).json()
    assert as_viewer_api.get("/events", {"after": kind_page["next"]}).status_code == 400


@pytest.fixture
def as_viewer_api(viewer: Any) -> Any:
    from tests.api.conftest import ApiClient, token_for

    return ApiClient(token_for(viewer))


# -- reading at a glance ------------------------------------------------------------------------------
def test_events__run_names_not_uuids_and_no_message_that_repeats_the_kind(viewer_client: Client) -> None:
    named = make_run("Nightly import")
    unnamed = make_run()
    make_event("run_succeeded", run=named, message="run succeeded")
    make_event("run_created", run=unnamed, message="run created with 3 steps")
    make_event("step_retried", run=named, step_id="load", actor="ada", message="retried by ada")
    html = get(viewer_client, {})
    assert ">Nightly import</a>" in html and f'title="Run {named.id}"' in html
    assert f">{unnamed.id}</a>" in html  # no name: the whole id, not a stump
    assert ">run succeeded<" not in html and ">with 3 steps<" in html
    assert ">by ada</span>" in html and ">retried by ada<" not in html


@pytest.mark.parametrize(("kind", "message", "actor", "detail"), [
    ("step_succeeded", "step succeeded", "", ""),
    ("run_failed", "run failed", "", ""),
    ("run_created", "run created with 3 steps", "", "with 3 steps"),
    ("step_retried", "retried by ada", "ada", ""),
    ("queue_paused", "queue io paused by ada", "ada", "queue io paused"),
    ("worker_error", "ValueError: bad", "", "ValueError: bad"),
])
def test_detail_of__drops_the_words_the_kind_already_says(kind: str, message: str, actor: str, detail: str) -> None:
    assert event_rows.detail_of(kind, message, actor) == detail


def test_events__consecutive_repeats_fold_into_one_row(viewer_client: Client) -> None:
    run = make_run("Fan-out")
    first = [make_event("step_failed", severity="error", run=run, step_id=f"t-{i}", message="step failed with boom")
             for i in range(12)]
    between = make_event("run_failed", severity="error", run=run, message="run failed")
    last = [make_event("step_failed", severity="error", run=run, step_id=f"u-{i}", message="step failed with boom")
            for i in range(2)]
    html = get(viewer_client, {})
    assert head_ids(html) == [last[-1].id, between.id, first[-1].id]
    assert len(all_ids(html)) == 15
    head = first[-1].id
    assert f'data-group-toggle="g{head}" aria-expanded="false"' in html and "× 12" in html
    assert len(re.findall(rf'data-member-of="g{head}" hidden', html)) == 11
    assert "and 11 more" in html and "× 2" in html


def test_run_page__events_panel_groups_repeats(operator_client: Client) -> None:
    run = make_run("Grouped")
    for i in range(5):
        make_event("step_failed", severity="error", run=run, step_id=f"s{i}", message="step failed with boom")
    html = operator_client.get(reverse("workflow:run", args=[run.id])).content.decode()
    section = html[html.index('id="run-events"'):]
    assert section.count('class="event ev-member') == 4 and "× 5" in section
    assert f"?run={run.id}" in section  # a link to the console's full list


# -- the timeline -------------------------------------------------------------------------------------
def make_step(run: Run, step_id: str) -> Step:
    now = timezone.now()
    return Step.objects.create(run=run, step_id=step_id, kind="noop", queue="default", state="succeeded",
                               available_at=now, created_at=now, updated_at=now)


def make_lease(step: Step, *, worker: str, start: float, seconds: float, outcome: str = "succeeded",
               attempt: int = 1, t0: Any = None) -> Lease:
    claimed = t0 + timedelta(seconds=start)
    return Lease.objects.create(step=step, run_id=step.run_id, attempt=attempt, worker_id=worker,
                                token=f"tok-{next(_ids)}", claimed_at=claimed, expires_at=claimed + timedelta(seconds=30),
                                released_at=claimed + timedelta(seconds=seconds), outcome=outcome)


def test_timeline__one_lane_per_worker_threads_stacked_retries_linked() -> None:
    run = make_run("Lanes")
    t0 = timezone.now() - timedelta(minutes=5)
    a, b, c = (make_step(run, s) for s in ("a", "b", "c"))
    make_lease(a, worker="w1", start=0, seconds=10, t0=t0)
    make_lease(b, worker="w1", start=2, seconds=10, t0=t0)   # overlaps a: a second thread of w1
    make_lease(c, worker="w2", start=1, seconds=3, outcome="retried", t0=t0)
    make_lease(c, worker="w1", start=12, seconds=3, attempt=2, t0=t0)  # after a ends: back on w1's first row

    tl = read_timeline.timeline(run, now=t0 + timedelta(minutes=1))
    assert [(lane.worker_id, lane.rows, lane.shown) for lane in tl.lanes] == [("w1", 2, 3), ("w2", 1, 1)]
    rows = {(bar.step_id, bar.attempt): bar for bar in tl.bars}
    assert rows[("a", 1)].y != rows[("b", 1)].y and rows[("a", 1)].y == rows[("c", 2)].y
    assert rows[("c", 1)].y >= tl.lanes[1].top
    assert len(tl.links) == 1 and tl.links[0].step_id == "c" and tl.retried_steps == 1
    assert rows[("a", 1)].x == 0 and abs(rows[("c", 2)].x + rows[("c", 2)].w - 1000) < 0.01  # the whole run's span
    assert dict((cls, n) for cls, _, n in tl.outcome_counts) == {"succeeded": 3, "retried": 1}


def test_timeline__a_huge_run_is_sampled_over_its_whole_span_with_bounded_queries() -> None:
    run = make_run("Huge")
    t0 = timezone.now() - timedelta(hours=1)
    pick = random.Random(1).choice
    steps = Step.objects.bulk_create([Step(run=run, step_id=f"s{i:04d}", kind="noop", queue="default",
                                           state="succeeded", available_at=t0, created_at=t0, updated_at=t0)
                                      for i in range(1500)])
    Lease.objects.bulk_create([
        Lease(step=s, run=run, attempt=1, worker_id=pick([f"w{n}" for n in range(6)]), token=f"big-{i}", claimed_at=t0 + timedelta(seconds=i),
              expires_at=t0 + timedelta(seconds=i + 30), released_at=t0 + timedelta(seconds=i + 2),
              outcome="failed" if i % 100 == 7 else "succeeded")
        for i, s in enumerate(steps)])
    with CaptureQueriesContext(connection) as ctx:
        tl = read_timeline.timeline(run, max_bars=400)
    assert len(ctx.captured_queries) <= 5
    assert tl.total == 1500 and tl.is_sampled and 300 <= len(tl.bars) <= 420
    assert sum(1 for b in tl.bars if b.outcome == "failed") == 15  # every failure is drawn
    xs = sorted(b.x for b in tl.bars)
    assert xs[0] < 10 and xs[-1] > 980  # the sample spans the whole run, not its latest part
    assert len(tl.lanes) == 6 and sum(lane.attempts for lane in tl.lanes) == 1500


def test_run_page__timeline_renders_lanes_and_a_sampling_note(operator_client: Client) -> None:
    run = make_run("Page")
    t0 = timezone.now() - timedelta(minutes=5)
    s = make_step(run, "only")
    make_lease(s, worker="worker-a", start=0, seconds=4, outcome="retried", t0=t0)
    make_lease(s, worker="worker-b", start=5, seconds=4, attempt=2, t0=t0)
    html = operator_client.get(reverse("workflow:run", args=[run.id])).content.decode()
    section = html[html.index('id="run-timeline"'):html.index("</section>", html.index('id="run-timeline"'))]
    assert section.count('class="tl-lane-label"') == 2 and "worker-a" in section and "worker-b" in section
    assert section.count('<rect class="tl-b ') == 2 and section.count('class="tl-link"') == 1
    assert "failed, will retry" in section  # in the legend and the bar's tooltip, never clipped
    assert "<title>only · attempt 1 on worker-a" in section
    assert "Showing" not in section and "latest" not in section


@pytest.mark.parametrize(("ids", "prefix"), [
    (["worker-a@host-1", "worker-b@host-2"], "worker-"),
    (["vm:2613:ab12", "vm:2613:cd34", "vm:2613:ef56"], "vm:2613:"),
    (["w1", "w2"], ""),
    (["only-one"], ""),
    (["alpha", "beta"], ""),
])
def test_lane_labels__drop_the_prefix_every_worker_shares(ids: list[str], prefix: str) -> None:
    assert read_timeline._common_prefix(ids) == prefix
