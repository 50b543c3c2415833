"""Bad input at the web edge: every crafted request gets a 4xx or a field error, never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone

from tests.conftest import drain, run_graph
from tests.views.conftest import add_dashboard_kinds
from tests.views.test_consoles import _field_error, site_registry  # noqa: F401  (fixture)
from workflow import forms
from workflow.models import Artifact, Event, Queue, Run, Step
from workflow.read import pages, runs
from workflow.read import runs as read_runs
from workflow.urls import IdConverter

pytestmark = pytest.mark.django_db(transaction=True)


def add_bad_type(pkg: Any) -> None:
    """A kind that writes an artifact with a CRLF in its content type."""

    @pkg.executor("bad_type")
    def bad_type(step: Any) -> None:
        step.artifact("x.txt", "text/plain\r\nSet-Cookie: a=b", b"hi")


@pytest.fixture
def package_kinds() -> list[Any]:
    """The dashboard's kinds plus ``bad_type``."""
    return [add_dashboard_kinds, add_bad_type]


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# Wrong for every list (each list's own shape differs: runs are (date, id), events (id,), ...).
BAD_CURSORS = [
    b64({"a": 1}), b64([None, None]), b64([True]), b64([2**70]), b64(["2024-02-30T25:61", 1]),
    "!!!not-base64!!!", "%00", b64([[[[[]]]]]), "A" * 3000, b64("x"), b64([]),
]


def list_urls(run_id: str) -> list[tuple[str, str]]:
    """(url, cursor parameter) of every keyset-paged list."""
    return [
        (reverse("workflow:runs"), "after"),
        (reverse("workflow:runs"), "before"),
        (reverse("consoles:steps"), "after"),
        (reverse("consoles:steps") + "?state=ready", "before"),
        (reverse("consoles:events"), "after"),
        (reverse("workflow:run", args=[run_id]), "safter"),
        (reverse("workflow:run", args=[run_id]) + "?sort=attempts&dir=desc", "sbefore"),
        (reverse("workflow:results", args=[run_id]), "after"),
        (reverse("workflow:artifacts", args=[run_id]), "before"),
        (reverse("workflow:records"), "after"),
    ]


# -- 1. keyset cursors ---------------------------------------------------------------------------
def test_cursors__not_made_by_the_page_are_a_400_with_a_clear_message(operator_client: Client, report_run: str) -> None:
    for url, name in list_urls(report_run):
        for cursor in BAD_CURSORS:
            sep = "&" if "?" in url else "?"
            response = operator_client.get(f"{url}{sep}{name}={cursor}")
            assert response.status_code == 400, (url, name, cursor, response.status_code)
            body = response.content.decode()
            assert "not a page link this site made" in body or "NUL" in body, (url, cursor)
            assert "Traceback" not in body


def test_cursors__the_reported_one_is_a_400_on_the_runs_list(operator_client: Client) -> None:
    response = operator_client.get(reverse("workflow:runs") + "?after=WyJ4IiwgInkiXQ")  # ["x","y"]
    assert response.status_code == 400 and "a date in it is not valid" in response.content.decode()


def test_cursors__htmx_fragment_gets_a_400_toast(operator_client: Client, report_run: str) -> None:
    url = reverse("workflow:run", args=[report_run]) + "?fragment=steps&safter=WyJ4IiwgInkiXQ"
    response = operator_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and response["HX-Retarget"] == "#toasts"
    assert "page cursor" in response.content.decode()


def test_cursors__made_by_a_page_round_trip(operator_client: Client, runtime: Any) -> None:
    ids = [run_graph(runtime, [{"id": "a", "kind": "noop"}]) for _ in range(3)]
    page = runs.runs_page(runs.RunFilters(), limit=2)
    assert page.older is not None
    response = operator_client.get(reverse("workflow:runs"), {"after": page.older})
    assert response.status_code == 200
    shown = {r.id for r in response.context["page"].rows}
    assert shown and shown <= set(ids) and shown.isdisjoint({r.id for r in page.rows})


def test_parse_cursor__checks_shape_and_types_without_a_request() -> None:
    from datetime import datetime

    good = pages.encode_cursor(datetime(2024, 1, 2, 3, 4, 5), "run-1")
    assert forms.parse_cursor(good, (datetime, str))[1] == "run-1"
    assert forms.parse_cursor(None, (int,)) is None
    for bad in [*BAD_CURSORS, "WyJ4IiwgInkiXQ", b64([1]), b64(["x"])]:
        with pytest.raises(forms.BadInput, match="page cursor"):
            forms.parse_cursor(bad, (datetime, str))


