"""Browser tests: Debian Chromium driven by Playwright against pytest-django's live server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API runs an event loop in the test thread; the ORM calls made by the test
# itself (drain, fixtures) are still synchronous. Tests only, never in the product.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

from tests.views.conftest import (  # noqa: E402,F401  (fixtures shared with the view tests)
    GATE,
    _close_gate,
    build_dashboard_package,
    operator_user,
    package_kinds,
    viewer,
)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
PASSWORD = "pw-otto-123"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Skip browser tests without Chromium, except in CI (CI=true), where they must fail instead."""
    if Path(CHROMIUM).exists():
        return
    reason = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)"
    for item in items:
        if "browser" not in item.keywords:
            continue
        if os.environ.get("CI") == "true":
            item.add_marker(pytest.mark.usefixtures("_fail_without_chromium"))
            item.fixturenames.insert(0, "_fail_without_chromium")
        else:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def _fail_without_chromium() -> None:
    pytest.fail(f"CI=true but Chromium is missing at {CHROMIUM}: browser tests must run in CI")


@pytest.fixture
def shoot(page: Any, request: Any) -> Any:
    """Save a full-page screenshot to tests/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(name: str, target: Any = None) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        (target or page).screenshot(path=str(path), full_page=True)
        return path

    return take


def shoot_all(page: Any, name: str, *, focus: str = "", full_page: bool = False) -> None:
    """Screenshots at 1440 and 390 px, light and dark, to look at; no page may scroll sideways.

    ``focus`` is scrolled to the top of each shot; the viewport and colour scheme are put back.
    """
    SCREENSHOTS.mkdir(exist_ok=True)
    size = page.viewport_size
    for width, height in ((1440, 900), (390, 844)):
        for scheme in ("light", "dark"):
            page.set_viewport_size({"width": width, "height": height})
            page.emulate_media(color_scheme=scheme)
            if focus:
                page.locator(focus).evaluate("el => window.scrollTo(0, el.getBoundingClientRect().top + scrollY - 70)")
            page.wait_for_timeout(150)
            assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{name} scrolls sideways at {width}"
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}-{scheme}.png"), full_page=full_page)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(size)


def login(page: Any, base_url: str, username: str = "otto", password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)
