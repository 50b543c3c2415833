"""What an artifact's content type may be: a media type that is safe to send as a header."""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidInput

MAX_CONTENT_TYPE_LENGTH = 255  # Artifact.content_type
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
# type/subtype, then optional parameters; printable ASCII only, so never CR, LF or NUL.
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[ !#-\[\]-~]*\"))*[ \t]*")


def check_content_type(content_type: Any) -> str:
    """Return ``content_type`` if it is a media type (``text/csv; charset=utf-8``), else raise InvalidInput.

    It is sent back as the download's Content-Type header: a CR, LF or NUL in it would make
    every download of the artifact fail, so it is refused when the artifact is written.
    """
    if not isinstance(content_type, str):
        raise InvalidInput(f"artifact content type must be a string, got {type(content_type).__name__}")
    if len(content_type) > MAX_CONTENT_TYPE_LENGTH:
        raise InvalidInput(
            f"artifact content type is {len(content_type)} characters; at most {MAX_CONTENT_TYPE_LENGTH} are allowed"
        )
    if not _MEDIA_TYPE.fullmatch(content_type):
        raise InvalidInput(
            f"artifact content type {content_type[:80]!r} is not a media type such as 'text/csv' or "
            "'application/json; charset=utf-8' (no control characters, CR, LF or NUL)"
        )
    return content_type


def is_content_type(content_type: Any) -> bool:
    """Whether a stored content type can be sent as a header (rows written before the check)."""
    try:
        check_content_type(content_type)
    except InvalidInput:
        return False
    return True
