"""WorkflowBackend behaviour beyond the ported suite: the caller's transaction, priorities under
load, run_after, retries, async tasks, signals, the dashboard and retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from tests.tasks_backend import sample_tasks
from workflow.conf import runtime
from workflow.models import Lease, Run, Step
from workflow.stores.db import DjangoStore
from workflow.tasks import WorkflowBackend
from workflow.tasks.compat import (
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_finished,
    task_started,
)

pytestmark = pytest.mark.django_db(transaction=True)


def work(**options: Any) -> None:
    call_command("runworkers", burst=True, verbosity=0, **options)


class Boom(Exception):
    pass


def test_enqueue__rolls_back_with_the_callers_transaction():
    with pytest.raises(Boom), transaction.atomic():
        result = sample_tasks.noop_task.enqueue()
        assert Run.objects.filter(pk=result.id).exists()  # written in the caller's transaction
        raise Boom
    assert not Run.objects.filter(package="tasks").exists()
    assert not Step.objects.exists()
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(result.id)


def test_enqueue__commits_with_the_callers_transaction_and_then_runs():
    with transaction.atomic():
        result = sample_tasks.calculate_meaning_of_life.enqueue()
    work()
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)


def test_priority__a_high_priority_task_enqueued_after_1000_starts_before_most_of_them():
    backend = task_backends["default"]
    for _ in range(1000):
        backend.enqueue(sample_tasks.noop_task, (), {})
    urgent = sample_tasks.noop_task.using(priority=50).enqueue()
    work(max_workers=2)
    order = list(Lease.objects.order_by("started_at", "id").values_list("run_id", flat=True))
    assert len(order) == 1001
    assert order.index(urgent.id) < 50, order.index(urgent.id)


def test_priority__orders_steps_of_workflow_runs_too(runtime_with_steps):
    rt, run_id = runtime_with_steps
    work(max_workers=1)
    order = list(Lease.objects.filter(run_id=run_id).order_by("started_at", "id")
                 .values_list("step__step_id", flat=True))
    assert order == ["high", "mid", "low"]


@pytest.fixture
def runtime_with_steps() -> Any:
    from workflow.engine.registry import Package, registry

    pkg = Package("prio_demo")

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step("low", kind="prio_noop", priority=-5)
        run.step("mid", kind="prio_noop")
        run.step("high", kind="prio_noop", priority=7)

    @pkg.executor("prio_noop")
    def noop(step: Any) -> None:
        return None

    if "prio_demo" not in {p.name for p in registry.packages()}:
        registry.register(pkg)
    rt = runtime()
    return rt, rt.start_run("prio_demo").id


def test_priority__out_of_range_is_refused_naming_the_step():
    from workflow.engine.builder import build_spec
    from workflow.engine.errors import InvalidInput
    from workflow.engine.registry import registry

    with pytest.raises(InvalidInput, match="step 'x': priority must be a whole number from -100 to 100"):
        build_spec(registry, "x", None, kind="django_task", priority=101)


def test_claim__reads_the_priority_ready_index_without_sorting():
    """The claim's ORDER BY is served by step_ready_idx (queue, -priority, available_at, id)."""
    sample_tasks.noop_task.enqueue()
    sql = DjangoStore().claim_sql(1)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql.replace("%s", "?"), ["default", "2100-01-01", "", 10])
            plan = " ".join(str(row) for row in cursor.fetchall())
            assert "step_ready_idx" in plan and "TEMP B-TREE" not in plan, plan
        else:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, ["default", "2100-01-01", "", 10])
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "step_ready_idx" in plan and "Sort" not in plan, plan


def test_run_after__the_task_is_not_claimed_before_its_time():
    at = timezone.now() + timedelta(seconds=1.5)
    result = sample_tasks.noop_task.using(run_after=at).enqueue()
    assert Step.objects.get(run_id=result.id).available_at == at
    work()  # waits for it: due within --burst's horizon
    lease = Lease.objects.get(run_id=result.id)
    assert lease.claimed_at >= at
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


def test_async_task__runs_on_the_worker_in_an_event_loop():
    result = sample_tasks.async_add.enqueue(2, 3)
    work()
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 5)


