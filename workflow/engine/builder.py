"""Building steps: the run's first graph (``RunBuilder``) and children emitted at run time."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from . import typed, validation
from .errors import InvalidGraph, InvalidInput, UnknownKind
from .validation import MAX_DEDUP_KEY_LENGTH, MAX_SITE_LENGTH, MAX_STEP_ID_LENGTH, as_timeout
from .values import Dependency, RetryPolicy, StepHandle, StepSpec, checked_step_spec

MAX_ID_LENGTH = MAX_STEP_ID_LENGTH
MIN_PRIORITY, MAX_PRIORITY = -100, 100  # Django's task priorities
# Whole numbers up to this size print in far fewer digits than Python's int-to-text limit (4,300).
_MAX_FAST_INT_BITS = 1024
_DEFAULT_RETRY = RetryPolicy()  # frozen: one instance serves every step that names no policy


class KindDefaults(Protocol):
    """A kind's defaults for its steps (``registry.Executor`` has them)."""

    @property
    def queue(self) -> str | None: ...
    @property
    def retry(self) -> RetryPolicy | None: ...
    @property
    def timeout(self) -> timedelta | None: ...


class KindLookup(Protocol):
    """Which kinds exist and their defaults: what building a step needs of ``registry.Registry``.

    A protocol rather than the registry itself, so the registry can name the builder (its
    entrypoints receive a ``RunBuilder``) without an import circle.
    """

    def has_kind(self, kind: str) -> bool: ...
    def executor(self, kind: str) -> KindDefaults: ...


def check_id(
    what: str, value: str, *, field: str | None = None, step: str | None = None, max_length: int = MAX_ID_LENGTH
) -> str:
    """Check an id or key named ``what`` in messages; see ``validation.check_id``."""
    return validation.check_id(value, label=what, field=field or what.replace(" ", "_"), step=step,
                               max_length=max_length)


def to_json_value(what: str, value: Any, *, field: str | None = None, step: str | None = None) -> Any:
    """Return ``value`` as plain JSON data the databases accept, or raise ``InvalidInput`` naming ``what``."""
    # Scalars (most children's inputs are None, an id or a number) come back from the JSON round
    # trip unchanged, so they skip it; anything the round trip or the checks could refuse takes it.
    kind = type(value)
    if (
        value is None
        or kind is bool
        or (kind is int and value.bit_length() <= _MAX_FAST_INT_BITS)
        or (kind is str and not validation.has_bad_json_char(value))
        or (kind is float and math.isfinite(value))
    ):
        return value
    field = field or what.split(" ")[0]
    where = f"step {step!r}: " if step else ""
    try:
        text = json.dumps(typed.encode(value), allow_nan=False)
        data = json.loads(text)
    except RecursionError:
        raise InvalidInput(
            f"{where}{what} is nested deeper than {validation.MAX_JSON_DEPTH} levels (or refers to itself)",
            field=field, step=step,
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}{what} is not JSON-serialisable: {exc}", field=field, step=step) from exc
    return validation.check_json_text(text, data, label=what, field=field, step=step)


def check_metadata(what: str, metadata: Mapping[str, str] | None, *, step: str | None = None) -> dict[str, str]:
    """Return ``metadata`` as a dict of strings to strings the databases accept."""
    if not metadata:
        return {}
    meta = dict(metadata)
    where = f"step {step!r}: " if step else ""
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput(f"{where}{what} must map strings to strings, got {key!r}: {value!r}",
                               field="metadata", step=step)
    if meta:
        validation.check_json(meta, label=what, field="metadata", step=step)
    return meta


def _dependencies(depends_on: Dependency | StepHandle | str | Iterable[Any] | None) -> tuple[Dependency, ...]:
    if depends_on is None:
        return ()
    if isinstance(depends_on, (Dependency, StepHandle, str)):
        depends_on = [depends_on]
    deps: list[Dependency] = []
    for item in depends_on:
        if isinstance(item, Dependency):
            deps.append(item)
        elif isinstance(item, StepHandle):
            deps.append(Dependency(step_id=item.id))
        elif isinstance(item, str):
            deps.append(Dependency(step_id=item))
        else:
            raise InvalidInput(f"depends_on takes handles, step ids or Dependency values, got {item!r}")
    return tuple(deps)


