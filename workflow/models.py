"""The engine's tables. Each QuerySet above its model names the questions the domain asks.

The engine owns every write (see ``workflow.stores``); views and the admin only read these
models and change state through ``workflow.operator``.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q

from .engine.rules import LeaseOutcome, Severity
from .engine.values import TERMINAL_RUN_STATES, RunState, StepState
from .jsontext import TextSafeDecoder


class RunQuerySet(models.QuerySet["Run"]):
    def finished(self) -> RunQuerySet:
        return self.filter(state__in=TERMINAL_RUN_STATES)

    def finished_before(self, moment: datetime) -> RunQuerySet:
        return self.finished().filter(finished_at__lt=moment)


class Run(models.Model):
    """One execution of a package: a graph of steps."""

    id = models.CharField(primary_key=True, max_length=255)
    package = models.CharField(max_length=100)
    name = models.CharField(max_length=255, blank=True)
    input = models.JSONField(decoder=TextSafeDecoder, null=True, blank=True)
    metadata = models.JSONField(decoder=TextSafeDecoder, default=dict, blank=True)
    state = models.CharField(max_length=16, choices=[(s.value, s.value) for s in RunState], default=RunState.PENDING)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("operate", "Can retry steps, cancel runs, pause queues and start runs")]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="run_newest_idx"),
            # The runs list filtered by state, in its own order: ?state=canceled walks this index.
            models.Index(fields=["state", "-created_at", "-id"], name="run_state_newest_idx"),
            models.Index(fields=["package", "-created_at"], name="run_package_idx"),
            # Finished runs only: a run enters it once, when it ends (retention walks it).
            models.Index(fields=["finished_at"], condition=Q(finished_at__isnull=False), name="run_finished_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=[s.value for s in RunState]), name="run_state_valid"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_active(self) -> bool:
        return not RunState(self.state).is_terminal


class StepQuerySet(models.QuerySet["Step"]):
    def running(self) -> StepQuerySet:
        return self.filter(state=StepState.RUNNING)

    def expired_leases(self, now: datetime) -> StepQuerySet:
        return self.filter(state=StepState.RUNNING, lease_expires_at__lt=now)

    def failed(self) -> StepQuerySet:
        return self.filter(state=StepState.FAILED)


class Step(models.Model):
    """One durable unit of work in a run. ``step_id`` is unique in its run, not globally."""

    # No index of its own: (run, step_id), (run, state) and (run, parent_step_id) all lead with it.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    step_id = models.CharField(max_length=255)
    kind = models.CharField(max_length=100)
    queue = models.CharField(max_length=100, default="default")
    site = models.CharField(max_length=100, default="", blank=True)
    parent_step_id = models.CharField(max_length=255, null=True, blank=True)
    dedup_key = models.CharField(max_length=255, null=True, blank=True)
    input = models.JSONField(decoder=TextSafeDecoder, null=True, blank=True)
    # Set by the first "edit input and retry": {"input": the input the step was made with, "edits": n,
    # "edited_by", "edited_at"} (a wrapper, so an original null input is told from no edit at all).
    original_input = models.JSONField(decoder=TextSafeDecoder, null=True, blank=True)
    metadata = models.JSONField(decoder=TextSafeDecoder, default=dict, blank=True)
    retry = models.JSONField(decoder=TextSafeDecoder, default=dict, blank=True)
    state = models.CharField(max_length=16, choices=[(s.value, s.value) for s in StepState])
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    pending_deps = models.IntegerField(default=0)  # unsatisfied dependency edges; 0 and pending -> ready
    priority = models.SmallIntegerField(default=0)  # -100..100; claims take the highest first
    available_at = models.DateTimeField()
    lease_token = models.CharField(max_length=64, null=True, blank=True)
    lease_owner = models.CharField(max_length=200, null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(decoder=TextSafeDecoder, null=True, blank=True)
    error = models.JSONField(decoder=TextSafeDecoder, null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # An attempt running longer than this fails with retryable code "timeout" (null: no limit).
    timeout_seconds = models.FloatField(null=True, blank=True)
    # Set while a claimed (prefetched) step waits in its worker for a free thread: not running yet.
    awaiting_thread_since = models.DateTimeField(null=True, blank=True)

    objects = StepQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_id"], name="step_id_unique_in_run"),
            models.UniqueConstraint(
                fields=["run", "dedup_key"], condition=Q(dedup_key__isnull=False), name="step_dedup_unique_in_run"
            ),
            models.CheckConstraint(condition=Q(state__in=[s.value for s in StepState]), name="step_state_valid"),
            models.CheckConstraint(condition=Q(pending_deps__gte=0), name="step_pending_deps_not_negative"),
            models.CheckConstraint(
                condition=~Q(state=StepState.RUNNING) | Q(lease_token__isnull=False), name="step_running_has_lease"
            ),
        ]
        indexes = [
            # The claim reads only ready rows: its cost does not grow with finished history.
            models.Index(
                fields=["queue", "-priority", "available_at", "id"], condition=Q(state=StepState.READY), name="step_ready_idx"
            ),
            # Running steps only (as many as the workers' threads): caps count them by queue, the
            # reclaim and the wake-up read their lease expiry. One index, so a claim and a commit
            # each write one entry fewer.
            models.Index(fields=["queue", "lease_expires_at"], condition=Q(state=StepState.RUNNING),
                         name="step_running_idx"),
            models.Index(fields=["run", "state"], name="step_run_state_idx"),
            models.Index(fields=["run", "parent_step_id"], name="step_parent_idx"),
            models.Index(fields=["finished_at"], condition=Q(finished_at__isnull=False), name="step_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} / {self.step_id}"

    @property
    def error_code(self) -> str:
        return (self.error or {}).get("code", "")


class Dependency(models.Model):
    """An edge: ``step`` waits for ``depends_on`` (its success if ``required``, else any end)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="dependencies", db_index=False)  # dependency_unique leads with it
    depends_on = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="dependents")
    required = models.BooleanField(default=True)
    satisfied = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "dependencies"
        constraints = [models.UniqueConstraint(fields=["step", "depends_on"], name="dependency_unique")]

    def __str__(self) -> str:
        return f"{self.step_id} -> {self.depends_on_id}"


