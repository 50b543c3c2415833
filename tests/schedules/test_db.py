"""Schedules in the database with a controllable clock: reconcile, fire once across workers, policies, actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.core import checks

from tests.conftest import drain
from workflow import Package, Registry
from workflow.engine.errors import ConfigurationError
from workflow.models import Event, Run, Schedule
from workflow.schedules import reconcile, run_now, set_paused, tick_schedules

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def sched_clock() -> Clock:
    return Clock()


def with_schedule(demo_package: Package, **kw) -> Registry:
    demo_package.schedule("every5", **{"cron": "*/5 * * * *", "input": {"steps": [{"id": "a", "kind": "noop"}]}, **kw})
    return Registry([demo_package])


def test_reconcile__stores_code_schedules_and_marks_removed_ones(demo_package, sched_clock):
    registry = with_schedule(demo_package)
    report = reconcile(registry, now=sched_clock.now)
    assert report.created == ["t:every5"]
    row = Schedule.objects.get()
    assert row.next_fire_at == datetime(2026, 1, 1, 12, 5, tzinfo=UTC) and row.status == "active"
    assert reconcile(registry, now=sched_clock.now).created == []  # a second worker starting: no change
    demo_package.schedules.clear()
    assert reconcile(Registry([demo_package]), now=sched_clock.now).removed == ["t:every5"]
    row.refresh_from_db()
    assert row.status == "removed" and row.next_fire_at is None
    assert Event.objects.filter(kind="schedule_removed").count() == 1


def test_removed_schedule__never_fires(demo_package, make_runtime, sched_clock):
    registry = with_schedule(demo_package)
    rt = make_runtime(clock=sched_clock)
    rt.registry = registry
    reconcile(registry, now=sched_clock.now)
    demo_package.schedules.clear()
    reconcile(registry, now=sched_clock.now)
    sched_clock.advance(minutes=20)
    assert tick_schedules(rt) == 0 and Run.objects.count() == 0


def test_two_workers_on_the_same_tick__one_run_with_its_schedule_in_metadata(demo_package, make_runtime, sched_clock):
    registry = with_schedule(demo_package)
    workers = [make_runtime(clock=sched_clock) for _ in range(3)]
    for rt in workers:
        rt.registry = registry
    reconcile(registry, now=sched_clock.now)
    sched_clock.now = datetime(2026, 1, 1, 12, 5, 0, 400000, tzinfo=UTC)
    started = [tick_schedules(rt) for rt in workers]
    assert started == [1, 0, 0]
    run = Run.objects.get()
    assert run.id == "sched:t:every5:2026-01-01T12:05:00Z"
    assert run.metadata == {"schedule": "t:every5", "scheduled_at": "2026-01-01T12:05:00Z", "trigger": "schedule"}
    row = Schedule.objects.get()
    assert (row.fired_count, row.missed_count, row.last_fired_at) == (1, 0, datetime(2026, 1, 1, 12, 5, tzinfo=UTC))


@pytest.mark.parametrize(("catch_up", "runs", "missed", "skipped"), [("skip", 0, 7, 7), ("latest", 1, 7, 6), ("all", 7, 7, 0)])
def test_downtime__catch_up_counts_and_reports_missed_ticks(demo_package, make_runtime, sched_clock, catch_up, runs,
                                                            missed, skipped):
    registry = with_schedule(demo_package, catch_up=catch_up, overlap="allow")
    rt = make_runtime(clock=sched_clock)
    rt.registry = registry
    reconcile(registry, now=sched_clock.now)
    sched_clock.advance(minutes=37)  # 12:05 .. 12:35 missed, 12:37:30 now
    assert tick_schedules(rt) == runs
    row = Schedule.objects.get()
    assert (row.missed_count, row.skipped_count, Run.objects.count()) == (missed, skipped, runs)
    event = Event.objects.get(kind="schedule_missed")
    assert f"{missed} tick(s)" in event.message and f"{skipped} skipped" in event.message
    assert tick_schedules(rt) == 0  # handled: a second look changes nothing


def test_overlap_skip__with_a_long_run_skips_and_says_so(demo_package, make_runtime, sched_clock):
    registry = with_schedule(demo_package, overlap="skip")
    rt = make_runtime(clock=sched_clock)
    rt.registry = registry
    reconcile(registry, now=sched_clock.now)
    sched_clock.now = datetime(2026, 1, 1, 12, 5, 1, tzinfo=UTC)
    assert tick_schedules(rt) == 1  # the run is not executed: it stays active
    sched_clock.advance(minutes=5)
    assert tick_schedules(rt) == 0
    event = Event.objects.get(kind="schedule_skipped")
    assert "still active (overlap=skip)" in event.message
    assert Schedule.objects.get().skipped_count == 1
    drain(rt)  # the long run ends
    sched_clock.advance(minutes=5)
    assert tick_schedules(rt) == 1


def test_overlap_buffer_one__fires_the_buffered_tick_when_the_run_ends(demo_package, make_runtime, sched_clock):
    registry = with_schedule(demo_package, overlap="buffer_one")
    rt = make_runtime(clock=sched_clock)
    rt.registry = registry
    reconcile(registry, now=sched_clock.now)
    sched_clock.now = datetime(2026, 1, 1, 12, 5, 1, tzinfo=UTC)
    assert tick_schedules(rt) == 1
    sched_clock.advance(minutes=5)
    assert tick_schedules(rt) == 0
    assert Schedule.objects.get().buffered_at == datetime(2026, 1, 1, 12, 10, tzinfo=UTC)
    sched_clock.advance(seconds=20)
    assert tick_schedules(rt) == 0  # still running
    drain(rt)
    assert tick_schedules(rt) == 1
    assert Run.objects.filter(id="sched:t:every5:2026-01-01T12:10:00Z").exists()
    assert Schedule.objects.get().buffered_at is None


def test_pause_resume_and_run_now__are_audited_and_paused_never_fires(demo_package, make_runtime, sched_clock):
    registry = with_schedule(demo_package)
    rt = make_runtime(clock=sched_clock)
    rt.registry = registry
    reconcile(registry, now=sched_clock.now)
    assert set_paused(rt, "t:every5", True, actor="ada")
    sched_clock.advance(minutes=30)
    assert tick_schedules(rt) == 0
    assert set_paused(rt, "t:every5", False, actor="ada")
    assert tick_schedules(rt) == 0  # the paused ticks are not caught up
    run_id = run_now(rt, "t:every5", actor="ada")
    assert Run.objects.get(pk=run_id).metadata["trigger"] == "manual"
    kinds = list(Event.objects.filter(actor="ada").order_by("id").values_list("kind", flat=True))
    assert kinds == ["schedule_paused", "schedule_resumed", "schedule_run_now"]


@dataclass(frozen=True)
class Params:
    count: int


def test_bad_schedules__each_a_clear_error_at_start_up_and_nothing_stored(demo_package):
    typed = Package("typedpkg")

    @typed.entrypoint
    def start(run, params: Params) -> None:
        run.step("a", {}, kind="noop")

    typed.schedule("wrong_input", cron="* * * * *", input={"count": "many"})
    demo_package.schedule("bad_cron", cron="61 * * * *")
    demo_package.schedule("bad_tz", cron="* * * * *", timezone="Nowhere/Atlantis")
    demo_package.schedule("twice", cron="* * * * *")
    demo_package.schedule("twice", cron="*/2 * * * *")
    registry = Registry([demo_package, typed])
    with pytest.raises(ConfigurationError) as info:
        reconcile(registry)
    text = str(info.value)
    assert "schedule 'bad_cron' of package 't': invalid cron expression '61 * * * *'" in text
    assert "schedule 'bad_tz' of package 't': unknown time zone 'Nowhere/Atlantis'" in text
    assert "schedule 'twice' of package 't' is declared twice" in text
    assert "schedule 'wrong_input' of package 'typedpkg': input of package 'typedpkg' is invalid" in text
    assert Schedule.objects.count() == 0


def test_unknown_package__is_named(demo_package):
    from workflow.engine.registry import schedule_problems

    ghost = Package("ghost")
    spec = ghost.schedule("nightly", cron="0 3 * * *")
    assert schedule_problems(Registry([demo_package]), [spec]) == [
        "schedule 'nightly' of package 'ghost': unknown package 'ghost' (registered: t)"
    ]


def test_system_check__reports_a_bad_schedule_declared_in_code(monkeypatch):
    from workflow.checks import check_schedules
    from workflow.engine import registry as registry_module

    pkg = Package("checked")

    @pkg.entrypoint
    def start(run) -> None:
        run.step("a", {}, kind="noop")

    pkg.schedule("nightly", cron="0 3 * *", timezone="Europe/Paris")
    monkeypatch.setattr(registry_module, "registry", Registry([pkg]))
    errors = check_schedules()
    assert [e.id for e in errors] == ["workflow.E010"] and isinstance(errors[0], checks.Error)
    assert "schedule 'nightly' of package 'checked': invalid cron expression" in errors[0].msg
