"""Health endpoints for load balancers and orchestrators: mount ``workflow.health.urls`` at the site root.

``/healthz`` says the process answers (no database, no login: cheap enough to poll every second).
``/readyz`` says this process can serve: the database answers and every migration is applied;
otherwise 503 with the reason, so a deploy whose migrations have not run gets no traffic.
"""

from __future__ import annotations

from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _using() -> str:
    from .conf import workflow_settings

    return workflow_settings().get("DATABASE", "default")


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    using = _using()
    connection = connections[using]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return JsonResponse({"status": "unavailable", "reason": f"database {using!r} is not reachable: {exc}"},
                            status=503)
    if pending:
        names = [f"{m.app_label}.{m.name}" for m, _ in pending[:10]]
        return JsonResponse({"status": "unavailable", "reason": f"{len(pending)} migrations are not applied",
                             "pending": names}, status=503)
    return JsonResponse({"status": "ok", "database": connection.vendor})


app_name = "workflow_health"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
