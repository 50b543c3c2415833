"""Log in and out of the dashboard, so the app works in a site that has no login page of its own."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.functional import lazy
from django_htmx.middleware import HtmxDetails


def _login_url() -> str:
    """The site's ``LOGIN_URL`` when it sets one, else the dashboard's own login page."""
    if settings.is_overridden("LOGIN_URL"):
        return str(resolve_url(settings.LOGIN_URL))
    return reverse("workflow:login")


login_url = lazy(_login_url, str)()


def dashboard_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``login_required`` that sends anonymous users to :func:`_login_url`, read per request."""
    return login_required(view, login_url=login_url)


def with_htmx_details(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Give the view ``request.htmx`` even when the site does not run django-htmx's middleware."""

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not isinstance(getattr(request, "htmx", None), HtmxDetails):
            request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return inner


class LoginView(auth_views.LoginView):
    """The dashboard's login page; after login, the page asked for, else the site's or the dashboard's home."""

    template_name = "workflow/registration/login.html"
    redirect_authenticated_user = False

    def get_default_redirect_url(self) -> str:
        if settings.is_overridden("LOGIN_REDIRECT_URL"):
            return str(resolve_url(settings.LOGIN_REDIRECT_URL))
        return reverse("workflow:overview")


class LogoutView(auth_views.LogoutView):
    """POST-only logout (Django's); then the site's ``LOGOUT_REDIRECT_URL``, else the login page."""

    def get_default_redirect_url(self) -> str:
        if settings.LOGOUT_REDIRECT_URL:
            return str(resolve_url(settings.LOGOUT_REDIRECT_URL))
        return str(login_url)
