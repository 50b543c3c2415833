"""Benchmark settings: the site's (SQLite WAL + synchronous=NORMAL + IMMEDIATE, or DATABASE_URL), plus
the bench package. No configured queues (the demo site's rate-limited "io" queue would add a queue-row
lookup to every claim); everything else, including INFO logging of each step, is the site's default."""

from wfsite.settings import *  # noqa: F403
from wfsite.settings import INSTALLED_APPS, WORKFLOW

INSTALLED_APPS = [*INSTALLED_APPS, "bench.benchapp"]
WORKFLOW = {**WORKFLOW, "QUEUES": {}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

import os as _os  # noqa: E402

if _os.environ.get("BENCH_TASKS"):  # bench.tasks: Django's task API on our backend
    TASKS = {"default": {"BACKEND": "workflow.tasks.WorkflowBackend", "OPTIONS": {"RETRY": {"max_attempts": 3}}}}
