"""Liveness as a tested property: generated sites, real worker processes, safety and liveness judged.

Each seed builds a site (tests/liveness/generator.py): 1-4 queues with and without caps and rate
limits, a pause and resume mid-run, sites, poll intervals 0.05-60 s, leases 2-30 s, steps of
0-3 s, retryable and permanent failures, fan-outs with shared dedup keys, commits that roll back
and a retry policy row no claim can read. It runs with 2-3 ``runworkers`` processes and must stay
safe (one committed result per step, caps and rates held, from the lease rows) and live (every
run final within a bound computed from the site, no deadlock or traceback in the logs, no lease
lost by a healthy worker, idle load bounded).

``make test`` runs seeds 0-4 (one per focus); ``LIVENESS_EXAMPLES=200 make test-liveness`` runs
more and larger sites; ``LIVENESS_SEED=17`` (or ``17,42``) replays the seeds a failure printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.liveness.generator import generate
from tests.liveness.harness import install_refusal_trigger, run_site

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def _seeds() -> list[int]:
    if os.environ.get("LIVENESS_SEED"):
        return [int(s) for s in os.environ["LIVENESS_SEED"].split(",") if s.strip()]
    count = int(os.environ.get("LIVENESS_EXAMPLES", "5"))
    first = int(os.environ.get("LIVENESS_FIRST_SEED", "0"))
    return list(range(first, first + count))


@pytest.fixture
def refusal_trigger(transactional_db: None) -> Iterator[None]:
    remove = install_refusal_trigger()
    yield
    remove()


@pytest.mark.parametrize("seed", _seeds())
def test_generated_site__is_safe_and_every_run_ends_in_bounded_time(seed, spawn_worker, refusal_trigger):
    budget = "long" if os.environ.get("LIVENESS_EXAMPLES") or os.environ.get("LIVENESS_LONG") else "ci"
    plan = generate(seed, connection.vendor, examples_budget=budget)
    report = run_site(plan, spawn_worker)
    text = report.render()
    if os.environ.get("LIVENESS_REPORT"):
        with Path(os.environ["LIVENESS_REPORT"]).open("a") as out:
            out.write(text + "\n")
    print(text)
    assert not report.problems, f"reproduce with LIVENESS_SEED={seed} (database {connection.vendor})\n{text}"
