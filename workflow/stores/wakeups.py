"""Side threads: LISTEN/NOTIFY wake-ups on PostgreSQL, WAL checkpoints on SQLite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .rows import (
    log,
)

_LISTEN_SQL = "LISTEN {channel}"
_NO_AUTOCHECKPOINT_SQL = "PRAGMA wal_autocheckpoint=0"
_CHECKPOINT_SQL = "PRAGMA wal_checkpoint(PASSIVE)"


class WakeupsStore:
    """Side threads: LISTEN/NOTIFY wake-ups on PostgreSQL, WAL checkpoints on SQLite."""

    def listen(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` whenever another process makes steps ready; return a function that stops it.

        PostgreSQL only (None elsewhere). The listener has its own connection and reconnects
        with backoff when the server goes away.
        """
        if not self.is_postgres:
            return None
        import psycopg

        params = self.connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        stopped = threading.Event()

        def loop() -> None:
            delay = 0.1
            while not stopped.is_set():
                try:
                    with psycopg.connect(**params, autocommit=True) as conn:
                        conn.execute(_LISTEN_SQL.format(channel=self.CHANNEL))
                        delay = 0.1
                        wake()  # anything made ready while we were not listening
                        while not stopped.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                wake()
                except Exception as exc:  # the server restarted or the network blinked
                    log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                    stopped.wait(delay)
                    delay = min(delay * 2, 10.0)

        thread = threading.Thread(target=loop, name="workflow-listen", daemon=True)
        thread.start()
        return stopped.set

    def start_checkpointer(self, interval: float = 1.0) -> Callable[[], None] | None:
        """SQLite: checkpoint the WAL from a side thread, so no commit on the loop pays for it.

        Left to SQLite, every thousandth page written makes one commit copy the WAL back into
        the database, which is most of a chain's p99 latency. The setting is a connection's, so
        it goes on every connection this process opens to the alias from now on (a pool thread
        commits through its own; a lost connection comes back as a new one), and on this
        thread's. PostgreSQL: nothing to do (None).
        """
        if self.connection.vendor != "sqlite":
            return None
        import sqlite3

        from django.db.backends.signals import connection_created

        def no_autocheckpoint(sender: object, connection: Any, **kwargs: object) -> None:
            if connection.alias == self.using:
                with connection.cursor() as cursor:
                    cursor.execute(_NO_AUTOCHECKPOINT_SQL)

        connection_created.connect(no_autocheckpoint, weak=False)
        with self.connection.cursor() as cursor:
            cursor.execute(_NO_AUTOCHECKPOINT_SQL)
        path = self.connection.settings_dict["NAME"]
        stopped = threading.Event()

        def loop() -> None:
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            try:
                while not stopped.wait(interval):
                    try:
                        conn.execute(_CHECKPOINT_SQL)
                    except sqlite3.Error as exc:  # busy or locked: the next round catches up
                        log.debug("checkpoint skipped: %s", exc)
            finally:
                conn.close()

        def stop() -> None:
            connection_created.disconnect(no_autocheckpoint)
            stopped.set()

        threading.Thread(target=loop, name="workflow-checkpoint", daemon=True).start()
        return stop
