"""Errors: ``StepError`` for executors, ``WorkflowError`` subclasses for callers of the engine."""

from __future__ import annotations

import traceback
from typing import Any


class StepError(Exception):
    """A step failure with a stable, operator-facing ``code``.

    Raise it (built by ``permanent`` or ``retryable``) from an executor. Any other exception is
    retryable with code ``unhandled_exception`` and its traceback in ``details``.
    """

    def __init__(
        self, code: str, message: str, *, retryable: bool, details: Any = None, cause: BaseException | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = details
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause


def _error(code: str, err: BaseException | str | None, retryable: bool, details: Any) -> StepError:
    if not code:
        raise ValueError("a step error needs a code")
    if isinstance(err, BaseException):
        message = str(err) or type(err).__name__
        return StepError(code, message, retryable=retryable, details=details, cause=err)
    return StepError(code, err or code, retryable=retryable, details=details)


def permanent(code: str, err: BaseException | str | None = None, *, details: Any = None) -> StepError:
    """Build a failure that must not be retried automatically (an operator still can)."""
    return _error(code, err, False, details)


def retryable(code: str, err: BaseException | str | None = None, *, details: Any = None) -> StepError:
    """Build a failure to retry under the step's ``RetryPolicy``."""
    return _error(code, err, True, details)


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class WorkflowError(Exception):
    """Base of every error the engine raises to its callers; nothing was changed."""


class UnknownPackage(WorkflowError, LookupError):
    pass


class UnknownKind(WorkflowError, LookupError):
    pass


class InvalidInput(WorkflowError, ValueError):
    """A value a caller passed is refused; ``step`` and ``field`` say where, for a 4xx or a form error.

    ``field`` is a dotted name (``retry.backoff``, ``queue``, ``input``); ``step`` the step id, if any.
    """

    def __init__(self, message: str, *, field: str | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.step = step


class InvalidGraph(WorkflowError, ValueError):
    """A duplicate step id, a dependency on a missing step, or a cycle."""


class RunConflict(WorkflowError):
    """``start_run`` with an existing run id but another package or input."""


class NotFound(WorkflowError, LookupError):
    pass


class InvalidState(WorkflowError):
    """The action does not apply in the current state (retry a step that is not failed, ...)."""


class ConfigurationError(WorkflowError):
    """A bad setting or option; ``field`` names the ``Config`` field, ``problem`` says what is wrong with it.

    ``runworkers`` turns ``field`` into its flag name, so flags and settings share one validation.
    """

    def __init__(self, message: str, *, field: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem or message


class StoreUnavailable(WorkflowError):
    """The database could not be reached; the caller backs off and tries again, losing nothing."""


class StoreConflict(StoreUnavailable):
    """The database rolled the transaction back to break a deadlock or a serialization race.

    The connection is fine: the caller retries at once (after a short jitter), losing nothing.
    ``kind`` says which: ``deadlock``, or ``dedup`` (another worker's commit emitted the same
    dedup key first; the retry finds its step and returns that one).
    """

    def __init__(self, message: str, *, kind: str = "deadlock") -> None:
        super().__init__(message)
        self.kind = kind
