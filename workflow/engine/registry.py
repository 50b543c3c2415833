"""Packages, executors and the registry that finds them by name and kind."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import typed, validation
from .errors import ConfigurationError, InvalidInput, UnknownKind, UnknownPackage
from .schedules import ScheduleSpec
from .validation import as_timeout
from .values import RetryPolicy

if TYPE_CHECKING:
    from .builder import RunBuilder
    from .context import StepContext

EntrypointFunc = Callable[..., None]
ExecutorFunc = Callable[..., Any]


def _input_type(func: Callable[..., Any], what: str) -> Any:
    """The annotation of ``func``'s second parameter (its input), ``Any`` if unannotated, None if absent."""
    if len(inspect.signature(func).parameters) < 2:
        return None
    try:
        return typed.annotation_of(func, 1) or Any
    except NameError as exc:
        raise ConfigurationError(f"cannot resolve the input annotation of {what}: {exc}; define the type at module level") from exc


def _check_definition(check: Callable[[], Any]) -> None:
    """Run a value check on a package definition: a bad one is the site's configuration error."""
    try:
        check()
    except InvalidInput as exc:
        raise ConfigurationError(str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Executor:
    """The code for one kind. ``input_type`` is the annotation of its second parameter, if any."""

    kind: str
    func: ExecutorFunc
    input_type: Any = None
    package: str | None = None
    queue: str | None = None  # default queue for steps of this kind
    retry: RetryPolicy | None = None  # default retry policy for steps of this kind
    timeout: timedelta | None = None  # default attempt timeout for steps of this kind

    @classmethod
    def from_function(cls, kind: str, func: ExecutorFunc, **defaults: Any) -> Executor:
        if not kind:
            raise ConfigurationError("an executor needs a kind")
        _check_definition(
            lambda: validation.check_text(kind, label="executor kind", field="kind",
                                          max_length=validation.MAX_KIND_LENGTH)
        )
        if defaults.get("queue") is not None:
            _check_definition(lambda: validation.check_queue_name(defaults["queue"], label=f"kind {kind!r}: queue"))
        if defaults.get("retry") is not None and not isinstance(defaults["retry"], RetryPolicy):
            raise ConfigurationError(f"kind {kind!r}: retry must be a RetryPolicy, got {type(defaults['retry']).__name__}")
        return cls(kind=kind, func=func, input_type=_input_type(func, f"executor {kind!r}"), **defaults)

    @property
    def is_typed(self) -> bool:
        return self.input_type is not None

    def decode_input(self, raw: Any) -> Any:
        """Decode the step's JSON input; an ``InvalidInput`` names the field that failed."""
        try:
            return typed.decode(self.input_type, raw)
        except typed.InputError as exc:
            raise InvalidInput(f"input of kind {self.kind!r} is invalid: {exc}") from exc

    def __call__(self, step: StepContext) -> Any:
        if self.is_typed:
            return self.func(step, step.input)
        return self.func(step)


class Package:
    """A named workflow definition whose entrypoint builds a run's first steps.

    Declare one at module level in an app's ``workflows.py``; the app registry finds it.
    """

    def __init__(self, name: str, *, display_name: str = "", description: str = "") -> None:
        if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ConfigurationError(f"package name {name!r} must be letters, digits, '_', '-' or '.'")
        if len(name) > validation.MAX_PACKAGE_LENGTH:
            raise ConfigurationError(
                f"package name {name[:40]!r}... is longer than {validation.MAX_PACKAGE_LENGTH} characters"
            )
        self.name = name
        self.display_name = display_name or name
        self.description = description
        self.input_type: Any = None
        self._entrypoint: EntrypointFunc | None = None
        self.executors: dict[str, Executor] = {}
        self.schedules: list[ScheduleSpec] = []

    def __repr__(self) -> str:
        return f"Package({self.name!r})"

    def entrypoint(self, func: EntrypointFunc) -> EntrypointFunc:
        """Register ``func(run, params)`` as the function that builds a run's first steps."""
        self._entrypoint = func
        self.input_type = _input_type(func, f"the entrypoint of package {self.name!r}")
        return func

    def executor(
        self, kind: str, *, queue: str | None = None, retry: RetryPolicy | None = None,
        timeout: timedelta | float | None = None,
    ) -> Callable[[ExecutorFunc], ExecutorFunc]:
        """Register the decorated function as the executor for ``kind``.

        ``timeout`` (a timedelta or seconds) is the default attempt timeout of its steps.
        """
        try:
            default_timeout = as_timeout(timeout)
        except ValueError as exc:
            raise ConfigurationError(f"executor {kind!r}: {exc}") from exc

        def register(func: ExecutorFunc) -> ExecutorFunc:
            if kind in self.executors:
                raise ConfigurationError(f"package {self.name!r} already has an executor for kind {kind!r}")
            self.executors[kind] = Executor.from_function(kind, func, package=self.name, queue=queue, retry=retry,
                                                          timeout=default_timeout)
            return func

        return register

    def schedule(self, name: str, *, cron: str, input: Any = None, timezone: str = "UTC", catch_up: str = "latest",
                 overlap: str = "skip", enabled: bool = True, **options: Any) -> ScheduleSpec:
        """Start a run of this package on every tick of ``cron`` (in ``timezone``).

        Checked at start-up by a system check (cron, time zone, policies, input against the
        entrypoint's type, duplicate names), so a mistake stops ``runworkers`` instead of misfiring.
        """
        spec = ScheduleSpec(name=name, package=self.name, cron=cron, input=input, timezone=timezone,
                            catch_up=catch_up, overlap=overlap, enabled=enabled, **options)
        self.schedules.append(spec)
        return spec

    def decode_input(self, raw: Any) -> Any:
        if self.input_type is None:
            return raw
        try:
            return typed.decode(self.input_type, raw)
        except typed.InputError as exc:
            raise InvalidInput(f"input of package {self.name!r} is invalid: {exc}") from exc

    def start(self, run: RunBuilder, raw_input: Any) -> None:
        if self._entrypoint is None:
            raise ConfigurationError(f"package {self.name!r} has no entrypoint")
        if self.input_type is None:
            self._entrypoint(run)
        else:
            self._entrypoint(run, self.decode_input(raw_input))

    def input_schema(self) -> dict[str, Any]:
        return typed.json_schema(self.input_type) if self.input_type not in (None, Any) else {}


class Registry:
    """Packages by name and executors by kind. Tests build their own; the site uses ``registry``."""

    def __init__(self, packages: Iterable[Package] = ()) -> None:
        self._packages: dict[str, Package] = {}
        self._executors: dict[str, Executor] = {}
        for package in packages:
            self.register(package)

    def register(self, package: Package) -> Package:
        existing = self._packages.get(package.name)
        if existing is package:
            return package
        if existing is not None:
            raise ConfigurationError(f"a different package named {package.name!r} is already registered")
        for kind in package.executors:
            other = self._executors.get(kind)
            if other is not None and other.package != package.name:
                raise ConfigurationError(f"kind {kind!r} is registered by packages {other.package!r} and {package.name!r}")
        self._packages[package.name] = package
        self._executors.update(package.executors)
        return package

    def register_executor(self, kind: str, func: ExecutorFunc, **defaults: Any) -> Executor:
        if kind in self._executors:
            raise ConfigurationError(f"kind {kind!r} is already registered")
        executor = Executor.from_function(kind, func, **defaults)
        self._executors[kind] = executor
        return executor

    def package(self, name: str) -> Package:
        try:
            return self._packages[name]
        except KeyError:
            known = ", ".join(sorted(self._packages)) or "none"
            raise UnknownPackage(f"unknown package {name!r} (registered: {known})") from None

    def executor(self, kind: str) -> Executor:
        try:
            return self._executors[kind]
        except KeyError:
            raise UnknownKind(f"no executor is registered for kind {kind!r}") from None

    def has_kind(self, kind: str) -> bool:
        return kind in self._executors

    def packages(self) -> list[Package]:
        return sorted(self._packages.values(), key=lambda p: p.name)

    def kinds(self) -> list[str]:
        return sorted(self._executors)

    def executors(self) -> list[Executor]:
        return [self._executors[k] for k in self.kinds()]

    def schedules(self) -> list[ScheduleSpec]:
        return [spec for package in self.packages() for spec in package.schedules]

    def discover(self, module: Any) -> list[Package]:
        """Register every ``Package`` defined at the top level of ``module`` (a ``workflows.py``)."""
        found = [v for v in vars(module).values() if isinstance(v, Package)]
        for package in found:
            self.register(package)
        return found


registry = Registry()


def schedule_problems(registry: Registry, specs: Iterable[ScheduleSpec] | None = None) -> list[str]:
    """Every reason a declared schedule cannot run, each naming the schedule; empty when all is well.

    Checks the cron expression, time zone and policies, that the package is registered and has an
    entrypoint, that the input decodes to the entrypoint's type, and that names are unique per package.
    """
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for spec in registry.schedules() if specs is None else specs:
        where = f"schedule {spec.name!r} of package {spec.package!r}"
        if (spec.package, spec.name) in seen:
            problems.append(f"{where} is declared twice; schedule names must be unique in a package")
            continue
        seen.add((spec.package, spec.name))
        try:
            spec.validate()
            package = registry.package(spec.package)
            if package._entrypoint is None:
                raise ConfigurationError(f"package {spec.package!r} has no entrypoint")
            try:
                json.dumps(typed.encode(spec.input), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"the input is not JSON-serialisable: {exc}") from exc
            package.decode_input(spec.input)
        except UnknownPackage as exc:
            problems.append(f"{where}: {exc}")
        except InvalidInput as exc:
            problems.append(f"{where}: {exc}")
        except ConfigurationError as exc:
            message = str(exc)
            problems.append(message if message.startswith("schedule ") else f"{where}: {message}")
    return problems
