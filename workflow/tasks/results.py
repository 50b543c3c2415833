"""Django ``TaskResult`` values read from a task's run, step and attempt rows (reads only)."""

from __future__ import annotations

from typing import Any

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


def _task_error(message: str, traceback: str) -> Any:
    path = message.split(":", 1)[0] if message else "builtins.Exception"
    return compat.TaskError(exception_class_path=path, traceback=traceback)


def task_result_for(
    run_id: str,
    *,
    task: Any = None,
    using: str = "default",
    status: Any = None,
    running_attempt: int | None = None,
    worker_id: str = "",
    error: Any = None,
    return_value: Any = None,
    finished_at: Any = None,
) -> Any:
    """The ``TaskResult`` of ``run_id``; raise ``TaskResultDoesNotExist`` for any other id.

    The worker passes what its running attempt knows but has not committed yet (``status``,
    ``error``, ``return_value``) so the signals it sends describe the attempt as it ends.
    """
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
    worker_ids = [w for w, *_ in leases]
    if running_attempt is not None and len(worker_ids) < running_attempt:
        worker_ids.append(worker_id)
    errors = [_task_error(message, log) for _, _, _, outcome, message, log in leases if outcome in _FAILED_OUTCOMES]
    if step.state == StepState.FAILED and step.error and errors:
        details = step.error.get("details") or {}
        if isinstance(details, dict) and details.get("traceback"):
            errors[-1] = compat.TaskError(
                exception_class_path=details.get("exception_class_path", errors[-1].exception_class_path),
                traceback=details["traceback"],
            )
    if error is not None:
        errors.append(compat.TaskError(
            exception_class_path=error.details["exception_class_path"], traceback=error.details["traceback"]
        ))
    started = [s or c for _, c, s, *_ in leases]
    data = run.input or {}
    result = compat.TaskResult(
        task=task,
        id=run.id,
        status=status or _STATUS[StepState(step.state)],
        enqueued_at=run.created_at,
        started_at=min(started) if started else None,
        finished_at=finished_at or step.finished_at,
        last_attempted_at=max(started) if started else None,
        args=data.get("args", []),
        kwargs=data.get("kwargs", {}),
        backend=data.get("backend", "default"),
        errors=errors,
        worker_ids=worker_ids,
    )
    value = return_value if status is not None else step.result
    object.__setattr__(result, "_return_value", value)
    return result