# -- 2. dates and times --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["2024-02-30T25:61", "2024-01-01T10:00+99:00", "9999-12-31T23:59-23:59",
                                   "0001-01-01T00:00+01:00", "yesterday", "2024-13-01"])
def test_dates__impossible_values_are_field_errors(operator_client: Client, value: str) -> None:
    runs = operator_client.get(reverse("workflow:runs"), {"created_after": value, "created_before": value})
    body = runs.content.decode()
    assert runs.status_code == 200
    assert 'id="f-after-error"' in body and 'id="f-before-error"' in body and "Enter a real date and time" in body
    assert 'aria-describedby="f-after-error"' in body
    events = operator_client.get(reverse("consoles:events"), {"since": value, "until": value})
    body = events.content.decode()
    assert events.status_code == 200 and 'id="e-since-error"' in body and 'id="e-until-error"' in body


def test_dates__a_valid_offset_filters(operator_client: Client, runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    shown = operator_client.get(reverse("workflow:runs"), {"created_after": "2000-01-01T00:00:00+05:30"})
    assert run_id in {r.id for r in shown.context["page"].rows}


# -- 3. metadata filters -------------------------------------------------------------------------
@pytest.mark.parametrize("lookup", ["contains", "range", "in", "regex", "has_key", "isnull", "0", "a__b"])
def test_meta_filter__key_is_a_key_never_a_lookup(operator_client: Client, runtime: Any, lookup: str) -> None:
    literal = run_graph(runtime, [{"id": "a", "kind": "noop"}], metadata={f"a__{lookup}": "x"})
    other = run_graph(runtime, [{"id": "a", "kind": "noop"}], metadata={"a": "xyz"})
    response = operator_client.get(reverse("workflow:runs"), {"meta": f"a__{lookup}=x"})
    assert response.status_code == 200
    shown = {r.id for r in response.context["page"].rows}
    assert literal in shown and other not in shown


def test_meta_filter__without_a_key_is_a_field_error(operator_client: Client) -> None:
    for value in ("=x", "novalue", "  =  "):
        body = operator_client.get(reverse("workflow:runs"), {"meta": value}).content.decode()
        assert 'id="f-meta-error"' in body and "key=value" in body


# -- 4. deep and large JSON ----------------------------------------------------------------------
def test_start_form__deep_json_is_a_field_error(operator_client: Client, site_registry: Any) -> None:  # noqa: F811
    url = reverse("consoles:start_run", args=["t"])
    deep = "[" * 490 + "]" * 490
    response = operator_client.post(url, {"__input__": deep})
    assert response.status_code == 400
    assert "nested 490 levels deep" in _field_error(response.content.decode(), "__input__")
    huge = "[" * 100_000
    assert operator_client.post(url, {"__input__": huge}).status_code == 400
    assert not Run.objects.exists()


def test_parse_json__bounds_and_text() -> None:
    assert forms.parse_json('{"a": ["[", "{{{"]}') == {"a": ["[", "{{{"]}  # brackets in strings do not count
    assert forms.json_text_depth('"\\"[[["') == 0
    with pytest.raises(forms.BadInput, match="levels deep"):
        forms.parse_json("[" * 65 + "]" * 65)
    with pytest.raises(forms.BadInput, match="bytes"):
        forms.parse_json('"' + "x" * 100 + '"', max_bytes=50)
    with pytest.raises(forms.BadInput, match="NUL"):
        forms.parse_json('{"a": "x\\u0000y"}')
    with pytest.raises(forms.BadInput, match="surrogate"):
        forms.parse_json('["\\ud800"]')
    with pytest.raises(forms.BadInput, match="surrogate"):
        forms.parse_json('{"\\udfff": 1}')
    with pytest.raises(forms.BadInput, match="not valid JSON"):
        forms.parse_json("1" * 5000)  # over Python's int digit limit


# -- 5. NUL, surrogates, over-long values --------------------------------------------------------
def test_nul_in_any_parameter_is_a_400(operator_client: Client, report_run: str) -> None:
    for url, _ in list_urls(report_run):
        sep = "&" if "?" in url else "?"
        for query in ("q=a%00b", "kind=%00", "sel=%00", "x%00=1", "step=%00", "meta=a%00=b"):
            response = operator_client.get(f"{url}{sep}{query}")
            assert response.status_code == 400 and "NUL" in response.content.decode(), (url, query)


def test_nul_in_posts_is_a_400_and_changes_nothing(operator_client: Client, failed_run: str,
                                                   site_registry: Any) -> None:  # noqa: F811
    bulk = operator_client.post(reverse("workflow:runs_bulk"), {"action": "cancel", "run": [failed_run, "x\x00"]})
    assert bulk.status_code == 400
    start = operator_client.post(reverse("consoles:start_run", args=["t"]),
                                 {"__input__": "{}", "run_name": "n\x00ame"})
    assert start.status_code == 400
    assert Run.objects.count() == 1


def test_over_long_values_are_refused_before_the_database(operator_client: Client, failed_run: str,
                                                          site_registry: Any) -> None:  # noqa: F811
    pause = operator_client.post(reverse("consoles:pause_queue", args=["q" * 150]))
    assert pause.status_code == 400 and "at most 100" in pause.content.decode()
    assert not Queue.objects.filter(name="q" * 150).exists()
    start = operator_client.post(reverse("consoles:start_run", args=["t"]), {
        "__input__": '{"steps": [{"id": "a", "kind": "noop"}]}', "run_name": "n" * 300})
    assert start.status_code == 400 and "300 characters long; at most 255" in start.content.decode()
    long_search = operator_client.get(reverse("workflow:runs"), {"q": "x" * 300})
    assert long_search.status_code == 200 and 'id="f-q-error"' in long_search.content.decode()
    events = operator_client.get(reverse("consoles:events"), {"queue": "q" * 150, "worker": "w" * 201})
    assert events.status_code == 200 and 'id="e-queue-error"' in events.content.decode()


def test_lone_surrogate_stored_through_sqlite_never_500s(operator_client: Client, admin_client: Client,
                                                         failed_run: str) -> None:
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's jsonb refuses a lone surrogate: only SQLite can hold one")
    # The ORM writes JSON with ASCII escapes: "\ud800" reaches the row as it would from old data.
    Step.objects.filter(run_id=failed_run, step_id="b").update(
        error={"code": "bad\ud800", "message": "lone \udfff here", "details": {"k\ud83d": ["\ud800"]}},
        result={"r": "\udbff"}, metadata={"m": "\ud800"})
    Run.objects.filter(pk=failed_run).update(metadata={"who": "\ud800"}, input={"i": "\udc00"})
    Event.objects.filter(run_id=failed_run).update(payload={"p": "\ud800"})
    step = Step.objects.get(run_id=failed_run, step_id="b")
    assert step.error["message"] == "lone \ufffd here"
    urls = [
        reverse("workflow:step", args=[failed_run, "b"]),
        reverse("workflow:run", args=[failed_run]) + "?step=b",
        reverse("workflow:runs"),
        reverse("workflow:results", args=[failed_run]) + "?sel=b",
        reverse("consoles:steps") + "?state=failed",
        reverse("consoles:events"),
        reverse("consoles:overview"),
        reverse("admin:workflow_step_change", args=[step.pk]),
        reverse("admin:workflow_run_change", args=[failed_run]),
        reverse("admin:workflow_step_changelist"),
        reverse("admin:workflow_event_changelist"),
        reverse("admin:workflow_event_change", args=[Event.objects.filter(run_id=failed_run).first().pk]),
    ]
    for url in urls:
        client = admin_client if url.startswith("/admin/") else operator_client
        response = client.get(url)
        assert response.status_code == 200, url
    assert "lone \ufffd here" in operator_client.get(urls[0]).content.decode()


# -- 6. names that break pages -------------------------------------------------------------------
@pytest.mark.parametrize("value", [".", "..", "...", "a/b", "~", "~2E", "a.", "..a", "%2e", "a b", "ü/../x"])
def test_id_converter__round_trips_and_never_emits_a_dot_segment(value: str) -> None:
    converter = IdConverter()
    url = converter.to_url(value)
    assert "/" not in url and url not in {".", ".."}
    assert converter.to_python(url) == value


def test_dot_ids__links_resolve_to_the_step_not_the_parent() -> None:
    url = reverse("workflow:step", args=["..", "."])
    assert url == "/runs/~2E~2E/steps/~2E/"
    match = resolve(url)
    assert match.kwargs == {"run_id": "..", "step_id": "."}


def test_queue_with_a_slash__monitor_renders_and_pause_works(operator_client: Client, admin_client: Client,
                                                             runtime: Any) -> None:
    Queue.objects.create(name="a/b", updated_at=timezone.now())
    page = operator_client.get(reverse("consoles:queues"))
    assert page.status_code == 200
    assert "/ops/queues/a~2Fb/pause/" in page.content.decode()
    assert operator_client.post("/ops/queues/a~2Fb/pause/").status_code == 302
    assert Queue.objects.get(name="a/b").paused
    # The stale row can be deleted in the admin (no ready or running step uses it).
    delete_url = reverse("admin:workflow_queue_delete", args=["a/b"])
    assert admin_client.get(delete_url).status_code == 200
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not Queue.objects.filter(name="a/b").exists()


# -- 8. artifact content types -------------------------------------------------------------------
def test_artifact_content_type__checked_when_written(runtime: Any) -> None:
    from workflow.engine.content_types import check_content_type
    from workflow.engine.errors import InvalidInput

    for good in ("text/csv", "application/json; charset=utf-8", 'text/plain; format="flowed"', "image/svg+xml"):
        assert check_content_type(good) == good
    for bad in ("text/plain\r\nX-Evil: 1", "text/\x00plain", "", "textplain", "text/plain\n", "a/b; " + "x" * 300):
        with pytest.raises(InvalidInput, match="content type"):
            check_content_type(bad)

    run_id = run_graph(runtime, [{"id": "a", "kind": "bad_type"}])
    drain(runtime)
    step = Step.objects.get(run_id=run_id, step_id="a")
    assert step.state == "failed" and step.error["code"] == "invalid_content_type"
    assert "CR, LF or NUL" in step.error["message"]
    assert not Artifact.objects.filter(run_id=run_id).exists()


def test_artifact_store__refuses_a_bad_content_type(tmp_path: Any) -> None:
    from workflow.engine.errors import InvalidInput
    from workflow.stores.artifacts import FileArtifactStore

    with pytest.raises(InvalidInput, match="content type"):
        FileArtifactStore(tmp_path).put("ab/abc", "text/plain\r\n", b"x")
    assert not any(tmp_path.rglob("abc"))


def test_download__a_stored_crlf_content_type_is_sent_as_bytes(operator_client: Client, report_run: str) -> None:
    artifact = Artifact.objects.filter(run_id=report_run, name="table.csv").get()
    Artifact.objects.filter(pk=artifact.pk).update(content_type="text/csv\r\nX-Evil: 1")
    response = operator_client.get(reverse("workflow:download_artifact", args=[artifact.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/octet-stream"
    assert "X-Evil" not in response.headers


# -- 10. cost bounded ----------------------------------------------------------------------------
def test_runs_search__bounded_scan_offers_to_search_older_runs(operator_client: Client, runtime: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_runs, "RUN_SCAN_WINDOW", 3)
    old = run_graph(runtime, [{"id": "a", "kind": "noop"}], name="needle", metadata={"team": "red"})
    newer = [run_graph(runtime, [{"id": "a", "kind": "noop"}], name=f"hay {i}") for i in range(4)]
    for query in ({"q": "needle"}, {"meta": "team=red"}):
        first = operator_client.get(reverse("workflow:runs"), query)
        page = first.context["page"]
        assert page.rows == [] and page.scan_capped and page.older
        assert "Search older runs" in first.content.decode()
        second = operator_client.get(reverse("workflow:runs"), {**query, "after": page.older})
        assert [r.id for r in second.context["page"].rows] == [old]
    unfiltered = operator_client.get(reverse("workflow:runs")).context["page"]
    assert not unfiltered.scan_capped and len(unfiltered.rows) == len(newer) + 1


def test_runs_state_filter__uses_an_index_in_list_order(runtime: Any) -> None:
    from django.db import connection

    qs = runs.RunFilters(state="canceled").apply(Run.objects.all()).order_by("-created_at", "-id")[:51]
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(str(row) for row in cursor.fetchall())
            assert "run_state_newest_idx" in plan and "TEMP B-TREE" not in plan, plan
        else:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            cursor.execute("SET enable_seqscan = on")
            assert "run_state_newest_idx" in plan and "Sort" not in plan, plan


def test_action_from_a_page_with_a_stale_cursor__acts_and_refreshes(operator_client: Client, failed_run: str) -> None:
    current = f"http://testserver/runs/{failed_run}/?safter=WyJ4IiwgInkiXQ"
    response = operator_client.post(reverse("workflow:retry_step", args=[failed_run, "b"]),
                                    HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=current)
    assert response.status_code == 200 and 'id="step-rows"' in response.content.decode()
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "ready"
