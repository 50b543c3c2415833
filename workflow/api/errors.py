"""One error shape for every API answer that is not a success: ``{"error": {code, message, details}}``.

Engine refusals map to statuses here once (404 unknown, 409 wrong state or conflicting id,
422 invalid input), so every endpoint answers them the same way and none becomes a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError

from ..engine.errors import (
    InvalidGraph,
    InvalidInput,
    InvalidState,
    NotFound,
    RunConflict,
    StoreUnavailable,
    UnknownKind,
    UnknownPackage,
    WorkflowError,
)

log = logging.getLogger("workflow.api")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "payload_too_large", 416: "range_not_satisfiable", 422: "invalid_input",
         500: "server_error", 503: "unavailable"}


class ErrorBody(Schema):
    code: str
    message: str
    details: Any = None


class ErrorOut(Schema):
    error: ErrorBody


class ApiError(Exception):
    """Raise from an endpoint to answer ``status`` with the error shape."""

    def __init__(self, status: int, message: str, *, code: str = "", details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = details


def error_response(status: int, message: str, *, code: str = "", details: Any = None) -> JsonResponse:
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message, "details": details}}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="workflow"'
    return response


def from_workflow_error(exc: WorkflowError) -> ApiError:
    """The status an engine refusal deserves; the message is the engine's own, naming the thing."""
    if isinstance(exc, UnknownPackage):
        return ApiError(404, str(exc), code="unknown_package")
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, RunConflict):
        return ApiError(409, str(exc), code="run_conflict")
    if isinstance(exc, InvalidState):
        return ApiError(409, str(exc), code="invalid_state")
    if isinstance(exc, InvalidInput | InvalidGraph | UnknownKind):
        return ApiError(422, str(exc))
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, str(exc))
    return ApiError(409, str(exc))


def install_handlers(api: NinjaAPI) -> None:
    """Replace Django Ninja's ``{"detail": ...}`` answers with the error shape."""

    def handle_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return error_response(exc.status, exc.message, code=exc.code, details=exc.details)

    def handle_workflow_error(request: HttpRequest, exc: WorkflowError) -> HttpResponse:
        return handle_api_error(request, from_workflow_error(exc))

    def handle_validation(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        details = [{"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))} for e in exc.errors]
        first = details[0] if details else {"loc": [], "message": "invalid"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "payload")) or "input"
        return error_response(422, f"{where}: {first['message']}", details=details)

    def handle_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        cause = exc.__cause__
        if isinstance(cause, ApiError):  # raised by our parser, wrapped by Ninja
            return handle_api_error(request, cause)
        if isinstance(exc, AuthenticationError):
            return error_response(401, "Authentication required: send 'Authorization: Bearer <token>' "
                                       "(manage.py createapitoken) or log in.")
        message = str(exc)
        code = ""
        if exc.status_code == 403 and "CSRF" in message:
            code, message = "csrf_failed", "CSRF check failed: a session request must send the CSRF token " \
                                           "(X-CSRFToken header); token requests need none."
        elif exc.status_code == 400 and "parse" in message.lower():
            code, message = "malformed_json", "The request body is not valid JSON."
        return error_response(exc.status_code, message, code=code)

    def handle_404(request: HttpRequest, exc: Exception) -> HttpResponse:
        return error_response(404, str(exc) or "Not found.")

    def handle_permission(request: HttpRequest, exc: Exception) -> HttpResponse:
        return error_response(403, str(exc) or "Permission denied.")

    def handle_other(request: HttpRequest, exc: Exception) -> HttpResponse:
        if isinstance(exc, RequestDataTooBig):
            return error_response(413, "The request body is too large.")
        if isinstance(exc, TooManyFieldsSent):
            return error_response(400, "Too many query parameters.")
        log.exception("API error on %s %s", request.method, request.path)
        return error_response(500, "Internal error; it has been logged.")

    api.add_exception_handler(Exception, handle_other)
    api.add_exception_handler(Http404, handle_404)
    api.add_exception_handler(PermissionDenied, handle_permission)
    api.add_exception_handler(HttpError, handle_http_error)
    api.add_exception_handler(ValidationError, handle_validation)
    api.add_exception_handler(WorkflowError, handle_workflow_error)
    api.add_exception_handler(ApiError, handle_api_error)
