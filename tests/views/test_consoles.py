"""The operator consoles: figures computed from known rows, permissions, bounded queries, the start form."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.views.conftest import EVIL
from workflow import Package, Registry, StepContext
from workflow.conf import reset_runtime
from workflow.engine import registry as registry_module
from workflow.engine.typed import InputError
from workflow.models import Event, Lease, Queue, Run, Step, Worker
from workflow.read import engine_status, queues, throughput

_ids = count(1)


# -- row factories ---------------------------------------------------------------------------------
def make_run(*, state: str = "running", package: str = "t", metadata: dict | None = None,
             created_at: datetime | None = None) -> Run:
    now = created_at or timezone.now()
    return Run.objects.create(id=f"run-{next(_ids)}", package=package, state=state, created_at=now, updated_at=now,
                              metadata=metadata or {})


def make_step(run: Run, *, state: str = "succeeded", queue: str = "default", site: str = "",
              finished_at: datetime | None = None, available_at: datetime | None = None, code: str = "",
              kind: str = "noop", lease_expires_at: datetime | None = None, worker: str = "") -> Step:
    now = timezone.now()
    error = {"code": code, "message": f"failed with {code}"} if code else None
    running = state == "running"
    return Step.objects.create(
        run=run, step_id=f"s{next(_ids)}", kind=kind, queue=queue, site=site, state=state,
        available_at=available_at or now, created_at=now, updated_at=now, finished_at=finished_at, error=error,
        lease_token=f"tok{next(_ids)}" if running else None, lease_owner=worker or None,
        lease_expires_at=(lease_expires_at or now + timedelta(seconds=30)) if running else None,
        started_at=now if running or finished_at else None,
    )


def make_lease(step: Step, *, claimed_at: datetime, outcome: str = "succeeded", worker: str = "w1",
               released: bool = True) -> Lease:
    return Lease.objects.create(
        step=step, run_id=step.run_id, attempt=1, worker_id=worker, token=f"lt{next(_ids)}", claimed_at=claimed_at,
        expires_at=claimed_at + timedelta(seconds=30), released_at=claimed_at + timedelta(seconds=1) if released else None,
        outcome=outcome if released else "",
    )


def make_worker(wid: str, *, site: str = "", queues: list[str] | None = None, seen_ago: float = 1.0,
                running: int = 0) -> Worker:
    now = timezone.now()
    return Worker.objects.create(id=wid, host="host-a", pid=4242, queues=queues, site=site, max_workers=4,
                                 running=running, started_at=now - timedelta(hours=1),
                                 seen_at=now - timedelta(seconds=seen_ago))


def make_queue(name: str, **fields: Any) -> Queue:
    return Queue.objects.create(name=name, updated_at=timezone.now(), **fields)


def make_event(kind: str = "step_succeeded", **fields: Any) -> Event:
    return Event.objects.create(created_at=fields.pop("created_at", timezone.now()), kind=kind, **fields)


def text_of(html: str) -> str:
    """The page's text with tags removed and whitespace collapsed, for asserting sentences."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture
def anon_client(transactional_db: Any) -> Client:
    return Client()


# -- throughput ------------------------------------------------------------------------------------
def test_throughput__buckets_count_finished_steps_and_claims_per_minute(transactional_db: Any) -> None:
    now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    run = make_run()
    for seconds_ago, state in [(10, "succeeded"), (20, "succeeded"), (25, "failed"),  # bucket 12:00
                               (40, "succeeded"), (85, "failed"),  # 11:59 (11:59:50, 11:59:05)
                               (60 * 14 + 20, "succeeded"),  # 11:46:10: first bucket of 15m
                               (60 * 16, "succeeded")]:  # 11:44:30: outside the 15m window
        step = make_step(run, state=state, finished_at=now - timedelta(seconds=seconds_ago))
        make_lease(step, claimed_at=now - timedelta(seconds=seconds_ago + 1),
                   outcome="retried" if state == "failed" else "succeeded")
    make_step(run, state="canceled", finished_at=now - timedelta(seconds=5))

    series = throughput.throughput(throughput.WINDOWS["15m"], now=now)[None]

    assert len(series.buckets) == 15
    assert series.buckets[0].start == datetime(2026, 3, 1, 11, 46, tzinfo=UTC)
    last, before = series.buckets[-1], series.buckets[-2]
    assert (last.succeeded, last.failed, last.canceled, last.claimed) == (2, 1, 1, 3)
    assert (before.succeeded, before.failed, before.claimed, before.retried) == (1, 1, 2, 1)
    assert series.buckets[0].succeeded == 1
    assert (series.succeeded, series.failed, series.claimed) == (4, 2, 6)


