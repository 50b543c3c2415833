"""Checks for every value a caller hands the engine, run before anything is written.

A value the database would refuse (too long for its column, a NUL in JSON on PostgreSQL) or
that would break a worker later (an unknown backoff kind read back inside every claim) is
refused here with ``InvalidInput`` naming the step and the field. The lengths mirror the
columns in ``workflow/models.py`` (the engine does not import Django); a test keeps them equal.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from .errors import InvalidInput

MAX_RUN_ID_LENGTH = 255  # Run.id
MAX_PACKAGE_LENGTH = 100  # Run.package
MAX_RUN_NAME_LENGTH = 255  # Run.name
MAX_STEP_ID_LENGTH = 255  # Step.step_id, Step.parent_step_id
MAX_KIND_LENGTH = 100  # Step.kind
MAX_QUEUE_LENGTH = 100  # Step.queue, Queue.name
MAX_SITE_LENGTH = 100  # Step.site, Worker.site
MAX_DEDUP_KEY_LENGTH = 255  # Step.dedup_key
MAX_WORKER_ID_LENGTH = 200  # Worker.id, Lease.worker_id, Step.lease_owner
MAX_RECORD_COLLECTION_LENGTH = 100  # Record.collection
MAX_RECORD_KEY_LENGTH = 255  # Record.key
MAX_ARTIFACT_NAME_LENGTH = 255  # Artifact.name
MAX_ARTIFACT_KIND_LENGTH = 100  # Artifact.kind
MAX_CONTENT_TYPE_LENGTH = 255  # Artifact.content_type
# Deeper JSON is refused with a clear error, well before json or the database recurse too far.
MAX_JSON_DEPTH = 64

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
# C0 controls and DEL break logs, URLs and terminals; surrogates cannot be encoded as UTF-8.
_FORBIDDEN_CHAR = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_BAD_JSON_CHAR = re.compile(r"[\x00\ud800-\udfff]")


def _where(step: str | None) -> str:
    return f"step {step!r}: " if step else ""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:60] + "...")


def check_text(
    value: Any, *, label: str, field: str, max_length: int, step: str | None = None, allow_empty: bool = False
) -> str:
    """Return ``value`` if it is a printable string that fits its column, else raise ``InvalidInput``."""
    # Fast path (every emitted child passes here several times): accept what the checks below accept.
    if type(value) is str and 0 < len(value) <= max_length and not _FORBIDDEN_CHAR.search(value) and value.strip():
        return value
    where = _where(step)
    if not isinstance(value, str):
        raise InvalidInput(f"{where}{label} must be a string, got {type(value).__name__}", field=field, step=step)
    if not value.strip():
        if allow_empty and not value:
            return value
        raise InvalidInput(f"{where}{label} must not be empty, got {value!r}", field=field, step=step)
    if len(value) > max_length:
        raise InvalidInput(
            f"{where}{label} {_shown(value)} is {len(value)} characters, longer than the limit of {max_length}",
            field=field, step=step,
        )
    bad = _FORBIDDEN_CHAR.search(value)
    if bad:
        what = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise InvalidInput(
            f"{where}{label} {_shown(value)} contains {what} ({bad.group()!r} at position {bad.start()})",
            field=field, step=step,
        )
    return value


def check_id(
    value: Any, *, label: str, field: str, max_length: int = MAX_STEP_ID_LENGTH, step: str | None = None
) -> str:
    """Check a run or step id: printable text that fits, and not ``.`` or ``..``.

    A ``/`` is allowed (URLs escape it as ``~2F``), but ``.`` and ``..`` would be read as
    relative path segments by browsers and proxies, so the step's page could never be reached.
    """
    text = check_text(value, label=label, field=field, max_length=max_length, step=step)
    if text in (".", ".."):
        raise InvalidInput(f"{_where(step)}{label} must not be {text!r}", field=field, step=step)
    return text


def check_queue_name(value: Any, *, field: str = "queue", step: str | None = None, label: str = "queue name") -> str:
    """Check a queue name: 1-100 letters, digits, ``_``, ``-`` or ``.``, and not ``.`` or ``..``."""
    if type(value) is str and value in _valid_queue_names:
        return value
    where = _where(step)
    if not isinstance(value, str):
        raise InvalidInput(f"{where}{label} must be a string, got {type(value).__name__}", field=field, step=step)
    if not value or len(value) > MAX_QUEUE_LENGTH:
        raise InvalidInput(
            f"{where}{label} {_shown(value)} must be 1 to {MAX_QUEUE_LENGTH} characters long", field=field, step=step
        )
    if not _QUEUE_NAME.fullmatch(value) or value in (".", ".."):
        raise InvalidInput(
            f"{where}{label} {_shown(value)} may only hold letters, digits, '_', '-' and '.' (and is not '.' or '..')",
            field=field, step=step,
        )
    if type(value) is str and len(_valid_queue_names) < _MAX_REMEMBERED_QUEUE_NAMES:
        _valid_queue_names.add(value)
    return value


# Queue names seen valid: a run's steps share a handful, so the pattern is matched once per name.
# Bounded, so a caller minting names cannot grow it without limit (past the bound names are checked each time).
_MAX_REMEMBERED_QUEUE_NAMES = 1024
_valid_queue_names: set[str] = set()


# In ``json.dumps`` text (ASCII escapes): an unescaped backslash starting \u0000 or a surrogate escape.
_SUSPECT_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u(?:0000|[dD][89abcdefABCDEF])")


def check_json_text(text: str, value: Any, *, label: str, field: str, step: str | None = None) -> Any:
    """``check_json`` with a fast path: ``text`` is ``json.dumps(value)``, scanned at C speed first.

    Only text that may hold a NUL, a surrogate or deep nesting gets the walk, which names the path.
    """
    if _SUSPECT_ESCAPE.search(text) or text.count("[") + text.count("{") >= MAX_JSON_DEPTH:
        check_json(value, label=label, field=field, step=step)
    return value


def check_json(value: Any, *, label: str, field: str, step: str | None = None) -> Any:
    """Refuse JSON data the databases cannot store or the engine cannot read back; return it unchanged.

    Walks iteratively, so a deeply nested value gets this error rather than a ``RecursionError``.
    """
    where = _where(step)
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(f"{where}{label} is nested deeper than {MAX_JSON_DEPTH} levels (at {path})",
                               field=field, step=step)
        if isinstance(item, str):
            _check_json_string(item, where=where, label=label, field=field, step=step, path=path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{where}{label} holds {item!r} at {path}, which JSON cannot represent",
                                   field=field, step=step)
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    _check_json_string(key, where=where, label=label, field=field, step=step, path=f"{path} (a key)")
                stack.append((child, depth + 1, f"{path}.{key}"))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1, f"{path}[{n}]") for n, child in enumerate(item))
    return value


def has_bad_json_char(text: str) -> bool:
    """Whether ``text`` holds a character ``check_json`` refuses (a NUL or a lone surrogate)."""
    return _BAD_JSON_CHAR.search(text) is not None


def storable_text(text: str) -> str:
    """``text`` with what no column can hold (a NUL, a lone surrogate) replaced by U+FFFD.

    For what a step writes without being asked to keep it exact (its log, its error): one stray
    byte in a log line must not make its commit, and every retry of it, fail.
    """
    return _BAD_JSON_CHAR.sub("\ufffd", text) if _BAD_JSON_CHAR.search(text) else text


def _check_json_string(text: str, *, where: str, label: str, field: str, step: str | None, path: str) -> None:
    bad = _BAD_JSON_CHAR.search(text)
    if bad is None:
        return
    what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate"
    raise InvalidInput(
        f"{where}{label} contains {what} at {path} (position {bad.start()}); PostgreSQL cannot store it in JSON",
        field=field, step=step,
    )


def as_timeout(value: timedelta | float | None) -> timedelta | None:
    """A step timeout from a timedelta or seconds; it must be positive (None: no timeout)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise ValueError(f"timeout must be a timedelta or a number of seconds, got {value!r}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not 0 < seconds < 10**9:  # also refuses NaN and infinity
        raise ValueError(f"timeout must be a positive duration, got {value!r}")
    return timedelta(seconds=seconds)
