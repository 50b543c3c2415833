"""The one path for operator actions: the dashboard, the admin and commands all call these.

Each action names its actor, so the event it writes says who did it. Permission checks belong
to the caller (views check ``workflow.operate``); the engine validates state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .conf import runtime
from .engine.errors import InvalidInput, InvalidState, NotFound, UnknownKind, WorkflowError
from .engine.values import QueueConfig, RunHandle, StepState


def actor_name(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return user.get_username()


def retry_step(run_id: str, step_id: str, *, user: Any = None) -> None:
    runtime().retry_step(run_id, step_id, actor=actor_name(user))


def cancel_run(run_id: str, *, user: Any = None) -> int:
    return runtime().cancel_run(run_id, actor=actor_name(user))


def configure_queue(name: str, config: QueueConfig, *, user: Any = None) -> None:
    runtime().configure_queue(name, config, actor=actor_name(user) or "operator")


def pause_queue(name: str, *, user: Any = None) -> None:
    runtime().pause_queue(name, actor=actor_name(user))


def resume_queue(name: str, *, user: Any = None) -> None:
    runtime().resume_queue(name, actor=actor_name(user))


def start_run(package: str, input: Any, *, user: Any = None, run_id: str | None = None, name: str | None = None,
              metadata: dict[str, str] | None = None) -> RunHandle:
    meta = dict(metadata or {})
    actor = actor_name(user)
    if actor:
        meta.setdefault("started_by", actor)
    return runtime().start_run(package, input, run_id=run_id, name=name, metadata=meta)


@dataclass
class BulkResult:
    """What a bulk action did: how many succeeded, and why the others were skipped."""

    done: int = 0
    skipped: list[str] = field(default_factory=list)
    batches: int = 0

    @property
    def summary(self) -> str:
        text = f"{self.done} done"
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        return text


def cancel_runs(run_ids: Iterable[str], *, user: Any = None) -> BulkResult:
    result = BulkResult()
    for run_id in run_ids:
        try:
            cancel_run(run_id, user=user)
            result.done += 1
        except WorkflowError as exc:
            result.skipped.append(str(exc))
    return result


def retry_failed_steps(pairs: Iterable[tuple[str, str]], *, user: Any = None) -> BulkResult:
    """Retry each (run id, step id); steps that are not failed are skipped with the reason."""
    result = BulkResult()
    for run_id, step_id in pairs:
        try:
            retry_step(run_id, step_id, user=user)
            result.done += 1
        except WorkflowError as exc:
            result.skipped.append(str(exc))
    return result


def retry_steps_bulk(pairs: list[tuple[str, str]], *, user: Any = None, payload: dict[str, Any] | None = None,
                     batch_size: int = 500) -> BulkResult:
    """Retry many failed steps in bounded batches (one transaction each), one event per step naming the user.

    ``payload`` joins every step's ``step_retried`` event (the bulk action's id and filters), so
    the events console finds all the steps one confirmation retried.
    """
    done, skipped, batches = runtime().retry_steps(pairs, actor=actor_name(user), batch_size=batch_size,
                                                   payload=payload)
    return BulkResult(done=done, skipped=skipped, batches=batches)


def check_step_input(kind: str, value: Any) -> None:
    """Check ``value`` against the input type of ``kind``'s executor; ``InvalidInput.field`` names the bad path.

    A kind this site does not register cannot be checked, so its input is not edited here.
    """
    from .engine import registry as registry_module
    from .engine import typed

    try:
        executor = registry_module.registry.executor(kind)
    except UnknownKind:
        raise InvalidInput(f"kind {kind!r} is not registered in this site, so an edited input cannot be checked "
                           "against its type", field="input") from None
    if not executor.is_typed:
        return
    try:
        typed.decode(executor.input_type, value)
    except typed.InputError as exc:
        path = f"input.{exc.path}" if exc.path else "input"
        raise InvalidInput(f"{path}: {exc.problem}", field=path) from exc
    except (TypeError, RecursionError) as exc:
        raise InvalidInput(f"input: kind {kind!r} has an input type that cannot be checked: {exc}",
                           field="input") from exc


def retry_step_with_input(run_id: str, step_id: str, new_input: Any, *, user: Any = None) -> None:
    """Retry a failed step with a patched input, checked against its executor's type first; audited."""
    from .models import Step

    step = Step.objects.filter(run_id=run_id, step_id=step_id).only("kind", "state").first()
    if step is None:
        raise NotFound(f"step {step_id!r} does not exist in run {run_id!r}")
    if step.state != StepState.FAILED:
        raise InvalidState(f"step {step_id!r} is {step.state}; only a failed step can be retried")
    check_step_input(step.kind, new_input)
    runtime().retry_step_with_input(run_id, step_id, new_input, actor=actor_name(user))


def retry_failed_in_runs(run_ids: Iterable[str], *, user: Any = None) -> BulkResult:
    from .models import Step

    pairs = Step.objects.failed().filter(run_id__in=list(run_ids)).values_list("run_id", "step_id")
    return retry_failed_steps(list(pairs), user=user)


def pause_schedule(key: str, *, user: Any = None) -> bool:
    """Stop a schedule firing until resumed (``key`` is ``package:name``); audited."""
    from . import schedules

    return schedules.set_paused(runtime(), key, True, actor=actor_name(user))


def resume_schedule(key: str, *, user: Any = None) -> bool:
    """Fire again from the next tick; the ticks while paused are not caught up."""
    from . import schedules

    return schedules.set_paused(runtime(), key, False, actor=actor_name(user))


def run_schedule_now(key: str, *, user: Any = None) -> str:
    """Start one run of a schedule at once, outside its cron; returns the run id."""
    from . import schedules

    return schedules.run_now(runtime(), key, actor=actor_name(user))
