"""System checks: a bad ``settings.WORKFLOW`` is reported by ``manage.py check`` with a hint.

Each check calls the same code that later builds the runtime, so a value refused here is
exactly a value the worker would die on, and nothing is validated twice in two ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core import checks

from .engine.errors import ConfigurationError

_HINT = "See the WORKFLOW settings in README.md."


@checks.register()
def check_workflow_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from . import conf

    try:
        conf.workflow_settings()
    except ConfigurationError as exc:
        return [checks.Error(str(exc), hint=_HINT, id="workflow.E001")]
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("workflow.E001", conf.build_config),
        ("workflow.E002", conf.artifact_storage_alias),
        ("workflow.E003", conf.retention),
        ("workflow.E004", conf.database_aliases),
    ]
    errors: list[checks.CheckMessage] = []
    for check_id, build in parts:
        try:
            build()
        except ConfigurationError as exc:
            errors.append(checks.Error(str(exc), hint=_HINT, id=check_id))
    return errors
