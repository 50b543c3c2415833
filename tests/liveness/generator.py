"""Seeded site configurations for the liveness test: queues, workers, runs and a mid-run timeline.

``generate(seed, vendor)`` is a pure function of its arguments, so a failure is reproduced by its
seed alone (``LIVENESS_SEED=<seed>``). Each seed also has a *focus*: one of the configurations
that real sites use and that have broken the engine before (issue 10, items 1-5), so any five
consecutive seeds cover all of them; everything else about the site is drawn at random.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

FOCUSES = ("two_limited_queues", "long_poll", "full_cap", "bad_row", "rollback")

# Retry policies a site may write; a "bad row" is the one start_run should never have accepted.
BACKOFFS = ("fixed", "linear", "exponential")
BAD_RETRY = {"max_attempts": 3, "backoff": "bogus", "initial_backoff": 0.1, "backoff_coefficient": 2.0, "jitter": 0}


@dataclass(frozen=True, kw_only=True)
class QueuePlan:
    name: str
    cap: int | None = None
    rate: float | None = None  # starts per second
    burst: int = 1

    @property
    def is_limited(self) -> bool:
        return self.cap is not None or self.rate is not None


@dataclass(frozen=True, kw_only=True)
class WorkerPlan:
    max_workers: int
    site: str = ""


@dataclass(kw_only=True)
class RunPlan:
    run_id: str
    steps: list[dict[str, Any]]
    at: float | None  # seconds after the workers are up; None: created before they start
    expected: dict[str, str] = field(default_factory=dict)  # step id -> final state
    expected_run: str = "succeeded"
    # Fan-outs: parent step id -> dedup keys it emits (children exist for these once it succeeds).
    fans: dict[str, list[str]] = field(default_factory=dict)
    bad_step: str | None = None  # a step whose retry policy row no claim can read


@dataclass(kw_only=True)
class SitePlan:
    seed: int
    focus: str
    vendor: str
    queues: list[QueuePlan]
    workers: list[WorkerPlan]
    poll_interval: float
    lease_duration: float
    runs: list[RunPlan]
    pause: tuple[str, float, float] | None = None  # queue, at, for how long
    site_rollback_at: float | None = None  # a start_run rolled back with its caller's transaction
    site_rollback_queue: str = ""
    rollback_groups: int = 0  # batches where a refused commit meets a sibling emitting to a new queue
    bound_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def limited(self) -> dict[str, QueuePlan]:
        return {q.name: q for q in self.queues if q.is_limited}

    def describe(self) -> str:
        queues = ", ".join(
            f"{q.name}(cap={q.cap}, rate={q.rate and round(q.rate, 2)}/s burst={q.burst})" for q in self.queues
        )
        workers = ", ".join(f"{w.max_workers}t{'@' + w.site if w.site else ''}" for w in self.workers)
        steps = sum(len(r.steps) for r in self.runs)
        pause = f" pause={self.pause[0]}@{self.pause[1]:.1f}s+{self.pause[2]:.1f}s" if self.pause else ""
        return (
            f"seed={self.seed} focus={self.focus} db={self.vendor} poll={self.poll_interval:.2f}s "
            f"lease={self.lease_duration:.1f}s workers=[{workers}] queues=[{queues}] runs={len(self.runs)} "
            f"steps={steps}{pause} site_rollback={self.site_rollback_at is not None} "
            f"rollback_groups={self.rollback_groups} bound={self.bound_seconds:.0f}s"
            + (f" ({'; '.join(self.notes)})" if self.notes else "")
        )


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _duration(rng: random.Random) -> float:
    """Step durations 0-3 s, mostly short, as real steps are."""
    roll = rng.random()
    if roll < 0.6:
        return round(rng.uniform(0, 0.1), 3)
    if roll < 0.9:
        return round(rng.uniform(0.1, 1.0), 3)
    return round(rng.uniform(1.0, 3.0), 3)


def _retry(rng: random.Random) -> dict[str, Any]:
    return {
        "max_attempts": rng.randint(1, 4),
        "backoff": rng.choice(BACKOFFS),
        "initial_backoff": round(rng.choice([0, 0, rng.uniform(0, 1.0)]), 3),
        "backoff_coefficient": round(rng.uniform(1, 2), 2),
        "jitter": round(rng.choice([0, rng.uniform(0, 0.3)]), 2),
    }


def backoff_seconds(retry: dict[str, Any], attempts: int) -> float:
    """The longest total wait ``attempts`` attempts can spend in backoff (jitter at its maximum)."""
    base, coefficient = retry.get("initial_backoff", 0), retry.get("backoff_coefficient", 2.0)
    total = 0.0
    for n in range(1, attempts):
        kind = retry.get("backoff", "exponential")
        delay = base * n if kind == "linear" else base * coefficient ** (n - 1) if kind == "exponential" else base
        total += min(delay, 300) * (1 + retry.get("jitter", 0))
    return total


def _plan_step(rng: random.Random, step_id: str, queue: str, site: str, deps: list[str]) -> tuple[dict, str, int]:
    """One ``work`` step; returns its spec, the state it must end in, and how many attempts it takes."""
    retry = _retry(rng)
    spec: dict[str, Any] = {"seconds": _duration(rng)}
    roll = rng.random()
    if roll < 0.05:
        spec["permanent"] = True
        expected, attempts = "failed", 1
    elif roll < 0.12:
        spec["fail_until"] = retry["max_attempts"] + 1  # runs out of attempts
        expected, attempts = "failed", retry["max_attempts"]
    elif roll < 0.3:
        retry["max_attempts"] = max(retry["max_attempts"], 2)
        spec["fail_until"] = rng.randint(2, retry["max_attempts"])  # fails, then succeeds
        expected, attempts = "succeeded", spec["fail_until"]
    else:
        expected, attempts = "succeeded", 1
    step = {"id": step_id, "kind": "work", "input": spec, "queue": queue, "site": site, "deps": deps, "retry": retry}
    return step, expected, attempts


def generate(seed: int, vendor: str, *, examples_budget: str = "ci") -> SitePlan:
    """Build the site for ``seed``; ``examples_budget`` "ci" keeps runs short (make test's budget)."""
    rng = random.Random(f"liveness-{seed}")
    focus = FOCUSES[seed % len(FOCUSES)]
    small = examples_budget == "ci"

    # Queues: 1-4 named ones besides "default", each with or without a cap and a rate limit.
    queues = [QueuePlan(name="default")]
    for n in range(rng.randint(1, 4)):
        cap = rng.choice([None, None, rng.randint(1, 4)])
        rate = rng.choice([None, None, round(rng.uniform(2, 30), 2)])
        queues.append(QueuePlan(name=f"q{n}", cap=cap, rate=rate, burst=rng.randint(1, 3) if rate else 1))
    if focus == "two_limited_queues":
        # Item 1: a capped and a rate-limited queue, busy workers: claims lock both queue rows.
        queues = [QueuePlan(name="default"), QueuePlan(name="capped", cap=rng.randint(2, 4)),
                  QueuePlan(name="rated", rate=round(rng.uniform(20, 60), 1), burst=rng.randint(1, 3)),
                  *queues[1:3]]
    if focus == "full_cap":
        queues = [QueuePlan(name="default"), QueuePlan(name="capped", cap=rng.randint(1, 2)), *queues[1:3]]

    sites = ["", "s1"] if rng.random() < 0.35 else [""]
    workers = [WorkerPlan(max_workers=rng.randint(1, 8)) for _ in range(rng.randint(2, 3))]
    if "s1" in sites:
        workers[-1] = WorkerPlan(max_workers=workers[-1].max_workers, site="s1")
    if focus == "two_limited_queues":
        workers = [WorkerPlan(max_workers=8) for _ in range(rng.randint(2, 3))]

    poll = round(_log_uniform(rng, 0.05, 60), 3)
    lease = round(rng.uniform(2, 30), 1)
    if focus == "long_poll":
        # Item 2: NOTIFY or not, a site sets a long poll; the lease is shorter than the steps.
        poll, lease = round(rng.uniform(20, 60), 1), round(rng.uniform(2, 2.4), 1)
        workers = [WorkerPlan(max_workers=max(w.max_workers, 2), site=w.site) for w in workers]

    if "s1" in sites and not any(w.site == "s1" for w in workers):
        workers[-1] = WorkerPlan(max_workers=workers[-1].max_workers, site="s1")  # someone serves the site

    plan = SitePlan(seed=seed, focus=focus, vendor=vendor, queues=queues, workers=workers, poll_interval=poll,
                    lease_duration=lease, runs=[])
    names = [q.name for q in queues]

    # Mid-run events. Without NOTIFY (SQLite) an idle worker learns of them only at its next
    # poll: keep that wait small in the CI budget (the long-poll cases start everything up front).
    # The long-poll focus has none either: a NOTIFY would wake the worker whose heartbeat it tests.
    mid_run = (vendor == "postgresql" or poll <= 3 or not small) and focus != "long_poll"
    if not mid_run:
        plan.notes.append("every run starts before the workers")

    serial = 0.0  # every attempt of every step, one after another: a bound no healthy site exceeds
    backoffs = 0.0
    claims: dict[str, int] = {n: 0 for n in names}
    run_count = 1 if focus == "long_poll" else rng.randint(1, 3)
    for r in range(run_count):
        steps: list[dict[str, Any]] = []
        run = RunPlan(run_id=f"live-{seed}-r{r}", steps=steps, at=None if r == 0 or not mid_run else
                      round(rng.uniform(0.2, 3.0), 2))
        if focus == "two_limited_queues" and r == 0 and mid_run:
            run.at = 0.0  # once every worker is up, so they all compete for it
        size = rng.randint(3, 8 if small else 25)
        if focus == "two_limited_queues" and r == 0:
            size = rng.randint(40, 60) if small else rng.randint(100, 200)
        for i in range(size):
            sid = f"s{i}"
            earlier = [s["id"] for s in steps]
            deps = rng.sample(earlier, k=min(len(earlier), rng.choice([0, 0, 1, 2]))) if earlier else []
            if focus == "two_limited_queues" and r == 0:
                deps = []
            queue = rng.choice(names)
            if focus == "two_limited_queues" and r == 0:
                queue = rng.choice(["capped", "rated"])
            step, expected, attempts = _plan_step(rng, sid, queue, rng.choice(sites), deps)
            if focus == "two_limited_queues" and r == 0:
                step["input"] = {"seconds": round(rng.uniform(0, 0.02), 3)}
                expected, attempts = "succeeded", 1
            steps.append(step)
            run.expected[sid] = expected
            serial += step["input"].get("seconds", 0) * attempts
            backoffs += backoff_seconds(step["retry"], attempts)
            claims[queue] += attempts
        if focus != "long_poll" and (rng.random() < 0.4 or (r == 0 and not small)):
            # A fan-out whose dedup keys overlap a sibling fan-out's: the second emit is an alias.
            pool = [f"k{n}" for n in range(4)]
            for f in range(rng.randint(1, 2)):
                keys = rng.sample(pool, k=rng.randint(2, 3))
                children = [{"key": k, "queue": rng.choice(names), "input": {"seconds": round(rng.uniform(0, 0.2), 3)}}
                            for k in keys]
                fid = f"fan{f}"
                steps.append({"id": fid, "kind": "fan", "queue": rng.choice(names), "site": "", "deps": [],
                              "retry": {"max_attempts": 2},
                              "input": {"seconds": 0, "children": children, "join_queue": rng.choice(names)}})
                run.expected[fid] = "succeeded"
                run.fans[fid] = keys
                serial += sum(c["input"]["seconds"] for c in children)
                for c in children:
                    claims[c["queue"]] += 1
                claims[names[0]] += 2
        plan.runs.append(run)

    if focus == "long_poll":
        # A step that outlives the lease, alone at the end of the only run (it waits for every
        # other step to end), so its worker has free threads and nothing else to wake it.
        run = plan.runs[0]
        _propagate_blocked(run)
        ends = [s["id"] for s in run.steps if run.expected[s["id"]] != "pending"]
        step = {"id": "outlives_lease", "kind": "work", "input": {"seconds": round(rng.uniform(2.7, 3.0), 2)},
                "queue": "default", "site": "", "deps": [], "optional": ends, "retry": {"max_attempts": 2}}
        run.steps.append(step)
        run.expected["outlives_lease"] = "succeeded"
        serial += step["input"]["seconds"]
    if focus == "full_cap":
        # Item 3: the cap is filled by long steps while more wait behind it.
        cap = plan.limited["capped"].cap or 1
        run = plan.runs[0]
        for i in range(cap + rng.randint(5, 7)):
            sid = f"capped{i}"
            run.steps.append({"id": sid, "kind": "work", "input": {"seconds": round(rng.uniform(2.5, 3.0), 2)},
                              "queue": "capped", "site": "", "deps": [], "retry": {"max_attempts": 1}})
            run.expected[sid] = "succeeded"
            serial += run.steps[-1]["input"]["seconds"]
            claims["capped"] += 1
    if focus == "bad_row" or (not small and rng.random() < 0.1):
        # Item 4: a retry policy row no claim can read, in a run of its own beside good steps.
        run = RunPlan(run_id=f"live-{seed}-bad", steps=[], at=round(rng.uniform(0.3, 2.0), 2) if mid_run else None)
        queue = rng.choice(names)
        run.steps.append({"id": "bad", "kind": "work", "input": {"seconds": 0}, "queue": queue, "site": "",
                          "deps": [], "retry": BAD_RETRY})
        run.steps.append({"id": "after_bad", "kind": "work", "input": {"seconds": 0}, "queue": queue, "site": "",
                          "deps": ["bad"], "retry": {}})
        run.steps.append({"id": "beside_bad", "kind": "work", "input": {"seconds": 0.05}, "queue": queue,
                          "site": "", "deps": [], "retry": {}})
        run.expected.update(bad="failed", after_bad="pending", beside_bad="succeeded")
        run.expected_run = "failed"
        run.bad_step = "bad"
        plan.runs.append(run)
        claims[queue] += 3
    if focus == "rollback" or (not small and rng.random() < 0.15):
        # Item 5: commits that roll back. A start_run inside the caller's transaction that rolls
        # back (a failed request), then a good run in the same new queue; and batches where a
        # refused record meets a sibling that emits into a new queue.
        if mid_run:
            plan.site_rollback_at = round(rng.uniform(0.2, 2.0), 2)
            plan.site_rollback_queue = f"fresh_site_{seed}"
        plan.rollback_groups = rng.randint(2, 3)
        run = RunPlan(run_id=f"live-{seed}-rollback", steps=[], at=None, expected_run="failed")
        queue = rng.choice(names)
        for g in range(plan.rollback_groups):
            group = {"group": f"live-{seed}-g{g}", "parties": 2}
            run.steps.append({"id": f"refused{g}", "kind": "refused", "input": group, "queue": queue, "site": "",
                              "deps": [], "retry": {"max_attempts": 1}})
            run.steps.append({"id": f"emitter{g}", "kind": "emit_new_queue", "queue": queue, "site": "", "deps": [],
                              "input": {**group, "child_queue": f"fresh_{seed}_{g}"}, "retry": {"max_attempts": 1}})
            run.expected[f"refused{g}"] = "failed"
            run.expected[f"emitter{g}"] = "succeeded"
            run.expected[f"emitter{g}:child"] = "succeeded"
            claims[queue] += 2
        serial += 2.0 * plan.rollback_groups  # the rendezvous may wait out its timeout
        plan.runs.append(run)
    if rng.random() < 0.5 and mid_run:
        queue = rng.choice(names[1:] or names)
        plan.pause = (queue, round(rng.uniform(0.2, 2.0), 2), round(rng.uniform(0.5, 3.0 if small else 8.0), 2))

    for run in plan.runs:
        _propagate_blocked(run)
        if any(state == "failed" for state in run.expected.values()):
            run.expected_run = "failed"

    # The liveness bound: every attempt run one after another, every backoff waited in full,
    # every rate-limited start waited for, the pause, one poll interval per event an idle worker
    # may learn of only by polling, and a fixed allowance for a loaded 2-core machine.
    rate_wait = sum(claims.get(q.name, 0) / q.rate for q in queues if q.rate)
    events = sum(1 for r in plan.runs if r.at is not None) + (plan.site_rollback_at is not None) + bool(plan.pause)
    pause = plan.pause[1] + plan.pause[2] if plan.pause else 0.0
    poll_waits = (events + 1) * poll if vendor != "postgresql" else min(poll, 5.0) * 2
    plan.bound_seconds = 20.0 + serial + backoffs + rate_wait + pause + poll_waits + lease
    return plan


def _propagate_blocked(run: RunPlan) -> None:
    """A step that requires a failed (or blocked) step stays pending: the run ends failed."""
    by_id = {s["id"]: s for s in run.steps}
    changed = True
    while changed:
        changed = False
        for sid, step in by_id.items():
            if run.expected.get(sid) == "pending":
                continue
            if any(run.expected.get(d) in ("failed", "pending") for d in step.get("deps", ())):
                run.expected[sid] = "pending"
                run.fans.pop(sid, None)
                changed = True