def test_throughput__per_queue_series_split_the_total(transactional_db: Any) -> None:
    now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    run = make_run()
    for queue in ("io", "io", "cpu"):
        step = make_step(run, queue=queue, finished_at=now - timedelta(seconds=10))
        make_lease(step, claimed_at=now - timedelta(seconds=12))

    series = throughput.throughput(throughput.WINDOWS["1h"], now=now, queues=["io", "cpu", "idle"])

    assert (series["io"].succeeded, series["io"].claimed) == (2, 2)
    assert series["cpu"].succeeded == 1
    assert series["idle"].succeeded == 0
    assert series[None].succeeded == 3


def test_overview__draws_the_throughput_svg_from_real_rows(viewer_client: Client) -> None:
    run = make_run()
    now = timezone.now()
    for _ in range(3):
        make_step(run, finished_at=now - timedelta(seconds=1))
    make_step(run, state="failed", code="boom", finished_at=now - timedelta(seconds=1))

    response = viewer_client.get(reverse("consoles:overview"), {"window": "15m"})

    html = response.content.decode()
    assert response.status_code == 200
    bars = re.findall(r'data-succeeded="(\d+)" data-failed="(\d+)"', html)
    assert len(bars) == 15
    assert sum(int(s) for s, _ in bars) == 3 and sum(int(f) for _, f in bars) == 1
    assert "<svg" in html and 'class="tp-ok"' in html and 'class="tp-fail"' in html
    assert "3 steps succeeded and 1 failed" in html


# -- overview --------------------------------------------------------------------------------------
def test_overview__counts_by_state_link_to_filtered_lists(viewer_client: Client) -> None:
    run = make_run(state="running")
    make_run(state="failed")
    for _ in range(2):
        make_step(run, state="ready")
    make_step(run, state="running")
    Step.objects.filter(pk=make_step(run, state="running").pk).update(awaiting_thread_since=timezone.now())  # prefetched
    make_step(run, state="pending")
    make_step(run, state="succeeded", finished_at=timezone.now() - timedelta(hours=1))
    make_step(run, state="succeeded", finished_at=timezone.now() - timedelta(days=3))  # outside 24 h

    html = viewer_client.get(reverse("consoles:overview")).content.decode()

    assert f'href="{reverse("workflow:runs")}?state=failed"' in html
    step_stats = dict(re.findall(r'data-step-state="(\w+)"><span class="stat-value">([\d,]+)<', html))
    assert step_stats == {"pending": "1", "ready": "2", "running": "1", "succeeded": "1", "failed": "0",
                          "canceled": "0"}
    assert "+1 claimed, waiting for a thread" in html
    assert f'href="{reverse("consoles:steps")}?state=ready"' in html


