"""A chain's hop crosses no thread: the pool thread that ran a lone step commits it and claims the next.

The loop keeps what only it may do (heartbeats, timeouts, batches of outcomes), and a step a
pool thread claimed is still heartbeated, timed out and fenced like any other.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections

from tests.conftest import run_graph
from workflow import QueueConfig
from workflow.engine.errors import StoreUnavailable
from workflow.models import Lease, Step

pytestmark = pytest.mark.django_db(transaction=True)


def committing_threads(rt) -> list[str]:
    """Record the thread of every store call that commits outcomes."""
    names: list[str] = []
    complete_and_claim = rt.store.complete_and_claim

    def recording(outcomes, request, now):
        if outcomes:
            names.append(threading.current_thread().name)
        return complete_and_claim(outcomes, request, now)

    rt.store.complete_and_claim = recording  # type: ignore[method-assign]
    return names


def chain(n: int, **last: object) -> list[dict]:
    steps = [{"id": f"s{i}", "kind": "noop", "deps": [f"s{i - 1}"] if i else []} for i in range(n)]
    steps[-1].update(last)
    return steps


@pytest.mark.parametrize("queue", [None, "capped"], ids=["default_queue", "queue_capped_at_one"])
def test_chain__each_hop_is_committed_by_the_pool_thread_that_ran_it_and_once(make_runtime, queue):
    rt = make_runtime(poll_interval=timedelta(seconds=30), queues={"capped": QueueConfig(max_workers=1)})
    names = committing_threads(rt)
    run_id = run_graph(rt, [{**step, "queue": queue} for step in chain(40)])
    workers = rt.start_workers(max_workers=2, burst=True)
    assert workers.join(timeout=30)
    assert Step.objects.filter(run_id=run_id, state="succeeded").count() == 40
    assert set(Lease.objects.filter(run_id=run_id).values_list("outcome", flat=True)) == {"succeeded"}
    assert Lease.objects.filter(run_id=run_id).count() == 40  # one attempt each: nothing ran or committed twice
    on_pool = sum(name.startswith("workflow-executor") for name in names)
    assert on_pool >= 35, f"only {on_pool} of {len(names)} commits on the pool thread: {names}"


def test_chain__with_conn_max_age_zero_the_loop_commits_every_hop(make_runtime, monkeypatch):
    """A pool thread would reconnect once per step (its executor's connection closes after each)."""
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    rt = make_runtime(poll_interval=timedelta(seconds=30))
    assert not rt.store.keeps_thread_connections()
    names = committing_threads(rt)
    run_id = run_graph(rt, chain(10))
    workers = rt.start_workers(max_workers=2, burst=True)
    assert workers.join(timeout=30)
    assert Step.objects.filter(run_id=run_id, state="succeeded").count() == 10
    assert names and not any(name.startswith("workflow-executor") for name in names)


def test_pool_thread_commit__that_fails_goes_to_the_loop_which_commits_it_once(make_runtime):
    """A lost database on the pool thread's commit: the loop retries the outcome with its backoff."""
    rt = make_runtime(poll_interval=timedelta(seconds=30))
    failed: list[str] = []
    complete_and_claim = rt.store.complete_and_claim

    def failing_once_on_a_pool_thread(outcomes, request, now):
        if outcomes and not failed and threading.current_thread().name.startswith("workflow-executor"):
            failed.append(outcomes[0].step.step_id)
            raise StoreUnavailable("connection lost")
        return complete_and_claim(outcomes, request, now)

    rt.store.complete_and_claim = failing_once_on_a_pool_thread  # type: ignore[method-assign]
    run_id = run_graph(rt, chain(5))
    workers = rt.start_workers(max_workers=1, burst=True)
    assert workers.join(timeout=30)
    assert failed
    assert Step.objects.filter(run_id=run_id, state="succeeded").count() == 5
    assert Lease.objects.filter(run_id=run_id).count() == 5  # the failed commit lost and repeated nothing


def test_step_claimed_by_a_pool_thread__is_heartbeated_under_a_long_poll_interval(make_runtime):
    rt = make_runtime(poll_interval=timedelta(seconds=30), lease_duration=timedelta(seconds=2))
    run_id = run_graph(rt, chain(3, kind="sleep", input={"seconds": 5}))
    workers = rt.start_workers(max_workers=1, burst=True)
    assert workers.join(timeout=30)
    last = Step.objects.get(run_id=run_id, step_id="s2")
    assert (last.state, last.attempt) == ("succeeded", 1)  # its lease never expired
    lease = Lease.objects.get(step=last)
    assert lease.heartbeat_at is not None and lease.heartbeat_at - lease.claimed_at >= timedelta(seconds=3)


def test_step_claimed_by_a_pool_thread__times_out_on_time_under_a_long_poll_interval(make_runtime):
    rt = make_runtime(poll_interval=timedelta(seconds=30))
    run_id = run_graph(rt, chain(3, kind="sleep", input={"seconds": 30}, timeout=0.3, retry=2))
    workers = rt.start_workers(max_workers=1, burst=True)
    assert workers.join(timeout=8)  # two attempts of 0.3 s each, not a 30 s poll or a 30 s sleep
    last = Step.objects.get(run_id=run_id, step_id="s2")
    assert (last.state, last.attempt, last.error["code"]) == ("failed", 2, "timeout")
    for lease in Lease.objects.filter(step=last):
        assert lease.released_at - lease.started_at < timedelta(seconds=1.5), "timed out late"


def test_checkpointer__turns_autocheckpoint_off_on_every_connection_opened_while_it_runs(transactional_db):
    """A pool thread commits through its own connection: SQLite's autocheckpoint there would copy
    the WAL back inside one of its commits every thousand pages (a 4 ms hop in sixty)."""
    from django.db import connection

    from workflow.stores.db import DjangoStore

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's WAL")
    seen: list[int] = []

    def pragma_on_a_new_thread() -> None:
        with connection.cursor() as cursor:  # this thread's own connection, opened now
            cursor.execute("PRAGMA wal_autocheckpoint")
            seen.append(cursor.fetchone()[0])
        connection.close()

    stop = DjangoStore().start_checkpointer()
    assert stop is not None
    try:
        thread = threading.Thread(target=pragma_on_a_new_thread)
        thread.start()
        thread.join()
    finally:
        stop()
    thread = threading.Thread(target=pragma_on_a_new_thread)  # stopped: SQLite's default again
    thread.start()
    thread.join()
    assert seen == [0, 1000]
