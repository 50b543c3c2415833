"""The HTTP JSON API, for a site to mount: ``path("api/v1/", include("workflow.api.urls"))``.

Every answer carries ``X-Request-Id`` (the client's, when it sent a sane one); paths under the
mount that match nothing, and methods an endpoint does not take, answer with the error shape.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import TooManyFieldsSent
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path, re_path
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI

from .. import urls as _site_urls  # noqa: F401  registers the "wfid" path converter
from . import actions, reads  # noqa: F401  their endpoints join the router
from .auth import AUTH, StrictJSONParser
from .common import router
from .errors import error_response, install_handlers

app_name = "workflow_api"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

api = NinjaAPI(
    title="django-workflow API",
    version="1",
    description="Runs, steps, results, artifacts, records, queues and events of the workflow engine, and the "
                "operator actions. Authenticate with `Authorization: Bearer <token>` (`manage.py createapitoken`) "
                "or a logged-in session (then unsafe methods need the CSRF token). Ids containing `/` or `~` are "
                "written with `~2F` and `~7E` in paths. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`.",
    urls_namespace=app_name,
    auth=AUTH,
    parser=StrictJSONParser(),
    docs_url=None,
    openapi_url="openapi.json",
)
install_handlers(api)
api.add_router("", router)


def _bad_request(request: HttpRequest) -> HttpResponse | None:
    """Input no endpoint could use and the database would refuse: a NUL byte in the path or query."""
    if "\x00" in request.path:
        return error_response(400, "The path contains a NUL character.")
    try:
        items = list(request.GET.lists())
    except TooManyFieldsSent:
        return error_response(400, "Too many query parameters.")
    for key, values in items:
        if "\x00" in key or any("\x00" in v for v in values):
            return error_response(400, f"Query parameter {key.replace(chr(0), '')!r} contains a NUL character.")
    return None


def api_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Request id in and out, early refusal of unusable input, and 405s in the error shape."""

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        response = _bad_request(request) or view(request, *args, **kwargs)
        if response.status_code == 405 and "json" not in response.get("Content-Type", ""):
            allow = response.get("Allow", "")
            response = error_response(405, f"Method {request.method} is not allowed here (allowed: {allow}).",
                                      details={"allowed": [m.strip() for m in allow.split(",") if m.strip()]})
            response["Allow"] = allow
        response["X-Request-Id"] = request_id
        return response

    return inner


@login_required
def docs(request: HttpRequest) -> HttpResponse:
    """A plain page listing every operation of the OpenAPI document (no CDN, no script)."""
    schema = api.get_openapi_schema(path_prefix=request.path.rsplit("docs/", 1)[0])
    operations = []
    for route, methods in schema["paths"].items():
        for method, op in methods.items():
            params = [{"name": p["name"], "in": p["in"], "required": p.get("required", False),
                       "description": p.get("description", "")} for p in op.get("parameters", [])]
            operations.append({"method": method.upper(), "path": route, "summary": op.get("summary", ""),
                               "tag": (op.get("tags") or [""])[0], "params": params,
                               "statuses": sorted({str(code) for code in op.get("responses", {})}),
                               "has_body": "requestBody" in op})
    return render(request, "workflow/api/docs.html", {
        "info": schema["info"], "operations": operations,
        "openapi_url": request.path.rsplit("docs/", 1)[0] + "openapi.json",
    })


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error_response(404, f"No API endpoint at {request.path}.")


def _wrapped(patterns: list[Any]) -> list[Any]:
    return [URLPattern(p.pattern, api_view(p.callback), p.default_args, p.name) if isinstance(p, URLPattern) else p
            for p in patterns]


urlpatterns = [
    path("docs/", docs, name="docs"),
    *_wrapped(api.urls[0]),
    re_path(r"^.*$", api_view(not_found), name="not_found"),
]
