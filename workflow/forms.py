"""Everything the dashboard accepts from a request, parsed in one place with its error texts.

The list filters (runs, steps across runs, events), keyset cursors, JSON bodies and free text
are checked here against the columns they end up compared with, so a crafted request gets a
400 or an error beside its field instead of a 500 from the database. The functions take plain
mappings (a ``QueryDict`` or a ``dict``), never a request, so the JSON API can reuse them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from .engine.rules import ROUTINE_KINDS
from .engine.values import ACTIVE_RUN_STATES, TERMINAL_STEP_STATES, RunState, StepState
from .models import Event, Run, Step
from .read.throughput import SINCE_CHOICES

MAX_SEARCH_LENGTH = 255  # the widest column a search box is compared with
MAX_CURSOR_LENGTH = 2000
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 16 * 1024 * 1024
RUN_STATES = [s.value for s in RunState]
STEP_STATES = [s.value for s in StepState]
EVENT_RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24),
                "7d": timedelta(days=7)}
EVENT_KINDS = [
    "run_created", "run_succeeded", "run_failed", "run_canceled", "step_claimed", "step_succeeded", "step_retrying",
    "step_failed", "step_retried", "step_input_edited", "lease_expired", "commit_rejected", "commit_error", "step_handed_back",
    "queue_paused", "queue_resumed", "queue_configured", "worker_started", "worker_stopped", "worker_error",
]
EVENT_SORTS: dict[str, tuple[tuple[str, ...], tuple[bool, ...]]] = {
    "newest": (("id",), (True,)),
    "oldest": (("id",), (False,)),
    "kind": (("kind", "id"), (False, True)),  # A to Z, newest first within a kind: event_kind_idx
}
EVENT_MULTI = ("kind", "severity")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BadInput(ValueError):
    """A request the dashboard cannot act on: answered with 400 and this message."""


# -- text ------------------------------------------------------------------------------------------
def text_problem(value: str, *, max_length: int | None = None) -> str | None:
    """Why ``value`` cannot be stored or compared in a text column, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\x00), which no text column can hold"
    if _LONE_SURROGATE.search(value):
        return "contains a lone UTF-16 surrogate, which is not valid Unicode text"
    if max_length is not None and len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    return None


