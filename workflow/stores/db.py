"""The engine's store on Django's database connection: the one place that writes engine rows.

The hot paths (claim, commit, heartbeat) are raw SQL batched with ``executemany`` on Django's
own connection, because per-row ORM updates cost an order of magnitude more (see
``shared/toolchain.md``). Everything else uses the ORM. The same SQL serves SQLite and
PostgreSQL; where they differ (row locks, ``INDEXED BY``) the difference is named here.

Fencing: a commit applies only to steps that are still ``running`` under the committing
attempt's lease token, and (except for a reclaim) whose lease has not expired.
"""

from __future__ import annotations

from .claim import ClaimStore
from .commit import CommitStore
from .control import ControlStore
from .leases import LeasesStore
from .rows import StoreFloor
from .runs import RunsStore
from .wakeups import WakeupsStore


class DjangoStore(RunsStore, ClaimStore, CommitStore, LeasesStore, ControlStore, WakeupsStore, StoreFloor):
    """Implements ``workflow.engine.store.Store`` on a Django database alias, one module per transition."""
