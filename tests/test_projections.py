"""Projections: one SQLite file per name or tables in a DATABASES alias, parameters, safe names."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.conftest import drain, run_graph
from workflow import Config, ConfigurationError, Package, Registry, Runtime, StepContext
from workflow.engine.errors import InvalidInput
from workflow.stores.db import DjangoStore
from workflow.stores.projections import DjangoProjectionStore, SQLiteProjectionStore, check_name

ODD_NAMES = ["../x", "/abs", "a\x00b", "a" * 65, "", "a/b", "a\\b", "a.b", "a b", "abc\n", "é", ".."]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_check_name__refuses_odd_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 64])
def test_check_name__accepts_letters_digits_underscore_and_dash(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ODD_NAMES)
def test_sqlite_store__refuses_odd_names_and_writes_nothing(tmp_path: Path, name: str) -> None:
    store = SQLiteProjectionStore(tmp_path / "projections")
    with pytest.raises(InvalidInput):
        store.projection(name)
    assert list(tmp_path.rglob("*")) == []


def test_sqlite_store__gives_each_name_its_own_file(tmp_path: Path) -> None:
    store = SQLiteProjectionStore(tmp_path)
    a, b = store.projection("alpha"), store.projection("beta-2")
    assert store.projection("alpha") is a
    a.exec("CREATE TABLE items (k TEXT PRIMARY KEY, v INTEGER)")
    b.exec("CREATE TABLE items (k TEXT PRIMARY KEY, v INTEGER)")
    a.exec("INSERT INTO items VALUES (?, ?)", ("x", 1))
    assert b.query("SELECT * FROM items") == []
    assert a.query("SELECT * FROM items") == [{"k": "x", "v": 1}]
    assert sorted(p.name for p in tmp_path.glob("*.sqlite3")) == ["alpha.sqlite3", "beta-2.sqlite3"]
    store.close()


def test_sqlite_projection__exec_and_query_take_parameters(tmp_path: Path) -> None:
    p = SQLiteProjectionStore(tmp_path).projection("p")
    p.exec("CREATE TABLE t (k TEXT, v INTEGER)")
    hostile = "x'); DROP TABLE t; --"
    assert p.exec("INSERT INTO t VALUES (?, ?)", [hostile, 1]) == 1
    assert p.exec("INSERT INTO t VALUES (:k, :v)", {"k": "50%?", "v": 2}) == 1
    assert p.query("SELECT k FROM t WHERE v = ?", [1]) == [{"k": hostile}]
    assert p.query("SELECT v FROM t WHERE k = :k", {"k": "50%?"}) == [{"v": 2}]
    assert p.exec("UPDATE t SET v = v + 10") == 2
    assert p.table("t") == '"t"'
    with pytest.raises(InvalidInput):
        p.table("t; DROP")


def test_sqlite_projection__serves_several_threads_and_close_closes_them_all(tmp_path: Path) -> None:
    store = SQLiteProjectionStore(tmp_path)
    p = store.projection("shared")
    p.exec("CREATE TABLE t (n INTEGER)")

    def work(n: int) -> None:
        for i in range(20):
            p.exec("INSERT INTO t VALUES (?)", [n * 100 + i])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.query("SELECT COUNT(*) AS n FROM t") == [{"n": 80}]
    assert len(p._connections) == 5
    store.close()
    assert p._connections == []
    assert store.projection("shared").query("SELECT COUNT(*) AS n FROM t") == [{"n": 80}]  # reopens


# -- DjangoProjectionStore ---------------------------------------------------------------------
@pytest.fixture
def django_projection(transactional_db: Any) -> Any:
    p = DjangoProjectionStore("default").projection("proj-1")
    table = p.table("items")
    p.exec(f"CREATE TABLE {table} (k VARCHAR(100) PRIMARY KEY, v INTEGER)")
    yield p
    p.exec(f"DROP TABLE {table}")


def test_django_projection__tables_are_prefixed_with_the_projection_name(django_projection: Any) -> None:
    assert django_projection.table("items") == connection.ops.quote_name("proj-1_items")
    assert "proj-1_items" in connection.introspection.table_names()


def test_django_projection__exec_and_query_take_parameters(django_projection: Any) -> None:
    p = django_projection
    t = p.table("items")
    hostile = "x'); DROP TABLE workflow_run; --"
    assert p.exec(f"INSERT INTO {t} (k, v) VALUES (?, ?)", [hostile, 1]) == 1
    assert p.exec(f"INSERT INTO {t} (k, v) VALUES (:k, :v)", {"k": "50%", "v": 2}) == 1
    assert p.query(f"SELECT k FROM {t} WHERE v = ?", [1]) == [{"k": hostile}]
    assert p.query(f"SELECT v FROM {t} WHERE k = :k", {"k": "50%"}) == [{"v": 2}]
    assert p.query(f"SELECT k FROM {t} WHERE k LIKE '50%'") == [{"k": "50%"}]  # no params: no formatting
    assert p.exec(f"UPDATE {t} SET v = v + 1") == 2
    assert connection.introspection.table_names().count("workflow_run") == 1


def test_django_projection_store__returns_one_object_per_name(transactional_db: Any) -> None:
    store = DjangoProjectionStore("default")
    assert store.projection("a") is store.projection("a")
    for name in ODD_NAMES:
        with pytest.raises(InvalidInput):
            store.projection(name)


def test_django_projection_store__refuses_an_unknown_alias() -> None:
    with pytest.raises(ConfigurationError, match="nowhere"):
        DjangoProjectionStore("nowhere")


# -- through the runtime -------------------------------------------------------------------------
@pytest.fixture
def seen() -> list[Any]:
    return []


@pytest.fixture
def package_kinds(seen: list[Any]) -> list[Callable[[Package], None]]:
    def add_kinds(pkg: Package) -> None:
        @pkg.executor("count")
        def count(step: StepContext) -> dict:
            p = step.projection("counts")
            seen.append(p)
            t = p.table("hits")
            p.exec(f"CREATE TABLE IF NOT EXISTS {t} (k VARCHAR(100) PRIMARY KEY, n INTEGER)")
            p.exec(f"INSERT INTO {t} (k, n) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = {t}.n + 1",
                   [step.raw_input["k"]])
            return {"rows": p.query(f"SELECT n FROM {t} WHERE k = ?", [step.raw_input["k"]])}

    return [add_kinds]


def test_runtime_projection__is_the_object_steps_see(runtime: Any, seen: list[Any]) -> None:
    run_graph(runtime, [{"id": "a", "kind": "count", "input": {"k": "x"}},
                        {"id": "b", "kind": "count", "input": {"k": "x"}, "deps": ["a"]}])
    drain(runtime)
    assert len(seen) == 2 and seen[0] is seen[1] is runtime.projection("counts")
    assert runtime.projection("counts").query('SELECT n FROM "hits"') == [{"n": 2}]


def test_runtime_projection__on_a_database_alias(registry: Registry, transactional_db: Any, seen: list[Any]) -> None:
    rt = Runtime(Config(poll_interval=timedelta(milliseconds=50)), store=DjangoStore(), registry=registry,
                 projection_store=DjangoProjectionStore("default"))
    try:
        run_id = run_graph(rt, [{"id": "a", "kind": "count", "input": {"k": "y"}}])
        drain(rt)
        assert rt.result(run_id, "a").data == {"rows": [{"n": 1}]}
        assert seen[0] is rt.projection("counts")
        assert "counts_hits" in connection.introspection.table_names()
    finally:
        rt.projection("counts").exec(f"DROP TABLE {rt.projection('counts').table('hits')}")
        rt.close()


def test_runtime_projection__without_a_store_is_a_configuration_error(registry: Registry) -> None:
    rt = Runtime(Config(), store=DjangoStore(), registry=registry)
    with pytest.raises(ConfigurationError, match="projection"):
        rt.projection("counts")
    with pytest.raises(InvalidInput):
        SQLiteProjectionStore("/nonexistent").projection("../x")


def test_conf__builds_the_projection_store_from_settings(settings: Any, tmp_path: Path) -> None:
    from workflow import conf

    settings.WORKFLOW = {"PROJECTION_DATABASE": "default"}
    assert isinstance(conf.projection_store(), DjangoProjectionStore)
    settings.WORKFLOW = {"PROJECTION_ROOT": tmp_path}
    store = conf.projection_store()
    assert isinstance(store, SQLiteProjectionStore) and store.root == tmp_path