def check_text(value: str, *, label: str, max_length: int | None = None) -> str:
    """Return ``value``, or raise BadInput naming ``label`` and the problem."""
    problem = text_problem(value, max_length=max_length)
    if problem:
        raise BadInput(f"{label} {problem}.")
    return value


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse any parameter holding a NUL or a lone surrogate: no column can compare with it."""
    lists = params.lists() if hasattr(params, "lists") else ((k, [v]) for k, v in params.items())
    for key, values in lists:
        check_text(str(key), label="A parameter name")
        for value in values:
            if isinstance(value, str):
                check_text(value, label=f"Parameter {str(key)[:40]!r}")


def _text_validator(value: str) -> None:
    if _LONE_SURROGATE.search(value):
        raise ValidationError("Contains a lone UTF-16 surrogate, which is not valid Unicode text.")


class TextField(forms.CharField):
    """A CharField that also refuses lone surrogates (NUL is refused by CharField itself)."""

    default_validators = [_text_validator]


def column_length(model: type[models.Model], name: str) -> int:
    """The max_length of a CharField, so the edge checks against the real column."""
    return int(model._meta.get_field(name).max_length)  # type: ignore[union-attr]


# -- JSON ------------------------------------------------------------------------------------------
def parse_json(text: str, *, label: str = "Input", max_depth: int = MAX_JSON_DEPTH,
               max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse untrusted JSON with bounded size and nesting; raise BadInput with a clear message.

    The depth is checked on the text before parsing, so 100,000 nested brackets cost one scan
    instead of a RecursionError.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise BadInput(f"{label} is {size:,} bytes; at most {max_bytes:,} are allowed.")
    depth = json_text_depth(text)
    if depth > max_depth:
        raise BadInput(f"{label} is nested {depth} levels deep; at most {max_depth} are allowed.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"{label} is not valid JSON: {exc}") from None
    check_json_text(value, label=label)
    return value


def json_text_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def check_json_text(value: Any, *, label: str = "Input") -> None:
    """Refuse NUL and lone surrogates anywhere in a JSON value (PostgreSQL's jsonb holds neither)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise BadInput(f"{label} has a text value that {problem}.")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# -- keyset cursors --------------------------------------------------------------------------------
def cursor_kinds(model: type[models.Model], fields: Sequence[str]) -> tuple[type, ...]:
    """The Python type each cursor value must have, read from the model's fields."""
    kinds: list[type] = []
    for name in fields:
        f = model._meta.get_field(name)
        if isinstance(f, models.DateTimeField):
            kinds.append(datetime)
        elif isinstance(f, models.IntegerField | models.AutoField):
            kinds.append(int)
        else:
            kinds.append(str)
    return tuple(kinds)


def parse_cursor(raw: str | None, kinds: Sequence[type]) -> list[Any] | None:
    """Decode a cursor made by ``queries.encode_cursor``; raise BadInput unless it is exactly that.

    A cursor is base64 JSON of one value per sort field, of the field's type; anything else was
    not made by a page (a stale link or a crafted one), and is refused with a 400.
    """
    if not raw:
        return None
    problem = "is not a page link this site made"
    if len(raw) > MAX_CURSOR_LENGTH:
        raise BadInput(f"The page cursor {problem} (it is too long).")
    try:
        padded = raw + "=" * (-len(raw) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise BadInput(f"The page cursor {problem} (it does not decode).") from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise BadInput(f"The page cursor {problem} (it has the wrong shape).")
    out: list[Any] = []
    for value, kind in zip(values, kinds, strict=True):
        if kind is datetime:
            parsed = _parse_iso(value) if isinstance(value, str) else None
            if parsed is None:
                raise BadInput(f"The page cursor {problem} (a date in it is not valid).")
            out.append(parsed)
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 2**63:
                raise BadInput(f"The page cursor {problem} (a number in it is not valid).")
            out.append(value)
        else:
            if not isinstance(value, str) or text_problem(value, max_length=MAX_SEARCH_LENGTH):
                raise BadInput(f"The page cursor {problem} (a text in it is not valid).")
            out.append(value)
    return out


def _parse_iso(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return timezone.make_aware(parsed, UTC) if timezone.is_naive(parsed) else parsed


# -- dates -----------------------------------------------------------------------------------------
class DateTimeInput(forms.Field):
    """``<input type=datetime-local>`` values or ISO 8601; impossible dates are a field error."""

    default_error_messages = {
        "invalid": "Enter a real date and time, like 2024-02-29T13:45 (got %(value)s).",
    }

    def to_python(self, value: Any) -> datetime | None:
        if value in self.empty_values:
            return None
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(self.error_messages["invalid"], code="invalid",
                                  params={"value": repr(text[:40])}) from None
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        try:
            parsed.astimezone(UTC)  # an offset the calendar cannot apply near year 1 or 9999
        except (OverflowError, ValueError):
            raise ValidationError(self.error_messages["invalid"], code="invalid",
                                  params={"value": repr(text[:40])}) from None
        return parsed


# -- the filters -----------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class FilterResult:
    """What a filter form made of its parameters: the clean values, and errors by field name."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def error_list(self) -> list[str]:
        return [f"{name.replace('_', ' ').capitalize()}: {text}" if name != "__all__" else text
                for name, text in self.errors.items()]


def _run(form: forms.Form) -> FilterResult:
    """Validate; a field with an error falls back to empty, so the list still shows."""
    form.is_valid()
    values: dict[str, Any] = {}
    for name, bound in form.fields.items():
        values[name] = form.cleaned_data.get(name, bound.initial if bound.initial is not None else "")
        if values[name] is None and not isinstance(bound, DateTimeInput):
            values[name] = ""
    errors = {name: " ".join(str(m) for m in msgs) for name, msgs in form.errors.items()}
    return FilterResult(values=values, errors=errors)


class MetaFilterField(TextField):
    """``key=value``: the key is one JSON key, never a lookup path (``a__contains`` is a key)."""

    def clean(self, value: Any) -> tuple[str, str] | str:
        text = super().clean(value)
        if not text:
            return ""
        key, sep, val = text.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not key:
            raise ValidationError("Write the metadata filter as key=value, for example customer=acme.")
        return (key, val)


class RunsFilterForm(forms.Form):
    package = TextField(required=False, max_length=column_length(Run, "package"))
    state = forms.ChoiceField(required=False, choices=[("", "any"), *((s, s) for s in RUN_STATES)])
    q = TextField(required=False, max_length=MAX_SEARCH_LENGTH)
    meta = MetaFilterField(required=False, max_length=2 * MAX_SEARCH_LENGTH)
    created_after = DateTimeInput(required=False)
    created_before = DateTimeInput(required=False)


class StepsFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "any"), *((s, s) for s in STEP_STATES)])
    code = TextField(required=False, max_length=100)
    queue = TextField(required=False, max_length=column_length(Step, "queue"))
    kind = TextField(required=False, max_length=column_length(Step, "kind"))
    since = forms.ChoiceField(required=False, choices=[("", "any"), *((k, k) for k in SINCE_CHOICES)])
    run = TextField(required=False, max_length=column_length(Run, "id"))
    package = TextField(required=False, max_length=column_length(Run, "package"))


class MultipleTextField(forms.Field):
    """A repeated parameter (``?kind=a&kind=b``): each value stripped and checked, at most ``max_values``."""

    widget = forms.SelectMultiple

    def __init__(self, *, max_length: int, max_values: int = 30, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length, self.max_values = max_length, max_values

    def clean(self, value: Any) -> list[str]:
        values = [v.strip() for v in (value or []) if isinstance(v, str) and v.strip()]
        if len(values) > self.max_values:
            raise ValidationError(f"Pick at most {self.max_values} values (got {len(values)}).")
        for v in values:
            problem = text_problem(v, max_length=self.max_length)
            if problem:
                raise ValidationError(f"The value {v[:40]!r} {problem}.")
        return list(dict.fromkeys(values))


class EventsFilterForm(forms.Form):
    kind = MultipleTextField(required=False, max_length=column_length(Event, "kind"))
    severity = forms.MultipleChoiceField(required=False, choices=Event.Severity.choices, error_messages={
        "invalid_choice": "%(value)s is not a severity; pick debug, info, warning or error."})
    run = TextField(required=False, max_length=column_length(Run, "id"))
    step = TextField(required=False, max_length=column_length(Event, "step_id"))
    queue = TextField(required=False, max_length=column_length(Event, "queue"))
    worker = TextField(required=False, max_length=column_length(Event, "worker_id"))
    range = forms.ChoiceField(required=False, choices=[("", "any"), *((k, k) for k in EVENT_RANGES)])
    since = DateTimeInput(required=False)
    until = DateTimeInput(required=False)
    sort = forms.ChoiceField(required=False, choices=[("", "newest"), *((k, k) for k in EVENT_SORTS)], error_messages={
        "invalid_choice": "%(value)s is not a sort; pick " + ", ".join(EVENT_SORTS) + "."})

    def clean_kind(self) -> list[str]:
        kinds: list[str] = self.cleaned_data["kind"]
        routine = [k for k in kinds if k in ROUTINE_KINDS]
        if routine and len(kinds) > 1:
            raise ValidationError(f"{routine[0]} is read from the attempts, not stored with the other events: "
                                  "choose it alone.")
        return kinds


def _strip(params: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in names:
        value = params.get(name, "")
        out[name] = value.strip() if isinstance(value, str) else ""
    return out


def parse_runs_filter(params: Mapping[str, Any]) -> FilterResult:
    """The runs list's filters from query parameters; errors are texts shown beside each field."""
    return _run(RunsFilterForm(_strip(params, list(RunsFilterForm.base_fields))))


def parse_steps_filter(params: Mapping[str, Any]) -> FilterResult:
    """The cross-run steps console's filters."""
    return _run(StepsFilterForm(_strip(params, list(StepsFilterForm.base_fields))))


@dataclass(slots=True, kw_only=True)
class StepFilters:
    """The cross-run steps console's filters, parsed and applied (the retry preview and the API use them too)."""

    state: str = ""
    code: str = ""
    queue: str = ""
    kind: str = ""
    since: str = ""
    run: str = ""
    package: str = ""

    NAMES = ("state", "code", "queue", "kind", "since", "run", "package")
    field_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Any) -> StepFilters:
        parsed = parse_steps_filter(params)
        v = parsed.values
        f = cls(**{n: v[n] for n in cls.NAMES}, field_errors=parsed.errors)
        if f.code and not f.state:
            f.state = StepState.FAILED
        terminal = f.state in TERMINAL_STEP_STATES or not f.state
        if f.since not in SINCE_CHOICES:
            # Finished history is only read through a time window: it can hold millions of rows.
            # One run's steps are few and indexed by run: no window needed there.
            f.since = "24h" if terminal and not f.run else ""
        return f

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STEP_STATES or not self.state

    def apply(self, qs: Any, now: datetime) -> Any:
        if self.state:
            qs = qs.filter(state=self.state)
        if self.state == StepState.PENDING:
            qs = qs.filter(run_id__in=Run.objects.filter(state__in=ACTIVE_RUN_STATES).values("id"))
        if self.code:
            qs = qs.filter(error__code=self.code)
        if self.queue:
            qs = qs.filter(queue=self.queue)
        if self.kind:
            qs = qs.filter(kind=self.kind)
        if self.run:
            qs = qs.filter(run_id=self.run)
        if self.package:
            qs = qs.filter(run__package=self.package)
        if self.since:
            qs = qs.filter(finished_at__gte=now - SINCE_CHOICES[self.since])
        return qs

    @property
    def query(self) -> dict[str, str]:
        """The filters as query parameters (links to the same view, the retry preview, the form's hidden fields)."""
        return {n: getattr(self, n) for n in self.NAMES if getattr(self, n)}

    @property
    def can_retry_all(self) -> bool:
        return self.state == StepState.FAILED

    @property
    def title(self) -> str:
        if self.code:
            return f"Steps failing with {self.code}"
        if self.state:
            return f"{self.state.capitalize()} steps"
        return "Finished steps"


def parse_events_filter(params: Mapping[str, Any]) -> FilterResult:
    """The events console's filters; ``kind`` and ``severity`` may repeat."""
    data = MultiValueDict({n: [v] for n, v in _strip(params, list(EventsFilterForm.base_fields)).items()})
    for name in EVENT_MULTI:
        data.setlist(name, [v for v in _values(params, name) if isinstance(v, str)])
    return _run(EventsFilterForm(data))


def _values(params: Mapping[str, Any], name: str) -> list[Any]:
    """Every value of a repeated parameter, from a QueryDict or from a dict of lists or strings."""
    if hasattr(params, "getlist"):
        return list(params.getlist(name))
    value = params.get(name)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass(slots=True, kw_only=True)
class EventFilters:
    """The events console's (and the API's) filters, parsed: what to show and in which order.

    Sorts are only those an index serves on a million events: by id (newest or oldest first,
    id order is time order) and by kind (``event_kind_idx`` on ``(kind, -id)``).
    """

    kind: list[str] = field(default_factory=list)
    severity: list[str] = field(default_factory=list)
    run: str = ""
    step: str = ""
    queue: str = ""
    worker: str = ""
    range: str = ""
    since: str = ""
    until: str = ""
    sort: str = ""
    since_at: datetime | None = None
    until_at: datetime | None = None
    field_errors: dict[str, str] = field(default_factory=dict)

    NAMES = ("kind", "severity", "run", "step", "queue", "worker", "range", "since", "until", "sort")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], now: datetime) -> EventFilters:
        parsed = parse_events_filter(params)
        v = parsed.values
        f = cls(**{n: v[n] or ([] if n in EVENT_MULTI else "") for n in
                   ("kind", "severity", "run", "step", "queue", "worker", "range", "sort")},
                field_errors=parsed.errors)
        # The typed text is kept for the form; only a valid one filters.
        f.since, f.until = (_text_of(params, n)[:40] for n in ("since", "until"))
        if f.range:
            f.since_at = now - EVENT_RANGES[f.range]
        if v["since"]:
            f.since_at = max(v["since"], f.since_at) if f.since_at else v["since"]
        f.until_at = v["until"]
        return f

    @property
    def errors(self) -> list[str]:
        return [f"{name.capitalize()}: {text}" for name, text in self.field_errors.items()]

    def apply(self, qs: Any) -> Any:
        if self.kind:
            qs = qs.filter(kind__in=self.kind)
        if self.severity:
            qs = qs.filter(severity__in=self.severity)
        if self.run:
            qs = qs.filter(run_id=self.run)
        if self.step:
            qs = qs.filter(step_id=self.step)
        if self.queue:
            qs = qs.filter(queue=self.queue)
        if self.worker:
            qs = qs.filter(worker_id=self.worker)
        if self.since_at:
            qs = qs.filter(created_at__gte=self.since_at)
        if self.until_at:
            qs = qs.filter(created_at__lt=self.until_at)
        return qs

    @property
    def order(self) -> tuple[tuple[str, ...], tuple[bool, ...]]:
        """The keyset fields and their directions for ``read.pages.keyset_page``."""
        return EVENT_SORTS[self.sort or "newest"]

    @property
    def query(self) -> dict[str, str | list[str]]:
        return {n: getattr(self, n) for n in self.NAMES if getattr(self, n)}

    @property
    def query_pairs(self) -> list[tuple[str, str]]:
        """The filters as (name, value) pairs, a repeated parameter once per value (for urlencode)."""
        pairs: list[tuple[str, str]] = []
        for name, value in self.query.items():
            pairs.extend((name, v) for v in value) if isinstance(value, list) else pairs.append((name, value))
        return pairs

    @property
    def is_filtered(self) -> bool:
        return any(n != "sort" for n in self.query)


