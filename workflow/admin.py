"""Django admin for every workflow table: read-mostly, linked together, actions through the operator.

The engine owns every write to runs, steps, leases and the rest, so engine-owned fields are
read-only here; the two actions call ``workflow.operator`` exactly as the dashboard does.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import JSONField, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from . import operator
from .engine.values import ACTIVE_RUN_STATES, StepState
from .forms import EVENT_KINDS
from .models import ApiToken, Artifact, Dependency, Event, Lease, Queue, Record, Run, Step, Worker
from .read.browse import pretty_json


def admin_link(obj: Any, text: Any = None) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else str(obj))


def changelist_link(model: type, text: str, **filters: Any) -> str:
    from urllib.parse import urlencode

    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(filters), text)


def state_html(state: str) -> str:
    return format_html('<span class="wf-state wf-state-{}">{}</span>', state, state)


def json_display(name: str) -> Any:
    """A read-only display of a JSON field: indented, escaped by the admin, never a 500.

    Django's own display dumps with ``ensure_ascii=False``; the values come through
    ``TextSafeDecoder``, and dumping here keeps the field read-only without a form field.
    """

    def show(obj: Any) -> str:
        return pretty_json(getattr(obj, name))

    show.short_description = name.replace("_", " ")  # type: ignore[attr-defined]
    show.__name__ = f"{name}_json"
    return show


class ReadOnlyEngineAdmin(admin.ModelAdmin):
    """Rows are written by the engine: no add, no edit of engine fields; deleting stays possible.

    The big tables (steps, attempts, events, artifacts) have no date hierarchy and no filters
    that need a DISTINCT over every row: each changelist reads one page, whatever the table size.
    """

    show_full_result_count = False  # no COUNT(*) over millions of rows on every changelist
    list_per_page = 50
    deletable = False  # deleting a step or lease under the engine would corrupt a live run
    shown_by_link: tuple[str, ...] = ()  # model fields a *_link column already shows: not twice

    class Media:
        css = {"all": ("workflow/admin.css",)}

    def __init__(self, model: type[models.Model], admin_site: Any) -> None:
        super().__init__(model, admin_site)
        # Django's default format reads "8 a.m."; engine times need minutes and seconds.
        self._time_columns: dict[str, str] = {}
        for f in model._meta.fields:
            if isinstance(f, models.DateTimeField):
                name = f"{f.name}_time"
                setattr(self, name, _time_column(f.name, str(f.verbose_name)))
                self._time_columns[f.name] = name
            elif isinstance(f, JSONField):
                setattr(self, f"{f.name}_json", json_display(f.name))

    def get_list_display(self, request: HttpRequest) -> Any:
        return [self._time_columns.get(n, n) if isinstance(n, str) else n for n in super().get_list_display(request)]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        editable = set(getattr(self, "editable_fields", ()))
        names = [
            f"{f.name}_json" if isinstance(f, JSONField) else self._time_columns.get(f.name, f.name)
            for f in self.model._meta.fields if f.name not in editable and f.name not in self.shown_by_link
        ]
        return [*names, *self.readonly_fields]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        json_names = [f.name for f in self.model._meta.fields if isinstance(f, JSONField)]
        return [*(self.exclude or ()), *json_names, *self.shown_by_link]


def _time_column(field: str, label: str) -> Any:
    @admin.display(description=label, ordering=field)
    def column(obj: Any) -> str:
        value = getattr(obj, field)
        return "—" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")

    return column


@admin.register(Run)
class RunAdmin(ReadOnlyEngineAdmin):
    deletable = True  # cleanup of history; deleting a run removes its steps with it
    list_display = ("id", "name", "package", "state_badge", "created_at", "finished_at", "steps_link", "dashboard")
    list_filter = ("state", "package")
    search_fields = ("=id", "^id", "name")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    readonly_fields = ("steps_link", "leases_link", "artifacts_link", "events_link", "dashboard")
    actions = ["cancel_selected_runs"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An active run has workers writing to it: cancel it first, then delete its history.
        if obj is not None and obj.is_active:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], Any]:
        # A run's steps, attempts, events and artifacts go with it: delete_run is the permission
        # that counts, not a delete permission on engine rows no one may delete on their own.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        active = list(queryset.filter(state__in=ACTIVE_RUN_STATES).values_list("pk", flat=True)[:6])
        if active:
            shown = ", ".join(active[:5]) + (", …" if len(active) > 5 else "")
            self.message_user(request, f"Active runs are not deleted (cancel them first): {shown}.", messages.WARNING)
        super().delete_queryset(request, queryset.exclude(state__in=ACTIVE_RUN_STATES))

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Run) -> str:
        return state_html(obj.state)

    @admin.display(description="steps")
    def steps_link(self, obj: Run) -> str:
        return changelist_link(Step, "steps", run__id__exact=obj.pk)

    @admin.display(description="attempts")
    def leases_link(self, obj: Run) -> str:
        return changelist_link(Lease, "attempts", run__id__exact=obj.pk)

    @admin.display(description="artifacts")
    def artifacts_link(self, obj: Run) -> str:
        return changelist_link(Artifact, "artifacts", run__id__exact=obj.pk)

    @admin.display(description="events")
    def events_link(self, obj: Run) -> str:
        return changelist_link(Event, "events", run__id__exact=obj.pk)

    @admin.display(description="dashboard")
    def dashboard(self, obj: Run) -> str:
        return format_html('<a href="{}">open ↗</a>', reverse("workflow:run", args=[obj.pk]))

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_selected_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        result = operator.cancel_runs(queryset.values_list("pk", flat=True), user=request.user)
        level = messages.WARNING if result.skipped else messages.SUCCESS
        text = f"Canceled {result.done} runs."
        if result.skipped:
            text += f" Skipped {len(result.skipped)}: " + "; ".join(result.skipped[:5])
        self.message_user(request, text, level)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workflow.operate")


@admin.register(Step)
class StepAdmin(ReadOnlyEngineAdmin):
    list_display = ("step_id", "run_link", "kind", "queue", "state_badge", "attempt", "error_code", "finished_at")
    list_filter = ("state",)  # kind and queue would each be a DISTINCT over every step: search them instead
    search_fields = ("=run__id", "step_id", "=kind", "=queue")
    list_select_related = ("run",)
    raw_id_fields = ("run",)
    readonly_fields = ("run_link", "leases_link", "artifacts_link", "dashboard")
    shown_by_link = ("run",)
    actions = ["retry_selected_failed_steps"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Step]:
        return super().get_queryset(request).defer("input", "original_input", "result")

    @admin.display(description="run", ordering="run")
    def run_link(self, obj: Step) -> str:
        return admin_link(obj.run, obj.run_id)

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Step) -> str:
        return state_html(obj.state)

    @admin.display(description="attempts")
    def leases_link(self, obj: Step) -> str:
        return changelist_link(Lease, "attempts", step__id__exact=obj.pk)

    @admin.display(description="artifacts")
    def artifacts_link(self, obj: Step) -> str:
        return changelist_link(Artifact, "artifacts", step__id__exact=obj.pk)

    @admin.display(description="dashboard")
    def dashboard(self, obj: Step) -> str:
        return format_html('<a href="{}">open ↗</a>', reverse("workflow:step", args=[obj.run_id, obj.step_id]))

    @admin.action(description="Retry selected failed steps", permissions=["operate"])
    def retry_selected_failed_steps(self, request: HttpRequest, queryset: QuerySet[Step]) -> None:
        pairs = list(queryset.values_list("run_id", "step_id"))
        result = operator.retry_failed_steps(pairs, user=request.user)
        level = messages.WARNING if result.skipped else messages.SUCCESS
        text = f"Retried {result.done} failed steps."
        if result.skipped:
            text += f" Skipped {len(result.skipped)}: " + "; ".join(result.skipped[:5])
        self.message_user(request, text, level)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workflow.operate")


@admin.register(Dependency)
class DependencyAdmin(ReadOnlyEngineAdmin):
    list_display = ("id", "step_link", "depends_on_link", "required", "satisfied")
    list_filter = ("required", "satisfied")
    search_fields = ("=run__id", "step__step_id", "depends_on__step_id")
    list_select_related = ("step", "depends_on")
    raw_id_fields = ("run", "step", "depends_on")
    readonly_fields = ("step_link", "depends_on_link")

    @admin.display(description="step")
    def step_link(self, obj: Dependency) -> str:
        return admin_link(obj.step, obj.step.step_id)

    @admin.display(description="depends on")
    def depends_on_link(self, obj: Dependency) -> str:
        return admin_link(obj.depends_on, obj.depends_on.step_id)


@admin.register(Lease)
class LeaseAdmin(ReadOnlyEngineAdmin):
    list_display = ("token", "step_link", "run_link", "attempt", "worker_id", "claimed_at", "released_at", "outcome",
                    "error_code")
    list_filter = ("outcome",)
    search_fields = ("=token", "=run__id", "worker_id", "step__step_id")
    list_select_related = ("step", "run")
    raw_id_fields = ("run", "step")
    readonly_fields = ("step_link", "run_link")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Lease]:
        return super().get_queryset(request).defer("step__input", "step__result", "run__input")

    @admin.display(description="step")
    def step_link(self, obj: Lease) -> str:
        return admin_link(obj.step, obj.step.step_id)

    @admin.display(description="run")
    def run_link(self, obj: Lease) -> str:
        return admin_link(obj.run, obj.run_id)


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyEngineAdmin):
    list_display = ("name", "kind", "content_type", "size", "step_link", "run_link", "created_at", "download")
    list_filter = ("content_type", "kind")
    search_fields = ("=id", "name", "=run__id")
    list_select_related = ("step", "run")
    raw_id_fields = ("run", "step")
    readonly_fields = ("step_link", "run_link", "download")
    exclude = ("body",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Artifact]:
        return super().get_queryset(request).defer("body", "step__input", "step__result", "run__input")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for f in super().get_readonly_fields(request, obj) if f != "body"]

    @admin.display(description="step")
    def step_link(self, obj: Artifact) -> str:
        return admin_link(obj.step, obj.step.step_id)

    @admin.display(description="run")
    def run_link(self, obj: Artifact) -> str:
        return admin_link(obj.run, obj.run_id)

    @admin.display(description="download")
    def download(self, obj: Artifact) -> str:
        return format_html('<a href="{}">download</a>', reverse("workflow:download_artifact", args=[obj.pk]))


@admin.register(Record)
class RecordAdmin(ReadOnlyEngineAdmin):
    deletable = True
    list_display = ("collection", "key", "run_link", "step_id", "updated_at")
    list_filter = ("collection",)
    search_fields = ("key", "=run__id", "step_id")
    list_select_related = ("run",)
    raw_id_fields = ("run",)
    readonly_fields = ("run_link",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Record]:
        return super().get_queryset(request).defer("run__input")

    @admin.display(description="run")
    def run_link(self, obj: Record) -> str:
        return admin_link(obj.run, obj.run_id)


class EventKindFilter(admin.SimpleListFilter):
    """The known event kinds as a fixed list: no DISTINCT over the events table to build it."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(k, k) for k in EVENT_KINDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        return queryset.filter(kind=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyEngineAdmin):
    deletable = True
    list_display = ("id", "created_at", "kind", "severity", "run_link", "step_id", "actor", "worker_id", "message")
    list_filter = ("severity", EventKindFilter)
    search_fields = ("=run__id", "step_id", "actor", "worker_id")
    raw_id_fields = ("run",)
    readonly_fields = ("run_link",)

    @admin.display(description="run")
    def run_link(self, obj: Event) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:workflow_run_change", args=[obj.run_id]),
                           obj.run_id) if obj.run_id else "—"