def test_signals__started_and_finished_fire_in_the_worker():
    seen: list[tuple[str, str, Any]] = []

    def on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("started", task_result.id, task_result.status))

    def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("finished", task_result.id, task_result.status))

    task_started.connect(on_started, weak=False, dispatch_uid="t-started")
    task_finished.connect(on_finished, weak=False, dispatch_uid="t-finished")
    try:
        ok = sample_tasks.calculate_meaning_of_life.enqueue()
        bad = sample_tasks.failing_task_value_error.enqueue()
        work(max_workers=1)
    finally:
        task_started.disconnect(dispatch_uid="t-started")
        task_finished.disconnect(dispatch_uid="t-finished")
    assert ("started", ok.id, TaskResultStatus.RUNNING) in seen
    assert ("finished", ok.id, TaskResultStatus.SUCCESSFUL) in seen
    assert ("started", bad.id, TaskResultStatus.RUNNING) in seen
    assert ("finished", bad.id, TaskResultStatus.FAILED) in seen
    assert len(seen) == 4


@override_settings(TASKS={"default": {"BACKEND": "workflow.tasks.WorkflowBackend",
                                      "OPTIONS": {"RETRY": {"max_attempts": 3, "initial_backoff": 0}}}})
def test_retry__the_default_policy_retries_and_context_attempt_counts():
    result = sample_tasks.fail_until_attempt.enqueue(succeed_on=3)
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == 3
    assert result.attempts == 3
    assert [e.exception_class for e in result.errors] == [RuntimeError, RuntimeError]
    assert "attempt 1 fails" in result.errors[0].traceback


@override_settings(TASKS={"default": {"BACKEND": "workflow.tasks.WorkflowBackend", "OPTIONS": {
    "RETRY": {"max_attempts": 5, "initial_backoff": 0},
    "TASK_RETRY": {"tests.tasks_backend.sample_tasks.fail_until_attempt": {"max_attempts": 1}},
}}})
def test_retry__a_per_task_policy_in_options_wins_over_the_default():
    result = sample_tasks.fail_until_attempt.enqueue(succeed_on=2)
    work()
    result.refresh()
    assert (result.status, result.attempts) == (TaskResultStatus.FAILED, 1)


def test_retry__a_task_may_carry_its_own_policy():
    assert task_backends["default"].retry_for(sample_tasks.resilient_sleep).max_attempts == 3
    assert task_backends["default"].retry_for(sample_tasks.noop_task).max_attempts == 1  # the tests' default


@pytest.mark.parametrize("options, message", [
    ({"RETRY": {"max_attempts": 0}}, "RETRY'] is invalid"),
    ({"RETRY": "often"}, "must be a RetryPolicy or a dict"),
    ({"RETRYS": {}}, "unknown keys: RETRYS"),
])
def test_options__bad_values_are_a_clear_error(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        WorkflowBackend("bad", {"OPTIONS": options})


def test_dashboard__task_runs_are_findable_and_retryable(operator_client):
    result = sample_tasks.failing_task_value_error.enqueue()
    work()
    page = operator_client.get(reverse("workflow:runs") + "?package=tasks")
    assert page.status_code == 200
    assert "tests.tasks_backend.sample_tasks.failing_task_value_error" in page.content.decode()
    step = operator_client.get(reverse("workflow:step", args=[result.id, "task"]))
    body = step.content.decode()
    assert step.status_code == 200
    assert "task_exception" in body and "This task failed due to ValueError" in body
    retried = operator_client.post(reverse("workflow:retry_step", args=[result.id, "task"]))
    assert retried.status_code in (200, 302)
    assert Step.objects.get(run_id=result.id).state == "ready"


def test_prunewf__removes_old_finished_task_runs():
    result = sample_tasks.noop_task.enqueue()
    work()
    old = timezone.now() - timedelta(days=40)
    Run.objects.filter(pk=result.id).update(finished_at=old, created_at=old)
    Step.objects.filter(run_id=result.id).update(finished_at=old)
    call_command("prunewf", "--package", "tasks", "--older-than", "30d", verbosity=0)
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()