def _text_of(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name, "")
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkBinding:
    """What a bulk-retry confirmation was shown: the preview's moment, its highest step row, its count."""

    as_of: datetime
    max_id: int
    expected: int


def parse_bulk_binding(params: Mapping[str, Any], *, now: datetime) -> BulkBinding:
    """The hidden fields a retry preview posts back; raise BadInput unless a preview made them."""
    as_of = _parse_iso(str(params.get("as_of", "")).strip()[:64])
    if as_of is None:
        raise BadInput("The confirmation has no valid preview time (as_of): open the preview again.")
    numbers = {}
    for name in ("max_id", "expected"):
        text = str(params.get(name, "")).strip()
        if not re.fullmatch(r"[0-9]{1,18}", text):
            raise BadInput(f"The confirmation's {name} is not a whole number: open the preview again.")
        numbers[name] = int(text)
    return BulkBinding(as_of=min(as_of, now), max_id=numbers["max_id"], expected=numbers["expected"])


def search_text(params: Mapping[str, Any], name: str, *, max_length: int = MAX_SEARCH_LENGTH) -> str:
    """One free-text parameter, stripped and checked; raise BadInput when no column could hold it."""
    value = params.get(name, "")
    value = value.strip() if isinstance(value, str) else ""
    return check_text(value, label=f"Parameter {name!r}", max_length=max_length)
