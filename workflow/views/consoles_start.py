"""The packages catalogue and the start-run form generated from a package's input schema.

The form is built from ``Package.input_schema()`` (the entrypoint's typed input): text,
number, checkbox, select for enums and a JSON textarea for objects and lists. The server
converts each field, checks the whole input with ``typed.decode`` (whose ``InputError.path``
names the field), and only then starts the run through ``operator.start_run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django_htmx.http import HttpResponseStopPolling

from .. import forms, operator
from ..engine import registry as registry_module
from ..engine import typed
from ..engine.errors import UnknownPackage, WorkflowError
from ..models import Run
from .auth import dashboard_login_required
from .common import refuse_bad_input, viewer

JSON_FIELD = "__input__"  # the single textarea used when the input is not an object with fields
RECENT_SUBMISSIONS = 10


def _registry() -> Any:
    return registry_module.registry  # looked up per request so tests can swap the site's registry


def _type_of(schema: dict[str, Any]) -> tuple[str, bool]:
    """The schema's single JSON type (or "" if several) and whether null is allowed."""
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = "null" in kind
        rest = [k for k in kind if k != "null"]
        return (rest[0] if len(rest) == 1 else ""), nullable
    if "anyOf" in schema:
        parts = schema["anyOf"]
        nullable = any(p.get("type") == "null" for p in parts)
        rest = [p for p in parts if p.get("type") != "null"]
        if len(rest) == 1:
            inner, _ = _type_of(rest[0])
            return inner, nullable
        return "", nullable
    return (kind or ""), False


@dataclass(slots=True, kw_only=True)
class FormField:
    """One input of the generated form; ``widget`` picks the template branch."""

    name: str
    label: str
    widget: str  # text | number | checkbox | select | json | date | datetime
    schema: dict[str, Any]
    required: bool = False
    nullable: bool = False
    description: str = ""
    type_name: str = ""
    step: str = "any"
    options: list[tuple[str, str]] = field(default_factory=list)  # (submitted value, label)
    value: str = ""
    checked: bool = False
    error: str = ""
    has_default: bool = False

    @property
    def input_id(self) -> str:
        return f"f-{self.name}".replace("_", "-")

    @property
    def error_id(self) -> str:
        return f"{self.input_id}-error"

    @property
    def schema_kind(self) -> str:
        return _type_of(self.schema)[0]


def _initial(f: FormField) -> None:
    default = f.schema.get("default")
    if "default" not in f.schema:
        return
    f.has_default = True
    if f.widget == "checkbox":
        f.checked = bool(default)
    elif f.widget == "select":
        f.value = json.dumps(default)
    elif f.widget == "json":
        f.value = json.dumps(default, indent=2)
    elif default is not None:
        f.value = str(default)


def build_fields(schema: dict[str, Any]) -> list[FormField]:
    """The form's fields from a JSON schema; a non-object input gets one JSON textarea."""
    props = schema.get("properties") if schema.get("type") == "object" else None
    if not props:
        return [FormField(name=JSON_FIELD, label="Input (JSON)", widget="json", schema=schema,
                          description=schema.get("description", "") or "The run's input as a JSON value.",
                          type_name="JSON", value="{}" if schema.get("type") == "object" else "")]
    required = set(schema.get("required", []))
    fields = []
    for name, prop in props.items():
        kind, nullable = _type_of(prop)
        enum = prop.get("enum")
        f = FormField(name=name, label=name.replace("_", " "), widget="json", schema=prop,
                      required=name in required, nullable=nullable, description=prop.get("description", ""))
        if enum is not None:
            f.widget = "select"
            f.options = [(json.dumps(v), "(none)" if v is None else str(v)) for v in enum]
            f.type_name = "one of " + ", ".join(o[1] for o in f.options)
        elif kind == "boolean":
            f.widget, f.type_name = "checkbox", "yes/no"
        elif kind in ("integer", "number"):
            f.widget, f.type_name, f.step = "number", kind, "1" if kind == "integer" else "any"
        elif kind == "string":
            fmt = prop.get("format")
            f.widget = {"date": "date", "date-time": "datetime"}.get(fmt, "text")
            f.type_name = fmt or "text"
        else:
            f.type_name = kind or "JSON"
        if nullable:
            f.type_name += " or empty"
        _initial(f)
        # A cleared field runs what the operator sees: empty text is "", a cleared number or choice
        # without "or empty" is an error, never the default applied behind the operator's back.
        f.required = f.required or (f.has_default and not nullable and f.widget not in ("checkbox", "text"))
        fields.append(f)
    return fields


def parse_fields(fields: list[FormField], data: Any) -> tuple[Any, bool]:
    """Convert submitted strings to JSON values; set ``error`` beside each field that does not convert."""
    if len(fields) == 1 and fields[0].name == JSON_FIELD:
        f = fields[0]
        f.value = data.get(f.name, "")
        if not f.value.strip():
            return None, True
        try:
            return forms.parse_json(f.value, label="the input"), True
        except forms.BadInput as exc:
            f.error = str(exc)
            return None, False
    raw: dict[str, Any] = {}
    ok = True
    for f in fields:
        if f.widget == "checkbox":
            f.checked = data.get(f.name) in ("on", "true", "1")
            raw[f.name] = f.checked
            continue
        if f.name not in data and f.has_default:
            continue  # not sent at all (a script, not the form): the dataclass default applies
        text = data.get(f.name, "")
        f.value = text
        problem = forms.text_problem(text)
        if problem:
            f.error = f"this value {problem}"
            ok = False
            continue
        if not text.strip():
            if f.nullable:
                raw[f.name] = None
            elif f.widget == "text" and f.has_default:
                raw[f.name] = text
            elif f.required:
                f.error = "required" + (f" (the default was {json.dumps(f.schema['default'])})" if f.has_default else "")
                ok = False
            continue  # omitted: the dataclass default applies
        try:
            raw[f.name] = _convert(f, text)
        except ValueError as exc:
            f.error = str(exc)
            ok = False
    return raw, ok


