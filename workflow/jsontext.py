"""Reading JSON columns so that every string in them is text a page can show.

JSON can spell a lone UTF-16 surrogate (``"\\ud800"``); SQLite stores that escape as it is,
and Python decodes it into a string that cannot be encoded as UTF-8, so any page showing it
would fail with a 500. New input is refused at the edge (``workflow.forms``); rows stored
before are read through this decoder, which replaces each lone surrogate with U+FFFD.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.db import models

LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


class TextSafeDecoder(json.JSONDecoder):
    """A JSONDecoder whose strings are always valid Unicode (see the module docstring)."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        value = super().decode(s, *args, **kwargs)
        # Only a \u escape can make a lone surrogate: the common case costs one substring search.
        if "\\ud" in s or "\\uD" in s:
            value = scrub(value)
        return value


class _MemberTextField(models.TextField):
    """The text of a JSON member; on SQLite it arrives as JSON and is decoded here, safely."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if connection.vendor != "sqlite" or not isinstance(value, str):
            return value
        try:
            decoded = json.loads(value, cls=TextSafeDecoder)
        except ValueError:
            return value
        if decoded is None or isinstance(decoded, str):
            return decoded
        return json.dumps(decoded)


class JsonText(models.Func):
    """The text of ``column``'s member ``key``, like ``KT("column__key")``, safe for any stored text.

    SQLite's ``->>`` turns a stored ``"\\ud800"`` escape into bytes that are not UTF-8, and the
    query fails as it reads them; ``->`` keeps the member as JSON text, decoded in Python by
    ``TextSafeDecoder``. PostgreSQL's jsonb cannot hold a lone surrogate, so it uses ``->>``.
    Aggregates over it (``Max``) keep the field, and with it the decoding.
    """

    template = "(%(expressions)s)"
    arg_joiner = " -> "

    def __init__(self, column: str, key: str) -> None:
        super().__init__(models.F(column), models.Value(key), output_field=_MemberTextField())

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, arg_joiner=" ->> ", **extra)
