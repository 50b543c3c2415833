"""``StepContext``: what an executor sees, and what it accumulates for the commit."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

from . import validation
from .builder import KindLookup, build_spec, check_id, check_metadata, to_json_value
from .content_types import check_content_type
from .errors import InvalidInput, permanent
from .values import (
    ArtifactRef,
    ArtifactWrite,
    ClaimedStep,
    LeaseInfo,
    RecordWrite,
    RunInfo,
    StepHandle,
    StepResult,
    StepSpec,
)

if TYPE_CHECKING:
    from .store import ArtifactStore, Projection

_NO_RESULT = object()


class CancelSignal(Protocol):
    """What an attempt polls to learn that its run was canceled or its lease lost."""

    def is_set(self) -> bool: ...


class StepServices(Protocol):
    """What a step's context uses of the engine, and no more (``runner.Services`` provides it)."""

    @property
    def kinds(self) -> KindLookup: ...
    @property
    def artifact_store(self) -> ArtifactStore | None: ...
    @property
    def artifact_inline_limit(self) -> int: ...
    def run_info(self, run_id: str) -> RunInfo: ...
    def step_result(self, run_id: str, step_id: str) -> StepResult | None: ...
    def projection(self, name: str) -> Projection: ...


class StepContext:
    """The executor-facing view of one attempt of a durable step.

    Results, children, records and artifacts are kept here and committed with the step's
    state change in one transaction, or not at all.
    """

    def __init__(
        self, services: StepServices, claimed: ClaimedStep, *, cancelled: CancelSignal, now: datetime, input: Any
    ) -> None:
        self._services = services
        self._claimed = claimed
        self._cancelled = cancelled
        self._now = now
        self._input = input
        self._result: Any = _NO_RESULT
        self.children: list[StepSpec] = []
        self._child_ids: set[str] = set()
        self._child_by_dedup: dict[str, str] = {}
        self.records: list[RecordWrite] = []
        self.artifacts: list[ArtifactWrite] = []
        self._workflow: RunInfo | None = None

    # -- what the step is ------------------------------------------------------------
    @property
    def input(self) -> Any:
        """The step's input, decoded into the executor's declared type when it has one."""
        return self._input

    @property
    def raw_input(self) -> Any:
        return self._claimed.input

    @property
    def step(self) -> ClaimedStep:
        return self._claimed

    @property
    def lease(self) -> LeaseInfo:
        return self._claimed.lease

    @property
    def now(self) -> datetime:
        """When this attempt started executing."""
        return self._now

    @property
    def attempt(self) -> int:
        return self._claimed.attempt

    @property
    def workflow(self) -> RunInfo:
        if self._workflow is None:
            self._workflow = self._services.run_info(self._claimed.run_id)
        return self._workflow

    @property
    def cancelled(self) -> bool:
        """True once the run was canceled or this attempt's lease was lost: stop early if you can."""
        return self._cancelled.is_set()

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"workflow.step.{self._claimed.kind}")

    # -- what the step produces ----------------------------------------------------------
    def result(self, data: Any) -> None:
        """Set the step's result (returning a value from the executor does the same)."""
        self._result = to_json_value("result", data, field="result", step=self._claimed.step_id)

    @property
    def result_data(self) -> Any:
        return None if self._result is _NO_RESULT else self._result

    def emit(self, id: str | None = None, input: Any = None, *, kind: str, **options: Any) -> StepHandle:
        """Add a child step, persisted only if this attempt commits.

        Without an id the child gets ``<this step>:emit:NNN``; its parent is this step and it
        inherits this step's site unless given one.
        """
        step_id = id or f"{self._claimed.step_id}:emit:{len(self.children) + 1:03d}"
        options.setdefault("site", self._claimed.site)
        options.setdefault("parent", self._claimed.step_id)
        spec = build_spec(self._services.kinds, step_id, input, kind=kind, **options)
        if spec.dedup_key is not None and spec.dedup_key in self._child_by_dedup:
            # The same key twice in one attempt is the same child, as for a key already in the run.
            return StepHandle(self._child_by_dedup[spec.dedup_key])
        if spec.id in self._child_ids:
            raise permanent("invalid_graph", f"step {self._claimed.step_id!r} emitted {spec.id!r} twice")
        self._child_ids.add(spec.id)
        if spec.dedup_key is not None:
            self._child_by_dedup[spec.dedup_key] = spec.id
        self.children.append(spec)
        return StepHandle(spec.id)

    def record(self, collection: str, key: str, data: Any) -> None:
        """Upsert ``data`` under ``key`` in ``collection`` when this step commits."""
        step_id = self._claimed.step_id
        check_id("record collection", collection, field="record.collection", step=step_id,
                 max_length=validation.MAX_RECORD_COLLECTION_LENGTH)
        check_id("record key", key, field="record.key", step=step_id, max_length=validation.MAX_RECORD_KEY_LENGTH)
        data = to_json_value(f"record {collection}/{key}", data, field="record.data", step=step_id)
        self.records.append(RecordWrite(collection=collection, key=key, data=data))

    def artifact(
        self,
        name: str,
        content_type: str,
        body: bytes | str,
        *,
        kind: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Keep a small artifact inline with the step's commit; returns its id."""
        content_type = _checked_content_type(content_type)
        metadata = self._check_artifact(name, content_type, kind, metadata)
        data = body.encode() if isinstance(body, str) else bytes(body)
        limit = self._services.artifact_inline_limit
        if len(data) > limit:
            raise permanent(
                "artifact_too_large",
                f"artifact {name!r} is {len(data):,} bytes, over the inline limit of {limit:,}; "
                "use step.store_artifact() for large bodies",
            )
        write = ArtifactWrite(
            id=uuid.uuid4().hex,
            name=name,
            kind=kind or _kind_of(content_type),
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            body=data,
            metadata=dict(metadata or {}),
        )
        self.artifacts.append(write)
        return write.id

    def store_artifact(
        self,
        name: str,
        content_type: str,
        body: bytes | IO[bytes],
        *,
        kind: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> ArtifactRef:
        """Stream ``body`` into the artifact store now; its reference row commits with the step."""
        content_type = _checked_content_type(content_type)
        metadata = self._check_artifact(name, content_type, kind, metadata)
        store = self._services.artifact_store
        if store is None:
            raise permanent("no_artifact_store", "no artifact store is configured (settings.WORKFLOW['ARTIFACT_STORAGE'])")
        artifact_id = uuid.uuid4().hex
        key, size, digest = store.put(f"{artifact_id[:2]}/{artifact_id}", content_type, body)
        write = ArtifactWrite(
            id=artifact_id,
            name=name,
            kind=kind or _kind_of(content_type),
            content_type=content_type,
            size=size,
            sha256=digest,
            storage_key=key,
            metadata=dict(metadata or {}),
        )
        self.artifacts.append(write)
        return ArtifactRef(
            id=artifact_id,
            uri=store.uri(key),
            name=name,
            kind=write.kind,
            content_type=content_type,
            size=size,
            sha256=digest,
            metadata=write.metadata,
        )

    def _check_artifact(
        self, name: str, content_type: str, kind: str, metadata: Mapping[str, str] | None
    ) -> dict[str, str]:
        step_id = self._claimed.step_id
        check_id("artifact name", name, field="artifact.name", step=step_id,
                 max_length=validation.MAX_ARTIFACT_NAME_LENGTH)
        validation.check_text(content_type, label="artifact content type", field="artifact.content_type",
                              step=step_id, max_length=validation.MAX_CONTENT_TYPE_LENGTH)
        if kind:
            validation.check_text(kind, label="artifact kind", field="artifact.kind", step=step_id,
                                  max_length=validation.MAX_ARTIFACT_KIND_LENGTH)
        return check_metadata("artifact metadata", metadata, step=step_id)

    # -- what other steps produced ----------------------------------------------------------
    def dependency_result(self, step_id: str) -> StepResult | None:
        """The result of another step of this run (None if it does not exist)."""
        return self._services.step_result(self._claimed.run_id, step_id)

    def dependency_data(self, step_id: str, type: Any = None) -> Any:
        """The data another step of this run returned, decoded into ``type`` if given."""
        result = self.dependency_result(step_id)
        if result is None:
            raise permanent("missing_dependency", f"step {step_id!r} does not exist in run {self._claimed.run_id!r}")
        if type is None:
            return result.data
        from . import typed

        return typed.decode(type, result.data)

    def projection(self, name: str) -> Projection:
        return self._services.projection(name)


def _checked_content_type(content_type: Any) -> str:
    try:
        return check_content_type(content_type)
    except InvalidInput as exc:
        raise permanent("invalid_content_type", str(exc)) from exc


def _kind_of(content_type: str) -> str:
    base = content_type.split(";")[0].strip().lower()
    if base == "application/json" or base.endswith("+json"):
        return "json"
    if base == "text/html":
        return "html"
    if base == "text/csv":
        return "csv"
    if base.startswith("text/") or base in ("application/xml", "application/javascript"):
        return "text"
    if base.startswith("image/"):
        return "image"
    return "binary"


# -- log capture ----------------------------------------------------------------------------
class LogBuffer:
    """The log lines of one attempt, bounded so a chatty step cannot exhaust memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.lines: list[str] = []
        self.size = 0
        self.dropped = 0

    def add(self, line: str) -> None:
        if self.size + len(line) > self.max_bytes:
            self.dropped += 1
            return
        self.lines.append(line)
        self.size += len(line) + 1

    def text(self) -> str:
        tail = f"\n... {self.dropped} more lines dropped (log limit {self.max_bytes:,} bytes)" if self.dropped else ""
        return "\n".join(self.lines) + tail


current_log: contextvars.ContextVar[LogBuffer | None] = contextvars.ContextVar("workflow_step_log", default=None)


class StepLogHandler(logging.Handler):
    """Copies records logged while an executor runs into that attempt's ``LogBuffer``."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        buffer = current_log.get()
        if buffer is None or getattr(record, "_workflow_captured", False):
            return
        record._workflow_captured = True
        try:
            buffer.add(self.format(record))
        except Exception:  # a broken record must not fail the step
            self.handleError(record)


_handler_lock = threading.Lock()
_handler: StepLogHandler | None = None


def install_log_capture() -> None:
    """Attach the capture handler to the root and ``workflow`` loggers, once per process."""
    global _handler
    with _handler_lock:
        if _handler is not None:
            return
        _handler = StepLogHandler()
        logging.getLogger().addHandler(_handler)
        logging.getLogger("workflow").addHandler(_handler)
        step_logger = logging.getLogger("workflow.step")
        if step_logger.level == logging.NOTSET:
            step_logger.setLevel(logging.INFO)
