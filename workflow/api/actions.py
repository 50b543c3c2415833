"""Action endpoints: each goes through ``workflow.operator`` (the dashboard's one path), which
writes an event naming the user."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Status

from .. import forms, operator
from ..engine import registry as registry_module
from ..engine import typed
from ..engine.errors import InvalidInput, UnknownPackage
from ..engine.values import StepState
from ..models import Run, Step
from ..read import bulk
from . import schemas as s
from .auth import require
from .common import ACTION_ERRORS, router
from .errors import ApiError

OPERATE = "workflow.operate"


@router.post("/runs", tags=["act"], response={200: s.StartRunOut, 201: s.StartRunOut, **ACTION_ERRORS},
             summary="Start a run (201; 200 for an idempotent repeat; 409 for a conflicting id)")
def start_run(request: HttpRequest, body: s.StartRunIn) -> Any:
    require(request, OPERATE, "workflow.view_run")
    try:
        pkg = registry_module.registry.package(body.package)
    except UnknownPackage as exc:
        raise ApiError(404, f"package: {exc}", code="unknown_package", details={"field": "package"}) from exc
    if pkg.input_type is not None:
        try:
            typed.decode(pkg.input_type, body.input)
        except typed.InputError as exc:
            field = f"input.{exc.path}" if exc.path else "input"
            raise ApiError(422, f"{field}: {exc.problem}", details={"field": field}) from exc
        except TypeError as exc:
            raise ApiError(422, f"input: this package's input type cannot be checked: {exc}") from exc
    handle = operator.start_run(pkg.name, body.input, user=request.user, run_id=body.run_id, name=body.name,
                                metadata=body.metadata)
    out = {"id": handle.id, "package": handle.package, "name": handle.name, "created": handle.created}
    return Status(201 if handle.created else 200, out)


@router.post("/runs/{wfid:run_id}/cancel", tags=["act"], response={200: s.ActionOut, **ACTION_ERRORS}, summary="Cancel a run")
def cancel_run(request: HttpRequest, run_id: str) -> Any:
    require(request, OPERATE)
    canceled = operator.cancel_run(run_id, user=request.user)
    return {"message": f"run {run_id} canceled ({canceled} unfinished steps canceled)"}


@router.post("/runs/{wfid:run_id}/steps/{wfid:step_id}/retry", tags=["act"], response={200: s.ActionOut, **ACTION_ERRORS},
             summary="Retry a failed step")
def retry_step(request: HttpRequest, run_id: str, step_id: str) -> Any:
    require(request, OPERATE)
    operator.retry_step(run_id, step_id, user=request.user)
    return {"message": f"step {step_id} of run {run_id} will run again"}


@router.post("/runs/{wfid:run_id}/retry-failed", tags=["act"], response={200: s.BulkOut, **ACTION_ERRORS},
             summary="Retry every failed step of a run")
def retry_failed(request: HttpRequest, run_id: str) -> Any:
    require(request, OPERATE)
    if not Run.objects.filter(pk=run_id).exists():
        raise ApiError(404, f"run {run_id!r} does not exist")
    result = operator.retry_failed_in_runs([run_id], user=request.user)
    return {"done": result.done, "skipped": result.skipped}


@router.post("/runs/{wfid:run_id}/steps/{wfid:step_id}/retry-with-input", tags=["act"],
             response={200: s.ActionOut, **ACTION_ERRORS},
             summary="Retry a failed step with a patched input (checked against its kind's type; the original is kept)")
def retry_with_input(request: HttpRequest, run_id: str, step_id: str, body: s.RetryWithInputIn) -> Any:
    require(request, OPERATE)
    try:
        forms.check_json_text(body.input, label="input")
        operator.retry_step_with_input(run_id, step_id, body.input, user=request.user)
    except forms.BadInput as exc:
        raise ApiError(400, str(exc), code="bad_text", details={"field": "input"}) from exc
    except InvalidInput as exc:
        raise ApiError(422, str(exc), details={"field": exc.field or "input"}) from exc
    return {"message": f"step {step_id} of run {run_id} will run again with the new input"}


@router.post("/steps/retry-failed", tags=["act"], response={200: s.RetryFailedOut, **ACTION_ERRORS},
             summary="Retry failed steps across runs by filter; dry_run previews (steps, blocked dependents) first")
def retry_failed_steps(request: HttpRequest, body: s.RetryFailedIn) -> Any:
    """Preview with ``dry_run``, then send its ``as_of``, ``max_id`` and ``selected`` (as ``expected``) back.

    Bound that way, the call retries only what the preview counted (never steps failing after it)
    and refuses with 409 if more steps match; without them it binds to this moment. Runs in
    batches of 500 steps (one transaction each), one ``step_retried`` event per step naming you.
    """
    require(request, OPERATE, "workflow.view_run", "workflow.view_step")
    params = {"state": StepState.FAILED, **body.dict(include={"code", "queue", "kind", "run", "package", "since"})}
    try:
        forms.check_params(params)
    except forms.BadInput as exc:
        raise ApiError(400, str(exc), code="bad_text") from exc
    filters = forms.StepFilters.from_params(params)
    if filters.field_errors:
        name, text = next(iter(filters.field_errors.items()))
        raise ApiError(422, f"{name}: {text}", details={"field": name})
    now = timezone.now()
    as_of = now
    if body.as_of is not None:
        try:
            given = body.as_of if timezone.is_aware(body.as_of) else timezone.make_aware(body.as_of, UTC)
            as_of = min(given.astimezone(UTC), now)
        except (OverflowError, ValueError) as exc:
            raise ApiError(422, "as_of: not a moment the calendar can hold", details={"field": "as_of"}) from exc
    preview = bulk.retry_preview(filters.apply(Step.objects.all(), as_of), as_of=as_of, max_id=body.max_id,
                                 count_dependents=body.dry_run)
    if body.expected is not None and preview.selected > body.expected:
        raise ApiError(409, f"{preview.selected} failed steps match now, more than the {body.expected} expected; "
                            "preview again", code="invalid_state")
    out: dict[str, Any] = {
        "dry_run": body.dry_run, "as_of": as_of, "max_id": preview.max_id, "matching": preview.matching,
        "selected": preview.selected, "canceled_runs": preview.canceled_runs, "runs": preview.runs,
        "runs_restarting": preview.runs_restarting, "dependents": preview.dependents,
        "dependents_exact": preview.dependents_exact,
        "sample": [{"run_id": st.run_id, "step_id": st.step_id, "kind": st.kind, "queue": st.queue,
                    "error_code": st.error_code} for st in preview.sample],
    }
    if not body.dry_run and preview.pairs:
        result = operator.retry_steps_bulk(preview.pairs, user=request.user, batch_size=bulk.BATCH_SIZE, payload={
            "bulk": {"id": uuid.uuid4().hex[:12], "filters": filters.query, "as_of": as_of.isoformat(),
                     "previewed": body.expected, "via": "api"}})
        out.update(done=result.done, skipped=result.skipped, batches=result.batches)
    return out


@router.post("/queues/{wfid:name}/pause", tags=["act"], response={200: s.ActionOut, **ACTION_ERRORS}, summary="Pause a queue")
def pause_queue(request: HttpRequest, name: str) -> Any:
    require(request, OPERATE)
    operator.pause_queue(name, user=request.user)
    return {"message": f"queue {name} paused"}


@router.post("/queues/{wfid:name}/resume", tags=["act"], response={200: s.ActionOut, **ACTION_ERRORS}, summary="Resume a queue")
def resume_queue(request: HttpRequest, name: str) -> Any:
    require(request, OPERATE)
    operator.resume_queue(name, user=request.user)
    return {"message": f"queue {name} resumed"}


@router.post("/schedules/{key}/pause", tags=["act"], response={200: s.ActionOut, **ACTION_ERRORS},
             summary="Pause a schedule (key: package:name)")
def pause_schedule(request: HttpRequest, key: str) -> Any:
    require(request, OPERATE)
    changed = operator.pause_schedule(key, user=request.user)
    return {"message": f"schedule {key} paused" if changed else f"schedule {key} was already paused"}


@router.post("/schedules/{key}/resume", tags=["act"], response={200: s.ActionOut, **ACTION_ERRORS},
             summary="Resume a schedule from its next tick (paused ticks are not caught up)")
def resume_schedule(request: HttpRequest, key: str) -> Any:
    require(request, OPERATE)
    changed = operator.resume_schedule(key, user=request.user)
    return {"message": f"schedule {key} resumed" if changed else f"schedule {key} was not paused"}


@router.post("/schedules/{key}/run", tags=["act"], response={200: s.ScheduleRunNowOut, **ACTION_ERRORS},
             summary="Start one run of a schedule now, outside its cron")
def run_schedule_now(request: HttpRequest, key: str) -> Any:
    require(request, OPERATE, "workflow.view_run")
    run_id = operator.run_schedule_now(key, user=request.user)
    return {"message": f"schedule {key} started run {run_id}", "run_id": run_id}
