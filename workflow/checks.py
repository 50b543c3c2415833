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
