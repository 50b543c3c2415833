"""``manage.py runworkers``: claim and run steps until stopped (no broker, no Celery)."""

from __future__ import annotations

import argparse
import logging
import math
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from workflow.conf import runtime
from workflow.engine import validation
from workflow.engine.errors import ConfigurationError, InvalidInput, StoreUnavailable
from workflow.engine.runtime import Runtime, Workers
from workflow.prom import start_metrics_server, worker_metrics
from workflow.shutdown import on_stop

log = logging.getLogger("workflow.worker")

# Flags that override a Config field: validated by Config itself, as settings are.
_CONFIG_FLAGS = {
    "max_workers": "--max-workers",
    "poll_interval": "--poll-interval",
    "lease_duration": "--lease-duration",
    "grace_period": "--grace-period",
    "worker_id": "--worker-id",
}
_SECONDS = ("poll_interval", "lease_duration", "grace_period")
START_RETRY_MAX_SECONDS = 30.0


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds (the range is Config's to check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def _usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=2)


class Command(BaseCommand):
    help = "Run workflow workers: claim ready steps under leases, execute them, commit results."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", "--queues", dest="queues", action="append", default=None,
                            help="only take steps from these queues (repeat or comma-separate; default: all)")
        parser.add_argument("--site", default=None, help="also take steps routed to this site")
        parser.add_argument("--max-workers", type=int, default=None, help="executor threads (default: settings)")
        parser.add_argument("--poll-interval", type=_seconds, default=None, help="seconds between idle polls")
        parser.add_argument("--lease-duration", type=_seconds, default=None, help="lease length in seconds")
        parser.add_argument("--grace-period", type=_seconds, default=None,
                            help="seconds running steps may finish after SIGTERM before they are handed back")
        parser.add_argument("--worker-id", default=None, help="a stable id for this process (default: host:pid)")
        parser.add_argument("--once", action="store_true", help="run a single cycle and exit")
        parser.add_argument("--max-cycles", type=int, default=None, help="exit after this many cycles")
        parser.add_argument("--burst", action="store_true", help="exit when there is nothing left to do")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="serve this worker's Prometheus metrics on this port (prometheus_client's server)")
        parser.add_argument("--metrics-addr", default="0.0.0.0", help="address for --metrics-port (default: all)")
        parser.add_argument("--log-steps", action="store_true",
                            help="log every step's claim and success at INFO (default: DEBUG, i.e. -v 2)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] >= 2:
            logging.getLogger("workflow").setLevel(logging.DEBUG)
        elif options["verbosity"] == 0:
            logging.getLogger("workflow").setLevel(logging.WARNING)
        queues = [q for item in options["queues"] or [] for q in item.split(",") if q] or None
        rt = runtime()
        overrides = self._validated_overrides(rt, options, queues)
        rt.observer = worker_metrics()
        if options["metrics_port"] is not None:
            if not 0 < options["metrics_port"] < 65536:
                raise CommandError(f"--metrics-port must be 1-65535, got {options['metrics_port']}", returncode=2)
            try:
                start_metrics_server(options["metrics_port"], options["metrics_addr"])
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on {options['metrics_addr']}:{options['metrics_port']}: "
                                   f"{exc}", returncode=2) from exc
        stop_requested = threading.Event()
        workers: Workers | None = None

        def stop() -> None:
            stop_requested.set()
            if workers is not None:
                workers.stop()

        def force() -> None:
            stop_requested.set()
            if workers is not None:
                workers.abandon()

        # Handlers first: a SIGTERM that lands while the loop starts must drain it, not kill the process.
        with on_stop(stop, force=force):
            if not self._wait_for_database(rt, stop_requested):
                return  # stopped by a signal before the database came back
            try:
                from workflow.schedules import install

                install(rt)  # store the schedules declared in code; every worker fires due ticks
            except ConfigurationError as exc:
                raise CommandError(f"schedules: {exc}", returncode=2) from exc
            workers = rt.start_workers(
                queues=queues,
                site=options["site"],
                burst=options["burst"],
                max_cycles=1 if options["once"] else options["max_cycles"],
                log_steps=options["log_steps"],
                **overrides,
            )
            if stop_requested.is_set():
                workers.stop()
            while not workers.join(timeout=0.5):
                pass
        if workers.error is not None:
            # A supervisor restarts a worker that exits non-zero; one that exits 0 looks finished.
            raise CommandError(
                f"the worker loop died: {type(workers.error).__name__}: {workers.error} (see the log for the traceback)",
                returncode=1,
            )
        totals = workers.scheduler.totals
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"claimed={totals.claimed} succeeded={totals.succeeded} retried={totals.retried} "
                f"failed={totals.failed} discarded={totals.discarded} reclaimed={totals.reclaimed}"
            )
        if workers.scheduler.exit_reason:  # unhealthy: exit non-zero so a supervisor starts a fresh process
            raise CommandError(f"worker stopped itself: {workers.scheduler.exit_reason}")

    @staticmethod
    def _validated_overrides(rt: Runtime, options: dict[str, Any], queues: list[str] | None) -> dict[str, Any]:
        """Check every flag before anything starts; a bad one is a usage error (exit 2)."""
        for name in queues or ():
            try:
                validation.check_queue_name(name)
            except InvalidInput as exc:
                raise _usage_error(f"--queue {name!r}: {exc}") from None
        if options["site"] is not None:
            try:
                validation.check_text(options["site"], label="site", field="site",
                                      max_length=validation.MAX_SITE_LENGTH)
            except InvalidInput as exc:
                raise _usage_error(f"--site: {exc}") from None
        if options["max_cycles"] is not None and options["max_cycles"] < 1:
            raise _usage_error(f"--max-cycles {options['max_cycles']}: must be an integer of at least 1")
        overrides: dict[str, Any] = {}
        for name in _CONFIG_FLAGS:
            value = options[name]
            if value is None:
                continue
            overrides[name] = timedelta(seconds=value) if name in _SECONDS else value
        try:
            replace(rt.config, **overrides)  # Config's own checks: the same as for settings.WORKFLOW
        except ConfigurationError as exc:
            flag = _CONFIG_FLAGS.get(exc.field or "")
            if flag is None or exc.field not in overrides:
                raise _usage_error(f"invalid options: {exc}") from None
            raise _usage_error(f"{flag} {options[exc.field]}: {exc.problem}") from None
        return overrides

    @staticmethod
    def _wait_for_database(rt: Runtime, stopped: threading.Event) -> bool:
        """Retry with backoff until the database answers; False if a signal asked us to stop first.

        A worker started before its database (a reboot, a compose file) must wait, not die.
        """
        delay = 0.5
        while True:
            try:
                rt.ensure_queues()
                return True
            except (StoreUnavailable, DatabaseError) as exc:
                log.warning("database unavailable at start; retrying in %.1fs error=%s: %s", delay,
                            type(exc).__name__, exc)
            if stopped.wait(delay):
                return False
            delay = min(delay * 2, START_RETRY_MAX_SECONDS)
