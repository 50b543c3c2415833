"""Cron schedules: which ticks are due, and what the catch-up and overlap policies make of them.

Pure: no database and no wall clock. The caller passes ``now`` and the schedule's stored state
(``workflow.schedules`` does, from the ``Schedule`` row) and applies the returned ``Plan``.

Ticks come from cronsim, chosen for its time-zone semantics: for a fixed-time expression
(``30 2 * * *``) it walks wall-clock time, so a time that occurs twice on the fall-back day
fires once (its first occurrence) and a time that does not exist on the spring-forward day
fires at the next valid minute; interval expressions (``*/15 * * * *``) walk real time.
croniter fires twice on the fall-back day. A six-field expression has a leading seconds field.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ConfigurationError

CATCH_UP_POLICIES = ("skip", "latest", "all")
OVERLAP_POLICIES = ("allow", "skip", "buffer_one")
RUN_ID_PREFIX = "sched"
MAX_TICKS_COUNTED = 100_000  # after a long downtime of a per-second schedule, counting stops here
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSpec:
    """A schedule as declared in code with ``package.schedule(...)``.

    ``late_after``: a tick fired later than this after its instant counts as missed (the workers
    were down), and ``catch_up`` decides whether it still runs. ``catch_up_window`` bounds
    ``catch_up="all"``: missed ticks older than it are skipped.
    """

    name: str
    package: str
    cron: str
    timezone: str = "UTC"
    input: Any = None
    catch_up: str = "latest"
    overlap: str = "skip"
    enabled: bool = True
    catch_up_window: timedelta = timedelta(days=1)
    late_after: timedelta = timedelta(seconds=60)

    @property
    def key(self) -> str:
        return f"{self.package}:{self.name}"

    def validate(self) -> None:
        """Raise ``ConfigurationError`` naming the schedule and what is wrong with it."""
        where = f"schedule {self.name!r} of package {self.package!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigurationError(f"{where}: the name must be letters, digits, '_', '-' or '.'")
        if not isinstance(self.cron, str):
            raise ConfigurationError(f"{where}: cron must be a string, got {self.cron!r}")
        try:
            CronSim(self.cron, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ConfigurationError(f"{where}: invalid cron expression {self.cron!r}: {exc}") from None
        self.zone()  # raises for an unknown time zone
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(f"{where}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {self.catch_up!r}")
        if self.overlap not in OVERLAP_POLICIES:
            raise ConfigurationError(f"{where}: overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {self.overlap!r}")
        if not isinstance(self.catch_up_window, timedelta) or self.catch_up_window <= timedelta(0):
            raise ConfigurationError(f"{where}: catch_up_window must be a positive timedelta")
        if not isinstance(self.late_after, timedelta) or self.late_after < timedelta(0):
            raise ConfigurationError(f"{where}: late_after must be a timedelta of zero or more")

    def zone(self) -> tzinfo:
        if self.timezone in ("UTC", "Etc/UTC"):
            return UTC
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(
                f"schedule {self.name!r} of package {self.package!r}: unknown time zone {self.timezone!r} "
                "(use an IANA name such as 'Europe/Paris')"
            ) from None

    def ticks_after(self, moment: datetime) -> Iterator[datetime]:
        """The tick instants strictly after ``moment``, in UTC, oldest first."""
        start = moment.astimezone(self.zone())
        for tick in CronSim(self.cron, start):
            # From inside a repeated (fall-back) hour, cronsim's wall-clock walk can return the
            # first occurrence of a time, which is before ``moment``: it has fired already.
            if tick > moment:
                yield tick.astimezone(UTC)

    def next_ticks(self, moment: datetime, count: int) -> list[datetime]:
        ticks: list[datetime] = []
        for tick in self.ticks_after(moment):
            ticks.append(tick)
            if len(ticks) >= count:
                break
        return ticks

    def next_tick(self, moment: datetime) -> datetime | None:
        found = self.next_ticks(moment, 1)
        return found[0] if found else None

    def describe(self) -> str:
        """The cron expression in words (cronsim's explainer), or the expression itself."""
        try:
            return CronSim(self.cron, datetime(2000, 1, 1, tzinfo=UTC)).explain()
        except Exception:  # an expression the explainer does not cover still runs
            return self.cron

    def run_id(self, instant: datetime) -> str:
        """The run id of the tick at ``instant``: every worker derives the same one, so it fires once."""
        return f"{RUN_ID_PREFIX}:{self.package}:{self.name}:{iso_instant(instant)}"

    def run_id_prefix(self) -> str:
        return f"{RUN_ID_PREFIX}:{self.package}:{self.name}:"


def iso_instant(instant: datetime) -> str:
    """A fixed-width UTC ISO form (``2026-03-29T01:00:00Z``): run ids sort by time."""
    text = instant.astimezone(UTC).replace(tzinfo=None).isoformat()
    return f"{text}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleState:
    """What the store knows: every tick at or before ``cursor`` has been handled."""

    cursor: datetime
    previous_active: bool = False  # the schedule's latest run has not finished
    buffered: datetime | None = None  # overlap="buffer_one": the tick waiting for that run to end


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to do now: start ``fire`` (oldest first), count and report the rest."""

    fire: tuple[datetime, ...] = ()
    missed: int = 0  # due ticks later than late_after: no worker was there to fire them
    skipped_missed: int = 0  # of those, how many catch_up does not run
    skipped_overlap: tuple[datetime, ...] = ()  # not started: the previous run was still active
    buffered: datetime | None = None
    cursor: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    next_due: datetime | None = None  # the next tick after now (a buffered tick waits on its run instead)

    @property
    def skipped(self) -> int:
        return self.skipped_missed + len(self.skipped_overlap)


def due_ticks(spec: ScheduleSpec, after: datetime, now: datetime) -> tuple[list[datetime], int]:
    """The ticks in (after, now], and how many there are.

    Keeps at most ``MAX_TICKS_COUNTED`` (the newest); past that the count is a lower bound.
    """
    kept: deque[datetime] = deque(maxlen=MAX_TICKS_COUNTED)
    counted = 0
    for tick in spec.ticks_after(after):
        if tick > now:
            break
        kept.append(tick)
        counted += 1
        if counted >= MAX_TICKS_COUNTED:
            # Jump: the newest ticks are the ones a policy may fire; restart near now.
            recent_from = max(after, now - max(spec.catch_up_window, spec.late_after))
            if recent_from > tick:
                kept.clear()
                for recent in spec.ticks_after(recent_from):
                    if recent > now:
                        break
                    kept.append(recent)
            break
    return list(kept), max(counted, len(kept))


def plan(spec: ScheduleSpec, state: ScheduleState, now: datetime) -> Plan:
    """Apply catch-up then overlap to the ticks due since ``state.cursor``."""
    due, count = due_ticks(spec, state.cursor, now)
    on_time = [t for t in due if now - t <= spec.late_after]
    late = [t for t in due if now - t > spec.late_after]
    missed = count - len(on_time)
    if spec.catch_up == "skip":
        chosen_late: list[datetime] = []
    elif spec.catch_up == "latest":
        chosen_late = [] if on_time else late[-1:]
    else:  # "all": every missed tick inside the window, oldest first
        chosen_late = [t for t in late if now - t <= spec.catch_up_window]
    chosen = chosen_late + on_time

    fire: list[datetime] = []
    skipped_overlap: list[datetime] = []
    active = state.previous_active
    buffered = state.buffered
    if buffered is not None and not active:
        fire.append(buffered)
        buffered, active = None, True
    for tick in chosen:
        if not active or spec.overlap == "allow":
            fire.append(tick)
            active = True
        elif spec.overlap == "buffer_one" and buffered is None:
            buffered = tick
        else:
            skipped_overlap.append(tick)
    return Plan(
        fire=tuple(fire),
        missed=missed,
        skipped_missed=missed - len(chosen_late),
        skipped_overlap=tuple(skipped_overlap),
        buffered=buffered,
        cursor=max(now, state.cursor),
        next_due=spec.next_tick(now),
    )
