"""Test settings: the site's, plus the test package as an installed app (workers in subprocesses see it)."""

from datetime import timedelta

from wfsite.settings import *  # noqa: F403
from wfsite.settings import INSTALLED_APPS, WORKFLOW

INSTALLED_APPS = [*INSTALLED_APPS, "tests.procapp"]
WORKFLOW = {**WORKFLOW, "POLL_INTERVAL": timedelta(milliseconds=50), "QUEUES": {}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Django's task framework on our backend; the ported django-tasks-db tests expect no retries by default.
TASKS = {
    "default": {
        "BACKEND": "workflow.tasks.WorkflowBackend",
        "QUEUES": ["default", "queue-1"],
        "OPTIONS": {"RETRY": {"max_attempts": 1}},
    }
}