def test_overview__failures_grouped_by_code_for_hour_and_day(viewer_client: Client) -> None:
    run = make_run(state="failed")
    now = timezone.now()
    for ago in (timedelta(minutes=5), timedelta(minutes=50), timedelta(hours=5)):
        make_step(run, state="failed", code="boom", finished_at=now - ago)
    make_step(run, state="failed", code="gateway_timeout", finished_at=now - timedelta(minutes=30))
    make_step(run, state="failed", code="ancient", finished_at=now - timedelta(days=2))

    groups = {g.code: (g.last_hour, g.last_day, g.runs) for g in throughput.failure_groups()}
    html = viewer_client.get(reverse("consoles:overview")).content.decode()

    assert groups == {"boom": (2, 3, 1), "gateway_timeout": (1, 1, 1)}
    rows = re.findall(r'code=(\w+)&amp;since=24h">\1</a>', html)
    assert rows == ["boom", "gateway_timeout"]
    assert "ancient" not in html


def test_overview__leases_and_workers_with_what_they_run(viewer_client: Client) -> None:
    run = make_run()
    now = timezone.now()
    live = make_step(run, state="running", worker="w-live", lease_expires_at=now + timedelta(seconds=20))
    make_lease(live, claimed_at=now - timedelta(seconds=3), worker="w-live", released=False)
    make_step(run, state="running", worker="w-gone", lease_expires_at=now - timedelta(seconds=5))
    make_worker("w-live", running=1)
    make_worker("w-old", seen_ago=3 * 3600)  # not seen in the last hour: not listed

    leases = engine_status.lease_counts()
    html = viewer_client.get(reverse("consoles:overview")).content.decode()

    assert (leases.active, leases.expired) == (1, 1)
    assert "w-live" in html and "w-old" not in html
    assert live.step_id in html  # what the worker is running


def test_steps_list__failing_steps_filtered_by_code(viewer_client: Client) -> None:
    run = make_run(state="failed")
    now = timezone.now()
    hits = [make_step(run, state="failed", code="boom", finished_at=now - timedelta(minutes=m)) for m in (1, 2)]
    other = make_step(run, state="failed", code="other", finished_at=now)
    old = make_step(run, state="failed", code="boom", finished_at=now - timedelta(days=3))

    html = viewer_client.get(reverse("consoles:steps"), {"state": "failed", "code": "boom", "since": "24h"}).content.decode()

    shown = re.findall(r'/steps/(s\d+)/"', html)
    assert shown == [hits[0].step_id, hits[1].step_id]  # latest first
    assert other.step_id not in shown and old.step_id not in shown
    wide = viewer_client.get(reverse("consoles:steps"), {"code": "boom", "since": "7d"}).content.decode()
    assert old.step_id in wide


# -- queues ----------------------------------------------------------------------------------------
def _queue_card(html: str, name: str) -> str:
    start = html.index(f'data-queue="{name}"')
    end = html.find("</section>", start)
    return text_of(html[start:end])


def test_queue_monitor__figures_and_token_level_computed_now(viewer_client: Client) -> None:
    now = timezone.now()
    make_queue("io", max_workers=4, rate=1.0, per_seconds=10.0, burst=5, tokens=0.5,
               refilled_at=now - timedelta(seconds=20))
    run = make_run()
    make_step(run, queue="io", state="ready", available_at=now - timedelta(seconds=125))
    make_step(run, queue="io", state="ready", available_at=now - timedelta(seconds=5))
    make_step(run, queue="io", state="ready", available_at=now + timedelta(minutes=5))  # backing off
    make_step(run, queue="io", state="running")
    make_worker("w1")

    (fig,) = [f for f in queues.queue_figures(now=now) if f.name == "io"]
    card = _queue_card(viewer_client.get(reverse("consoles:queues")).content.decode(), "io")

    assert (fig.ready, fig.waiting_backoff, fig.running) == (2, 1, 1)
    assert fig.tokens_now == pytest.approx(2.5)  # 0.5 + 20 s x 0.1 per s, not the stored 0.5
    assert fig.oldest_age_seconds == pytest.approx(125, abs=0.01)
    assert fig.reasons == [] and fig.status == "moving"
    assert "Ready now 2 +1 in backoff" in card
    assert "Running / cap 1 / 4" in card
    assert "1 per 10 s, burst 5" in card
    assert re.search(r"Tokens now 2\.5\d / 5", card)
    assert re.search(r"Oldest ready 2m 0[45]s", card)


