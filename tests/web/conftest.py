"""The web edge tests share the view tests' users, packages and runs."""

from __future__ import annotations

from tests.views.conftest import (  # noqa: F401  (fixtures shared with the view tests)
    _close_gate,
    failed_run,
    operator_client,
    operator_user,
    package_kinds,
    report_run,
    viewer,
    viewer_client,
)
