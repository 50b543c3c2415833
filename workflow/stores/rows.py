"""The shared floor of the store: connection, transactions, datetime adaptation, events, NOTIFY."""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.utils.dateparse import parse_datetime

from ..engine.errors import StoreConflict, StoreUnavailable
from ..engine.rules import Severity
from ..engine.values import (
    RetryPolicy,
)

log = logging.getLogger("workflow.store")


CHUNK = 500


_EVENT_SQL = (
    "INSERT INTO workflow_event (created_at, kind, severity, run_id, step_id, queue, worker_id, actor, message, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# PostgreSQL, several events: one statement, each column's values an array, inserted in the rows' order.
_EVENTS_PG_SQL = (
    "INSERT INTO workflow_event (created_at, kind, severity, run_id, step_id, queue, worker_id, actor, message, payload)"
    " SELECT created_at, kind, severity, run_id, step_id, queue, worker_id, actor, message, payload FROM unnest("
    "{array}::timestamptz[], {array}::text[], {array}::text[], {array}::text[], {array}::text[], {array}::text[],"
    " {array}::text[], {array}::text[], {array}::text[], {array}::jsonb[]) WITH ORDINALITY"
    " AS e(created_at, kind, severity, run_id, step_id, queue, worker_id, actor, message, payload, n) ORDER BY n"
)
_NOTIFY_SQL = "SELECT pg_notify(%s, '')"
_BUSY_TIMEOUT_SQL = "PRAGMA busy_timeout = {ms}"
_TIMESTAMPTZ_OID = 1184


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _lease_token_prefix() -> str:
    """The time-sorted random prefix of the fencing tokens one claim makes; each adds its step's id
    in hex, so the tokens are unique. Sorting by time, the tokens' unique index grows at its right
    edge: inserting one stays cheap however many leases history holds (a random uuid4 would land
    on a random page of that index)."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


def _as_is(value: Any) -> Any:
    return value


# SQLSTATEs of a transaction the server rolled back to let another one through.
_CONFLICT_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure


def _is_conflict(exc: BaseException) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in _CONFLICT_SQLSTATES


def _is_dedup_race(exc: BaseException) -> bool:
    """An insert that lost the race for a run's dedup key to another transaction (PostgreSQL)."""
    text = str(exc)
    return "step_dedup_unique_in_run" in text or "workflow_step.run_id, workflow_step.dedup_key" in text


def _loads(value: Any) -> Any:
    if isinstance(value, (str, bytes, bytearray)):
        # What most step rows hold (no input, no metadata), read without the parser.
        if value == "null":
            return None
        if value == "{}":
            return {}
        return json.loads(value)
    return value


@cache
def _sqlite_cursor_class() -> type:
    """SQLite's driver cursor taking the store's ``%s`` SQL, each statement's qmark form remembered.

    The store sends the same few statements over and over; Django rewrites ``%s`` to ``?`` with
    a regular expression on every call, which costs more than SQLite takes to run a hop's
    statement. The texts are the store's own (IN lists vary only in length), so the memo stays
    small; its parameters are always positional, so the checks for named ones are skipped too.
    """
    from django.db.backends.sqlite3.base import SQLiteCursorWrapper

    converted: dict[str, str] = {}

    class StoreSQLiteCursor(SQLiteCursorWrapper):  # type: ignore[misc]
        def _qmark(self, query: str) -> str:
            qmark = converted.get(query)
            if qmark is None:
                if len(converted) >= 4096:
                    converted.clear()
                qmark = converted[query] = self.convert_query(query)
            return qmark

        def execute(self, query: str, params: Any = None) -> Any:
            if params is None:  # as Django's: a statement without parameters is sent as written
                return super(SQLiteCursorWrapper, self).execute(query)
            return super(SQLiteCursorWrapper, self).execute(self._qmark(query), params)

        def executemany(self, query: str, param_list: Any) -> Any:
            return super(SQLiteCursorWrapper, self).executemany(self._qmark(query), param_list)

    return StoreSQLiteCursor


class StoreFloor:
    """The shared floor of the store: connection, transactions, datetime adaptation, events, NOTIFY."""

    def __init__(self, using: str = "default") -> None:
        self.using = using
        # Queue rows known to exist; changed only once the transaction that made them commits.
        self._known_queues: set[str] = set()
        self._capped_queues: set[str] = set()  # a hint for NOTIFY when a commit frees a slot
        self._throttle_checked: dict[tuple[str, str], float] = {}
        self._round_robin = 0
        self._dt_memo: dict[datetime, Any] = {}
        self._policies: dict[Any, RetryPolicy] = {}

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def connection(self) -> Any:
        return connections[self.using]

    # An alias's vendor and datetime adapter never change, and looking the thread's connection up
    # costs more than either: the hot path asks several times per step. (Django's adapter reads
    # only settings, so one found through any thread's connection serves every thread.)
    @cached_property
    def is_postgres(self) -> bool:
        return self.connection.vendor == "postgresql"

    @cached_property
    def _adapt_datetime(self) -> Any:
        conn = self.connection
        if conn.vendor == "postgresql":
            return _as_is  # psycopg takes aware datetimes, as Django's adapter passes them
        django_adapter = conn.ops.adapt_datetimefield_value
        if conn.vendor != "sqlite" or conn.timezone is not UTC:
            return django_adapter

        def naive_utc_text(value: datetime) -> Any:
            """What Django writes for an aware UTC datetime on SQLite (naive UTC text), without its detour."""
            if value.tzinfo is UTC:
                return value.isoformat(" ")[:-6]  # str() of the naive value, without "+00:00"
            return django_adapter(value)

        return naive_utc_text

    def _dt(self, value: datetime | None) -> Any:
        """A datetime as the database driver takes it, memoised: a transaction's few moments
        (its ``now``, a lease's expiry, an attempt's start) are each written several times."""
        if value is None:
            return None
        memo = self._dt_memo
        adapted = memo.get(value)
        if adapted is None:
            if len(memo) >= 16:
                memo.clear()
            adapted = memo[value] = self._adapt_datetime(value)
        return adapted

    @staticmethod
    def _parse_dt(value: Any) -> datetime | None:
        """Read a timestamp from a raw row: SQLite returns naive UTC text, PostgreSQL aware datetimes."""
        if value is None:
            return None
        parsed = value if isinstance(value, datetime) else parse_datetime(value)
        if parsed is not None and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One atomic block; a lost or locked database becomes ``StoreUnavailable``."""
        with self._database_errors_mapped(), transaction.atomic(using=self.using), self._cursor() as cursor:
            yield cursor

    @contextmanager
    def _hot_transaction(self, *, lean: bool) -> Iterator[Any]:
        """The transaction of ``complete_and_claim``: on SQLite, BEGIN IMMEDIATE and COMMIT straight to the driver.

        Django's atomic block costs about 35 µs a transaction more than those two statements,
        a tenth of a chain hop. A ``lean`` transaction runs only the store's own SQL (no ORM
        call, savepoint or on_commit hook), so it needs none of the block's bookkeeping; the
        caller says when it may need them. Inside an atomic block (a test's, a caller's) it is
        an ordinary nested one.
        """
        conn = self.connection
        if not lean or self.is_postgres or conn.in_atomic_block or not conn.get_autocommit():
            with self._transaction() as cursor:
                yield cursor
            return
        with self._database_errors_mapped():
            conn.ensure_connection()
            driver = conn.connection
            try:
                with self._cursor() as cursor:
                    self._begin_immediate(cursor, conn)
                    yield cursor
                with conn.wrap_database_errors:
                    driver.commit()
            except BaseException:
                if driver.in_transaction:
                    with conn.wrap_database_errors:
                        driver.rollback()
                raise

    # How long to sleep between tries for another process's write lock: short, then longer.
    BUSY_SLEEP_SECONDS = (0.0001, 0.0002, 0.0005, 0.001, 0.002)

    def _begin_immediate(self, cursor: Any, conn: Any) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write lock in short sleeps of our own.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ms and more between tries, while another
        worker's commit holds the lock for a fraction of a millisecond and takes it again at
        once: of two workers on one file, one mostly slept. The wait is bounded by the
        connection's timeout, as SQLite's is; its busy handler is off only for this BEGIN.
        """
        timeout = float(conn.settings_dict["OPTIONS"].get("timeout", 5.0))  # sqlite3.connect's default
        cursor.execute(_BUSY_TIMEOUT_SQL.format(ms=0))
        try:
            deadline = None
            for tries in itertools.count():
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    return
                except (sqlite3.OperationalError, OperationalError) as exc:
                    error = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
                    if getattr(error, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                    clock = time.monotonic()
                    deadline = deadline or clock + timeout
                    if clock >= deadline:
                        raise
                    time.sleep(min(self.BUSY_SLEEP_SECONDS[min(tries, len(self.BUSY_SLEEP_SECONDS) - 1)],
                                   deadline - clock))
        finally:
            cursor.execute(_BUSY_TIMEOUT_SQL.format(ms=int(timeout * 1000)))

    @contextmanager
    def _database_errors_mapped(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            if _is_conflict(exc):  # rolled back to break a deadlock: the connection is fine
                raise StoreConflict(str(exc)) from exc
            self._reset_connection()
            raise StoreUnavailable(str(exc)) from exc
        except IntegrityError as exc:
            if _is_dedup_race(exc):  # two commits emitted one dedup key at once: the retry aliases it
                raise StoreConflict(str(exc), kind="dedup") from exc
            raise

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """The store's cursor: the driver's own, whose errors become Django's for the whole block.

        Django's cursor wrapper costs about 9 µs a statement (more than SQLite takes to run most
        of a hop's), and the store needs none of it: not even under DEBUG, whose query log would
        cost more than the SQL. Only when execute wrappers are installed (a test counting
        statements, an APM hook) does the store go through Django's wrapper, so they see its SQL.
        """
        conn = self.connection
        conn.ensure_connection()
        raw = self._raw_cursor(conn)
        try:
            with conn.wrap_database_errors:
                yield conn.make_cursor(raw) if conn.execute_wrappers else raw
        finally:
            raw.close()

    @staticmethod
    def _raw_cursor(conn: Any) -> Any:
        """The driver cursor under ``_cursor``; on PostgreSQL with prepared statements allowed, one
        that binds server-side.

        The store sends the same few statements over and over; bound server-side, psycopg
        prepares each after ``prepare_threshold`` uses, so the server stops parsing and planning
        the claim on every hop. Django turns prepared statements off unless ``OPTIONS`` sets
        ``prepare_threshold`` (a transaction-pooling PgBouncer cannot keep them): we follow it.
        """
        if conn.vendor == "postgresql" and getattr(conn.connection, "prepare_threshold", None) is not None:
            # psycopg 3 only: psycopg2 connections have no prepare_threshold
            from django.db.backends.postgresql.base import ServerBindingCursor
            from django.db.backends.postgresql.psycopg_any import register_tzloader
            from psycopg.pq import Format

            cursor = ServerBindingCursor(conn.connection)
            if conn.timezone != conn.connection.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT).timezone:
                register_tzloader(conn.timezone, cursor)  # as Django's own create_cursor does
            return cursor
        if conn.vendor == "sqlite":
            return conn.connection.cursor(factory=_sqlite_cursor_class())
        return conn.create_cursor()

    @staticmethod
    def _array_mark(cursor: Any) -> str:
        """The placeholder of an array parameter (PostgreSQL): ``%b`` where psycopg 3 binds on the
        server, so the array goes in binary; psycopg writes a text array element by element in
        Python, about six times slower (a batch's 500 rows of 12 columns: 9.5 ms against 1.4)."""
        try:
            from psycopg import ClientCursor, Cursor
        except ImportError:  # psycopg2
            return "%s"
        driver_cursor = getattr(cursor, "cursor", cursor)  # under Django's wrapper, when one is installed
        binds_on_server = isinstance(driver_cursor, Cursor) and not isinstance(driver_cursor, ClientCursor)
        return "%b" if binds_on_server else "%s"

    def _reset_connection(self) -> None:
        try:
            self.connection.close()
        except DatabaseError:
            pass

    def _lock_suffix(self, mode: str = "UPDATE") -> str:
        return f" FOR {mode}" if self.is_postgres else ""

    def after_step(self) -> None:
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()

    def keeps_thread_connections(self) -> bool:
        return connections.settings[self.using].get("CONN_MAX_AGE", 0) != 0

    def thread_done(self) -> None:
        connections.close_all()  # this thread's connections only: Django keeps them per thread

    def _insert_events(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) > 1 and self.is_postgres:
            cursor.execute(_EVENTS_PG_SQL.format(array=self._array_mark(cursor)),
                           [list(column) for column in zip(*rows, strict=True)])
        elif rows:
            cursor.executemany(_EVENT_SQL, rows)

    def _event_row(
        self,
        now: datetime,
        kind: str,
        *,
        severity: str = Severity.INFO,
        run_id: str | None = None,
        step_id: str | None = None,
        queue: str = "",
        worker_id: str = "",
        actor: str = "",
        message: str = "",
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        return (self._dt(now), kind, severity, run_id, step_id, queue, worker_id, actor, message,
                _dumps(dict(payload or {})))

    def record_event(self, kind: str, *, severity: str = Severity.INFO, message: str = "", **fields: Any) -> None:
        from django.utils import timezone

        now = fields.pop("now", None) or timezone.now()
        with self._transaction() as cursor:
            self._insert_events(cursor, [self._event_row(now, kind, severity=severity, message=message, **fields)])

    # -- wake-ups (PostgreSQL LISTEN/NOTIFY) -----------------------------------------------------
    CHANNEL = "workflow_ready"

    def _notify(self, cursor: Any) -> None:
        """Tell idle workers on other hosts that steps became ready (delivered at commit)."""
        if self.is_postgres:
            cursor.execute(_NOTIFY_SQL, [self.CHANNEL])