def _convert(f: FormField, text: str) -> Any:
    if f.widget == "select":
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("choose one of the listed values") from None
        if value not in f.schema.get("enum", []):
            raise ValueError("choose one of the listed values")
        return value
    if f.widget == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if f.schema_kind == "integer":
            if not number.is_integer() or any(c in text for c in ".eE"):
                raise ValueError(f"expected a whole number, got {text!r}")
            return int(number)
        return int(number) if number.is_integer() and "." not in text else number
    if f.widget == "datetime" and len(text) == 16:  # <input type=datetime-local> without seconds
        return text + ":00"
    if f.widget == "json":
        try:
            return forms.parse_json(text, label="this value")
        except forms.BadInput as exc:
            raise ValueError(str(exc)) from None
    return text


def _field_for_path(fields: list[FormField], path: str) -> FormField | None:
    """The form field an ``InputError.path`` points into: its first segment (``items[2].x`` -> ``items``)."""
    head = path.split(".", 1)[0].split("[", 1)[0]
    return next((f for f in fields if f.name == head), None)


def _package_or_404(name: str) -> Any:
    try:
        return _registry().package(name)
    except UnknownPackage:
        raise Http404(f"no package named {name!r}") from None


def _recent_submissions(package: str | None = None) -> list[Run]:
    qs = Run.objects.filter(metadata__has_key="started_by").defer("input")
    if package:
        qs = qs.filter(package=package)
    return list(qs.order_by("-created_at", "-id")[:RECENT_SUBMISSIONS])


@viewer("workflow.view_run")
def packages(request: HttpRequest) -> HttpResponse:
    catalogue = []
    for pkg in _registry().packages():
        schema = pkg.input_schema()
        executors = []
        for ex in sorted(pkg.executors.values(), key=lambda e: e.kind):
            try:
                ex_schema = typed.json_schema(ex.input_type) if ex.input_type not in (None, Any) else {}
            except TypeError:
                ex_schema = {}
            executors.append({"kind": ex.kind, "queue": ex.queue or "default", "schema": ex_schema,
                              "schema_json": json.dumps(ex_schema, indent=2) if ex_schema else "",
                              "type_name": typed._type_name(ex.input_type) if ex.input_type is not None else "none"})
        catalogue.append({"pkg": pkg, "schema": schema, "schema_json": json.dumps(schema, indent=2),
                          "fields": build_fields(schema), "executors": executors})
    return render(request, "workflow/consoles/packages.html", {
        "catalogue": catalogue, "recent": _recent_submissions(),
    })


@dashboard_login_required
@permission_required(("workflow.operate", "workflow.view_run"), raise_exception=True)
@refuse_bad_input
def start_run(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the generated form. POST: validate on the server; start the run only if all is well."""
    if request.method not in ("GET", "POST"):
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    pkg = _package_or_404(name)
    schema = pkg.input_schema()
    fields = build_fields(schema)
    form_error = ""
    run_name = ""
    status = 200
    if request.method == "POST":
        run_name = request.POST.get("run_name", "").strip()
        raw, ok = parse_fields(fields, request.POST)
        name_problem = forms.text_problem(run_name, max_length=forms.column_length(Run, "name"))
        if name_problem:
            form_error = f"The run name {name_problem}."
            ok = False
        if ok and pkg.input_type is not None:
            try:
                typed.decode(pkg.input_type, raw)
            except typed.InputError as exc:
                target = _field_for_path(fields, exc.path)
                if target is not None and not (len(fields) == 1 and fields[0].name == JSON_FIELD):
                    inner = exc.path[len(target.name):].lstrip(".")
                    target.error = f"{inner}: {exc.problem}" if inner else exc.problem
                else:
                    if fields[0].name == JSON_FIELD:
                        fields[0].error = str(exc)
                    else:
                        form_error = str(exc)
                ok = False
            except TypeError as exc:
                form_error = f"this package's input type cannot be checked: {exc}"
                ok = False
            except RecursionError:
                form_error = "the input is nested too deeply to check"
                ok = False
        if ok:
            try:
                handle = operator.start_run(pkg.name, raw, user=request.user, name=run_name or None)
            except WorkflowError as exc:
                form_error = str(exc)
            else:
                return HttpResponseRedirect(reverse("workflow:run", args=[handle.id]))
        status = 400
    return render(request, "workflow/consoles/start.html", {
        "pkg": pkg, "fields": fields, "form_error": form_error, "run_name": run_name,
        "has_errors": bool(form_error or any(f.error for f in fields)),
        "schema_json": json.dumps(schema, indent=2), "recent": _recent_submissions(pkg.name),
    }, status=status)


@viewer("workflow.view_run")
def submissions(request: HttpRequest) -> HttpResponse:
    """The recent-submissions table, polled while any of its runs is active."""
    package = request.GET.get("package") or None
    recent = _recent_submissions(package)
    response = render(request, "workflow/consoles/_submissions.html", {"recent": recent, "package": package})
    if not any(r.is_active for r in recent):
        response.status_code = HttpResponseStopPolling.status_code
    return response
