"""Projections: package-owned query databases executors may read and write.

Queries take parameters; names are validated so a projection cannot escape its root.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .engine.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(f"projection name {str(name)[:80]!r} must be 1-64 letters, digits, '_' or '-'")
    return name


class SQLiteProjection:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def exec(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        return self._conn().execute(query, params).rowcount

    def query(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._conn().execute(query, params).fetchall()]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


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
                self._projections[name] = SQLiteProjection(self.root / f"{name}.sqlite3")
            return self._projections[name]

    def close(self) -> None:
        for projection in self._projections.values():
            projection.close()


class DjangoProjection:
    """A projection in a ``DATABASES`` alias; tables are prefixed with the projection's name."""

    def __init__(self, using: str, name: str) -> None:
        self.using = using
        self.name = name

    def _convert(self, query: str) -> str:
        # Projections use sqlite-style ``?`` placeholders everywhere; Django cursors take ``%s``.
        return query.replace("%", "%%").replace("?", "%s")

    def exec(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        from django.db import connections

        with connections[self.using].cursor() as cursor:
            cursor.execute(self._convert(query), params)
            return cursor.rowcount

    def query(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        from django.db import connections

        with connections[self.using].cursor() as cursor:
            cursor.execute(self._convert(query), params)
            columns = [c[0] for c in cursor.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


class DjangoProjectionStore:
    def __init__(self, using: str) -> None:
        self.using = using

    def projection(self, name: str) -> DjangoProjection:
        return DjangoProjection(self.using, check_name(name))

    def close(self) -> None:
        pass
