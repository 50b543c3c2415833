"""/healthz answers without the database; /readyz checks the database and the migrations."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connections
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client


def test_healthz__no_login_no_database() -> None:
    response = Client().get("/healthz")  # no db fixture: any query would raise here
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz__ok(transactional_db: Any) -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_readyz__503_naming_unapplied_migrations(transactional_db: Any) -> None:
    recorder = MigrationRecorder(connections["default"])
    latest = recorder.migration_qs.filter(app="workflow").order_by("-name").first()
    latest.delete()
    try:
        response = Client().get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert "not applied" in body["reason"] and f"workflow.{latest.name}" in body["pending"]
    finally:
        recorder.record_applied("workflow", latest.name)


def test_readyz__503_when_the_database_is_down(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(connections["default"], "cursor", refuse)
        response = Client().get("/readyz")
    assert response.status_code == 503 and "not reachable" in response.json()["reason"]
