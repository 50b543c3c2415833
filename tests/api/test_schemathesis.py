"""Schemathesis against the live API with a token, every check: no server error, no answer off the schema.

schemathesis is a test dependency (the ``test`` extra), never the product's. The run has a time
budget (``SCHEMATHESIS_SECONDS``, 45 s by default) and a fixed seed, so CI stays fast and repeatable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.api.conftest import token_for
from tests.conftest import drain, run_graph
from tests.processes import ROOT

BUDGET_SECONDS = int(os.environ.get("SCHEMATHESIS_SECONDS", "45"))


def _cli() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    if found.exists():
        return str(found)
    return shutil.which("schemathesis") or pytest.skip("schemathesis is not installed (pip install -e '.[test]')")


def test_schemathesis__no_server_error_and_every_answer_fits_the_schema(
    live_server: Any, runtime: Any, operator_user: User, tmp_path: Path,
) -> None:
    # Rows for the fuzzer to find through the links: a failed run, a finished one with artifacts and records.
    run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail", "deps": ["a"]}], run_id="fz-failed")
    run_graph(runtime, [{"id": "report", "kind": "report"}], run_id="fz-report")
    drain(runtime)
    token = token_for(operator_user)
    report = tmp_path / "schemathesis.txt"
    cmd = [
        _cli(), "--config-file", str(ROOT / "schemathesis.toml"), "run", f"{live_server.url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--max-examples", "25", "--max-time", str(BUDGET_SECONDS), "--seed", "20261201",
        "--workers", "1", "--continue-on-failure", "--suppress-health-check", "all", "--request-timeout", "20",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=BUDGET_SECONDS + 120,
                            env={**os.environ, "NO_COLOR": "1"})
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
