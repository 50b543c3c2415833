"""Django ``TaskResult`` values: built from a task's run, step and attempt rows (reads only), or
from what the enqueuing caller and the running attempt already know."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string

from ..engine.values import StepState
from ..models import Lease, Run, Step
from . import compat
from .package import PACKAGE, STEP_ID

_STATUS = {
    StepState.PENDING: compat.TaskResultStatus.READY,
    StepState.READY: compat.TaskResultStatus.READY,
    StepState.RUNNING: compat.TaskResultStatus.RUNNING,
    StepState.SUCCEEDED: compat.TaskResultStatus.SUCCESSFUL,
    StepState.FAILED: compat.TaskResultStatus.FAILED,
    StepState.CANCELED: compat.TaskResultStatus.FAILED,
}
_FAILED_OUTCOMES = {Lease.Outcome.RETRIED, Lease.Outcome.FAILED, Lease.Outcome.EXPIRED}


def new_task_result(
    task: Any,
    run_id: str,
    *,
    enqueued_at: datetime | None,
    args: list[Any],
    kwargs: dict[str, Any],
    backend: str,
    status: Any = None,
    started_at: datetime | None = None,
    worker_ids: list[str] | None = None,
    errors: list[Any] | None = None,
) -> Any:
    """A result from values in hand: what ``enqueue`` returns and a first attempt reports."""
    return compat.TaskResult(
        task=task, id=run_id, status=status or compat.TaskResultStatus.READY, enqueued_at=enqueued_at,
        started_at=started_at, finished_at=None, last_attempted_at=started_at, args=args, kwargs=kwargs,
        backend=backend, errors=errors or [], worker_ids=worker_ids or [],
    )


def ended(result: Any, *, status: Any, finished_at: datetime | None, error: Any = None, return_value: Any = None) -> Any:
    """``result`` as the running attempt ends it (before its commit lands): for ``task_finished``."""
    errors = result.errors
    if error is not None:
        errors = [*errors, compat.TaskError(exception_class_path=error.details["exception_class_path"],
                                            traceback=error.details["traceback"])]
    out = replace(result, status=status, finished_at=finished_at, errors=errors)
    object.__setattr__(out, "_return_value", return_value)
    return out


def enqueued_at(value: Any) -> datetime | None:
    """When ``enqueue`` ran: the backend's own clock reading, kept in the run's input and step metadata."""
    return parse_datetime(value) if isinstance(value, str) else None


def task_result_for(run_id: str, *, task: Any = None, using: str = "default") -> Any:
    """The ``TaskResult`` of ``run_id`` from its rows; ``TaskResultDoesNotExist`` for any other id."""
    run = Run.objects.using(using).filter(pk=run_id, package=PACKAGE).first() if isinstance(run_id, str) else None
    step = Step.objects.using(using).filter(run_id=run_id, step_id=STEP_ID).first() if run is not None else None
    if run is None or step is None:
        raise compat.TaskResultDoesNotExist(run_id)
    leases = list(
        Lease.objects.using(using).filter(step=step).order_by("attempt", "claimed_at")
        .values_list("worker_id", "claimed_at", "started_at", "outcome", "error_message", "log")
    )
    if task is None:
        task = import_string(step.metadata["task"])
    errors = [_task_error(message, log) for _, _, _, outcome, message, log in leases if outcome in _FAILED_OUTCOMES]
    details = (step.error or {}).get("details") if step.state == StepState.FAILED else None
    if errors and isinstance(details, dict) and details.get("traceback"):
        # The last failure's own traceback (earlier ones keep the attempt's log, which holds theirs).
        errors[-1] = compat.TaskError(
            exception_class_path=details.get("exception_class_path", errors[-1].exception_class_path),
            traceback=details["traceback"],
        )
    started = [s or c for _, c, s, *_ in leases]
    data = run.input or {}
    result = compat.TaskResult(
        task=task,
        id=run.id,
        status=_STATUS[StepState(step.state)],
        enqueued_at=enqueued_at(data.get("enqueued_at")) or run.created_at,
        started_at=min(started) if started else None,
        finished_at=step.finished_at,
        last_attempted_at=max(started) if started else None,
        args=data.get("args", []),
        kwargs=data.get("kwargs", {}),
        backend=data.get("backend", "default"),
        errors=errors,
        worker_ids=[w for w, *_ in leases],
    )
    object.__setattr__(result, "_return_value", step.result)
    return result


def _task_error(message: str, traceback: str) -> Any:
    """A failed attempt's error: its message starts with the exception's class path (see package.py)."""
    path = message.split(":", 1)[0] if message else "builtins.Exception"
    return compat.TaskError(exception_class_path=path, traceback=traceback)


def running_result(step: Any, task: Any) -> Any:
    """The result as the running attempt sees it: from memory on a first attempt (one query for
    the enqueue time), from the rows after a retry (earlier attempts' workers and errors)."""
    from ..conf import workflow_settings

    using = workflow_settings().get("DATABASE", "default")
    run_id = step.step.run_id
    if step.attempt > 1:
        base = task_result_for(run_id, task=task, using=using)
        worker_ids = base.worker_ids if len(base.worker_ids) >= step.attempt else [*base.worker_ids, step.lease.worker_id]
        return replace(base, status=compat.TaskResultStatus.RUNNING, worker_ids=worker_ids, finished_at=None,
                       last_attempted_at=step.now)
    return new_task_result(
        task, run_id, enqueued_at=enqueued_at(step.step.metadata.get("enqueued_at")), args=step.raw_input["args"],
        kwargs=step.raw_input["kwargs"], backend=step.step.metadata["backend"],
        status=compat.TaskResultStatus.RUNNING, started_at=step.now, worker_ids=[step.lease.worker_id],
    )
