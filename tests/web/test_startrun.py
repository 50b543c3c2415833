"""``manage.py startrun``: input from argv, a file or standard input; bad input exits 2 with a clear error."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from workflow.models import Run

pytestmark = pytest.mark.django_db(transaction=True)
GRAPH = {"steps": [{"id": "a", "kind": "noop"}]}


@pytest.fixture(autouse=True)
def _site_runtime(monkeypatch: pytest.MonkeyPatch, registry: Any) -> Any:
    """startrun uses the site's runtime: give it the test package."""
    from workflow.conf import reset_runtime
    from workflow.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "registry", registry)
    reset_runtime()
    yield
    reset_runtime()


def start(*args: str, stdin: bytes | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    out = io.StringIO()
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    call_command("startrun", *args, stdout=out)
    return out.getvalue().strip()


def exits_2(*args: str, match: str, **kwargs: Any) -> None:
    with pytest.raises(CommandError, match=match) as info:
        start(*args, **kwargs)
    assert info.value.returncode == 2


def test_input_file__reads_a_large_input_from_a_file(tmp_path: Path) -> None:
    big = {**GRAPH, "padding": "x" * (3 * 1024 * 1024)}  # too long for argv on most systems
    path = tmp_path / "input.json"
    path.write_text(json.dumps(big))
    run_id = start("t", "--input-file", str(path))
    assert Run.objects.get(pk=run_id).input["padding"] == big["padding"]


def test_input_dash__reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = start("t", "--input", "-", stdin=json.dumps(GRAPH).encode(), monkeypatch=monkeypatch)
    assert Run.objects.get(pk=run_id).input == GRAPH


def test_input__argv_still_works_and_sources_are_exclusive(tmp_path: Path) -> None:
    assert Run.objects.filter(pk=start("t", "--input", json.dumps(GRAPH))).exists()
    with pytest.raises(CommandError, match="not allowed with"):
        start("t", "--input", "{}", "--input-file", str(tmp_path / "x"))


def test_bad_input__exits_2_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 490 + "]" * 490)
    exits_2("t", "--input-file", str(deep), match="nested 490 levels deep")
    exits_2("t", "--input", "[" * 100_000, match="levels deep")
    exits_2("t", "--input-file", str(tmp_path / "missing.json"), match="cannot read")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe")
    exits_2("t", "--input-file", str(binary), match="not UTF-8")
    exits_2("t", "--input", '{"a": "\\u0000"}', match="NUL")
    exits_2("t", "--input", '["\\ud800"]', match="surrogate")
    exits_2("t", "--input", "{nope", match="not valid JSON")
    exits_2("t", "--input", "-", match="not valid JSON", stdin=b"", monkeypatch=monkeypatch)
    assert not Run.objects.exists()


def test_long_names__exit_2_naming_the_option() -> None:
    graph = json.dumps(GRAPH)
    exits_2("t", "--input", graph, "--name", "n" * 300, match="--name is 300 characters long; at most 255")
    exits_2("t", "--input", graph, "--run-id", "r" * 256, match="--run-id is 256 characters")
    exits_2("p" * 101, "--input", graph, match="--package is 101 characters")
    exits_2("t", "--input", graph, "--name", "a\x00b", match="NUL")
    exits_2("t", "--input", graph, "--metadata", "k=\x00", match="NUL")
    assert not Run.objects.exists()
