"""System checks: a bad ``settings.WORKFLOW`` is reported by ``manage.py check`` with a hint."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .engine.errors import ConfigurationError


@checks.register()
def check_workflow_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .conf import build_config

    try:
        build_config()
    except ConfigurationError as exc:
        return [checks.Error(str(exc), hint="See the WORKFLOW settings in README.md.", id="workflow.E001")]
    return []


@checks.register()
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every ``package.schedule(...)``: cron, time zone, policies, input type, unique names."""
    from .engine.registry import registry, schedule_problems

    return [
        checks.Error(problem, hint="Fix the package.schedule(...) call in workflows.py; nothing is scheduled until then.",
                     id="workflow.E010")
        for problem in schedule_problems(registry)
    ]
