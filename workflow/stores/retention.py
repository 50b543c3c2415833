"""Retention: delete finished runs with everything they own, and sweep orphan artifact blobs.

``prune_runs`` works in bounded batches (``batch_size`` runs per transaction). Each batch
re-checks, inside its transaction, that its runs are still finished and old enough (an operator
may have retried one meanwhile), then deletes child rows with explicit
``DELETE ... WHERE run_id IN (...)`` in dependency order. Django's cascade collector would load
every row into memory first, which does not scale to a million events. A dry run changes
nothing, so it counts everything in one read-only pass instead of batches. Blobs are deleted only
after the batch's transaction has committed: a failed commit never leaves rows pointing at
deleted blobs, and a blob that cannot be deleted is reported (``prunewf --orphans`` finds it
again later).

``prune_orphans`` walks the artifact store and deletes blobs that no ``Artifact`` row
references: the blobs of attempts that failed and could not delete them, or of a worker killed
between storing a blob and committing its step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from django.db import connections, transaction
from django.db.models import Min
from django.utils import timezone

from ..models import Artifact, Dependency, Event, Lease, Record, Run, Step

DEFAULT_BATCH_SIZE = 500
ORPHAN_MIN_AGE = timedelta(hours=1)
MAX_LISTED = 1000  # keys kept in a report; the counts are always complete
FINISHED_STATES = ("succeeded", "failed", "canceled")

# Tables owned by a run, children before parents. ``test_retention`` checks that every model
# with a foreign key to Run or Step is here, so a new table cannot be forgotten.
OWNED_TABLES: tuple[tuple[str, Any, str], ...] = (
    ("dependencies", Dependency, "run_id"),
    ("leases", Lease, "run_id"),
    ("artifacts", Artifact, "run_id"),
    ("records", Record, "run_id"),
    ("events", Event, "run_id"),
    ("steps", Step, "run_id"),
    ("runs", Run, "id"),
)

_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DEFAULT: Any = object()


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``15m``, ``90s`` or a combination such as ``1d12h``."""
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration: use a number with w, d, h, m or s, such as 30d, 12h, 15m, 90s")
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What ``prune_runs`` removed, or with ``is_dry_run`` would remove."""

    cutoff: datetime
    is_dry_run: bool
    package: str | None = None
    batches: int = 0
    runs: int = 0
    steps: int = 0
    dependencies: int = 0
    leases: int = 0
    events: int = 0
    records: int = 0
    artifacts: int = 0
    blobs: int = 0  # external blobs deleted (dry run: that would be deleted)
    blob_failures: int = 0
    failed_blobs: tuple[tuple[str, str], ...] = ()  # (key, error), the first MAX_LISTED


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphanReport:
    """What ``prune_orphans`` found: blobs no artifact row references, older than ``cutoff``."""

    cutoff: datetime
    is_dry_run: bool
    scanned: int = 0
    referenced: int = 0
    too_recent: int = 0
    orphans: int = 0
    deleted: int = 0
    orphan_keys: tuple[str, ...] = ()  # the first MAX_LISTED
    failures: tuple[tuple[str, str], ...] = ()  # (key, error), the first MAX_LISTED
    failure_count: int = 0


@dataclass(slots=True)
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    failure_count: int = 0

    def add(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def fail(self, key: str, exc: BaseException | str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_LISTED:
            self.failures.append((key, exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"))


def _settings_database() -> str:
    from ..conf import workflow_settings

    return workflow_settings().get("DATABASE", "default")


def _settings_store() -> Any:
    from ..conf import artifact_store

    return artifact_store()


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def prune_runs(
    *,
    older_than: timedelta,
    package: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    now: datetime | None = None,
    using: str | None = None,
    artifact_store: Any = _DEFAULT,
) -> PruneReport:
    """Delete finished runs whose ``finished_at`` is before ``now - older_than``, with all they own.

    Active runs are never touched. Each batch of ``batch_size`` runs is one transaction, so
    this must not run inside ``transaction.atomic`` (it would make one huge transaction and
    delete blobs before the rows' deletion is durable). ``artifact_store`` defaults to the
    one in ``settings.WORKFLOW``; blobs it cannot delete are counted in ``blob_failures``.
    """
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    using = using or _settings_database()
    connection = connections[using]
    if not dry_run and connection.in_atomic_block:
        raise RuntimeError("prune_runs commits batch by batch; call it outside transaction.atomic()")
    store = _settings_store() if artifact_store is _DEFAULT else artifact_store
    cutoff = (now or timezone.now()) - older_than
    tally = _Tally()
    if dry_run:
        candidates = Run.objects.using(using).finished_before(cutoff)
        if package:
            candidates = candidates.filter(package=package)
        _count_all(connection, candidates, tally)
        batches = -(-tally.counts.get("runs", 0) // batch_size)
    else:
        batches = 0
        skipped: list[str] = []  # candidates that became active meanwhile (rare)
        since: Any = None
        while True:
            found = _candidates(connection, cutoff, package=package, since=since, skipped=skipped, limit=batch_size)
            if not found:
                break
            since = found[-1][1]
            ids = [run_id for run_id, _ in found]
            batches += 1
            deleted, keys = _delete_batch(connection, ids, cutoff, tally)
            skipped.extend(set(ids) - deleted)
            _delete_blobs(store, keys, tally)
    c = tally.counts
    return PruneReport(
        cutoff=cutoff, is_dry_run=dry_run, package=package, batches=batches, runs=c.get("runs", 0),
        steps=c.get("steps", 0), dependencies=c.get("dependencies", 0), leases=c.get("leases", 0),
        events=c.get("events", 0), records=c.get("records", 0), artifacts=c.get("artifacts", 0),
        blobs=c.get("blobs", 0), blob_failures=tally.failure_count, failed_blobs=tuple(tally.failures),
    )


# Table names are quoted per connection; states are bound as parameters (``FINISHED_STATES``).
_STORAGE_KEYS_SQL = "SELECT storage_key FROM {table} WHERE run_id IN ({ids}) AND storage_key IS NOT NULL"
_CANDIDATES_SQL = "SELECT id, finished_at FROM {table}{hint} WHERE {where} ORDER BY finished_at LIMIT %s"
_COUNT_OWNED_SQL = "SELECT COUNT(*) FROM {table} WHERE {column} IN ({subquery})"
_COUNT_BLOBS_SQL = "SELECT COUNT(*) FROM {table} WHERE storage_key IS NOT NULL AND run_id IN ({subquery})"
_LOCK_FINISHED_SQL = "SELECT id FROM {table} WHERE id IN ({ids}) AND state IN ({states}) AND finished_at < %s{lock}"
_DELETE_OWNED_SQL = "DELETE FROM {table} WHERE {column} IN ({ids})"


def _table(connection: Any, model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _storage_keys(cursor: Any, connection: Any, ids: list[str]) -> list[str]:
    cursor.execute(_STORAGE_KEYS_SQL.format(table=_table(connection, Artifact), ids=_marks(len(ids))), ids)
    return [row[0] for row in cursor.fetchall()]


def _candidates(
    connection: Any, cutoff: datetime, *, package: str | None, since: Any, skipped: list[str], limit: int
) -> list[tuple[str, Any]]:
    """The next ``limit`` old finished runs, oldest first, as (id, raw finished_at).

    The scan walks the ``run_finished_idx`` index from ``since`` (the last batch's newest
    finished_at: deleted runs drop out, so no tie-break is needed), which keeps every batch's
    cost proportional to the batch, not to the table. SQLite is told to use that index:
    without statistics its planner prefers the state index and sorts every finished run.
    """
    hint = " INDEXED BY run_finished_idx" if connection.vendor == "sqlite" else ""
    where = ["finished_at < %s", f"state IN ({_marks(len(FINISHED_STATES))})"]
    params: list[Any] = [connection.ops.adapt_datetimefield_value(cutoff), *FINISHED_STATES]
    if since is not None:
        where.append("finished_at >= %s")
        params.append(since)
    if package:
        where.append("package = %s")
        params.append(package)
    if skipped:
        where.append(f"id NOT IN ({_marks(len(skipped))})")
        params.extend(skipped)
    with connection.cursor() as cursor:
        cursor.execute(
            _CANDIDATES_SQL.format(table=_table(connection, Run), hint=hint, where=" AND ".join(where)),
            [*params, limit],
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _count_all(connection: Any, candidates: Any, tally: _Tally) -> None:
    """Count what would go: one read-only COUNT per table over the candidate subquery."""
    sql, params = candidates.order_by().values("id").query.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        for name, model, column in OWNED_TABLES:
            cursor.execute(_COUNT_OWNED_SQL.format(table=_table(connection, model), column=column, subquery=sql), params)
            tally.add(name, cursor.fetchone()[0])
        cursor.execute(_COUNT_BLOBS_SQL.format(table=_table(connection, Artifact), subquery=sql), params)
        tally.add("blobs", cursor.fetchone()[0])


def _delete_batch(connection: Any, ids: list[str], cutoff: datetime, tally: _Tally) -> tuple[set[str], list[str]]:
    """Delete one batch of runs in one transaction; return the ids deleted and their blobs' keys."""
    lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""  # SQLite: IMMEDIATE already locks
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # Re-check under the lock: a run retried since the candidate query is active again.
        cursor.execute(
            _LOCK_FINISHED_SQL.format(table=_table(connection, Run), ids=_marks(len(ids)),
                                      states=_marks(len(FINISHED_STATES)), lock=lock),
            [*ids, *FINISHED_STATES, connection.ops.adapt_datetimefield_value(cutoff)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return set(), []
        keys = _storage_keys(cursor, connection, ids)
        for name, model, column in OWNED_TABLES:
            cursor.execute(_DELETE_OWNED_SQL.format(table=_table(connection, model), column=column, ids=_marks(len(ids))),
                           ids)
            tally.add(name, cursor.rowcount)
    return set(ids), keys


def _delete_blobs(store: Any, keys: list[str], tally: _Tally) -> None:
    for key in keys:
        if store is None:
            tally.fail(key, "no artifact store is configured (settings.WORKFLOW['ARTIFACT_STORAGE'])")
            continue
        try:
            store.delete(key)
        except Exception as exc:  # keep going: report it, prunewf --orphans retries later
            tally.fail(key, exc)
        else:
            tally.add("blobs", 1)


def prune_orphans(
    *,
    older_than: timedelta = ORPHAN_MIN_AGE,
    dry_run: bool = False,
    now: datetime | None = None,
    using: str | None = None,
    artifact_store: Any = _DEFAULT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    clock_margin: timedelta = timedelta(minutes=5),
) -> OrphanReport:
    """Delete blobs under the artifact store's prefix that no ``Artifact`` row references.

    Only blobs older than ``now - older_than`` *and* older than the oldest live lease (minus
    ``clock_margin`` for skew between the storage's clock and ours) are touched: a step still
    running may have stored a blob whose row it has not committed yet, and it stored it after
    its lease was claimed.
    """
    using = using or _settings_database()
    store = _settings_store() if artifact_store is _DEFAULT else artifact_store
    now = now or timezone.now()
    cutoff = now - older_than
    oldest_live = Lease.objects.using(using).live().aggregate(oldest=Min("claimed_at"))["oldest"]
    if oldest_live is not None:
        cutoff = min(cutoff, oldest_live - clock_margin)
    counts = {"scanned": 0, "referenced": 0, "too_recent": 0, "orphans": 0, "deleted": 0}
    found: list[str] = []
    tally = _Tally()
    if store is None:
        return OrphanReport(cutoff=cutoff, is_dry_run=dry_run)
    for chunk in _batched(store.keys(), batch_size):
        counts["scanned"] += len(chunk)
        referenced = _referenced(using, chunk)
        counts["referenced"] += len(referenced)
        for key in chunk:
            if key in referenced:
                continue
            try:
                modified = store.modified_time(key)
            except Exception as exc:
                tally.fail(key, exc)
                continue
            if timezone.is_naive(modified):
                modified = timezone.make_aware(modified, timezone.get_default_timezone())
            if modified >= cutoff:
                counts["too_recent"] += 1
                continue
            counts["orphans"] += 1
            if len(found) < MAX_LISTED:
                found.append(key)
            if dry_run:
                continue
            try:
                store.delete(key)
            except Exception as exc:
                tally.fail(key, exc)
            else:
                counts["deleted"] += 1
    return OrphanReport(
        cutoff=cutoff, is_dry_run=dry_run, orphan_keys=tuple(found), failures=tuple(tally.failures),
        failure_count=tally.failure_count, **counts,
    )


def _referenced(using: str, keys: list[str]) -> set[str]:
    """Which of ``keys`` some artifact row references.

    Keys end in the artifact's id (``<prefix>/ab/<id>``), so the primary key answers almost
    every lookup; only keys not found that way are looked up by ``storage_key`` (not indexed).
    """
    wanted = set(keys)
    ids = sorted({os.path.basename(k) for k in keys})
    referenced = {
        storage_key
        for storage_key in Artifact.objects.using(using).filter(id__in=ids).values_list("storage_key", flat=True)
        if storage_key in wanted
    }
    rest = [k for k in keys if k not in referenced]
    if rest:
        referenced |= set(
            Artifact.objects.using(using).filter(storage_key__in=rest).values_list("storage_key", flat=True)
        )
    return referenced
