"""Django's task framework (``django.tasks``, or the ``django-tasks`` backport) on the engine.

``TASKS = {"default": {"BACKEND": "workflow.tasks.WorkflowBackend"}}`` makes every enqueued task
a durable one-step run: enqueued in the caller's transaction, claimed under a lease, retried by
a ``RetryPolicy``, visible and retryable in the dashboard.
"""

from __future__ import annotations

from .backend import WorkflowBackend, WorkflowTask

__all__ = ["WorkflowBackend", "WorkflowTask"]
