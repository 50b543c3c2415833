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


# What the dashboard needs from the site around it; a fresh ``startproject`` site has all of it.
REQUIRED_APPS = (
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
)
REQUIRED_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)
REQUIRED_CONTEXT_PROCESSORS = (
    "django.template.context_processors.request",
    "django.contrib.auth.context_processors.auth",
    "django.contrib.messages.context_processors.messages",
)


def _has_middleware(path: str) -> bool:
    """True if MIDDLEWARE holds ``path`` or a subclass of it (as the admin's own check allows)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    wanted = import_string(path)
    for entry in settings.MIDDLEWARE:
        try:
            if issubclass(import_string(entry), wanted):
                return True
        except (ImportError, TypeError):
            continue
    return False


@checks.register()
def check_site_requirements(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Name exactly the app, middleware or context processor the site must add for the dashboard."""
    from django.apps import apps
    from django.conf import settings

    errors: list[checks.CheckMessage] = []
    for app in REQUIRED_APPS:
        if not apps.is_installed(app):
            errors.append(checks.Error(f"The workflow dashboard needs {app!r} in INSTALLED_APPS.",
                                       hint=f'Add "{app}" to INSTALLED_APPS.', id="workflow.E101"))
    for middleware in REQUIRED_MIDDLEWARE:
        if not _has_middleware(middleware):
            errors.append(checks.Error(f"The workflow dashboard needs {middleware!r} in MIDDLEWARE.",
                                       hint=f'Add "{middleware}" to MIDDLEWARE, in the order startproject gives.',
                                       id="workflow.E102"))
    django_engines = [t for t in settings.TEMPLATES
                      if t.get("BACKEND") == "django.template.backends.django.DjangoTemplates"]
    if not django_engines:
        errors.append(checks.Error("The workflow dashboard needs a DjangoTemplates engine in TEMPLATES.",
                                   hint='Add {"BACKEND": "django.template.backends.django.DjangoTemplates", '
                                        '"APP_DIRS": True, ...} to TEMPLATES.', id="workflow.E103"))
    else:
        processors = {p for t in django_engines for p in t.get("OPTIONS", {}).get("context_processors", [])}
        for processor in REQUIRED_CONTEXT_PROCESSORS:
            if processor not in processors:
                errors.append(checks.Error(
                    f"The workflow dashboard needs the context processor {processor!r}.",
                    hint=f'Add "{processor}" to TEMPLATES[...]["OPTIONS"]["context_processors"].',
                    id="workflow.E104"))
    return errors
@checks.register()
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every ``package.schedule(...)``: cron, time zone, policies, input type, unique names."""
    from .engine.registry import registry, schedule_problems

    return [
        checks.Error(problem, hint="Fix the package.schedule(...) call in workflows.py; nothing is scheduled until then.",
                     id="workflow.E010")
        for problem in schedule_problems(registry)
    ]
