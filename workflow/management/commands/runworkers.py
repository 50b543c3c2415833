"""``manage.py runworkers``: claim and run steps until stopped (no broker, no Celery)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflow.conf import runtime
from workflow.prom import start_metrics_server, worker_metrics
from workflow.shutdown import on_stop


class Command(BaseCommand):
    help = "Run workflow workers: claim ready steps under leases, execute them, commit results."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", "--queues", dest="queues", action="append", default=None,
                            help="only take steps from these queues (repeat or comma-separate; default: all)")
        parser.add_argument("--site", default=None, help="also take steps routed to this site")
        parser.add_argument("--max-workers", type=int, default=None, help="executor threads (default: settings)")
        parser.add_argument("--poll-interval", type=float, default=None, help="seconds between idle polls")
        parser.add_argument("--lease-duration", type=float, default=None, help="lease length in seconds")
        parser.add_argument("--grace-period", type=float, default=None,
                            help="seconds running steps may finish after SIGTERM before they are handed back")
        parser.add_argument("--worker-id", default=None, help="a stable id for this process (default: host:pid)")
        parser.add_argument("--once", action="store_true", help="run a single cycle and exit")
        parser.add_argument("--max-cycles", type=int, default=None, help="exit after this many cycles")
        parser.add_argument("--burst", action="store_true", help="exit when there is nothing left to do")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="serve this worker's Prometheus metrics on this port (prometheus_client's server)")
        parser.add_argument("--metrics-addr", default="0.0.0.0", help="address for --metrics-port (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] >= 2:
            logging.getLogger("workflow").setLevel(logging.DEBUG)
        elif options["verbosity"] == 0:
            logging.getLogger("workflow").setLevel(logging.WARNING)
        queues = [q for item in options["queues"] or [] for q in item.split(",") if q] or None
        seconds = {
            "poll_interval": options["poll_interval"],
            "lease_duration": options["lease_duration"],
            "grace_period": options["grace_period"],
        }
        durations = {k: timedelta(seconds=v) for k, v in seconds.items() if v is not None}
        rt = runtime()
        rt.observer = worker_metrics()
        if options["metrics_port"] is not None:
            if not 0 < options["metrics_port"] < 65536:
                raise CommandError(f"--metrics-port must be 1-65535, got {options['metrics_port']}")
            try:
                start_metrics_server(options["metrics_port"], options["metrics_addr"])
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on {options['metrics_addr']}:{options['metrics_port']}: "
                                   f"{exc}") from exc
        workers = rt.start_workers(
            queues=queues,
            site=options["site"],
            max_workers=options["max_workers"],
            worker_id=options["worker_id"],
            burst=options["burst"],
            max_cycles=1 if options["once"] else options["max_cycles"],
            **durations,
        )
        with on_stop(workers.stop, force=workers.abandon):
            while not workers.join(timeout=0.5):
                pass
        totals = workers.scheduler.totals
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"claimed={totals.claimed} succeeded={totals.succeeded} retried={totals.retried} "
                f"failed={totals.failed} discarded={totals.discarded} reclaimed={totals.reclaimed}"
            )
