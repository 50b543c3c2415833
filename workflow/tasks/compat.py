"""The one place that picks Django's task framework: ``django.tasks`` (Django 6) or the backport.

Django 5.2 sites install the ``django-tasks`` backport (``pip install django-workflow[tasks]``);
on Django 6 the framework is part of Django and the backport is not needed.
"""

from __future__ import annotations

import django
from django.core.exceptions import ImproperlyConfigured

try:
    if django.VERSION >= (6, 0):
        from django.tasks import TaskContext, TaskResult, TaskResultStatus, task, task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import Task, TaskError
        from django.tasks.exceptions import InvalidTask as InvalidTaskError
        from django.tasks.exceptions import TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json
    else:
        from django_tasks import TaskContext, TaskResult, TaskResultStatus, task, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskError
        from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImproperlyConfigured(
        "workflow.tasks needs Django's task framework: Django 6, or on Django 5.2 the backport "
        "(pip install 'django-workflow[tasks]')"
    ) from exc

__all__ = [
    "BaseTaskBackend",
    "InvalidTaskError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
