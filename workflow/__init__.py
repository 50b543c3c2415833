"""Durable workflows for Django: step graphs in your database, workers without a broker.

Import the public API from here; every other module is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine.builder import RunBuilder
from .engine.context import StepContext
from .engine.errors import (
    ConfigurationError,
    InvalidGraph,
    InvalidInput,
    InvalidState,
    NotFound,
    RunConflict,
    StepError,
    StoreUnavailable,
    UnknownKind,
    UnknownPackage,
    WorkflowError,
    permanent,
    retryable,
)
from .engine.registry import Executor, Package, Registry, registry
from .engine.runtime import Config, Runtime, Workers
from .engine.values import (
    ArtifactRef,
    BackoffKind,
    CycleResult,
    Dependency,
    LeaseInfo,
    QueueConfig,
    RateLimitPolicy,
    RetryPolicy,
    RunHandle,
    RunInfo,
    RunState,
    StepHandle,
    StepResult,
    StepState,
    after,
    require,
)

if TYPE_CHECKING:
    from .stores.artifacts import FileArtifactStore, StorageArtifactStore
    from .stores.projections import DjangoProjectionStore, SQLiteProjectionStore


def runtime() -> Runtime:
    """The runtime built from ``settings.WORKFLOW`` (one per process)."""
    from .conf import runtime as _runtime

    return _runtime()


def __getattr__(name: str) -> object:
    # Stores that need Django's settings load on first use, so importing ``workflow`` stays cheap.
    if name in ("FileArtifactStore", "StorageArtifactStore"):
        from .stores import artifacts

        return getattr(artifacts, name)
    if name in ("SQLiteProjectionStore", "DjangoProjectionStore"):
        from .stores import projections

        return getattr(projections, name)
    raise AttributeError(f"module 'workflow' has no attribute {name!r}")


__all__ = [
    "ArtifactRef",
    "BackoffKind",
    "Config",
    "ConfigurationError",
    "CycleResult",
    "Dependency",
    "DjangoProjectionStore",
    "Executor",
    "FileArtifactStore",
    "InvalidGraph",
    "InvalidInput",
    "InvalidState",
    "LeaseInfo",
    "NotFound",
    "Package",
    "QueueConfig",
    "RateLimitPolicy",
    "Registry",
    "RetryPolicy",
    "RunBuilder",
    "RunConflict",
    "RunHandle",
    "RunInfo",
    "RunState",
    "Runtime",
    "SQLiteProjectionStore",
    "StepContext",
    "StepError",
    "StepHandle",
    "StepResult",
    "StepState",
    "StorageArtifactStore",
    "StoreUnavailable",
    "UnknownKind",
    "UnknownPackage",
    "Workers",
    "WorkflowError",
    "after",
    "permanent",
    "registry",
    "require",
    "retryable",
    "runtime",
]
