"""Helpers every endpoint shares: keyset paging with checked cursors, and query-parameter checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ninja import Query, Router

from ..forms import BadInput
from ..read import pages
from .errors import ApiError, ErrorOut

T = TypeVar("T")
router = Router()  # one router: GET and POST on the same path must share one URL pattern
MAX_PAGE = 200
# Every status an endpoint may answer with the error shape; listed in the OpenAPI document.
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 405, 413, 422)}
ACTION_ERRORS: dict[int, Any] = {**ERRORS, 409: ErrorOut}
CURSOR = Query(None, pattern=r"^[A-Za-z0-9_-]{1,2000}$",
               description="an opaque cursor from a previous page's next/previous; anything else is a 400")


def paged(call: Callable[[], T], *, after: str | None, before: str | None, size: int) -> T:
    """Run a keyset query; a cursor that is not exactly one a page made is a 400 (``forms.parse_cursor``)."""
    try:
        return call()
    except BadInput as exc:
        raise ApiError(400, f"{exc} Pass back a 'next' or 'previous' value unchanged.", code="bad_cursor") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        if after or before:
            raise ApiError(400, "The cursor does not fit this list.", code="bad_cursor") from exc
        raise


def page_body(page: pages.Page, items: list[Any]) -> dict[str, Any]:
    return {"items": items, "next": page.older, "previous": page.newer}


def filter_errors(errors: list[str]) -> None:
    if errors:
        raise ApiError(422, errors[0], details={"errors": errors})
