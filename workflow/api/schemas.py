"""The API's request and response shapes; Django Ninja turns them into the OpenAPI document."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import BeforeValidator, ConfigDict

# The query enums; tests check they list exactly the engine's states and the consoles' choices.
RunStateName = Literal["pending", "running", "succeeded", "failed", "canceled"]
StepStateName = Literal["pending", "ready", "running", "succeeded", "failed", "canceled"]
SeverityName = Literal["debug", "info", "warning", "error"]
RangeName = Literal["15m", "1h", "24h", "7d"]
EventSortName = Literal["newest", "oldest", "kind"]


def _not_a_number(value: Any) -> Any:
    """Pydantic reads a number as seconds since 1970; the schema promises ISO 8601 only."""
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
        raise ValueError("expected an ISO 8601 date-time, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]


class Progress(Schema):
    counts: dict[str, int]
    total: int
    done: int
    percent: int


class RunOut(Schema):
    id: str
    package: str
    name: str
    state: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress


class RunDetailOut(RunOut):
    input: Any = None


class Page(Schema):
    next: str | None = Field(None, description="cursor of the next page (pass as ?after=); null at the end")
    previous: str | None = Field(None, description="cursor of the previous page (pass as ?before=)")


class RunPage(Page):
    items: list[RunOut]


class StepOut(Schema):
    step_id: str
    kind: str
    queue: str
    site: str
    state: str
    attempt: int
    max_attempts: int
    parent_step_id: str | None
    available_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_code: str


class StepPage(Page):
    items: list[StepOut]


class StepError(Schema):
    code: str
    message: str
    retryable: bool | None = None
    details: Any = None


class Edge(Schema):
    step_id: str
    kind: str
    state: str
    required: bool
    satisfied: bool


class StepDetailOut(StepOut):
    run_id: str
    input: Any = None
    result: Any = None
    error: StepError | None = None
    metadata: dict[str, Any]
    dependencies: list[Edge]
    dependencies_total: int
    dependents: list[Edge]
    dependents_total: int
    children_total: int
    waiting_reasons: list[str] = Field(description="why a pending or ready step is not running yet, in words")
    blocked_by: list[str] = Field(description="failed required dependencies this step waits on")


class AttemptOut(Schema):
    attempt: int
    worker_id: str
    claimed_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    expires_at: datetime
    released_at: datetime | None
    outcome: str
    error_code: str
    error_message: str
    log: str


class ResultOut(Schema):
    step_id: str
    kind: str
    state: str
    result: Any = None
    error: StepError | None = None
    finished_at: datetime | None


class ResultPage(Page):
    items: list[ResultOut]


class ArtifactOut(Schema):
    id: str
    step_id: str
    name: str
    kind: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    metadata: dict[str, Any]
    created_at: datetime
    download_url: str


class ArtifactPage(Page):
    items: list[ArtifactOut]


class RecordOut(Schema):
    collection: str
    key: str
    data: Any = None
    run_id: str
    step_id: str
    updated_at: datetime


class RecordPage(Page):
    items: list[RecordOut]


class QueueOut(Schema):
    name: str
    status: str
    paused: bool
    cap: int | None
    running: int
    ready: int
    waiting_backoff: int
    rate: float | None
    per_seconds: float
    burst: int
    tokens_now: float | None
    oldest_ready_age_seconds: float | None
    live_workers: int
    stall_reasons: list[str]


class EventOut(Schema):
    id: int
    created_at: datetime
    kind: str
    severity: str
    run_id: str | None
    step_id: str | None
    queue: str
    worker_id: str
    actor: str
    message: str
    payload: Any = None


class EventPage(Page):
    items: list[EventOut]


class ExecutorOut(Schema):
    kind: str
    queue: str
    input_schema: dict[str, Any]


class PackageOut(Schema):
    name: str
    display_name: str
    description: str
    input_schema: dict[str, Any] = Field(description="JSON Schema of the entrypoint's input")
    executors: list[ExecutorOut]


class WorkerOut(Schema):
    id: str
    host: str
    pid: int
    status: str
    queues: list[str] | None
    site: str
    max_workers: int
    running: int
    started_at: datetime
    seen_at: datetime


class TableCountOut(Schema):
    table: str
    count: int | None
    exact: bool


class EngineOut(Schema):
    database_vendor: str
    migrations_applied: int
    latest_workflow_migration: str
    leases_active: int
    leases_expired: int
    workers: list[WorkerOut]
    tables: list[TableCountOut]


class StartRunIn(Schema):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 422 naming it, not silently ignored

    package: str = Field(min_length=1, max_length=100)
    input: Any = None
    run_id: str | None = Field(None, min_length=1, max_length=255)
    name: str | None = Field(None, max_length=255)
    metadata: dict[str, str] = Field(default_factory=dict)


class StartRunOut(Schema):
    id: str
    package: str
    name: str
    created: bool


class ActionOut(Schema):
    ok: bool = True
    message: str


class BulkOut(Schema):
    done: int
    skipped: list[str]


class RetryFailedIn(Schema):
    """Which failed steps to retry (the steps console's filters), and the preview to bind to."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field("", max_length=100, description="error code")
    queue: str = Field("", max_length=100)
    kind: str = Field("", max_length=100)
    run: str = Field("", max_length=255, description="run id")
    package: str = Field("", max_length=100)
    since: Literal["", "1h", "24h", "7d"] = Field("", description="failed within; default 24h unless run is given")
    dry_run: bool = Field(False, description="only preview: count what would rerun, change nothing")
    as_of: datetime | None = Field(None, description="a dry run's as_of: only steps failed by then")
    max_id: int | None = Field(None, ge=0, lt=2**63, description="a dry run's max_id: only step rows up to it")
    expected: int | None = Field(None, ge=0, lt=2**63, description="a dry run's selected: refuse (409) if more match")


class RetrySampleOut(Schema):
    run_id: str
    step_id: str
    kind: str
    queue: str
    error_code: str


class RetryFailedOut(Schema):
    dry_run: bool
    as_of: datetime
    max_id: int
    matching: int = Field(description="failed steps matching (runs not canceled), before the cap")
    selected: int = Field(description="failed steps this call retries (dry run: would retry)")
    canceled_runs: int = Field(description="matching failed steps of canceled runs: never retried")
    runs: int
    runs_restarting: int
    dependents: int = Field(description="blocked pending steps that run once the selected steps succeed")
    dependents_exact: bool
    sample: list[RetrySampleOut]
    done: int = 0
    skipped: list[str] = Field(default_factory=list)
    batches: int = 0


class RetryWithInputIn(Schema):
    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description="the step's new input (JSON), checked against its kind's input type")


class ScheduleRunOut(Schema):
    id: str
    state: str
    created_at: datetime


class ScheduleOut(Schema):
    key: str  # package:name, as the actions take it
    package: str
    name: str
    cron: str
    description: str  # the cron in words
    timezone: str
    catch_up: str
    overlap: str
    status: str  # active, paused, disabled or removed
    next_fires: list[datetime]
    last_fired_at: datetime | None
    fired_count: int
    missed_count: int
    skipped_count: int
    recent_runs: list[ScheduleRunOut]


class ScheduleRunNowOut(Schema):
    message: str
    run_id: str
