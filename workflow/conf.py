"""The only reader of ``settings.WORKFLOW``: parses it once and builds the process's runtime.

```python
WORKFLOW = {
    "WORKER_ID": "",                          # default: host:pid:random
    "MAX_WORKERS": 8,                         # executor threads per worker process
    "POLL_INTERVAL": timedelta(seconds=1),
    "LEASE_DURATION": timedelta(seconds=30),
    "HEARTBEAT_INTERVAL": None,               # default: a third of the lease
    "GRACE_PERIOD": timedelta(seconds=30),    # SIGTERM: how long running steps may finish
    "PREFETCH": 0,                            # steps claimed beyond the threads; 0: by step duration
    "QUEUES": {"io": {"MAX_WORKERS": 4, "RATE_LIMIT": {"RATE": 10, "PER": timedelta(seconds=1), "BURST": 1}}},
    "ARTIFACT_STORAGE": "artifacts",          # a STORAGES alias, or None for no external store
    "ARTIFACT_INLINE_LIMIT": 256 * 1024,
    "PROJECTION_ROOT": BASE_DIR / "projections",   # SQLite projection files; or
    "PROJECTION_DATABASE": None,              # a DATABASES alias for projections
    "RETENTION": timedelta(days=30),          # prunewf's default age
    "DATABASE": "default",
    "MAX_ABANDONED_THREADS": 4,               # threads stuck past a step timeout before the worker restarts
}
```
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from django.conf import settings

from .engine.errors import ConfigurationError
from .engine.runtime import Config, Runtime
from .engine.values import QueueConfig, RateLimitPolicy

_KNOWN = {
    "WORKER_ID", "MAX_WORKERS", "POLL_INTERVAL", "LEASE_DURATION", "HEARTBEAT_INTERVAL", "GRACE_PERIOD", "PREFETCH",
    "QUEUES", "ARTIFACT_STORAGE", "ARTIFACT_INLINE_LIMIT", "LOG_LIMIT_BYTES", "PROJECTION_ROOT",
    "PROJECTION_DATABASE", "RETENTION", "DATABASE", "MAX_ABANDONED_THREADS", "METRICS_TOKEN",
}


def workflow_settings() -> dict[str, Any]:
    raw = getattr(settings, "WORKFLOW", {}) or {}
    if not isinstance(raw, dict):
        raise ConfigurationError("settings.WORKFLOW must be a dict")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise ConfigurationError(f"settings.WORKFLOW has unknown keys: {', '.join(sorted(unknown))}")
    return raw


def _duration(name: str, value: Any, default: timedelta | None) -> timedelta | None:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    if isinstance(value, timedelta):
        return value
    raise ConfigurationError(f"settings.WORKFLOW[{name!r}] must be a timedelta or seconds, got {value!r}")


def parse_queues(raw: Any) -> dict[str, QueueConfig]:
    if not isinstance(raw, dict):
        raise ConfigurationError("settings.WORKFLOW['QUEUES'] must map queue names to dicts")
    queues = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigurationError(f"settings.WORKFLOW['QUEUES'][{name!r}] must be a dict")
        extra = set(spec) - {"MAX_WORKERS", "RATE_LIMIT"}
        if extra:
            raise ConfigurationError(f"queue {name!r} has unknown keys: {', '.join(sorted(extra))}")
        rate = spec.get("RATE_LIMIT")
        policy = None
        try:
            if rate is not None:
                policy = RateLimitPolicy(
                    rate=float(rate["RATE"]),
                    per=_duration("PER", rate.get("PER"), timedelta(seconds=1)) or timedelta(seconds=1),
                    burst=int(rate.get("BURST", 1)),
                )
            queues[name] = QueueConfig(max_workers=spec.get("MAX_WORKERS"), rate_limit=policy)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"queue {name!r} is misconfigured: {exc}") from exc
    return queues


def build_config(raw: dict[str, Any] | None = None) -> Config:
    raw = workflow_settings() if raw is None else raw
    try:
        return Config(
            worker_id=raw.get("WORKER_ID", ""),
            max_workers=int(raw.get("MAX_WORKERS", 8)),
            poll_interval=_duration("POLL_INTERVAL", raw.get("POLL_INTERVAL"), timedelta(seconds=1)),  # type: ignore[arg-type]
            lease_duration=_duration("LEASE_DURATION", raw.get("LEASE_DURATION"), timedelta(seconds=30)),  # type: ignore[arg-type]
            heartbeat_interval=_duration("HEARTBEAT_INTERVAL", raw.get("HEARTBEAT_INTERVAL"), None),
            grace_period=_duration("GRACE_PERIOD", raw.get("GRACE_PERIOD"), timedelta(seconds=30)),  # type: ignore[arg-type]
            prefetch=int(raw.get("PREFETCH", 0)),
            queues=parse_queues(raw.get("QUEUES", {})),
            artifact_inline_limit=int(raw.get("ARTIFACT_INLINE_LIMIT", 256 * 1024)),
            log_limit_bytes=int(raw.get("LOG_LIMIT_BYTES", 64 * 1024)),
            max_abandoned_threads=int(raw.get("MAX_ABANDONED_THREADS", 4)),
        )
    except ConfigurationError as exc:
        if str(exc).startswith("settings.WORKFLOW"):
            raise
        raise ConfigurationError(f"settings.WORKFLOW: {exc}", field=exc.field, problem=exc.problem) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigurationError(f"settings.WORKFLOW is invalid: {exc}") from exc


def retention() -> timedelta:
    value = _duration("RETENTION", workflow_settings().get("RETENTION"), timedelta(days=30))
    if value is None or value <= timedelta(0):
        raise ConfigurationError(f"settings.WORKFLOW['RETENTION'] must be a positive duration, got {value!r}",
                                 field="retention")
    return value


def artifact_storage_alias() -> str | None:
    """The ``STORAGES`` alias artifacts go to (None: no external store); refuses an unknown alias."""
    storages = getattr(settings, "STORAGES", {}) or {}
    default = "artifacts" if "artifacts" in storages else "default"
    alias = workflow_settings().get("ARTIFACT_STORAGE", default)
    if alias is not None and alias not in storages:
        known = ", ".join(sorted(storages)) or "none"
        raise ConfigurationError(
            f"settings.WORKFLOW['ARTIFACT_STORAGE'] is {alias!r}, which is not a settings.STORAGES alias "
            f"(defined: {known}); add it to STORAGES or set ARTIFACT_STORAGE to None",
            field="artifact_storage",
        )
    return alias


def database_aliases() -> None:
    """Refuse ``DATABASE`` or ``PROJECTION_DATABASE`` naming an alias ``settings.DATABASES`` lacks."""
    raw = workflow_settings()
    for key in ("DATABASE", "PROJECTION_DATABASE"):
        alias = raw.get(key)
        if alias and alias not in settings.DATABASES:
            raise ConfigurationError(
                f"settings.WORKFLOW[{key!r}] is {alias!r}, which is not a settings.DATABASES alias", field=key.lower()
            )


def artifact_store() -> Any:
    from django.core.files.storage import storages

    from .stores.artifacts import StorageArtifactStore

    alias = artifact_storage_alias()
    if alias is None:
        return None
    return StorageArtifactStore(storages[alias])


def projection_store() -> Any:
    from .stores.projections import DjangoProjectionStore, SQLiteProjectionStore

    raw = workflow_settings()
    if raw.get("PROJECTION_DATABASE"):
        return DjangoProjectionStore(raw["PROJECTION_DATABASE"])
    root = raw.get("PROJECTION_ROOT")
    return SQLiteProjectionStore(root) if root else None


def build_runtime(**overrides: Any) -> Runtime:
    """A new runtime from settings; ``overrides`` replace Config fields (tests, commands)."""
    from dataclasses import replace

    from .engine.registry import registry
    from .stores.db import DjangoStore

    config = build_config()
    if overrides:
        config = replace(config, **overrides)
    return Runtime(
        config,
        store=DjangoStore(workflow_settings().get("DATABASE", "default")),
        registry=registry,
        artifact_store=artifact_store(),
        projection_store=projection_store(),
    )


_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime()
        return _runtime


def reset_runtime() -> None:
    """Forget the process's runtime (tests that change settings.WORKFLOW call this)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
