"""``setupdemo``, as ``make run`` uses it: a login once, demo runs once, a welcome when the site answers."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from workflow.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("operators_group")]


@pytest.fixture
def operators_group(transactional_db: Any) -> None:
    """The data migration's group (a transactional test before this one may have flushed it)."""
    from django.contrib.auth.models import Group

    Group.objects.get_or_create(name="Operators")


def setupdemo(*args: str) -> str:
    out = io.StringIO()
    call_command("setupdemo", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_setupdemo__demo_runs_do_not_pile_up_on_every_start(settings: Any, tmp_path: Any) -> None:
    settings.VAR_DIR = tmp_path
    first = setupdemo()
    assert "Operator login created: operator" in first and first.count("Started demo run") == 3
    login = (tmp_path / "demo-login.txt")
    assert oct(os.stat(login).st_mode & 0o777) == "0o600"
    second = setupdemo()
    assert "none started" in second and Run.objects.filter(package="demo").count() == 3
    assert setupdemo("--again", "--runs", "1").count("Started demo run") == 1


def test_setupdemo__welcome_prints_the_login_and_the_failing_run_once_the_site_answers(
        settings: Any, tmp_path: Any, live_server: Any) -> None:
    settings.VAR_DIR = tmp_path
    setupdemo()
    user, password = (tmp_path / "demo-login.txt").read_text().split()
    text = setupdemo("--welcome", live_server.url + "/")
    failing = Run.objects.get(name__endswith="(fails)")
    assert f"Log in with user {user}, password {password}" in text
    assert f"/runs/{failing.id}/" in text and "Ctrl-C stops" in text


def test_setupdemo__welcome_reports_a_site_that_died(settings: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    settings.VAR_DIR = tmp_path
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(CommandError, match="port taken"):
        setupdemo("--welcome", "http://127.0.0.1:9/", "--site-pid", str(dead.pid))
