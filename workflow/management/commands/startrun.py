"""``manage.py startrun PACKAGE [--input JSON | --input - | --input-file PATH]``: start a run, print its id."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflow import forms
from workflow.conf import runtime
from workflow.engine.errors import WorkflowError
from workflow.models import Run


def _usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=2)


class Command(BaseCommand):
    help = "Start a workflow run; prints the run id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("package", help="the package name")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--input", default=None,
                            help="the run's input as JSON (default: null); '-' reads it from standard input")
        source.add_argument("--input-file", default=None, metavar="PATH",
                            help="read the run's input as JSON from this file (for inputs too large for argv)")
        parser.add_argument("--run-id", default=None, help="an idempotency key: starting it twice returns the same run")
        parser.add_argument("--name", default=None, help="a display name")
        parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                            help="run metadata (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        data = _parse_input(self._input_text(options), label=self._input_label(options))
        for option, column in (("package", "package"), ("name", "name"), ("run_id", "id")):
            value = options[option]
            if value is not None:
                problem = forms.text_problem(value, max_length=forms.column_length(Run, column))
                if problem:
                    raise _usage_error(f"--{option.replace('_', '-')} {problem}")
        metadata = {}
        for item in options["metadata"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise _usage_error(f"--metadata takes KEY=VALUE, got {item!r}")
            problem = forms.text_problem(item)
            if problem:
                raise _usage_error(f"--metadata {key[:40]!r} {problem}")
            metadata[key] = value
        try:
            handle = runtime().start_run(
                options["package"], data, run_id=options["run_id"], name=options["name"], metadata=metadata
            )
        except WorkflowError as exc:
            raise _usage_error(str(exc)) from exc
        self.stdout.write(handle.id)

    def _input_label(self, options: dict[str, Any]) -> str:
        if options["input_file"] is not None:
            return f"--input-file {options['input_file']}"
        return "standard input" if options["input"] == "-" else "--input"

    def _input_text(self, options: dict[str, Any]) -> str:
        if options["input_file"] is not None:
            path = Path(options["input_file"])
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise _usage_error(f"--input-file: cannot read {path}: {exc.strerror or exc}") from exc
            return _decode(raw, f"--input-file {path}")
        if options["input"] == "-":
            return _decode(sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode(),
                           "standard input")
        return "null" if options["input"] is None else options["input"]


def _decode(raw: bytes, label: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _usage_error(f"{label} is not UTF-8 text: {exc}") from exc


def _parse_input(text: str, *, label: str) -> Any:
    """Parse the input with the dashboard's bounds (size, depth, NUL, surrogates); errors exit 2."""
    try:
        return forms.parse_json(text, label=label)
    except forms.BadInput as exc:
        raise _usage_error(str(exc)) from exc
