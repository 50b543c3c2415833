"""The pure schedule logic with a controllable clock: policies, downtime, overlap, DST in two zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from workflow.engine.errors import ConfigurationError
from workflow.engine.schedules import ScheduleSpec, ScheduleState, plan

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def spec(**kw) -> ScheduleSpec:
    return ScheduleSpec(**{"name": "s", "package": "t", "cron": "*/5 * * * *", **kw})


def at(*args: int, tz=UTC) -> datetime:
    return datetime(*args, tzinfo=tz)


def test_on_time_tick__fires_once_and_the_cursor_moves():
    s = spec()
    decision = plan(s, ScheduleState(cursor=at(2026, 1, 1, 12, 0)), at(2026, 1, 1, 12, 5, 1))
    assert decision.fire == (at(2026, 1, 1, 12, 5),)
    assert (decision.missed, decision.skipped) == (0, 0)
    assert decision.next_due == at(2026, 1, 1, 12, 10)
    again = plan(s, ScheduleState(cursor=decision.cursor), at(2026, 1, 1, 12, 5, 3))
    assert again.fire == ()


def test_nothing_due__fires_nothing():
    decision = plan(spec(), ScheduleState(cursor=at(2026, 1, 1, 12, 0)), at(2026, 1, 1, 12, 4, 59))
    assert decision.fire == () and decision.next_due == at(2026, 1, 1, 12, 5)


@pytest.mark.parametrize(("catch_up", "fired", "skipped"), [
    ("skip", [], 6),
    ("latest", [at(2026, 1, 1, 12, 30)], 5),
    ("all", [at(2026, 1, 1, 12, m) for m in (5, 10, 15, 20, 25, 30)], 0),
])
def test_downtime_of_minutes__catch_up_policy(catch_up, fired, skipped):
    # Down from 12:01 to 12:32: the ticks 12:05..12:30 are all later than late_after (60 s).
    decision = plan(spec(catch_up=catch_up, overlap="allow"), ScheduleState(cursor=at(2026, 1, 1, 12, 1)), at(2026, 1, 1, 12, 32))
    assert list(decision.fire) == fired
    assert decision.missed == 6
    assert decision.skipped_missed == skipped


@pytest.mark.parametrize(("catch_up", "fired", "skipped"), [
    ("skip", 0, 3 * 24 * 12),
    ("latest", 1, 3 * 24 * 12 - 1),
    ("all", 24 * 12, 2 * 24 * 12),  # the window is one day: the older two days are skipped
])
def test_downtime_of_days__catch_up_is_bounded_by_the_window(catch_up, fired, skipped):
    start = at(2026, 1, 1, 0, 0, 30)
    decision = plan(spec(catch_up=catch_up, overlap="allow"), ScheduleState(cursor=start), start + timedelta(days=3, minutes=2))
    assert decision.missed == 3 * 24 * 12
    assert len(decision.fire) == fired
    assert decision.skipped_missed == skipped
    assert list(decision.fire) == sorted(decision.fire), "oldest first"
    if catch_up == "all":
        assert decision.fire[0] >= start + timedelta(days=2)


def test_a_tick_within_late_after__is_on_time_even_under_catch_up_skip():
    decision = plan(spec(catch_up="skip"), ScheduleState(cursor=at(2026, 1, 1, 11, 0)), at(2026, 1, 1, 12, 5, 30))
    assert decision.fire == (at(2026, 1, 1, 12, 5),)
    assert decision.missed == 12 and decision.skipped_missed == 12


@pytest.mark.parametrize(("overlap", "fired", "buffered", "skipped"), [
    ("allow", 1, None, 0),
    ("skip", 0, None, 1),
    ("buffer_one", 0, at(2026, 1, 1, 12, 5), 0),
])
def test_overlap_with_a_long_run(overlap, fired, buffered, skipped):
    state = ScheduleState(cursor=at(2026, 1, 1, 12, 0), previous_active=True)
    decision = plan(spec(overlap=overlap), state, at(2026, 1, 1, 12, 5, 1))
    assert len(decision.fire) == fired
    assert decision.buffered == buffered
    assert len(decision.skipped_overlap) == skipped


def test_buffer_one__keeps_one_tick_drops_the_next_and_fires_it_when_the_run_ends():
    s = spec(overlap="buffer_one")
    first = plan(s, ScheduleState(cursor=at(2026, 1, 1, 12, 0), previous_active=True), at(2026, 1, 1, 12, 5, 1))
    second = plan(s, ScheduleState(cursor=first.cursor, previous_active=True, buffered=first.buffered),
                  at(2026, 1, 1, 12, 10, 1))
    assert second.buffered == at(2026, 1, 1, 12, 5) and second.skipped_overlap == (at(2026, 1, 1, 12, 10),)
    done = plan(s, ScheduleState(cursor=second.cursor, previous_active=False, buffered=second.buffered),
                at(2026, 1, 1, 12, 12))
    assert done.fire == (at(2026, 1, 1, 12, 5),) and done.buffered is None


def test_catch_up_all_with_overlap_skip__starts_one_and_skips_the_rest():
    decision = plan(spec(catch_up="all", overlap="skip"), ScheduleState(cursor=at(2026, 1, 1, 12, 1)),
                    at(2026, 1, 1, 12, 16))
    assert decision.fire == (at(2026, 1, 1, 12, 5),)
    assert len(decision.skipped_overlap) == 2


def _fires_over(s: ScheduleSpec, start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Evaluate like a worker that looks every ``step`` from ``start`` to ``end``."""
    fired: list[datetime] = []
    state = ScheduleState(cursor=start)
    now = start
    while now < end:
        now += step
        decision = plan(s, state, now)
        fired.extend(decision.fire)
        state = ScheduleState(cursor=decision.cursor)
    return fired