def build_spec(
    registry: KindLookup,
    step_id: str,
    input: Any,
    *,
    kind: str,
    queue: str | None = None,
    dedup_key: str | None = None,
    depends_on: Any = None,
    retry: RetryPolicy | None = None,
    metadata: Mapping[str, str] | None = None,
    site: str = "",
    parent: StepHandle | str | None = None,
    priority: int = 0,
    not_before: datetime | None = None,
    timeout: timedelta | float | None = None,
) -> StepSpec:
    """Check one step's options and return its spec; the one path for ``step`` and ``emit``."""
    check_id("step id", step_id, field="id", step=step_id if isinstance(step_id, str) else None)
    if not registry.has_kind(kind):
        raise UnknownKind(f"step {step_id!r}: no executor is registered for kind {kind!r}")
    executor = registry.executor(kind)
    if dedup_key is not None:
        check_id("dedup key", dedup_key, field="dedup_key", step=step_id, max_length=MAX_DEDUP_KEY_LENGTH)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidInput(f"step {step_id!r}: retry must be a RetryPolicy, got {type(retry).__name__}",
                           field="retry", step=step_id)
    if site:
        validation.check_text(site, label="site", field="site", step=step_id, max_length=MAX_SITE_LENGTH)
    if parent is not None and not isinstance(parent, StepHandle):
        check_id("parent", parent, field="parent", step=step_id)
    meta = check_metadata("metadata", metadata, step=step_id)
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInput(f"step {step_id!r}: priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, "
                           f"got {priority!r}", field="priority", step=step_id)
    if not_before is not None and (not isinstance(not_before, datetime) or not_before.tzinfo is None):
        raise InvalidInput(f"step {step_id!r}: not_before must be an aware datetime, got {not_before!r}",
                           field="not_before", step=step_id)
    try:
        step_timeout = as_timeout(timeout) if timeout is not None else executor.timeout
    except ValueError as exc:
        raise InvalidInput(f"step {step_id!r}: {exc}", field="timeout", step=step_id) from exc
    # One edge per step: handles deduplicated to the same step (same dedup key) may be listed
    # twice, and an edge is required if any listing of it is.
    merged: dict[str, Dependency] = {}
    for dep in _dependencies(depends_on):
        check_id("dependency", dep.step_id, field="depends_on", step=step_id)
        if dep.step_id == step_id:
            raise InvalidGraph(f"step {step_id!r} depends on itself")
        seen = merged.get(dep.step_id)
        if seen is None or (dep.required and not seen.required):
            merged[dep.step_id] = dep
    deps = tuple(merged.values())
    return checked_step_spec(
        id=step_id,
        kind=kind,
        input=to_json_value("input", input, field="input", step=step_id),
        queue=validation.check_queue_name(queue or executor.queue or "default", step=step_id),
        site=site or "",
        dedup_key=dedup_key,
        depends_on=deps,
        retry=retry or executor.retry or _DEFAULT_RETRY,
        metadata=meta,
        parent_id=parent.id if isinstance(parent, StepHandle) else parent,
        priority=priority,
        not_before=not_before,
        timeout=step_timeout,
    )


def validate_graph(steps: Sequence[StepSpec], *, existing: Collection[str] = ()) -> None:
    """Reject duplicate ids, dependencies on missing steps and cycles, naming the culprit.

    ``existing`` holds ids already in the run (for emitted children); edges into them cannot
    close a cycle, since the existing graph was acyclic and has no edges to the new steps.
    """
    ids: dict[str, StepSpec] = {}
    for spec in steps:
        if spec.id in ids or spec.id in existing:
            raise InvalidGraph(f"duplicate step id {spec.id!r}")
        ids[spec.id] = spec
    # Only steps with edges into the new steps can lie on a cycle; the rest (most emitted
    # children) need no walk, and a walk treats them as leaves.
    edges: dict[str, list[str]] = {}
    for spec in steps:
        if not spec.depends_on:
            continue
        inner = []
        for dep in spec.depends_on:
            if dep.step_id in ids:
                inner.append(dep.step_id)
            elif dep.step_id not in existing:
                raise InvalidGraph(f"step {spec.id!r} depends on missing step {dep.step_id!r}")
        if inner:
            edges[spec.id] = inner
    # Iterative three-colour DFS over the new steps only: O(steps + edges).
    state: dict[str, int] = {}
    for root in edges:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            deps = edges[node]
            if index < len(deps):
                stack.append((node, index + 1))
                nxt = deps[index]
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt) :] + [nxt]
                    raise InvalidGraph("dependency cycle: " + " -> ".join(cycle))
                if nxt in edges and not state.get(nxt):  # a step without edges is a leaf: done
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()


def check_run_name(name: str) -> str:
    return validation.check_text(name, label="run name", field="name", max_length=validation.MAX_RUN_NAME_LENGTH)


class RunBuilder:
    """Builds a run's first steps; the package entrypoint receives one."""

    def __init__(self, registry: KindLookup, *, run_id: str, package: str, name: str, metadata: Mapping[str, str]):
        self._registry = registry
        self.run_id = run_id
        self.package = package
        self.name = name
        self.metadata: dict[str, str] = dict(metadata)
        self._steps: dict[str, StepSpec] = {}
        self._dedup: dict[str, str] = {}

    def step(self, id: str, input: Any = None, *, kind: str, **options: Any) -> StepHandle:
        """Add a step; options are those of ``StepContext.emit`` (queue, depends_on, retry, ...)."""
        spec = build_spec(self._registry, id, input, kind=kind, **options)
        if spec.dedup_key is not None and spec.dedup_key in self._dedup:
            return StepHandle(self._dedup[spec.dedup_key])
        if spec.id in self._steps:
            raise InvalidGraph(f"duplicate step id {spec.id!r}")
        self._steps[spec.id] = spec
        if spec.dedup_key is not None:
            self._dedup[spec.dedup_key] = spec.id
        return StepHandle(spec.id)

    def set_name(self, name: str) -> None:
        self.name = check_run_name(name)

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value
        check_metadata("run metadata", self.metadata)

    @property
    def steps(self) -> list[StepSpec]:
        return list(self._steps.values())
