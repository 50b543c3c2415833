from __future__ import annotations

import importlib

from django.apps import AppConfig, apps
from django.utils.module_loading import module_has_submodule


class WorkflowConfig(AppConfig):
    name = "workflow"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .engine.registry import registry

        # As the admin finds admin.py: import each installed app's workflows.py, register its packages.
        for app in apps.get_app_configs():
            if module_has_submodule(app.module, "workflows"):
                registry.discover(importlib.import_module(f"{app.name}.workflows"))
        if _uses_task_backend():
            from .tasks.package import tasks_package

            registry.register(tasks_package)


def _uses_task_backend() -> bool:
    """Whether ``settings.TASKS`` names our backend: then workers must know the ``tasks`` package."""
    from django.conf import settings

    backends = getattr(settings, "TASKS", None) or {}
    return any(
        isinstance(spec, dict) and str(spec.get("BACKEND", "")).startswith("workflow.tasks")
        for spec in backends.values()
    )
