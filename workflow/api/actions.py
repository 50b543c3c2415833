"""Action endpoints: each goes through ``workflow.operator`` (the dashboard's one path), which
writes an event naming the user."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Status

from .. import operator
from ..engine import registry as registry_module
from ..engine import typed
from ..engine.errors import UnknownPackage
from ..models import Run
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