@admin.register(Queue)
class QueueAdmin(ReadOnlyEngineAdmin):
    """Queue caps come from settings and the pause flag from the operator service: read-only here."""

    deletable = True  # a stale row (a renamed queue): workers recreate the rows of configured queues
    list_display = ("name", "max_workers", "rate", "per_seconds", "burst", "paused", "updated_at")
    list_filter = ("paused",)
    search_fields = ("name",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A queue with ready or running steps is in use: its pause flag and caps still apply.
        if obj is not None and Step.objects.filter(queue=obj.name, state__in=(StepState.READY, StepState.RUNNING)).exists():
            return False
        return super().has_delete_permission(request, obj)


@admin.register(Worker)
class WorkerAdmin(ReadOnlyEngineAdmin):
    deletable = True
    list_display = ("id", "host", "pid", "max_workers", "running", "started_at", "seen_at", "stopped_at")
    list_filter = ("host",)
    search_fields = ("id", "host")
    date_hierarchy = "started_at"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Make and revoke API tokens. A new token is shown once, in the message after saving."""

    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke_tokens"]
    raw_id_fields = ("user",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*self.readonly_fields, "user") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        from .api.tokens import create_token, rename

        if change:
            rename(obj.pk, obj.name)  # only the name can change
            return

        made, raw = create_token(obj.user, name=obj.name)
        obj.pk, obj.prefix, obj.digest, obj.created_at = made.pk, made.prefix, made.digest, made.created_at
        obj._state.adding = False
        messages.warning(request, f"The new API token is {raw} — copy it now: it is not stored and cannot be "
                                  "shown again.")

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        from .api.tokens import revoke

        n = revoke(queryset)
        messages.success(request, f"Revoked {n} token{'s' if n != 1 else ''}.")
