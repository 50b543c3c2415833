"""Live leases: heartbeats, expired leases to reclaim, hand-back at shutdown."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..engine.rules import EventKind, LeaseOutcome, Severity
from ..engine.values import (
    ClaimedStep,
    LeaseInfo,
    StepState,
)
from .rows import (
    _chunks,
    _marks,
)

_RUNNING = StepState.RUNNING
_EXPIRED_LEASES_SQL = (
    "SELECT id, run_id, step_id, kind, queue, site, retry, attempt, lease_token, lease_owner,"
    f" lease_expires_at FROM workflow_step WHERE state = '{_RUNNING}' AND lease_expires_at < %s"
    " ORDER BY lease_expires_at LIMIT %s"
)
# The state term lets it read the running-steps index; lease_token alone has none (a table scan).
_MARK_STARTED_SQL = (
    f"UPDATE workflow_step SET awaiting_thread_since = NULL WHERE lease_token IN ({{tokens}}) AND state = '{_RUNNING}'"
)
_RENEW_STEPS_SQL = (
    "UPDATE workflow_step SET lease_expires_at = %s WHERE lease_token IN ({tokens})"
    f" AND state = '{_RUNNING}' AND lease_expires_at >= %s RETURNING lease_token"
)
_RENEW_LEASES_SQL = "UPDATE workflow_lease SET heartbeat_at = %s, expires_at = %s WHERE token IN ({tokens})"
_LIVE_TOKENS_SQL = f"SELECT lease_token FROM workflow_step WHERE lease_token IN ({{tokens}}) AND state = '{_RUNNING}'"
_LEASED_TO_SQL = f"SELECT lease_token FROM workflow_step WHERE state = '{_RUNNING}' AND lease_owner = %s"
_HANDED_BACK_SQL = (
    "SELECT run_id, step_id, queue, lease_owner FROM workflow_step WHERE lease_token IN ({tokens})"
    f" AND state = '{_RUNNING}'"
)
_HAND_BACK_SQL = (
    f"UPDATE workflow_step SET state = '{StepState.READY}', attempt = attempt - 1, available_at = %s,"
    " lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = %s"
    f" WHERE lease_token IN ({{tokens}}) AND state = '{_RUNNING}'"
)
_ABANDON_LEASES_SQL = (
    f"UPDATE workflow_lease SET released_at = %s, outcome = '{LeaseOutcome.ABANDONED}' WHERE token IN ({{tokens}})"
    " AND released_at IS NULL"
)


class LeasesStore:
    """Live leases: heartbeats, expired leases to reclaim, hand-back at shutdown."""

    # -- leases -----------------------------------------------------------------------------
    def expired_leases(self, now: datetime, limit: int) -> list[ClaimedStep]:
        with self._transaction() as cursor:
            cursor.execute(_EXPIRED_LEASES_SQL, [self._dt(now), limit])
            rows = cursor.fetchall()
        return [
            ClaimedStep(
                pk=pk, run_id=run_id, step_id=step_id, kind=kind, queue=queue, site=site, input=None, metadata={},
                parent_id=None, retry=self._retry_policy_or_default(retry),
                lease=LeaseInfo(token=token, worker_id=owner or "", attempt=attempt, claimed_at=now,
                                expires_at=self._parse_dt(expires) or now),
            )
            for pk, run_id, step_id, kind, queue, site, retry, attempt, token, owner, expires in rows
        ]

    def heartbeat(
        self, tokens: Sequence[str], now: datetime, expires_at: datetime, *, started: Sequence[str] = ()
    ) -> set[str]:
        """Renew live leases; ``started`` are prefetched steps whose executor has begun since."""
        live: set[str] = set()
        with self._transaction() as cursor:
            for chunk in _chunks(sorted(started)):
                cursor.execute(_MARK_STARTED_SQL.format(tokens=_marks(len(chunk))), list(chunk))
            for chunk in _chunks(list(tokens)):
                cursor.execute(_RENEW_STEPS_SQL.format(tokens=_marks(len(chunk))),
                               [self._dt(expires_at), *chunk, self._dt(now)])
                live.update(r[0] for r in cursor.fetchall())
            alive = sorted(live)
            for chunk in _chunks(alive):
                cursor.execute(_RENEW_LEASES_SQL.format(tokens=_marks(len(chunk))),
                               [self._dt(now), self._dt(expires_at), *chunk])
        return live

    def live_tokens(self, tokens: Sequence[str]) -> set[str]:
        live: set[str] = set()
        with self.connection.cursor() as cursor:
            for chunk in _chunks(list(tokens)):
                cursor.execute(_LIVE_TOKENS_SQL.format(tokens=_marks(len(chunk))), list(chunk))
                live.update(r[0] for r in cursor.fetchall())
        return live

    def leased_to(self, worker_id: str) -> set[str]:
        """Tokens of the steps this worker holds, as the database sees it."""
        with self.connection.cursor() as cursor:
            cursor.execute(_LEASED_TO_SQL, [worker_id])
            return {r[0] for r in cursor.fetchall()}

    def hand_back(self, tokens: Sequence[str], now: datetime) -> int:
        """Return unfinished steps to ready at shutdown; the attempt does not count."""
        handed = 0
        now_db = self._dt(now)
        with self._transaction() as cursor:
            for chunk in _chunks(list(tokens)):
                marks = _marks(len(chunk))
                cursor.execute(_HANDED_BACK_SQL.format(tokens=marks), list(chunk))
                rows = cursor.fetchall()
                cursor.execute(_HAND_BACK_SQL.format(tokens=marks), [now_db, now_db, *chunk])
                handed += cursor.rowcount
                self._notify(cursor)
                cursor.execute(_ABANDON_LEASES_SQL.format(tokens=marks), [now_db, *chunk])
                self._insert_events(cursor, [
                    self._event_row(now, EventKind.STEP_HANDED_BACK, severity=Severity.WARNING, run_id=r[0], step_id=r[1],
                                    queue=r[2], worker_id=r[3] or "", message="worker stopped before the step finished")
                    for r in rows
                ])
        return handed
