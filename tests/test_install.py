"""What a site must give the app, named by system checks; the login page the dashboard sends users to."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import Client, override_settings
from django.urls import reverse

from tests.processes import ROOT
from workflow.checks import check_site_requirements


class SiteSessionMiddleware(SessionMiddleware):
    """A site's own session middleware, as some sites subclass Django's."""


def test_site_requirements__a_startproject_site_passes() -> None:
    assert check_site_requirements() == []


def test_site_requirements__name_the_missing_middleware() -> None:
    without = [m for m in settings.MIDDLEWARE if m != "django.contrib.messages.middleware.MessageMiddleware"]
    with override_settings(MIDDLEWARE=without):
        errors = check_site_requirements()
    assert [(e.id, e.hint) for e in errors] == [
        ("workflow.E102", 'Add "django.contrib.messages.middleware.MessageMiddleware" to MIDDLEWARE, '
                          "in the order startproject gives.")]


def test_site_requirements__accept_a_subclass_of_a_middleware() -> None:
    swapped = ["tests.test_install.SiteSessionMiddleware" if m.endswith(".SessionMiddleware") else m
               for m in settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=swapped):
        assert check_site_requirements() == []


def test_site_requirements__name_the_missing_context_processor() -> None:
    templates = [{**settings.TEMPLATES[0], "OPTIONS": {"context_processors": [
        "django.template.context_processors.request", "django.contrib.auth.context_processors.auth"]}}]
    with override_settings(TEMPLATES=templates):
        errors = check_site_requirements()
    assert [e.id for e in errors] == ["workflow.E104"]
    assert "django.contrib.messages.context_processors.messages" in errors[0].msg


@pytest.mark.django_db
def test_dashboard__sends_anonymous_users_to_the_sites_login_url(client: Client) -> None:
    with override_settings(LOGIN_URL="/sso/login/"):
        response = client.get(reverse("workflow:runs"))
    assert response.status_code == 302 and response["Location"] == "/sso/login/?next=/runs/"


@pytest.mark.django_db
def test_dashboard_login__is_served_under_the_apps_urls_and_logs_in(client: Client, django_user_model: Any) -> None:
    django_user_model.objects.create_user("ada", password="a-long-password-1")
    page = client.get(reverse("workflow:login"))
    assert page.status_code == 200 and b'name="password"' in page.content
    done = client.post(reverse("workflow:login") + "?next=/runs/",
                       {"username": "ada", "password": "a-long-password-1"})
    assert done.status_code == 302 and done["Location"] == "/runs/"
    out = client.post(reverse("workflow:logout"))
    assert out.status_code == 302 and out["Location"] == reverse("login")  # the demo's LOGOUT_REDIRECT_URL



LOG_A_500 = """
import django
django.setup()
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.log import log_response
log_response("Internal Server Error: %s", "/runs/", response=HttpResponse(status=500),
             request=RequestFactory().get("/runs/"))
"""


def test_production_logging__writes_a_500_to_stderr(tmp_path: Path) -> None:
    """Django's handler logs every 500 through ``django.request``: with DEBUG off it must reach stderr."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "wfsite.production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
           "WFSITE_VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", LOG_A_500], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ERROR django.request Internal Server Error: /runs/" in done.stderr
