"""API fixtures: the dashboard's users and runs (tests/views/conftest.py), plus tokens and clients."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.views import conftest as dashboard
from workflow.api.tokens import create_token

API = "/api/v1"

# The dashboard's users and runs, reused as they are.
package_kinds = dashboard.package_kinds
_close_gate = dashboard._close_gate
viewer = dashboard.viewer
operator_user = dashboard.operator_user
failed_run = dashboard.failed_run
active_run = dashboard.active_run
done_run = dashboard.done_run
report_run = dashboard.report_run


class ApiClient:
    """A test client that sends a bearer token (or none) and JSON bodies."""

    def __init__(self, token: str | None = None, **headers: str) -> None:
        self.client = Client()
        self.headers = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}

    def get(self, path: str, params: dict[str, Any] | None = None, **headers: str) -> Any:
        return self.client.get(API + path, params or {}, headers={**self.headers, **headers})

    def post(self, path: str, body: Any = None, *, raw: str | bytes | None = None, **headers: str) -> Any:
        import json

        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        return self.client.post(API + path, data, content_type="application/json",
                                headers={**self.headers, **headers})


def token_for(user: User, name: str = "test") -> str:
    return create_token(user, name=name)[1]


@pytest.fixture
def nobody(transactional_db: Any) -> User:
    """Logged in, no permissions."""
    return User.objects.create_user("nina", password="pw-nina-123")


@pytest.fixture
def anon() -> ApiClient:
    return ApiClient()


@pytest.fixture
def as_nobody(nobody: User) -> ApiClient:
    return ApiClient(token_for(nobody))


@pytest.fixture
def as_viewer(viewer: User) -> ApiClient:
    return ApiClient(token_for(viewer))


@pytest.fixture
def as_operator(operator_user: User) -> ApiClient:
    return ApiClient(token_for(operator_user))


def error_of(response: Any) -> dict[str, Any]:
    """The error object, checking the shape every error answer must have."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response["X-Request-Id"]
    return body["error"]
