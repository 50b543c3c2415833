"""Building steps: the run's first graph (``RunBuilder``) and children emitted at run time."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from . import typed
from .errors import InvalidGraph, InvalidInput, UnknownKind
from .registry import Registry, as_timeout
from .values import Dependency, RetryPolicy, StepHandle, StepSpec

MAX_ID_LENGTH = 255
MIN_PRIORITY, MAX_PRIORITY = -100, 100  # Django's task priorities
_ID_FORBIDDEN = set("\x00\r\n\t")


def check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} {value[:40]!r}... is longer than {MAX_ID_LENGTH} characters")
    if _ID_FORBIDDEN & set(value):
        raise InvalidInput(f"{what} {value!r} contains a control character")
    return value


def to_json_value(what: str, value: Any) -> Any:
    """Return ``value`` as plain JSON data, or raise ``InvalidInput`` naming ``what``."""
    try:
        return json.loads(json.dumps(typed.encode(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc


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
    registry: Registry,
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
    check_id("step id", step_id)
    if not registry.has_kind(kind):
        raise UnknownKind(f"step {step_id!r}: no executor is registered for kind {kind!r}")
    executor = registry.executor(kind)
    if dedup_key is not None:
        check_id(f"step {step_id!r}: dedup key", dedup_key)
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput(f"step {step_id!r}: metadata must map strings to strings, got {key!r}: {value!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInput(f"step {step_id!r}: priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, got {priority!r}")
    if not_before is not None and (not isinstance(not_before, datetime) or not_before.tzinfo is None):
        raise InvalidInput(f"step {step_id!r}: not_before must be an aware datetime, got {not_before!r}")
    try:
        step_timeout = as_timeout(timeout) if timeout is not None else executor.timeout
    except ValueError as exc:
        raise InvalidInput(f"step {step_id!r}: {exc}") from exc
    deps = _dependencies(depends_on)
    seen: set[str] = set()
    for dep in deps:
        if dep.step_id == step_id:
            raise InvalidGraph(f"step {step_id!r} depends on itself")
        if dep.step_id in seen:
            raise InvalidGraph(f"step {step_id!r} lists dependency {dep.step_id!r} twice")
        seen.add(dep.step_id)
    return StepSpec(
        id=step_id,
        kind=kind,
        input=to_json_value(f"input of step {step_id!r}", input),
        queue=check_id(f"step {step_id!r}: queue", queue or executor.queue or "default"),
        site=site or "",
        dedup_key=dedup_key,
        depends_on=deps,
        retry=retry or executor.retry or RetryPolicy(),
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
    for spec in steps:
        for dep in spec.depends_on:
            if dep.step_id not in ids and dep.step_id not in existing:
                raise InvalidGraph(f"step {spec.id!r} depends on missing step {dep.step_id!r}")
    # Iterative three-colour DFS over the new steps only: O(steps + edges).
    edges = {sid: [d.step_id for d in spec.depends_on if d.step_id in ids] for sid, spec in ids.items()}
    state: dict[str, int] = {}
    for root in ids:
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
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()


class RunBuilder:
    """Builds a run's first steps; the package entrypoint receives one."""

    def __init__(self, registry: Registry, *, run_id: str, package: str, name: str, metadata: Mapping[str, str]):
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
        self.name = name

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    @property
    def steps(self) -> list[StepSpec]:
        return list(self._steps.values())