@pytest.mark.parametrize(("tz", "day"), [(PARIS, (2026, 10, 25)), (NEW_YORK, (2026, 11, 1))])
def test_fall_back__a_repeated_wall_clock_time_fires_once(tz, day):
    # 01:30 (New York) and 02:30 (Paris) happen twice on the fall-back day.
    hour = 2 if tz is PARIS else 1
    s = spec(cron=f"30 {hour} * * *", timezone=str(tz))
    start = datetime(*day, tzinfo=tz) - timedelta(hours=6)
    fired = _fires_over(s, start.astimezone(UTC), (start + timedelta(hours=30)).astimezone(UTC), timedelta(minutes=1))
    assert len(fired) == 1
    local = fired[0].astimezone(tz)
    assert (local.hour, local.minute, local.fold) == (hour, 30, 0), "the first occurrence"


@pytest.mark.parametrize(("tz", "day", "expected_local"), [
    (PARIS, (2026, 3, 29), (3, 0)),      # 02:30 does not exist in Paris: fires at 03:00
    (NEW_YORK, (2026, 3, 8), (3, 0)),    # 02:30 does not exist in New York: fires at 03:00
])
def test_spring_forward__a_nonexistent_time_fires_at_the_next_valid_instant(tz, day, expected_local):
    s = spec(cron="30 2 * * *", timezone=str(tz))
    start = datetime(*day, tzinfo=tz) - timedelta(hours=6)
    fired = _fires_over(s, start.astimezone(UTC), (start + timedelta(hours=30)).astimezone(UTC), timedelta(minutes=1))
    assert len(fired) == 1
    local = fired[0].astimezone(tz)
    assert (local.date(), local.hour, local.minute) == (datetime(*day).date(), *expected_local)


@pytest.mark.parametrize("tz", [PARIS, NEW_YORK])
def test_dst_days__a_daily_schedule_fires_every_day_at_its_wall_clock_time(tz):
    s = spec(cron="0 3 * * *", timezone=str(tz))
    for day in ((2026, 3, 8), (2026, 3, 29), (2026, 10, 25), (2026, 11, 1)):
        start = datetime(*day, tzinfo=tz) - timedelta(days=1)
        ticks = s.next_ticks(start, 3)
        assert [t.astimezone(tz).hour for t in ticks] == [3, 3, 3]
        assert [t.astimezone(tz).day for t in ticks][1] == day[2]


@pytest.mark.parametrize("tz", [PARIS, NEW_YORK])
def test_fall_back__an_interval_schedule_follows_real_time(tz):
    # */30 in the repeated hour: every real half hour, none doubled, none lost (25 hours that day).
    s = spec(cron="*/30 * * * *", timezone=str(tz))
    day = (2026, 10, 25) if tz is PARIS else (2026, 11, 1)
    start = datetime(*day, tzinfo=tz)
    ticks = [t for t in s.next_ticks(start - timedelta(minutes=1), 60) if t.astimezone(tz).date() == start.date()]
    assert len(ticks) == 50 and len(set(ticks)) == 50


@pytest.mark.parametrize(("kw", "match"), [
    ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
    ({"cron": "* * *"}, "invalid cron expression"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"catch_up": "some"}, "catch_up must be one of skip, latest, all"),
    ({"overlap": "queue"}, "overlap must be one of allow, skip, buffer_one"),
    ({"name": "bad name"}, "name must be"),
])
def test_validate__names_the_schedule_and_the_problem(kw, match):
    with pytest.raises(ConfigurationError, match=match) as info:
        spec(**kw).validate()
    assert "'s'" in str(info.value) or "bad name" in str(info.value)


def test_run_id__is_the_same_for_every_worker_and_sorts_by_time():
    s = spec()
    assert s.run_id(at(2026, 3, 29, 1, 0)) == "sched:t:s:2026-03-29T01:00:00Z"
    assert s.run_id(datetime(2026, 3, 29, 3, 0, tzinfo=PARIS)) == "sched:t:s:2026-03-29T01:00:00Z"


def test_describe__says_the_cron_in_words():
    assert spec(cron="0 3 * * *").describe() == "At 03:00 every day"
