"""``manage.py startrun PACKAGE --input JSON``: start a run and print its id."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflow.conf import runtime
from workflow.engine.errors import WorkflowError


class Command(BaseCommand):
    help = "Start a workflow run; prints the run id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("package", help="the package name")
        parser.add_argument("--input", default="null", help="the run's input as JSON (default: null)")
        parser.add_argument("--run-id", default=None, help="an idempotency key: starting it twice returns the same run")
        parser.add_argument("--name", default=None, help="a display name")
        parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                            help="run metadata (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["input"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}", returncode=2) from exc
        metadata = {}
        for item in options["metadata"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--metadata takes KEY=VALUE, got {item!r}", returncode=2)
            metadata[key] = value
        try:
            handle = runtime().start_run(
                options["package"], data, run_id=options["run_id"], name=options["name"], metadata=metadata
            )
        except WorkflowError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        self.stdout.write(handle.id)
