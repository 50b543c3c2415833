"""The built-in ``tasks`` package: one run per enqueued task, one step that calls the function."""

from __future__ import annotations

import traceback
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string

from ..engine.builder import RunBuilder
from ..engine.context import StepContext
from ..engine.errors import StepError, permanent, retryable
from ..engine.registry import Package
from ..engine.values import RetryPolicy

PACKAGE = "tasks"
KIND = "django_task"
STEP_ID = "task"

tasks_package = Package(PACKAGE, display_name="Django tasks", description="Tasks enqueued through django.tasks")


@tasks_package.entrypoint
def start(run: RunBuilder, params: Any) -> None:
    """Build the run's one step from what ``WorkflowBackend.enqueue`` put in the run's input."""
    run_after = parse_datetime(params["run_after"]) if params.get("run_after") else None
    run.step(
        STEP_ID,
        {"args": params["args"], "kwargs": params["kwargs"]},
        kind=KIND,
        queue=params["queue"],
        priority=params["priority"],
        not_before=run_after,
        retry=RetryPolicy.from_json(params["retry"]),
        metadata={"task": params["task"], "backend": params["backend"], "enqueued_at": params["enqueued_at"]},
    )


def exception_class_path(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


@tasks_package.executor(KIND)
def run_task(step: StepContext) -> Any:
    """Call the task function; any exception (SystemExit included) fails this attempt, not the worker."""
    from . import compat
    from .results import ended, running_result

    meta = step.step.metadata
    try:
        task = import_string(meta["task"])
    except (ImportError, AttributeError) as exc:
        raise permanent("task_not_found", f"cannot import task {meta['task']!r}: {exc}") from exc
    if not isinstance(task, compat.Task):
        raise permanent("task_not_found", f"{meta['task']!r} is not a task (decorate it with @task)")
    backend = type(compat.task_backends[meta["backend"]])
    args, kwargs = step.raw_input["args"], step.raw_input["kwargs"]
    result = running_result(step, task)
    compat.task_started.send(sender=backend, task_result=result)
    try:
        if task.takes_context:
            value = task.call(compat.TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value = compat.normalize_json(value)
    except StepError:
        raise
    except BaseException as exc:  # noqa: BLE001 - a task's SystemExit must not stop the worker
        error = _task_error(exc)
        step.logger.error("task %s raised %s", meta["task"], error.message, exc_info=exc)  # the attempt's log keeps it
        last = step.attempt >= step.step.retry.max_attempts
        status = compat.TaskResultStatus.FAILED if last else compat.TaskResultStatus.READY
        compat.task_finished.send(
            sender=backend, task_result=ended(result, status=status, finished_at=step.now if last else None, error=error)
        )
        raise error from exc
    compat.task_finished.send(sender=backend, task_result=ended(
        result, status=compat.TaskResultStatus.SUCCESSFUL, finished_at=step.now, return_value=value
    ))
    return value


def _task_error(exc: BaseException) -> StepError:
    """A retryable error carrying what Django's ``TaskError`` needs: the class path and the traceback."""
    details = {
        "exception_class_path": exception_class_path(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    return retryable("task_exception", f"{details['exception_class_path']}: {exc}", details=details)