def test_queue_monitor__bucket_refill_is_capped_at_burst(transactional_db: Any) -> None:
    now = timezone.now()
    row = make_queue("q", rate=10.0, per_seconds=1.0, burst=3, tokens=0.0, refilled_at=now - timedelta(hours=1))
    assert queues.bucket_level(row, now) == (3.0, None)
    row.refilled_at = now
    row.tokens = 0.25
    level, wait = queues.bucket_level(row, now)
    assert level == pytest.approx(0.25) and wait == pytest.approx(0.075)


@pytest.mark.parametrize(
    ("queue_fields", "running", "workers", "step_site", "expected"),
    [
        ({"paused": True}, 0, [("w1", "")], "", "Paused: 1 ready step wait until an operator resumes the queue."),
        ({"max_workers": 2}, 2, [("w1", "")], "", "At its cap: 2 of 2 allowed steps are running"),
        ({"rate": 1.0, "per_seconds": 10.0, "tokens": 0.2}, 0, [("w1", "")], "",
         "Out of tokens: the rate limit (1 per 10 s, burst 1) allows no start right now (next token in 8.0 s)."),
        ({}, 0, [("w1", "us")], "eu", "No worker for site 'eu': 1 ready step need a worker started with --site eu"),
        ({}, 0, [], "", "No live worker serves queue 'q'"),
        ({}, 0, [("w1", "")], "", None),
    ],
    ids=["paused", "at-cap", "out-of-tokens", "no-site-worker", "no-worker", "moving"],
)
def test_queue_monitor__says_why_a_queue_is_not_moving(
    viewer_client: Client, queue_fields: dict, running: int, workers: list, step_site: str, expected: str | None
) -> None:
    now = timezone.now()
    if "tokens" in queue_fields:
        queue_fields["refilled_at"] = now
    make_queue("q", **queue_fields)
    run = make_run()
    make_step(run, queue="q", state="ready", site=step_site, available_at=now - timedelta(seconds=1))
    for _ in range(running):
        make_step(run, queue="q", state="running")
    for wid, site in workers:
        make_worker(wid, site=site)

    card = _queue_card(viewer_client.get(reverse("consoles:queues")).content.decode(), "q")

    if expected is None:
        assert "Not moving" not in card and "moving" in card
    else:
        assert "Not moving:" in card
        assert expected in card


def test_queue_monitor__a_silent_or_other_queue_worker_does_not_count(transactional_db: Any) -> None:
    now = timezone.now()
    make_queue("q")
    make_step(make_run(), queue="q", state="ready", available_at=now - timedelta(seconds=1))
    make_worker("w-old", seen_ago=600)  # last heartbeat 10 minutes ago
    make_worker("w-other", queues=["io"])

    (fig,) = queues.queue_figures(now=now)

    assert fig.live_workers == 0
    assert fig.reasons[0].startswith("No live worker serves queue 'q'")


# -- pause / resume permissions ----------------------------------------------------------------------
@pytest.mark.parametrize("action", ["pause_queue", "resume_queue"])
def test_queue_actions__permission_matrix(action: str, anon_client: Client, viewer_client: Client,
                                          operator_client: Client) -> None:
    make_queue("io", paused=action == "resume_queue")
    url = reverse(f"consoles:{action}", args=["io"])

    anon = anon_client.post(url)
    assert anon.status_code == 302 and "/login/" in anon["Location"]
    assert viewer_client.post(url).status_code == 403
    assert operator_client.get(url).status_code == 405
    assert Queue.objects.get(pk="io").paused is (action == "resume_queue")

    response = operator_client.post(url)

    assert response.status_code == 302 and response["Location"] == reverse("consoles:queues")
    assert Queue.objects.get(pk="io").paused is (action == "pause_queue")
    event = Event.objects.filter(kind__in=["queue_paused", "queue_resumed"]).latest("id")
    assert event.actor == "otto" and event.queue == "io"


