"""Property: no request an operator can send to the dashboard gets a 500 or shows a traceback.

Hypothesis sends arbitrary query strings, keyset cursors, dates, metadata filters, ids in the
path and form bodies to every dashboard URL, on whichever database the suite runs (SQLite, or
PostgreSQL with DATABASE_URL). Budget: WF_FUZZ_EXAMPLES examples per test (default 60, a few
seconds each); set it to thousands for a long hunt.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from django.urls import get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import drain, run_graph

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = int(os.environ.get("WF_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("WF_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

PARAMS = [
    "after", "before", "safter", "sbefore", "q", "meta", "state", "package", "created_after", "created_before",
    "since", "until", "range", "kind", "severity", "run", "step", "queue", "worker", "code", "sort", "dir", "sq",
    "sstate", "skind", "sel", "type", "collection", "window", "fragment", "expand", "newer_than", "v", "poll",
    "pin", "as_page",
]
FRAGMENTS = ["live", "steps", "new", ""]

# -- value strategies ------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


cursors = st.one_of(
    json_values.map(lambda v: b64(json.dumps(v).encode())),
    st.binary(max_size=40).map(b64),
    st.lists(st.one_of(st.integers(), st.text(max_size=30), st.none(), st.floats()), max_size=3)
    .map(lambda v: b64(json.dumps(v).encode())),
    st.integers(min_value=1, max_value=600).map(lambda n: b64(("[" * n + "]" * n).encode())),
    st.text(max_size=30),
)
impossible_dates = st.builds(
    lambda y, mo, d, h, mi, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}{off}",
    st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.sampled_from(["", "Z", "+99:00", "-23:59", "+24:00", "+05:30", "+00:00:00.5"]),
)
dates = st.one_of(impossible_dates, st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=25))
meta_filters = st.builds(
    lambda k, lookup, v: f"{k}{lookup}={v}",
    st.text(max_size=10), st.sampled_from(["", "__contains", "__range", "__in", "__0", "__isnull", "__a__b", "__"]),
    st.text(max_size=10),
)
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "a\x00b", ".", "..", "/", "~2F", "~2E", "%", "'; DROP TABLE x;--", "<script>", "\r\n"]),
    st.integers(min_value=0, max_value=400).map(lambda n: "x" * n),
    st.integers().map(str),
)
param_values = st.one_of(nasty_text, cursors, dates, meta_filters, st.sampled_from(FRAGMENTS))
queries = st.dictionaries(st.one_of(st.sampled_from(PARAMS), st.text(max_size=8)), param_values, max_size=6)
raw_escapes = st.lists(st.integers(0, 255), max_size=6).map(lambda bs: "".join(f"%{b:02X}" for b in bs))
path_ids = st.one_of(nasty_text, raw_escapes).map(lambda s: s if s.startswith("%") else quote(s, safe=""))


def query_string(params: dict[str, str], raw: str) -> str:
    text = urlencode(params)
    return f"?{text}&raw={raw}" if raw else (f"?{text}" if text else "")


# -- the site under test ---------------------------------------------------------------------------
@pytest.fixture
def site(operator_user: Any, runtime: Any, registry: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from workflow.conf import reset_runtime
    from workflow.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "registry", registry)
    reset_runtime()
    report = run_graph(runtime, [{"id": "report", "kind": "report"}, {"id": "g", "kind": "gate", "retry": 1}],
                       metadata={"team": "red"})
    drain(runtime)
    client = Client()
    client.force_login(operator_user)
    from workflow.models import Artifact

    yield {"client": client, "run": report, "artifact": Artifact.objects.filter(run_id=report).first().pk}
    reset_runtime()


def page_urls(run_id: str, artifact_id: str) -> dict[str, str]:
    """Every GET page of the dashboard, by URL name."""
    return {
        "workflow:overview": reverse("workflow:overview"),
        "workflow:runs": reverse("workflow:runs"),
        "workflow:run": reverse("workflow:run", args=[run_id]),
        "workflow:results": reverse("workflow:results", args=[run_id]),
        "workflow:artifacts": reverse("workflow:artifacts", args=[run_id]),
        "workflow:step": reverse("workflow:step", args=[run_id, "report"]),
        "workflow:download_artifact": reverse("workflow:download_artifact", args=[artifact_id]),
        "workflow:records": reverse("workflow:records"),
        "workflow:schedules": reverse("workflow:schedules"),
        "workflow:search": reverse("workflow:search"),
        "workflow:login": reverse("workflow:login"),
        "consoles:overview": reverse("consoles:overview"),
        "consoles:steps": reverse("consoles:steps"),
        "consoles:steps_retry": reverse("consoles:steps_retry"),
        "consoles:queues": reverse("consoles:queues"),
        "consoles:events": reverse("consoles:events"),
        "consoles:packages": reverse("consoles:packages"),
        "consoles:start_run": reverse("consoles:start_run", args=["t"]),
        "consoles:submissions": reverse("consoles:submissions"),
        "consoles:engine": reverse("consoles:engine"),
    }


POST_NAMES = {"workflow:runs_bulk", "workflow:cancel_run", "workflow:retry_step", "consoles:pause_queue",
              "consoles:resume_queue", "consoles:start_run", "workflow:pause_schedule", "workflow:resume_schedule",
              "workflow:run_schedule_now", "workflow:logout", "consoles:steps_retry_confirm",
              "workflow:retry_step_edit"}


def check(response: Any, what: str) -> None:
    body = response.content.decode("utf-8", "replace") if not response.streaming else ""
    assert response.status_code < 500, (what, response.status_code, body[:500])
    assert "Traceback" not in body, what


def test_every_dashboard_url_is_fuzzed() -> None:
    """A new URL must join the fuzzing: its name is here, as a page or as an action."""
    names = set()
    for namespace in ("workflow", "consoles"):
        _prefix, resolver = get_resolver().namespace_dict[namespace]
        names |= {f"{namespace}:{k}" for k in resolver.reverse_dict if isinstance(k, str)}
    assert names <= set(page_urls("r", "a")) | POST_NAMES, names - set(page_urls("r", "a")) - POST_NAMES


@FUZZ
@given(name=st.sampled_from(sorted(page_urls("r", "a"))), params=queries, raw=raw_escapes, htmx=st.booleans(),
       target=st.sampled_from(["", "runs-table", "preview-pane", "step-panel"]))
def test_pages__any_query_string(site: dict[str, Any], name: str, params: dict[str, str], raw: str, htmx: bool,
                                 target: str) -> None:
    url = page_urls(site["run"], site["artifact"])[name] + query_string(params, raw)
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": target,
               "HTTP_HX_CURRENT_URL": "http://testserver/runs/" + query_string(params, "")} if htmx else {}
    check(site["client"].get(url, **headers), url)


@FUZZ
@given(run_id=path_ids, step_id=path_ids, artifact_id=path_ids, params=queries)
def test_pages__any_ids_in_the_path(site: dict[str, Any], run_id: str, step_id: str, artifact_id: str,
                                    params: dict[str, str]) -> None:
    client = site["client"]
    qs = query_string(params, "")
    for url in (f"/runs/{run_id}/", f"/runs/{run_id}/results/", f"/runs/{run_id}/artifacts/",
                f"/runs/{site['run']}/steps/{step_id}/", f"/runs/{run_id}/steps/{step_id}/",
                f"/artifacts/{artifact_id}/download/", f"/ops/packages/{step_id}/start/"):
        check(client.get(url + qs), url + qs)


form_values = st.one_of(nasty_text, json_values.map(json.dumps), dates,
                        st.integers(1, 700).map(lambda n: "[" * n + "]" * n),
                        st.integers(1, 60).map(lambda n: '{"a":' * n + "1" + "}" * n))


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["__input__", "run_name", "action", "run", "next", "step", "x", "input",
                                             "as_of", "max_id", "expected", "code", "package", "since"]),
                            form_values, max_size=5),
       queue=path_ids, step_id=path_ids, run_id=path_ids, htmx=st.booleans())
def test_actions__any_form_body(site: dict[str, Any], body: dict[str, str], queue: str, step_id: str, run_id: str,
                                htmx: bool) -> None:
    client = site["client"]
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": f"http://testserver/runs/{site['run']}/"} if htmx else {}
    for url in (reverse("consoles:start_run", args=["t"]), reverse("workflow:runs_bulk"),
                f"/ops/queues/{queue}/pause/", f"/ops/queues/{queue}/resume/",
                f"/runs/{run_id}/cancel/", f"/runs/{site['run']}/steps/{step_id}/retry/",
                f"/runs/{site['run']}/steps/{step_id}/edit-and-retry/", f"/runs/{run_id}/steps/report/edit-and-retry/",
                reverse("consoles:steps_retry_confirm"),
                f"/schedules/{queue}/pause/", f"/schedules/{queue}/resume/", f"/schedules/{queue}/run/"):
        check(client.post(url, body, **headers), url)
