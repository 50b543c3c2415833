"""Invariant 6: bad input gets a clear error naming the thing, and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conftest import drain, run_graph
from workflow import (
    InvalidGraph,
    InvalidInput,
    InvalidState,
    NotFound,
    Package,
    RunConflict,
    UnknownKind,
    UnknownPackage,
)
from workflow.models import Dependency, Event, Run, Step


def assert_nothing_written() -> None:
    assert (Run.objects.count(), Step.objects.count(), Dependency.objects.count(), Event.objects.count()) == (0, 0, 0, 0)


def test_start_run__unknown_package_names_it(runtime):
    with pytest.raises(UnknownPackage, match="'nope'"):
        runtime.start_run("nope", {})
    assert_nothing_written()


def test_start_run__unknown_kind_names_it(runtime):
    with pytest.raises(UnknownKind, match="'missing-kind'"):
        run_graph(runtime, [{"id": "a", "kind": "missing-kind"}])
    assert_nothing_written()


@dataclass
class Params:
    url: str
    retries: int = 1


def test_start_run__undecodable_input_names_the_field(runtime, registry):
    typed = Package("typed")

    @typed.entrypoint
    def start(run, params: Params) -> None:
        run.step("a", {"url": params.url}, kind="noop")

    registry.register(typed)
    with pytest.raises(InvalidInput, match="retries: expected an integer"):
        runtime.start_run("typed", {"url": "x", "retries": "many"})
    with pytest.raises(InvalidInput, match="url: missing required field"):
        runtime.start_run("typed", {})
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        runtime.start_run("typed", {"url": object()})
    assert_nothing_written()


def test_start_run__duplicate_step_id_is_refused(runtime):
    with pytest.raises(InvalidGraph, match="duplicate step id 'a'"):
        run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "a", "kind": "noop"}])
    assert_nothing_written()


def test_start_run__dependency_on_a_missing_step_is_refused(runtime):
    with pytest.raises(InvalidGraph, match="'b' depends on missing step 'ghost'"):
        run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["ghost"]}])
    assert_nothing_written()


def test_start_run__a_cycle_is_refused_and_named(runtime):
    with pytest.raises(InvalidGraph, match="dependency cycle: .*a -> .*"):
        run_graph(runtime, [
            {"id": "a", "kind": "noop", "deps": ["c"]},
            {"id": "b", "kind": "noop", "deps": ["a"]},
            {"id": "c", "kind": "noop", "deps": ["b"]},
        ])
    assert_nothing_written()


def test_start_run__an_entrypoint_without_steps_is_refused(runtime):
    with pytest.raises(InvalidGraph, match="produced no steps"):
        run_graph(runtime, [])
    assert_nothing_written()


def test_retry_step__refuses_a_step_that_is_not_failed(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    with pytest.raises(InvalidState, match="'a' is ready; only a failed step can be retried"):
        runtime.retry_step(run_id, "a")
    drain(runtime)
    with pytest.raises(InvalidState, match="is succeeded"):
        runtime.retry_step(run_id, "a")
    with pytest.raises(NotFound, match="step 'zz' does not exist"):
        runtime.retry_step(run_id, "zz")
    assert not Event.objects.filter(kind="step_retried").exists()


def test_cancel_run__refuses_a_finished_or_unknown_run(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    drain(runtime)
    with pytest.raises(InvalidState, match="already succeeded"):
        runtime.cancel_run(run_id)
    with pytest.raises(NotFound, match="'nope' does not exist"):
        runtime.cancel_run("nope")
    assert Run.objects.get(pk=run_id).state == "succeeded"


def test_start_run__with_an_existing_id_returns_it_or_conflicts(runtime):
    steps = [{"id": "a", "kind": "noop"}]
    first = run_graph(runtime, steps, run_id="order-42")
    again = runtime.start_run("t", {"steps": steps}, run_id="order-42")
    assert (again.id, again.created) == (first, False)
    with pytest.raises(RunConflict, match="'order-42' already exists"):
        runtime.start_run("t", {"steps": [{"id": "b", "kind": "noop"}]}, run_id="order-42")
    assert Run.objects.count() == 1 and Step.objects.count() == 1


def test_start_run__without_an_id_gets_package_and_uuid(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    assert run_id.startswith("t-") and len(run_id) == len("t-") + 36


def test_step_ids__are_scoped_to_their_run(runtime):
    first = run_graph(runtime, [{"id": "root", "kind": "noop"}])
    second = run_graph(runtime, [{"id": "root", "kind": "noop"}])
    drain(runtime)
    assert runtime.result(first, "root").state == runtime.result(second, "root").state == "succeeded"


def test_dedup_key__makes_a_repeated_step_the_same_step(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop", "dedup": "k"}, {"id": "b", "kind": "noop", "dedup": "k"}])
    assert list(Step.objects.filter(run_id=run_id).values_list("step_id", flat=True)) == ["a"]


def test_typed_executor__invalid_step_input_fails_permanently_naming_the_field(runtime):
    run_id = run_graph(runtime, [{"id": "s", "kind": "sleep", "input": {"seconds": "long"}}])
    drain(runtime)
    result = runtime.result(run_id, "s")
    assert result.state == "failed"
    assert result.error.code == "invalid_input" and "seconds" in result.error.message
    assert result.attempt == 1  # permanent: no retry


def test_emit__an_invalid_child_graph_fails_the_step_not_the_worker(runtime, registry):
    from workflow import Package, require

    pkg = Package("bad-emit")

    @pkg.entrypoint
    def start(run, params) -> None:
        run.step("parent", {}, kind="emit-ghost")
        run.step("other", {}, kind="noop")

    @pkg.executor("emit-ghost")
    def emit_ghost(step) -> None:
        step.emit("child", {}, kind="noop", depends_on=require("ghost"))

    registry.register(pkg)
    run_id = runtime.start_run("bad-emit", {}).id
    drain(runtime)
    parent = runtime.result(run_id, "parent")
    assert parent.state == "failed" and parent.error.code == "invalid_graph"
    assert "ghost" in parent.error.message
    assert runtime.result(run_id, "other").state == "succeeded"
    assert runtime.result(run_id, "child") is None


def test_commit__a_nul_or_lone_surrogate_in_a_log_or_error_does_not_stop_the_commit(runtime, registry):
    """What a step writes unasked (its log, its exception) may hold bytes no column can store; the
    attempt still commits in one go, with them shown as U+FFFD. Before, PostgreSQL refused the
    commit, and its fallback too, so each attempt waited out its lease."""
    from workflow.engine.errors import StepError
    from workflow.models import Lease

    pkg = Package("odd")

    @pkg.entrypoint
    def start(run, params) -> None:
        for name in ("chatty", "broken", "detailed"):
            run.step(name, {}, kind=name)

    @pkg.executor("chatty")
    def chatty(step) -> dict:
        step.logger.warning("read b'\x00' from the device, then \ud800")
        return {"ok": True}

    @pkg.executor("broken")
    def broken(step) -> None:
        raise ValueError("bad byte \x00 in the file")

    @pkg.executor("detailed")
    def detailed(step) -> None:
        raise StepError("bad_\x00record", "record \ud800 unreadable", retryable=False, details={"raw": "a\x00b"})

    registry.register(pkg)
    run_id = runtime.start_run("odd", {}).id
    drain(runtime)
    steps = {s.step_id: s for s in Step.objects.filter(run_id=run_id)}
    assert {k: s.state for k, s in steps.items()} == {"chatty": "succeeded", "broken": "ready", "detailed": "failed"}
    leases = {x.step.step_id: x for x in Lease.objects.filter(run_id=run_id).select_related("step")}
    assert len(leases) == 3 and all(x.released_at for x in leases.values())  # one attempt each, none expired
    assert "read b'\ufffd' from the device, then \ufffd" in leases["chatty"].log
    assert "bad byte \ufffd in the file" in steps["broken"].error["message"]
    assert steps["detailed"].error["code"] == "bad_\ufffdrecord" == leases["detailed"].error_code
    assert steps["detailed"].error["message"] == "record \ufffd unreadable"
    assert steps["detailed"].error["details"] == '{"raw": "a\\u0000b"}'  # kept as its text
