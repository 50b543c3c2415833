"""``WorkflowBackend``: Django's task API over the engine (one durable run per enqueued task)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from ..engine.errors import InvalidInput
from ..engine.values import RetryPolicy, time_ordered_uuid
from . import compat
from .package import PACKAGE, tasks_package


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTask(compat.Task):  # type: ignore[misc,valid-type]
    """A task that may carry its own retry policy: ``@task(retry=RetryPolicy(max_attempts=5))``.

    Django 6.1 and the ``django-tasks`` backport pass extra ``@task`` keyword arguments to the
    backend's ``task_class``; on other versions use ``OPTIONS["TASK_RETRY"]`` instead.
    """

    retry: RetryPolicy | Mapping[str, Any] | None = None


def parse_retry(value: Any, where: str) -> RetryPolicy:
    """A ``RetryPolicy``, or a dict of its fields (durations in seconds or as timedelta)."""
    if isinstance(value, RetryPolicy):
        return value
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"{where} must be a RetryPolicy or a dict of its fields, got {value!r}")
    fields = {k.lower(): v for k, v in value.items()}
    for name in ("initial_backoff", "max_backoff"):
        if isinstance(fields.get(name), (int, float)):
            fields[name] = timedelta(seconds=fields[name])
    try:
        return RetryPolicy(**fields)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where} is invalid: {exc}") from exc


class WorkflowBackend(compat.BaseTaskBackend):  # type: ignore[misc,valid-type]
    """Tasks as durable runs: enqueued in the caller's transaction, leased, retried, visible.

    OPTIONS: ``RETRY`` (the default policy, a RetryPolicy or a dict of its fields) and
    ``TASK_RETRY`` (a policy per task path, e.g. ``{"shop.tasks.charge": {"max_attempts": 5}}``).
    """

    task_class = WorkflowTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - {"RETRY", "TASK_RETRY"}
        if unknown:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS'] has unknown keys: {', '.join(sorted(unknown))}")
        self.default_retry = parse_retry(self.options.get("RETRY", {}), f"TASKS[{alias!r}]['OPTIONS']['RETRY']")
        self.task_retry = {
            path: parse_retry(policy, f"TASKS[{alias!r}]['OPTIONS']['TASK_RETRY'][{path!r}]")
            for path, policy in (self.options.get("TASK_RETRY") or {}).items()
        }
        from ..engine.registry import registry

        registry.register(tasks_package)  # idempotent; apps.ready() registers it too

    def retry_for(self, task: Any) -> RetryPolicy:
        own = getattr(task, "retry", None)
        if own is not None:
            return parse_retry(own, f"the retry of task {task.module_path!r}")
        return self.task_retry.get(task.module_path, self.default_retry)

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        from ..engine.builder import check_id

        try:
            check_id("queue name", task.queue_name)
        except InvalidInput as exc:
            raise compat.InvalidTaskError(str(exc)) from exc

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Start the task's run in the caller's transaction: a rollback un-enqueues it."""
        from ..conf import runtime
        from .results import new_task_result

        self.validate_task(task)
        rt = runtime()
        run_id = str(time_ordered_uuid())  # a UUID, as Django's result ids are; time-ordered for the indexes
        enqueued_at = rt.clock()
        params = {
            "enqueued_at": enqueued_at.isoformat(),
            "task": task.module_path,
            "args": compat.normalize_json(args),
            "kwargs": compat.normalize_json(kwargs),
            "backend": self.alias,
            "queue": task.queue_name,
            "priority": task.priority,
            "run_after": task.run_after.isoformat() if task.run_after is not None else None,
            "retry": self.retry_for(task).to_json(),
        }
        rt.start_run(PACKAGE, params, run_id=run_id, name=task.module_path, metadata={"task": task.module_path})
        result = new_task_result(task, run_id, enqueued_at=enqueued_at, args=params["args"],
                                 kwargs=params["kwargs"], backend=self.alias)
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        from ..conf import workflow_settings
        from .results import task_result_for

        return task_result_for(result_id, using=workflow_settings().get("DATABASE", "default"))

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        yield from super().check(**kwargs)
        if not apps.is_installed("workflow"):
            yield checks.Error(
                f"{type(self).__name__} is configured as a task backend, but the workflow app is not installed",
                hint="Add 'workflow' to INSTALLED_APPS.",
            )