class LeaseQuerySet(models.QuerySet["Lease"]):
    def live(self) -> LeaseQuerySet:
        return self.filter(released_at__isnull=True)


class Lease(models.Model):
    """One attempt of a step: who claimed it, under which fencing token, and how it ended."""

    class Outcome(models.TextChoices):
        SUCCEEDED = LeaseOutcome.SUCCEEDED.value, "succeeded"
        RETRIED = LeaseOutcome.RETRIED.value, "failed, will retry"
        FAILED = LeaseOutcome.FAILED.value, "failed"
        EXPIRED = LeaseOutcome.EXPIRED.value, "lease expired"
        CANCELED = LeaseOutcome.CANCELED.value, "run canceled"
        DISCARDED = LeaseOutcome.DISCARDED.value, "late commit discarded"
        ABANDONED = LeaseOutcome.ABANDONED.value, "handed back at shutdown"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="leases")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="leases", db_index=False)  # lease_run_idx leads with it
    attempt = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=200)
    token = models.CharField(max_length=64, unique=True)
    claimed_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, default="")
    error_code = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")

    objects = LeaseQuerySet.as_manager()

    class Meta:
        ordering = ["claimed_at", "id"]
        indexes = [
            models.Index(fields=["run", "claimed_at"], name="lease_run_idx"),
            models.Index(fields=["worker_id"], condition=Q(released_at__isnull=True), name="lease_live_idx"),
            models.Index(fields=["claimed_at"], name="lease_claimed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.token} ({self.worker_id})"


class Artifact(models.Model):
    """A named blob a step produced: small ones inline in ``body``, large ones in the artifact store."""

    id = models.CharField(primary_key=True, max_length=64)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=100, blank=True, default="")
    content_type = models.CharField(max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    body = models.BinaryField(null=True, blank=True)
    storage_key = models.CharField(max_length=500, null=True, blank=True, db_index=True)
    metadata = models.JSONField(decoder=TextSafeDecoder, default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["run", "created_at"], name="artifact_run_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_inline(self) -> bool:
        return self.storage_key is None


class Record(models.Model):
    """A keyed write into a named collection (a read model), upserted when its step commits."""

    collection = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    data = models.JSONField(decoder=TextSafeDecoder, null=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="records")
    step_id = models.CharField(max_length=255)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["collection", "key"]
        constraints = [models.UniqueConstraint(fields=["collection", "key"], name="record_key_unique")]
        indexes = [models.Index(fields=["run"], name="record_run_idx")]

    def __str__(self) -> str:
        return f"{self.collection}/{self.key}"


class Event(models.Model):
    """An append-only fact about a run, a step, a queue or a worker."""

    class Severity(models.TextChoices):
        DEBUG = Severity.DEBUG.value
        INFO = Severity.INFO.value
        WARNING = Severity.WARNING.value
        ERROR = Severity.ERROR.value

    created_at = models.DateTimeField()
    kind = models.CharField(max_length=50)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, null=True, blank=True, related_name="events",
                            db_index=False)  # event_run_idx leads with it
    step_id = models.CharField(max_length=255, null=True, blank=True)
    queue = models.CharField(max_length=100, blank=True, default="")
    worker_id = models.CharField(max_length=200, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    message = models.TextField(blank=True, default="")
    payload = models.JSONField(decoder=TextSafeDecoder, default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["run", "-id"], name="event_run_idx"),
            models.Index(fields=["kind", "-id"], name="event_kind_idx"),
            models.Index(fields=["created_at"], name="event_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.run_id or ''} {self.step_id or ''}".strip()


class Queue(models.Model):
    """A lane's cap, token bucket and pause flag, shared by every worker through the database."""

    name = models.CharField(primary_key=True, max_length=100)
    max_workers = models.PositiveIntegerField(null=True, blank=True)
    rate = models.FloatField(null=True, blank=True)
    per_seconds = models.FloatField(default=1.0)
    burst = models.PositiveIntegerField(default=1)
    paused = models.BooleanField(default=False)
    tokens = models.FloatField(default=0.0)
    refilled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkerQuerySet(models.QuerySet["Worker"]):
    def seen_since(self, moment: datetime) -> WorkerQuerySet:
        return self.filter(seen_at__gte=moment, stopped_at__isnull=True)


class Worker(models.Model):
    """A ``runworkers`` process, as its heartbeats describe it."""

    id = models.CharField(primary_key=True, max_length=200)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(decoder=TextSafeDecoder, null=True, blank=True)
    site = models.CharField(max_length=100, blank=True, default="")
    max_workers = models.PositiveIntegerField()
    running = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return self.id


class ScheduleQuerySet(models.QuerySet["Schedule"]):
    def live(self) -> ScheduleQuerySet:
        """Declared in code, enabled and not paused: the ones that fire."""
        return self.filter(enabled=True, paused=False, removed_at__isnull=True)

    def due(self, now: datetime) -> ScheduleQuerySet:
        """Live with a tick at or before ``now``, or a buffered tick waiting on its run (both indexed)."""
        return self.live().filter(Q(next_fire_at__lte=now) | Q(buffered_at__isnull=False))


class Schedule(models.Model):
    """A cron schedule declared in code (``package.schedule``), stored at start-up with its firing state.

    ``cursor_at``: every tick at or before it has been handled (fired or counted as skipped); the
    worker that moves it fires the ticks in between, under the row's lock.
    """

    class CatchUp(models.TextChoices):
        SKIP = "skip", "skip missed ticks"
        LATEST = "latest", "run the most recent missed tick"
        ALL = "all", "run every missed tick in the window"

    class Overlap(models.TextChoices):
        ALLOW = "allow", "allow overlapping runs"
        SKIP = "skip", "skip while the previous run is active"
        BUFFER_ONE = "buffer_one", "buffer one tick until the previous run ends"

    package = models.CharField(max_length=100)
    name = models.CharField(max_length=100)
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    input = models.JSONField(null=True, blank=True)
    catch_up = models.CharField(max_length=10, choices=CatchUp.choices, default=CatchUp.LATEST)
    catch_up_window_seconds = models.FloatField(default=86400.0)
    late_after_seconds = models.FloatField(default=60.0)
    overlap = models.CharField(max_length=12, choices=Overlap.choices, default=Overlap.SKIP)
    enabled = models.BooleanField(default=True)
    paused = models.BooleanField(default=False)
    removed_at = models.DateTimeField(null=True, blank=True)
    cursor_at = models.DateTimeField()
    next_fire_at = models.DateTimeField(null=True, blank=True)
    buffered_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_run_id = models.CharField(max_length=255, blank=True, default="")
    fired_count = models.PositiveIntegerField(default=0)
    missed_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["package", "name"]
        constraints = [models.UniqueConstraint(fields=["package", "name"], name="schedule_name_unique_in_package")]
        indexes = [
            models.Index(fields=["next_fire_at"], condition=Q(enabled=True, paused=False, removed_at__isnull=True),
                         name="schedule_due_idx"),
            models.Index(fields=["buffered_at"], condition=Q(buffered_at__isnull=False), name="schedule_buffered_idx"),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def key(self) -> str:
        return f"{self.package}:{self.name}"

    @property
    def status(self) -> str:
        if self.removed_at is not None:
            return "removed"
        if not self.enabled:
            return "disabled"
        return "paused" if self.paused else "active"
class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """A user's bearer token for the HTTP API. Only its SHA-256 is kept: the token is shown once.

    Tokens are 256 random bits, so a plain SHA-256 (not a slow password hash) is enough: nobody
    can guess one from its digest, and a lookup by digest is one indexed read per request.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflow_api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