def test_queue_actions__need_csrf(operator_user: User) -> None:
    make_queue("io")
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    assert client.post(reverse("consoles:pause_queue", args=["io"])).status_code == 403
    assert Queue.objects.get(pk="io").paused is False


def test_queue_actions__htmx_returns_the_refreshed_monitor(operator_client: Client) -> None:
    make_queue("io")
    make_step(make_run(), queue="io", state="ready")
    response = operator_client.post(reverse("consoles:pause_queue", args=["io"]), HTTP_HX_REQUEST="true",
                                    HTTP_HX_CURRENT_URL="http://testserver/ops/queues/?window=15m")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Paused: 1 ready step wait" in text_of(html)
    assert "Resume" in html and "hx-swap-oob" in html  # the toast


def test_queue_actions__unknown_queue_is_404(operator_client: Client) -> None:
    assert operator_client.post(reverse("consoles:pause_queue", args=["nope"])).status_code == 404


# -- events ----------------------------------------------------------------------------------------
def test_events__newest_first_filters_and_escaped_payload(viewer_client: Client) -> None:
    run = make_run()
    now = timezone.now()
    old = make_event("step_failed", severity="error", run=run, step_id="a", queue="io", worker_id="w1",
                     payload={"code": "boom", "html": EVIL}, created_at=now - timedelta(days=2))
    mid = make_event("step_succeeded", run=run, step_id="b", queue="cpu", worker_id="w2")
    new = make_event("queue_paused", severity="warning", queue="io", actor="otto", message="queue io paused by otto")

    def ids(**params: str) -> list[int]:
        html = viewer_client.get(reverse("consoles:events"), params).content.decode()
        return [int(i) for i in re.findall(r'<tr class="ev [^"]*" data-id="(\d+)"', html)]

    assert ids() == [new.id, mid.id, old.id]
    assert ids(kind="step_failed") == [old.id]
    assert ids(severity="warning") == [new.id]
    assert ids(run=run.id) == [mid.id, old.id]
    assert ids(run=run.id, step="b") == [mid.id]
    assert ids(queue="io") == [new.id, old.id]
    assert ids(worker="w2") == [mid.id]
    assert ids(range="24h") == [new.id, mid.id]
    assert ids(until=(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")) == [old.id]
    html = viewer_client.get(reverse("consoles:events")).content.decode()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert f'href="{reverse("workflow:step", args=[run.id, "a"])}"' in html


def test_events__keyset_pages_by_id(viewer_client: Client) -> None:
    events = [make_event(message=f"e{i}") for i in range(130)]
    first = viewer_client.get(reverse("consoles:events")).content.decode()
    ids = [int(i) for i in re.findall(r'data-id="(\d+)"', first)]
    assert ids == [e.id for e in reversed(events)][:100]
    after = re.search(r'href="\?after=([^"]+)" rel="next"', first).group(1)
    second = viewer_client.get(reverse("consoles:events"), {"after": after}).content.decode()
    assert [int(i) for i in re.findall(r'data-id="(\d+)"', second)] == [e.id for e in reversed(events)][100:]
    assert "back to live" in second


def test_events__live_tail_returns_only_newer_rows(viewer_client: Client) -> None:
    first = make_event("step_retrying")  # a stored kind: claims and successes come from attempt rows
    second = make_event("step_retrying")
    make_event("step_failed", severity="error")
    url = reverse("consoles:events")

    response = viewer_client.get(url, {"fragment": "new", "newer_than": first.id, "kind": "step_retrying"},
                                 HTTP_HX_REQUEST="true")
    nothing = viewer_client.get(url, {"fragment": "new", "newer_than": 10**9}, HTTP_HX_REQUEST="true")

    assert re.findall(r'data-id="(\d+)"', response.content.decode()) == [str(second.id)]
    assert nothing.status_code == 204


# -- packages and the start form ---------------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Box:
    width: int
    height: int = 1


@dataclass(frozen=True)
class FormInput:
    """Paint boxes."""

    name: str
    count: int = 2
    ratio: float = 1.5
    color: Color = Color.RED
    loud: bool = False
    tags: list[str] = field(default_factory=list)
    box: Box | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise InputError("count", "must not be negative")


def build_form_package() -> Package:
    pkg = Package("painter", display_name="Painter", description="Paints boxes <b>nicely</b>.")

    @pkg.entrypoint
    def start(run: Any, params: FormInput) -> None:
        run.step("paint", {"n": params.count}, kind="paint")

    @pkg.executor("paint", queue="io")
    def paint(step: StepContext, params: dict) -> dict:
        return params

    return pkg


@pytest.fixture
def site_registry(monkeypatch: pytest.MonkeyPatch, demo_package: Package) -> Registry:
    """Swap the site's registry (what the catalogue lists and operator.start_run uses)."""
    reg = Registry([demo_package, build_form_package()])
    monkeypatch.setattr(registry_module, "registry", reg)
    reset_runtime()
    yield reg
    reset_runtime()


def test_packages__catalogue_lists_executors_queues_and_schemas(viewer_client: Client, site_registry: Registry) -> None:
    html = viewer_client.get(reverse("consoles:packages")).content.decode()
    text = text_of(html)

    assert "Painter painter" in text
    assert "Paints boxes &lt;b&gt;nicely&lt;/b&gt;." in html
    assert "paint io" in text  # executor kind and its queue
    assert "color" in text and "one of red, blue" in text
    assert '&quot;enum&quot;: [' in html  # the JSON schema, escaped
    assert "Start a run" not in html  # viewers cannot start runs


def test_start_form__generated_widgets_from_the_schema(operator_client: Client, site_registry: Registry) -> None:
    html = operator_client.get(reverse("consoles:start_run", args=["painter"])).content.decode()

    assert re.search(r'<input type="text" id="f-name" name="name"', html)
    assert re.search(r'<input type="number" id="f-count" name="count" step="1" value="2"', html)
    assert re.search(r'<input type="number" id="f-ratio" name="ratio" step="any" value="1.5"', html)
    assert re.search(r'<select id="f-color" name="color"', html) and '<option value="&quot;blue&quot;"' in html
    assert re.search(r'<input type="checkbox" id="f-loud" name="loud"', html)
    assert re.search(r'<textarea id="f-tags" name="tags"[^>]*></textarea>', html)
    assert re.search(r'<textarea id="f-box" name="box"', html)


def _field_error(html: str, name: str) -> str:
    row = re.search(rf'data-field="{name}">(.*?)</div>', html, re.S)
    assert row, f"no field {name}"
    match = re.search(r'class="field-error"[^>]*>([^<]*)<', row.group(1))
    return match.group(1) if match else ""


@pytest.mark.parametrize(
    ("post", "field_name", "message"),
    [
        ({"name": "", "count": "2"}, "name", "required"),
        ({"name": "x", "count": "1.5"}, "count", "expected a whole number, got &#x27;1.5&#x27;"),
        ({"name": "x", "count": "-3"}, "count", "must not be negative"),
        ({"name": "x", "tags": '["a", 2]'}, "tags", "[1]: expected a string, got int"),
        ({"name": "x", "tags": "[oops"}, "tags", "not valid JSON"),
        ({"name": "x", "box": '{"height": 2}'}, "box", "width: missing required field"),
        ({"name": "x", "color": '"green"'}, "color", "choose one of the listed values"),
        ({"name": "x", "count": ""}, "count", "required (the default was 2)"),
    ],
    ids=["required", "not-integer", "post-init", "list-item", "bad-json", "nested", "enum", "cleared-default"],
)
def test_start_form__bad_field_shows_error_beside_it_and_creates_nothing(
    operator_client: Client, site_registry: Registry, post: dict, field_name: str, message: str
) -> None:
    response = operator_client.post(reverse("consoles:start_run", args=["painter"]), post)

    html = response.content.decode()
    assert response.status_code == 400
    assert message in _field_error(html, field_name)
    assert "Nothing was started" in html
    assert Run.objects.count() == 0 and Step.objects.count() == 0
    if post.get("name"):
        assert 'value="x"' in html  # what the operator typed is kept


def test_start_form__good_input_starts_the_run_and_redirects_to_it(
    operator_client: Client, site_registry: Registry
) -> None:
    response = operator_client.post(reverse("consoles:start_run", args=["painter"]), {
        "name": "n", "count": "3", "ratio": "2", "color": '"blue"', "loud": "on", "tags": '["a"]',
        "box": '{"width": 4}', "run_name": "nightly paint",
    })

    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("workflow:run", args=[run.id])
    assert run.input == {"name": "n", "count": 3, "ratio": 2, "color": "blue", "loud": True, "tags": ["a"],
                         "box": {"width": 4}}
    assert run.metadata["started_by"] == "otto" and run.name == "nightly paint"
    assert Step.objects.get(run=run).input == {"n": 3}
    recent = operator_client.get(reverse("consoles:submissions"), {"package": "painter"}).content.decode()
    assert run.id in recent and "state-pending" in recent


def test_start_form__a_cleared_text_field_runs_with_empty_text_not_the_default(
    operator_client: Client, site_registry: Registry
) -> None:
    html = operator_client.get(reverse("consoles:start_run", args=["painter"])).content.decode()
    assert re.search(r'for="f-count">count <span class="req"', html)  # a cleared number is refused: marked
    response = operator_client.post(reverse("consoles:start_run", args=["painter"]), {
        "name": "n", "count": "2", "ratio": "1.5", "color": '"red"', "box": "",
    })
    assert response.status_code == 302
    assert Run.objects.get().input["box"] is None  # "or empty" means empty, as shown


def test_start_form__untyped_package_takes_a_json_textarea(operator_client: Client, site_registry: Registry) -> None:
    url = reverse("consoles:start_run", args=["t"])
    assert 'name="__input__"' in operator_client.get(url).content.decode()
    bad = operator_client.post(url, {"__input__": "{nope"})
    assert bad.status_code == 400 and "not valid JSON" in _field_error(bad.content.decode(), "__input__")
    good = operator_client.post(url, {"__input__": '{"steps": [{"id": "only", "kind": "noop"}]}'})
    assert good.status_code == 302 and Run.objects.filter(package="t").count() == 1


def test_start_form__permissions(anon_client: Client, viewer_client: Client, site_registry: Registry) -> None:
    url = reverse("consoles:start_run", args=["painter"])
    assert "/login/" in anon_client.get(url)["Location"]
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url, {"name": "x"}).status_code == 403
    assert Run.objects.count() == 0


def test_start_form__unknown_package_is_404(operator_client: Client, site_registry: Registry) -> None:
    assert operator_client.get(reverse("consoles:start_run", args=["nope"])).status_code == 404


# -- engine status ---------------------------------------------------------------------------------
def test_engine_status__database_migrations_counts_and_settings(viewer_client: Client) -> None:
    run = make_run()
    make_step(run, state="running", lease_expires_at=timezone.now() - timedelta(seconds=3))
    make_queue("io", max_workers=4, rate=20.0, burst=5)
    make_worker("w1")

    html = viewer_client.get(reverse("consoles:engine")).content.decode()
    text = text_of(html)

    assert connection.vendor in text
    assert str(connection.settings_dict["NAME"]) in html
    assert re.search(r'data-fact="migrations">(\d+)<', html).group(1) != "0"
    counts = dict(re.findall(r'data-table="(workflow_\w+)">.*?<td class="num">\s*([\d,~]+)', html, re.S))
    assert counts["workflow_run"] == "1" and counts["workflow_step"] == "1" and counts["workflow_worker"] == "1"
    assert re.search(r'data-fact="leases-expired"[^>]*>1<', html)
    assert "lease_duration" in text and "30 s" in text and "poll_interval" in text
    assert "w1" in text


def test_row_counts__capped_then_estimated_from_max_id(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_status, "COUNT_CAP", 3)
    for _ in range(5):
        make_event()
    make_run()
    (events, runs) = engine_status.row_counts([Event, Run])
    assert events.exact is False and events.count > engine_status.COUNT_CAP
    if connection.vendor == "sqlite":
        assert events.count == Event.objects.order_by("-id").first().id
    assert (runs.count, runs.exact) == (1, True)


# -- access and bounded queries --------------------------------------------------------------------
CONSOLE_PAGES = ["consoles:overview", "consoles:steps", "consoles:queues", "consoles:events", "consoles:packages",
                 "consoles:engine"]


@pytest.mark.parametrize("name", CONSOLE_PAGES)
def test_consoles__login_then_view_permissions(name: str, anon_client: Client, transactional_db: Any) -> None:
    url = reverse(name)
    assert "/login/" in anon_client.get(url)["Location"]
    nobody = User.objects.create_user("nobody", password="pw-nobody-1")
    anon_client.force_login(nobody)
    assert anon_client.get(url).status_code == 403


def _seed(scale: int) -> None:
    now = timezone.now()
    for q in ("io", "cpu"):
        Queue.objects.get_or_create(name=q, defaults={"max_workers": 2, "rate": 5.0, "tokens": 0.5,
                                                      "refilled_at": now, "updated_at": now})
    for i in range(scale):
        run = make_run(state="failed" if i % 3 == 0 else "running", metadata={"started_by": "otto"})
        ok = make_step(run, queue="io", finished_at=now - timedelta(minutes=i % 50))
        make_lease(ok, claimed_at=now - timedelta(minutes=i % 50, seconds=2), worker=f"w{i % 4}")
        make_step(run, state="failed", code=f"code{i % 7}", finished_at=now - timedelta(minutes=i))
        make_step(run, state="ready", queue="cpu", site="eu" if i % 2 else "")
        running = make_step(run, state="running", queue="io", worker=f"w{i % 4}")
        make_lease(running, claimed_at=now, worker=f"w{i % 4}", released=False)
        make_event("step_failed", severity="error", run=run, step_id=ok.step_id, payload={"code": "x"})
        make_worker(f"w-{scale}-{i}", site="us" if i % 2 else "")


@pytest.mark.parametrize("name", CONSOLE_PAGES + ["consoles:submissions"])
def test_consoles__query_count_does_not_grow_with_data(name: str, viewer_client: Client) -> None:
    def queries_for_page() -> int:
        connection.queries_log.clear()  # request_started clears it too: start from empty or the slice is wrong
        with CaptureQueriesContext(connection) as ctx:
            response = viewer_client.get(reverse(name), {"state": "failed", "code": "code1"} if name.endswith("steps") else {})
        assert response.status_code in (200, 286)
        return len(ctx.captured_queries)

    _seed(3)
    small = queries_for_page()
    _seed(40)
    large = queries_for_page()

    assert large <= small, f"{name}: {small} queries with little data, {large} with more"
    assert 1 < small <= 25


def test_overview__run_counts_are_capped_per_state(viewer_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throughput, "RUN_COUNT_CAP", 2)
    for _ in range(3):
        make_run(state="succeeded")
    make_run(state="failed")

    html = viewer_client.get(reverse("consoles:overview")).content.decode()

    counts = dict(re.findall(r'data-run-state="(\w+)"><span class="stat-value">([\d,+]+)<', html))
    assert counts == {"pending": "0", "running": "0", "succeeded": "2+", "failed": "1", "canceled": "0"}
    assert "more than 3 total" in html
