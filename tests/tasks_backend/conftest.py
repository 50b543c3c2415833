from __future__ import annotations

from collections.abc import Iterator

import pytest

from workflow.conf import reset_runtime


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    """A new process runtime per test: the tables are flushed between tests, its caches are not."""
    reset_runtime()
    yield
    reset_runtime()


from tests.views.conftest import operator_client, operator_user  # noqa: E402, F401  (the dashboard's fixtures)
