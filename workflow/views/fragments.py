"""What the run page and the step page share: the step panel (the run page opens it in place).

Both pages import it from here, so neither imports the other for it.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from ..engine.values import StepState
from ..models import Step
from ..read import browse, steps

DIFF_LINES_MAX = 200
EDIT_MAX_CHARS = 256 * 1024  # a bigger input is edited through the API, not a textarea


# Log lines open with their time; every line of two attempts would differ by it alone.
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s*")


def _log_lines(log: str) -> list[str]:
    return [_LOG_TIME.sub("", line) for line in log.splitlines()]


def attempt_history(leases: list[Any]) -> list[dict[str, Any]]:
    """Attempts newest first, each numbered in order made and compared with the one before it.

    The number is the attempt's place in the step's history (operator retries included), so two
    attempts never read the same; the engine's own counter is shown beside it when they differ.
    """
    rows: list[dict[str, Any]] = []
    previous = None
    for number, lease in enumerate(leases, start=1):
        diff: dict[str, Any] | None = None
        if previous is not None:
            lines = list(difflib.unified_diff(_log_lines(previous.log), _log_lines(lease.log),
                                              f"attempt {number - 1}", f"attempt {number}", lineterm="", n=1))
            diff = {
                "previous": number - 1,
                "error_changed": (previous.error_code, previous.error_message) != (lease.error_code, lease.error_message),
                "previous_error": (previous.error_code, previous.error_message),
                "log": [(line[:1] if line[:1] in "+-@" else " ", line) for line in lines[2:DIFF_LINES_MAX + 2]],
                "log_truncated": len(lines) > DIFF_LINES_MAX + 2,
                "worker_changed": previous.worker_id != lease.worker_id,
                "previous_worker": previous.worker_id,
            }
        rows.append({"lease": lease, "number": number, "diff": diff})
        previous = lease
    return rows[::-1]


def edit_context(step: Step) -> dict[str, Any]:
    """The "edit input and retry" form: the current input as JSON text, and the kind's input type if known."""
    from ..engine import registry as registry_module
    from ..engine import typed
    from ..engine.errors import UnknownKind

    type_name, schema_json = "", ""
    try:
        executor = registry_module.registry.executor(step.kind)
    except UnknownKind:
        type_name = "unknown here"
    else:
        if executor.is_typed:
            type_name = typed._type_name(executor.input_type)
            try:
                schema_json = json.dumps(typed.json_schema(executor.input_type), indent=2)
            except TypeError:
                schema_json = ""
        else:
            type_name = "any JSON"
    text = json.dumps(step.input, indent=2, ensure_ascii=False)
    return {"edit_text": "" if len(text) > EDIT_MAX_CHARS else text, "edit_too_large": len(text) > EDIT_MAX_CHARS,
            "edit_error": "", "edit_type": type_name, "edit_schema_json": schema_json}


def panel_context(step: Step, user: Any) -> dict[str, Any]:
    """The step panel; what the viewer's permissions do not cover is neither read nor shown."""
    detail = steps.step_detail(
        step,
        with_attempts=user.has_perm("workflow.view_lease"),
        with_events=user.has_perm("workflow.view_event"),
        with_records=user.has_perm("workflow.view_record"),
        with_artifacts=user.has_perm("workflow.view_artifact"),
    )
    history = attempt_history(detail.attempts)
    original = step.original_input if isinstance(step.original_input, dict) else None
    return {
        "input_edit": original,
        "original_input_json": browse.pretty_json(original.get("input")) if original else "",
        **(edit_context(step) if step.state == StepState.FAILED and user.has_perm("workflow.operate") else {}),
        "attempt_rows": history,
        "current_attempt": history[0] if history else None,
        "step": step,
        "run": step.run,
        "detail": detail,
        "input_json": browse.pretty_json(step.input),
        "result_json": browse.pretty_json(step.result) if step.result is not None else "",
        "details_json": browse.pretty_json(detail.error_details) if detail.error_details is not None else "",
        "is_step_active": not StepState(step.state).is_terminal,
        "selected_step": step.step_id,
    }
