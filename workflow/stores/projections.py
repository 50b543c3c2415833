"""Projections: package-owned query databases executors may read and write.

Queries take parameters (``?`` or ``:name`` placeholders, sqlite style, on every backend), never
string formatting; names are validated so a projection cannot escape its root.

- ``SQLiteProjectionStore(root)``: one SQLite file per name, ``<root>/<name>.sqlite3``.
- ``DjangoProjectionStore(using)``: projections in a ``DATABASES`` alias (PostgreSQL, say);
  a projection's tables are named ``<name>_<table>``: use ``projection.table("items")`` to get
  the quoted name, so the same executor code works on both stores.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigurationError, InvalidInput

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TABLE = re.compile(r"[A-Za-z0-9_]{1,64}")
_WAL_SQL = "PRAGMA journal_mode=WAL"
_SYNCHRONOUS_SQL = "PRAGMA synchronous=NORMAL"
Params = Sequence[Any] | Mapping[str, Any]


def check_name(name: Any) -> str:
    """Return ``name`` if it is 1-64 letters, digits, '_' or '-', else raise ``InvalidInput``."""
    # fullmatch, not match with '$': '$' also matches before a trailing newline.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"projection name {str(name)[:80]!r} must be 1-64 letters, digits, '_' or '-'")
    return name


def _check_table(table: str) -> str:
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise InvalidInput(f"projection table {str(table)[:80]!r} must be 1-64 letters, digits or '_'")
    return table


class SQLiteProjection:
    """One projection in its own SQLite file; a connection per thread, in autocommit mode."""

    def __init__(self, path: Path, name: str = "") -> None:
        self.path = path
        self.name = name or path.stem
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() can close every thread's connection;
            # each connection is still used by the thread that opened it.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute(_WAL_SQL)
            conn.execute(_SYNCHRONOUS_SQL)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def table(self, table: str) -> str:
        """The quoted name of ``table`` in this projection (its file is already its own)."""
        return f'"{_check_table(table)}"'

    def exec(self, query: str, params: Params = ()) -> int:
        """Run one statement with parameters; return the number of rows it changed."""
        return self._conn().execute(query, params).rowcount

    def query(self, query: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run one query with parameters; return its rows as dicts."""
        return [dict(row) for row in self._conn().execute(query, params).fetchall()]

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()


class SQLiteProjectionStore:
    """One SQLite file per projection name under ``root`` (the seed's projection store)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._projections: dict[str, SQLiteProjection] = {}
        self._lock = threading.Lock()

    def projection(self, name: str) -> SQLiteProjection:
        check_name(name)
        with self._lock:
            if name not in self._projections:
                self.root.mkdir(parents=True, exist_ok=True)
                self._projections[name] = SQLiteProjection(self.root / f"{name}.sqlite3", name)
            return self._projections[name]

    def close(self) -> None:
        with self._lock:
            projections = list(self._projections.values())
            self._projections.clear()
        for projection in projections:
            projection.close()


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class DjangoProjection:
    """A projection in a ``DATABASES`` alias; its tables are ``<name>_<table>`` (see ``table``).

    Statements run on Django's connection for the alias in the calling thread, in autocommit
    mode unless the caller opened ``transaction.atomic(using=...)``.
    """

    def __init__(self, using: str, name: str) -> None:
        self.using = using
        self.name = check_name(name)

    def table(self, table: str) -> str:
        """The quoted name of this projection's ``table``: ``"<name>_<table>"``."""
        from django.db import connections

        return connections[self.using].ops.quote_name(f"{self.name}_{_check_table(table)}")

    @staticmethod
    def _convert(query: str, params: Params) -> tuple[str, Params | None]:
        """Turn sqlite-style placeholders into Django's: ``?`` -> ``%s``, ``:name`` -> ``%(name)s``.

        Without parameters the query is passed through untouched (Django then does no
        ``%`` formatting, so literal ``%`` and ``?`` are safe).
        """
        if not params:
            return query, None
        query = query.replace("%", "%%")
        if isinstance(params, Mapping):
            return _NAMED.sub(r"%(\1)s", query), params
        return query.replace("?", "%s"), params

    def exec(self, query: str, params: Params = ()) -> int:
        """Run one statement with parameters; return the number of rows it changed."""
        from django.db import connections

        sql, args = self._convert(query, params)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.rowcount

    def query(self, query: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run one query with parameters; return its rows as dicts."""
        from django.db import connections

        sql, args = self._convert(query, params)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, args)
            columns = [c[0] for c in cursor.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        pass  # Django owns the connection


class DjangoProjectionStore:
    """Projections served from a ``DATABASES`` alias, for sites that want them in PostgreSQL."""

    def __init__(self, using: str) -> None:
        from django.db import connections

        if using not in connections.settings:
            raise ConfigurationError(f"projection database {using!r} is not in settings.DATABASES")
        self.using = using
        self._projections: dict[str, DjangoProjection] = {}
        self._lock = threading.Lock()

    def projection(self, name: str) -> DjangoProjection:
        check_name(name)
        with self._lock:
            if name not in self._projections:
                self._projections[name] = DjangoProjection(self.using, name)
            return self._projections[name]

    def close(self) -> None:
        pass
