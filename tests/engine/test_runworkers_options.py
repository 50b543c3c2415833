"""``runworkers`` refuses bad flags as ``Config`` refuses bad settings (exit 2), waits for its database,
and exits non-zero when its loop dies; ``manage.py check`` refuses the same bad settings."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings

from tests.processes import ROOT, wait_for
from workflow import conf
from workflow.checks import check_workflow_settings
from workflow.engine.scheduler import Scheduler


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lease-duration", "-1"], "--lease-duration -1.0: must be a duration of at least 1s"),
        (["--lease-duration", "0.5"], "--lease-duration 0.5: must be a duration of at least 1s"),
        (["--poll-interval", "-1"], "--poll-interval -1.0: must be a duration of more than 0s"),
        (["--poll-interval", "0"], "--poll-interval 0.0: must be a duration of more than 0s"),
        (["--max-workers", "-1"], "--max-workers -1: must be an integer of at least 1"),
        (["--max-workers", "0"], "--max-workers 0: must be an integer of at least 1"),
        (["--grace-period", "-5"], "--grace-period -5.0: must be a duration of at least 0s"),
        (["--worker-id", "w" * 201], "--worker-id w+: must be a string of at most 200 characters"),
        (["--max-cycles", "0"], "--max-cycles 0: must be an integer of at least 1"),
        (["--queue", "io,bad/name"], "--queue 'bad/name': queue name 'bad/name' may only hold"),
    ],
)
def test_runworkers__bad_flag_is_a_usage_error_naming_it(flags, message, transactional_db):
    with pytest.raises(CommandError, match=message) as caught:
        call_command("runworkers", "--once", *flags)
    assert caught.value.returncode == 2


def test_runworkers__bad_flag_exits_2_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "manage.py", "runworkers", "--poll-interval", "-1", "--once"],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "WFSITE_VAR_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--poll-interval -1.0: must be a duration of more than 0s" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_runworkers__waits_for_an_unreachable_database_and_says_so(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "WFSITE_VAR_DIR": str(tmp_path),
           "DATABASE_URL": "postgres://postgres@127.0.0.1:9/nowhere"}  # the discard port: nothing listens
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "runworkers"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: log_path.read_text().count("database unavailable at start") >= 2, 20, "two retries logged")
        assert proc.poll() is None, log_path.read_text()
        assert "retrying in 1.0s" in log_path.read_text()  # the second wait is longer: backoff
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_runworkers__exits_non_zero_when_the_loop_dies(monkeypatch, transactional_db, caplog):
    def broken_run(self: Scheduler) -> Any:
        raise RuntimeError("loop bug")

    monkeypatch.setattr(Scheduler, "run", broken_run)
    conf.reset_runtime()
    try:
        with caplog.at_level(logging.CRITICAL, logger="workflow.worker"):
            with pytest.raises(CommandError, match="the worker loop died: RuntimeError: loop bug") as caught:
                call_command("runworkers", "--burst")
    finally:
        conf.reset_runtime()
    assert caught.value.returncode == 1
    died = [r for r in caplog.records if "worker loop died" in r.getMessage()]
    assert died and died[0].exc_info is not None


def test_call_store__logs_the_exception_type_and_traceback(runtime, caplog):
    scheduler = runtime.scheduler(max_workers=1)

    def fails() -> None:
        raise KeyError("missing row")

    with caplog.at_level(logging.WARNING, logger="workflow.worker"):
        assert scheduler._call_store(fails) is None
    record = next(r for r in caplog.records if "store call failed" in r.getMessage())
    assert "KeyError" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError


BASE = {"POLL_INTERVAL": timedelta(milliseconds=50), "QUEUES": {}}


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        ({"LEASE_DURATION": -1}, "LEASE_DURATION must be a duration of at least 1s, got -1s"),
        ({"POLL_INTERVAL": timedelta(seconds=-1)}, "POLL_INTERVAL must be a duration of more than 0s"),
        ({"MAX_WORKERS": -1}, "MAX_WORKERS must be an integer of at least 1, got -1"),
        ({"GRACE_PERIOD": -1}, "GRACE_PERIOD must be a duration of at least 0s"),
        ({"PREFETCH": -1}, "PREFETCH must be an integer of at least 0"),
        ({"ARTIFACT_INLINE_LIMIT": -1}, "ARTIFACT_INLINE_LIMIT must be an integer of at least 0"),
        ({"LOG_LIMIT_BYTES": -1}, "LOG_LIMIT_BYTES must be an integer of at least 0"),
        ({"HEARTBEAT_INTERVAL": -1}, "HEARTBEAT_INTERVAL must be a duration of more than 0s"),
        ({"QUEUES": {"bad/name": {}}}, "queue name 'bad/name' may only hold"),
        ({"QUEUES": {"io": {"MAX_WORKERS": -1}}}, "queue 'io' is misconfigured: QueueConfig.max_workers"),
        ({"QUEUES": {"io": {"RATE_LIMIT": {"RATE": -2}}}}, "queue 'io' is misconfigured: RateLimitPolicy.rate"),
        ({"ARTIFACT_STORAGE": "nope"}, "settings.WORKFLOW['ARTIFACT_STORAGE'] is 'nope', which is not a settings.STORAGES"),
        ({"RETENTION": -1}, "settings.WORKFLOW['RETENTION'] must be a positive duration"),
        ({"DATABASE": "elsewhere"}, "settings.WORKFLOW['DATABASE'] is 'elsewhere', which is not a settings.DATABASES"),
    ],
)
def test_check__refuses_a_bad_setting_naming_it(workflow, message):
    with override_settings(WORKFLOW={**BASE, **workflow}):
        errors = check_workflow_settings()
    assert [e.__class__ for e in errors] == [Error], errors
    assert "settings.WORKFLOW" in errors[0].msg
    assert message in errors[0].msg


def test_check__good_settings_pass():
    with override_settings(WORKFLOW={**BASE, "QUEUES": {"io.slow": {"MAX_WORKERS": 2}}, "ARTIFACT_STORAGE": None}):
        assert check_workflow_settings() == []


@pytest.mark.django_db  # Django 6's model checks ask the database whether it supports JSONField
def test_manage_py_check__fails_on_a_negative_lease():
    with override_settings(WORKFLOW={**BASE, "LEASE_DURATION": timedelta(seconds=-1)}):
        with pytest.raises(SystemCheckError, match=r"workflow\.E001.*LEASE_DURATION must be"):
            call_command("check")


def _step_lines(caplog: Any) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage().split(" run=")[0]) for r in caplog.records
            if r.name == "workflow.worker" and r.getMessage().startswith("step ")]


def test_log_steps__routine_step_lines_are_debug_unless_asked_failures_stay_info(runtime, caplog):
    from tests.conftest import run_graph

    run_graph(runtime, [{"id": "ok", "kind": "noop"}, {"id": "bad", "kind": "fail"}])
    caplog.set_level(logging.DEBUG, logger="workflow")
    runtime.scheduler(max_cycles=1).cycle()
    quiet = _step_lines(caplog)
    assert ("DEBUG", "step succeeded") in quiet and ("INFO", "step failed") in quiet
    assert not [line for line in quiet if line[0] == "INFO" and line[1] != "step failed"]

    caplog.clear()
    run_graph(runtime, [{"id": "ok2", "kind": "noop"}])
    runtime.scheduler(max_cycles=1, log_steps=True).cycle()
    assert ("INFO", "step succeeded") in _step_lines(caplog)


def test_runworkers__log_steps_flag_reaches_the_scheduler(monkeypatch, transactional_db):
    seen: dict[str, Any] = {}
    original = Scheduler.__init__

    def spy(self: Scheduler, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        seen["level"] = self.step_log_level

    monkeypatch.setattr(Scheduler, "__init__", spy)
    call_command("runworkers", "--once", "--log-steps")
    assert seen["level"] == logging.INFO
    call_command("runworkers", "--once")
    assert seen["level"] == logging.DEBUG
