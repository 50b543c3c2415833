"""Decorators and response helpers shared by the dashboard's views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from ..engine.errors import InvalidInput, NotFound, WorkflowError
from ..forms import BadInput, check_params
from .auth import dashboard_login_required

ViewFunc = Callable[..., HttpResponse]


def refuse_bad_input(view: ViewFunc) -> ViewFunc:
    """Check every parameter, path ones included, for text no column can hold; BadInput is a 400."""

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            check_params(kwargs)
            check_params(request.GET)
            if request.method == "POST":
                check_params(request.POST)
            return view(request, *args, **kwargs)
        except BadInput as exc:
            return bad_request(request, str(exc))

    return inner


def viewer(*perms: str) -> Callable[[ViewFunc], ViewFunc]:
    """Login first (anonymous users go to the login page), then the view permissions (else 403)."""

    def wrap(view: ViewFunc) -> ViewFunc:
        return dashboard_login_required(
            permission_required(perms, raise_exception=True)(require_GET(refuse_bad_input(view)))
        )

    return wrap


def bad_request(request: HttpRequest, message: str) -> HttpResponse:
    """A 400 naming what is wrong with the request (a toast for htmx, else a page)."""
    return _error_response(request, 400, "Bad request", message)


def operator_action(view: ViewFunc) -> ViewFunc:
    """A POST-only action that needs ``workflow.operate``; engine refusals become 404/409, never 500."""

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except WorkflowError as exc:
            return action_error(request, exc)

    guarded = permission_required("workflow.operate", raise_exception=True)(refuse_bad_input(inner))
    return dashboard_login_required(require_POST(guarded))


def action_error(request: HttpRequest, exc: WorkflowError) -> HttpResponse:
    """Render an engine refusal: 404 unknown, 400 invalid input, 409 a state that does not allow it."""
    if isinstance(exc, NotFound):
        return _error_response(request, 404, "Not found", str(exc))
    if isinstance(exc, InvalidInput):
        return _error_response(request, 400, "Bad request", str(exc))
    return _error_response(request, 409, "Not possible right now", str(exc))


def _error_response(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    context = {"title": title, "message": message, "status": status}
    if getattr(request, "htmx", False):
        html = render_to_string("workflow/_toast.html", {"level": "error", "text": f"{title}: {message}"}, request)
        response = HttpResponse(html, status=status)
        response["HX-Retarget"] = "#toasts"
        response["HX-Reswap"] = "beforeend"
        return response
    return HttpResponse(render_to_string("workflow/action_error.html", context, request), status=status)


def render_fragment(request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200) -> HttpResponse:
    """Render an htmx fragment, appending pending messages as out-of-band toasts."""
    html = render_to_string(template, context, request)
    html += render_to_string("workflow/_messages_oob.html", {}, request)
    return HttpResponse(html, status=status)


def current_params(request: HttpRequest) -> dict[str, str]:
    """The query parameters of the page an htmx request came from (HX-Current-URL), else of this request."""
    url = getattr(getattr(request, "htmx", None), "current_url", None)
    if url:
        return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    return {k: request.GET.get(k, "") for k in request.GET}
