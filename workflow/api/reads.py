"""Read endpoints: thin handlers over the dashboard's read models (``queries``, ``metrics``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from ninja import Query

from ..engine import registry as registry_module
from ..engine import typed
from ..forms import EventFilters
from ..models import Artifact, Lease, Record, Run, Step
from ..read import browse, pages, queues, runs, steps
from ..read import engine_status as read_engine_status
from ..read import events as event_reads
from ..views.consoles import OVERVIEW_PERMS, QUEUE_PERMS, _migrations
from . import schemas as s
from .auth import require
from .common import CURSOR, ERRORS, MAX_PAGE, filter_errors, page_body, paged, router
from .errors import ApiError

META_PATTERN = r"^[A-Za-z0-9.-]{1,100}(_[A-Za-z0-9.-]{1,100}){0,10}=[^\x00]{0,255}$"  # no "__": it is a lookup
DOWNLOAD_CHUNK = 64 * 1024


def _run_or_404(run_id: str) -> Run:
    run = Run.objects.defer("input").filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, f"run {run_id!r} does not exist")
    return run


def _step_or_404(run_id: str, step_id: str) -> Step:
    step = Step.objects.select_related("run").filter(run_id=run_id, step_id=step_id).first()
    if step is None:
        raise ApiError(404, f"step {step_id!r} of run {run_id!r} does not exist")
    return step


def _progress(p: runs.Progress) -> dict[str, Any]:
    return {"counts": p.counts, "total": p.total, "done": p.done, "percent": p.percent}


def _run(run: Run, progress: runs.Progress, *, with_input: bool = False) -> dict[str, Any]:
    out = {"id": run.id, "package": run.package, "name": run.name, "state": run.state, "metadata": run.metadata or {},
           "created_at": run.created_at, "updated_at": run.updated_at, "started_at": run.started_at,
           "finished_at": run.finished_at, "progress": _progress(progress)}
    if with_input:
        out["input"] = run.input
    return out


def _step(step: Step) -> dict[str, Any]:
    code = getattr(step, "error_code_text", None)
    return {"step_id": step.step_id, "kind": step.kind, "queue": step.queue, "site": step.site, "state": step.state,
            "attempt": step.attempt, "max_attempts": step.max_attempts, "parent_step_id": step.parent_step_id,
            "available_at": step.available_at, "lease_owner": step.lease_owner,
            "lease_expires_at": step.lease_expires_at, "created_at": step.created_at, "started_at": step.started_at,
            "finished_at": step.finished_at, "error_code": code if code is not None else step.error_code}


def _error(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    return {"code": str(raw.get("code", "")), "message": str(raw.get("message", "")),
            "retryable": raw.get("retryable") if isinstance(raw.get("retryable"), bool) else None,
            "details": raw.get("details")}


# -- runs ----------------------------------------------------------------------------------------
@router.get("/runs", tags=["read"], response={200: s.RunPage, **ERRORS}, summary="List runs, newest first")
def list_runs(
    request: HttpRequest,
    package: str = "", state: s.RunStateName | None = None,
    q: str = Query("", description="run id, id prefix or name"),
    meta: str = Query("", pattern=META_PATTERN, description="metadata filter: key=value"),
    created_after: datetime | None = Query(None, description="ISO 8601; naive means the site's time zone"),
    created_before: datetime | None = None,
    limit: int = Query(50, ge=1, le=MAX_PAGE), after: str | None = CURSOR, before: str | None = CURSOR,
) -> Any:
    require(request, "workflow.view_run")
    filters = runs.RunFilters.from_params({
        "package": package, "state": state or "", "q": q, "meta": meta,
        "created_after": created_after.isoformat() if created_after else "",
        "created_before": created_before.isoformat() if created_before else "",
    })
    filter_errors(filters.errors)
    page = paged(lambda: runs.runs_page(filters, limit=limit, after=after, before=before),
                 after=after, before=before, size=2)
    progress = runs.progress_for(r.id for r in page.rows)
    return page_body(page, [_run(r, progress[r.id]) for r in page.rows])


@router.get("/runs/{wfid:run_id}", tags=["read"], response={200: s.RunDetailOut, **ERRORS}, summary="One run, with step counts")
def get_run(request: HttpRequest, run_id: str) -> Any:
    require(request, "workflow.view_run")
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, f"run {run_id!r} does not exist")
    return _run(run, runs.progress_for([run.id])[run.id], with_input=True)


@router.get("/runs/{wfid:run_id}/steps", tags=["read"], response={200: s.StepPage, **ERRORS}, summary="A run's steps")
def list_steps(
    request: HttpRequest, run_id: str, q: str = "", state: s.StepStateName | None = None, kind: str = "",
    sort: Literal["id", "kind", "state", "attempts"] = "id", descending: bool = False,
    limit: int = Query(100, ge=1, le=MAX_PAGE), after: str | None = CURSOR, before: str | None = CURSOR,
) -> Any:
    require(request, "workflow.view_run", "workflow.view_step")
    run = _run_or_404(run_id)
    page = paged(lambda: steps.step_table(run, q=q, state=state or "", kind=kind, sort=sort, descending=descending,
                                            limit=limit, after=after, before=before),
                 after=after, before=before, size=1 if sort == "id" else 2)
    return page_body(page, [_step(st) for st in page.rows])


@router.get("/runs/{wfid:run_id}/steps/{wfid:step_id}", tags=["read"], response={200: s.StepDetailOut, **ERRORS},
            summary="One step: input, result, error, dependencies, dependents, why it waits")
def get_step(request: HttpRequest, run_id: str, step_id: str) -> Any:
    require(request, "workflow.view_run", "workflow.view_step")
    step = _step_or_404(run_id, step_id)
    detail = steps.step_detail(step)
    return {
        **_step(step), "run_id": step.run_id, "input": step.input, "result": step.result, "error": _error(step.error),
        "metadata": step.metadata or {},
        "dependencies": [{"step_id": d.depends_on.step_id, "kind": d.depends_on.kind, "state": d.depends_on.state,
                          "required": d.required, "satisfied": d.satisfied} for d in detail.dependencies],
        "dependencies_total": detail.dependencies_total,
        "dependents": [{"step_id": d.step.step_id, "kind": d.step.kind, "state": d.step.state,
                        "required": d.required, "satisfied": d.satisfied} for d in detail.dependents],
        "dependents_total": detail.dependents_total, "children_total": detail.children_total,
        "waiting_reasons": detail.reasons, "blocked_by": [d.depends_on.step_id for d in detail.failed_required],
    }


@router.get("/runs/{wfid:run_id}/steps/{wfid:step_id}/attempts", tags=["read"], response={200: list[s.AttemptOut], **ERRORS},
            summary="A step's attempts, oldest first, with their log lines")
def list_attempts(request: HttpRequest, run_id: str, step_id: str) -> Any:
    require(request, "workflow.view_run", "workflow.view_step", "workflow.view_lease")
    step = _step_or_404(run_id, step_id)
    return list(Lease.objects.filter(step=step).order_by("claimed_at", "id")[:500])


@router.get("/runs/{wfid:run_id}/results", tags=["read"], response={200: s.ResultPage, **ERRORS}, summary="A run's step results")
def list_results(
    request: HttpRequest, run_id: str, q: str = "", kind: str = "", state: s.StepStateName | None = None,
    limit: int = Query(50, ge=1, le=MAX_PAGE), after: str | None = CURSOR, before: str | None = CURSOR,
) -> Any:
    require(request, "workflow.view_run", "workflow.view_step")
    run = _run_or_404(run_id)
    page = paged(lambda: browse.results_page(run, q=q, kind=kind, state=state or "", limit=limit, after=after,
                                              before=before), after=after, before=before, size=1)
    payload = dict(((pk, (res, err)) for pk, res, err in
                    Step.objects.filter(pk__in=[st.pk for st in page.rows]).values_list("pk", "result", "error")))
    items = [{"step_id": st.step_id, "kind": st.kind, "state": st.state, "result": payload[st.pk][0],
              "error": _error(payload[st.pk][1]), "finished_at": st.finished_at} for st in page.rows]
    return page_body(page, items)


def _artifact(request: HttpRequest, a: Artifact) -> dict[str, Any]:
    return {"id": a.id, "step_id": a.step.step_id, "name": a.name, "kind": a.kind, "content_type": a.content_type,
            "size": a.size, "sha256": a.sha256, "inline": a.storage_key is None, "metadata": a.metadata or {},
            "created_at": a.created_at,
            "download_url": reverse(f"{request.resolver_match.namespace}:download_artifact", args=[a.id])}


@router.get("/runs/{wfid:run_id}/artifacts", tags=["read"], response={200: s.ArtifactPage, **ERRORS}, summary="A run's artifacts")
def list_artifacts(
    request: HttpRequest, run_id: str, q: str = "", step: str = "", kind: str = "", content_type: str = "",
    limit: int = Query(50, ge=1, le=MAX_PAGE), after: str | None = CURSOR, before: str | None = CURSOR,
) -> Any:
    require(request, "workflow.view_run", "workflow.view_artifact")
    run = _run_or_404(run_id)
    page = paged(lambda: browse.artifacts_page(run, q=q, step=step, kind=kind, content_type=content_type,
                                                limit=limit, after=after, before=before),
                 after=after, before=before, size=2)
    return page_body(page, [_artifact(request, a) for a in page.rows])


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) of a single ``bytes=`` range; None to send it all; ApiError 416 if unsatisfiable."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # a syntax we do not serve (several ranges, other units): RFC 9110 says ignore it
    if not m.group(1):
        length = int(m.group(2))
        if length == 0:
            raise ApiError(416, "The range asks for no bytes.", details={"size": size})
        return max(size - length, 0), size - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else size - 1
    if first >= size or last < first:
        raise ApiError(416, f"The range starts past the artifact's {size} bytes.", details={"size": size})
    return first, min(last, size - 1)


def _chunks(fh: Any, remaining: int) -> Any:
    try:
        while remaining > 0:
            chunk = fh.read(min(DOWNLOAD_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        fh.close()


@router.get("/artifacts/{wfid:artifact_id}/download", tags=["read"], url_name="download_artifact", response={**ERRORS, 416: ERRORS[400]},
            summary="Download an artifact (streamed; HTTP Range supported)",
            openapi_extra={"responses": {
                "200": {"description": "the artifact's bytes, in its own content type", "content": {"*/*": {"schema": {}}}},
                "206": {"description": "the requested byte range", "content": {"*/*": {"schema": {}}}},
            }})
def download_artifact(request: HttpRequest, artifact_id: str) -> Any:
    require(request, "workflow.view_artifact")
    artifact = Artifact.objects.filter(pk=artifact_id).first()
    if artifact is None:
        raise ApiError(404, f"artifact {artifact_id!r} does not exist")
    size = artifact.size or 0
    byte_range = _byte_range(request.headers["Range"], size) if request.headers.get("Range") else None
    try:
        fh = browse.open_artifact(artifact)
    except browse.BlobMissing as exc:
        raise ApiError(404, str(exc), code="blob_missing") from exc
    content_type = artifact.content_type or "application/octet-stream"
    response: HttpResponse | StreamingHttpResponse
    if byte_range is None:
        response = FileResponse(fh, as_attachment=True, filename=artifact.name, content_type=content_type)
        response["Content-Length"] = str(size)
    else:
        first, last = byte_range
        fh.seek(first)
        response = StreamingHttpResponse(_chunks(fh, last - first + 1), status=206, content_type=content_type)
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
        response["Content-Length"] = str(last - first + 1)
        response["Content-Disposition"] = content_disposition_header(True, artifact.name)
    response["Accept-Ranges"] = "bytes"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=0"
    return response


@router.get("/records/{wfid:collection}/{wfid:key}", tags=["read"], response={200: s.RecordOut, **ERRORS},
            summary="One record, by collection and key")
def get_record(request: HttpRequest, collection: str, key: str) -> Any:
    require(request, "workflow.view_record")
    record = Record.objects.filter(collection=collection, key=key).first()
    if record is None:
        raise ApiError(404, f"no record {key!r} in collection {collection!r}")
    return record


@router.get("/records", tags=["read"], response={200: s.RecordPage, **ERRORS},
            summary="Records in key order, by collection")
def list_records(
    request: HttpRequest, collection: str = "", q: str = Query("", description="key contains"), run: str = "",
    limit: int = Query(50, ge=1, le=MAX_PAGE), after: str | None = CURSOR, before: str | None = CURSOR,
) -> Any:
    require(request, "workflow.view_record")
    page = paged(lambda: browse.records_page(collection=collection, q=q, run_id=run, limit=limit, after=after,
                                              before=before), after=after, before=before, size=2)
    return page_body(page, page.rows)


@router.get("/queues", tags=["read"], response={200: list[s.QueueOut], **ERRORS},
            summary="Queues: cap, running, ready, rate limit, tokens now, paused, oldest ready age")
def list_queues(request: HttpRequest) -> Any:
    require(request, *QUEUE_PERMS)
    return [{"name": f.name, "status": f.status, "paused": f.paused, "cap": f.cap, "running": f.running,
             "ready": f.ready, "waiting_backoff": f.waiting_backoff, "rate": f.rate, "per_seconds": f.per_seconds,
             "burst": f.burst, "tokens_now": f.tokens_now, "oldest_ready_age_seconds": f.oldest_age_seconds,
             "live_workers": f.live_workers, "stall_reasons": f.reasons} for f in queues.queue_figures()]


@router.get("/events", tags=["read"], response={200: s.EventPage, **ERRORS},
            summary="Events (the events console's filters; kind and severity may repeat)")
def list_events(
    request: HttpRequest, kind: list[str] = Query([], description="one or more kinds (repeat the parameter)"),
    severity: list[s.SeverityName] = Query([], description="one or more severities (repeat the parameter)"),
    run: str = "", step: str = "",
    queue: str = "", worker: str = "", range: s.RangeName | None = Query(None, description="the last 15m, 1h, 24h or 7d"),
    since: s.IsoDateTime | None = Query(None, description="ISO 8601"),
    until: s.IsoDateTime | None = Query(None, description="ISO 8601"),
    sort: s.EventSortName | None = Query(None, description="newest (the default), oldest, or kind (A to Z, newest first within)"),
    limit: int = Query(100, ge=1, le=MAX_PAGE), after: str | None = CURSOR, before: str | None = CURSOR,
) -> Any:
    require(request, "workflow.view_event")
    params = {"kind": kind, "severity": list(severity), "run": run, "step": step, "queue": queue, "worker": worker,
              "range": range or "", "since": since.isoformat() if since else "",
              "until": until.isoformat() if until else "", "sort": sort or ""}
    filters = EventFilters.from_params(params, timezone.now())
    filter_errors(filters.errors)
    qs, fields, directions, as_events = event_reads.console_source(filters)  # claims and successes: attempt rows
    page = paged(lambda: pages.keyset_page(qs, fields=fields, descending=directions,
                                             limit=limit, after=after, before=before),
                 after=after, before=before, size=1)
    return page_body(page, as_events(page.rows))


@router.get("/packages", tags=["read"], response={200: list[s.PackageOut], **ERRORS},
            summary="Packages, each with its entrypoint's input JSON Schema")
def list_packages(request: HttpRequest) -> Any:
    require(request, "workflow.view_run")
    out = []
    for pkg in registry_module.registry.packages():
        executors = []
        for ex in sorted(pkg.executors.values(), key=lambda e: e.kind):
            try:
                schema = typed.json_schema(ex.input_type) if ex.input_type not in (None, Any) else {}
            except TypeError:
                schema = {}
            executors.append({"kind": ex.kind, "queue": ex.queue or "default", "input_schema": schema})
        out.append({"name": pkg.name, "display_name": pkg.display_name, "description": pkg.description,
                    "input_schema": pkg.input_schema(), "executors": executors})
    return out


@router.get("/engine", tags=["read"], response={200: s.EngineOut, **ERRORS}, summary="Engine status: database, leases, workers")
def engine_status(request: HttpRequest) -> Any:
    from django.db import connections

    from ..conf import workflow_settings
    from ..models import Dependency, Event, Queue, Worker

    require(request, *OVERVIEW_PERMS)
    now = timezone.now()
    using = workflow_settings().get("DATABASE", "default")
    migrations = _migrations(using)
    leases = read_engine_status.lease_counts(now=now)
    workers = read_engine_status.workers(now=now, seen_within=timedelta(days=1), limit=50)
    counts = read_engine_status.row_counts([Run, Step, Dependency, Lease, Event, Artifact, Record, Queue, Worker], using=using)
    return {
        "database_vendor": connections[using].vendor, "migrations_applied": migrations["total"],
        "latest_workflow_migration": (migrations["workflow"] or [""])[-1],
        "leases_active": leases.active, "leases_expired": leases.expired,
        "workers": [{"id": w.worker.id, "host": w.worker.host, "pid": w.worker.pid, "status": w.status,
                     "queues": w.worker.queues, "site": w.worker.site, "max_workers": w.worker.max_workers,
                     "running": w.worker.running, "started_at": w.worker.started_at, "seen_at": w.worker.seen_at}
                    for w in workers],
        "tables": [{"table": c.table, "count": c.count, "exact": c.exact} for c in counts],
    }



@router.get("/schedules", tags=["read"], response={200: list[s.ScheduleOut], **ERRORS},
            summary="Schedules: cron in words, time zone, next fire times, counts, status, latest runs")
def list_schedules(request: HttpRequest) -> Any:
    require(request, "workflow.view_schedule", "workflow.view_run")
    from ..schedules import schedule_views

    return [{"key": v.row.key, "package": v.row.package, "name": v.row.name, "cron": v.row.cron,
             "description": v.description, "timezone": v.row.timezone, "catch_up": v.row.catch_up,
             "overlap": v.row.overlap, "status": v.row.status, "next_fires": v.next_fires,
             "last_fired_at": v.row.last_fired_at, "fired_count": v.row.fired_count,
             "missed_count": v.row.missed_count, "skipped_count": v.row.skipped_count,
             "recent_runs": [{"id": r.id, "state": r.state, "created_at": r.created_at} for r in v.recent_runs]}
            for v in schedule_views(now=timezone.now())]
