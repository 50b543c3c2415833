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
