"""Who is asking: a bearer token (no CSRF: not sent by browsers on their own) or the session (CSRF kept).

Permissions are the dashboard's: the model view permissions to read, ``workflow.operate`` to act.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from ninja.parser import Parser
from ninja.security import HttpBearer, SessionAuth

from .errors import ApiError
from .tokens import authenticate


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>``; a bad or revoked token is a 401 (the session is not tried)."""

    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        user = authenticate(token)
        if user is None:
            raise ApiError(401, "The bearer token is unknown or revoked.", code="bad_token")
        request.user = user
        request.auth_kind = "token"  # type: ignore[attr-defined]
        return user


class Session(SessionAuth):
    """The dashboard's login; unsafe methods must carry the CSRF token, as on the dashboard."""

    def __call__(self, request: HttpRequest) -> Any | None:
        # A request that chose a token is judged by its token alone; one without a session
        # cookie has no session to protect, so it gets a 401, not a CSRF 403.
        if request.headers.get("Authorization") or self.param_name not in request.COOKIES:
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any | None:
        user = super().authenticate(request, key)
        if user is not None:
            request.auth_kind = "session"  # type: ignore[attr-defined]
        return user


AUTH = [BearerToken(), Session()]


def require(request: HttpRequest, *perms: str) -> None:
    """403 unless the authenticated user has every permission."""
    user = request.user
    if not user.has_perms(perms):
        missing = [p for p in perms if not user.has_perm(p)]
        raise ApiError(403, f"Permission denied: needs {', '.join(missing)}.", details={"missing": missing})


def _has_bad_text(value: Any, path: str = "") -> str | None:
    """The path of the first string holding a NUL or a lone surrogate (the database refuses both)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= ch <= "\udfff" for ch in item):
                return where or "(body)"
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str) and ("\x00" in k or any("\ud800" <= ch <= "\udfff" for ch in k)):
                    return f"{where}.{k!r}" if where else repr(k)
                stack.append((v, f"{where}.{k}" if where else str(k)))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


class StrictJSONParser(Parser):
    """JSON bodies only, and no text the database cannot store (a 400 naming the field, not a 500)."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = json.loads(request.body)
        where = _has_bad_text(data)
        if where is not None:
            raise ApiError(400, f"{where}: text must not contain NUL characters or lone surrogates (no database "
                                "column can hold them)", code="bad_text", details={"path": where})
        return data
