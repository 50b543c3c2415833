"""Emitted children: one child per dedup key, ``StepResult.emitted``; attempt numbers across operator retries."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from tests.conftest import drain, run_graph
from workflow import Package, require
from workflow.models import Event, Lease, Step


def test_emit__same_dedup_key_twice_in_one_step_returns_the_first_child(runtime, registry):
    pkg = Package("dd")
    handles: list[Any] = []

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step("parent", kind="emit-twice")

    @pkg.executor("emit-twice")
    def emit_twice(step: Any) -> None:
        first = step.emit("first", {"n": 1}, kind="noop", dedup_key="only-once")
        second = step.emit("second", {"n": 2}, kind="noop", dedup_key="only-once")
        handles[:] = [first, second]
        step.emit("join", kind="noop", depends_on=require(first, second))

    registry.register(pkg)
    run_id = runtime.start_run("dd").id
    drain(runtime)
    assert handles[0] == handles[1]
    assert handles[0].id == "first"
    states = dict(Step.objects.filter(run_id=run_id).values_list("step_id", "state"))
    assert states == {"parent": "succeeded", "first": "succeeded", "join": "succeeded"}
    assert Step.objects.get(run_id=run_id, step_id="first").input == {"n": 1}


def test_step_result__emitted_lists_the_children_in_emit_order(runtime):
    run_id = run_graph(runtime, [{"id": "split", "kind": "fanout", "input": {"n": 3}}, {"id": "solo", "kind": "noop"}])
    drain(runtime)
    result = runtime.result(run_id, "split")
    assert result is not None
    assert result.emitted == ("split:emit:001", "split:emit:002", "split:emit:003", "join")
    assert runtime.result(run_id, "solo").emitted == ()


def attempts_of(run_id: str, step_id: str) -> list[tuple[int, str]]:
    return list(Lease.objects.filter(run_id=run_id, step__step_id=step_id).order_by("claimed_at", "id")
                .values_list("attempt", "outcome"))


def test_operator_retry__attempt_numbers_keep_counting_and_the_budget_resets(runtime):
    # flaky fails until attempt 4; a budget of 2 ends after #2, the operator's retry allows #3 and #4.
    run_id = run_graph(runtime, [{"id": "f", "kind": "flaky", "input": {"until": 4}, "retry": 2}])
    drain(runtime)
    assert attempts_of(run_id, "f") == [(1, "retried"), (2, "failed")]
    runtime.retry_step(run_id, "f", actor="otto")
    drain(runtime)
    step = Step.objects.get(run_id=run_id, step_id="f")
    assert step.state == "succeeded"
    assert step.result == {"attempt": 4}
    assert attempts_of(run_id, "f") == [(1, "retried"), (2, "failed"), (3, "retried"), (4, "succeeded")]
    assert (step.attempt, step.max_attempts) == (4, 4)
    retried = Event.objects.get(kind="step_retried")
    assert retried.payload["next_attempt"] == 3
    # A second retry after another failure gives the same budget again, counting on from there.


def test_operator_retry__twice_gives_the_policy_budget_each_time(runtime, tmp_path):
    bug = tmp_path / "bug"
    bug.write_text("x")
    run_id = run_graph(runtime, [{"id": "g", "kind": "fail_while_file", "input": {"path": str(bug)}, "retry": 3}])
    drain(runtime)
    runtime.retry_step(run_id, "g")
    drain(runtime)
    assert attempts_of(run_id, "g") == [(1, "failed"), (2, "failed")]
    assert Step.objects.get(run_id=run_id, step_id="g").max_attempts == 1 + 3
    runtime.retry_step(run_id, "g")
    bug.unlink()
    drain(runtime)
    step = Step.objects.get(run_id=run_id, step_id="g")
    assert step.state == "succeeded"
    assert attempts_of(run_id, "g") == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert step.max_attempts == 2 + 3


def test_step_page__shows_each_attempt_once_with_its_own_duration(runtime, tmp_path, transactional_db):
    bug = tmp_path / "bug"
    bug.write_text("x")
    run_id = run_graph(runtime, [{"id": "g", "kind": "fail_while_file", "input": {"path": str(bug)}}])
    drain(runtime)
    bug.unlink()
    runtime.retry_step(run_id, "g")
    drain(runtime)
    first, second = Lease.objects.filter(run_id=run_id).order_by("claimed_at", "id")
    step = Step.objects.get(run_id=run_id, step_id="g")
    assert step.started_at == second.claimed_at  # the step's duration is that of its last run
    user = User.objects.create_user("vera", password="pw-vera-123")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="workflow",
                                                          codename__startswith="view_"))
    client = Client()
    client.force_login(user)
    html = client.get(reverse("workflow:step", args=[run_id, "g"])).content.decode()
    numbers = re.findall(r'data-attempt="(\d+)"', html)
    assert sorted(numbers) == ["1", "2"]
    assert "out-failed" in html and "out-succeeded" in html


def test_run_builder__handles_of_one_dedup_key_can_both_be_required(runtime, registry):
    pkg = Package("dd2")

    @pkg.entrypoint
    def start(run: Any) -> None:
        a = run.step("a", kind="noop", dedup_key="k")
        b = run.step("b", kind="noop", dedup_key="k")
        run.step("c", kind="noop", depends_on=require(a, b))

    registry.register(pkg)
    run_id = runtime.start_run("dd2").id
    drain(runtime)
    assert dict(Step.objects.filter(run_id=run_id).values_list("step_id", "state")) == {"a": "succeeded",
                                                                                       "c": "succeeded"}


def test_emit__child_depending_on_itself_fails_the_parent_once_without_retries(runtime, registry):
    pkg = Package("selfdep")

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step("p", kind="emit-self")

    @pkg.executor("emit-self")
    def emit_self(step: Any) -> None:
        step.emit("loop", kind="noop", depends_on="loop")

    registry.register(pkg)
    run_id = runtime.start_run("selfdep").id
    drain(runtime)
    parent = Step.objects.get(run_id=run_id, step_id="p")
    assert (parent.state, parent.error["code"], parent.attempt) == ("failed", "invalid_graph", 1)


def test_emit__two_steps_of_one_commit_batch_emitting_one_dedup_key_make_one_child(runtime, registry, caplog):
    """Found by the liveness test: siblings committed together both inserted the key (IntegrityError)."""
    from workflow.models import Run

    pkg = Package("dd2")

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step("left", kind="emit-shared")
        run.step("right", kind="emit-shared")

    @pkg.executor("emit-shared")
    def emit_shared(step: Any) -> None:
        step.emit(f"{step.step.step_id}-child", kind="noop", dedup_key="shared")

    registry.register(pkg)
    run_id = runtime.start_run("dd2").id
    caplog.set_level("WARNING", logger="workflow")
    drain(runtime)
    states = dict(Step.objects.filter(run_id=run_id).values_list("step_id", "state"))
    # Whichever parent's outcome the batch holds first wins the key; its sibling aliases that child.
    children = {step_id for step_id in states if step_id.endswith("-child")}
    assert len(children) == 1 and children <= {"left-child", "right-child"}, states
    assert states == {"left": "succeeded", "right": "succeeded", children.pop(): "succeeded"}
    assert Run.objects.get(pk=run_id).state == "succeeded"
    assert "commit failed" not in caplog.text
    # Both parents' outcomes were in one batch, so the store split them into two waves.
    parents = Lease.objects.filter(run_id=run_id, step__step_id__in=["left", "right"])
    assert parents.values("released_at").distinct().count() == 1, "the two parents did not commit together"


def test_dedup_waves__keep_order_and_separate_only_clashing_keys():
    from types import SimpleNamespace as NS

    from workflow.stores.commit import dedup_waves

    def outcome(run: str, *keys: str) -> Any:
        return NS(step=NS(run_id=run), children=[NS(dedup_key=k) for k in keys])

    a, b, c, d = outcome("r", "x"), outcome("r", "x", "y"), outcome("other", "x"), outcome("r", "z")
    assert dedup_waves([a, b, c, d]) == [[a, c, d], [b]]
    assert dedup_waves([]) == []


def test_store__a_lost_dedup_key_race_is_a_conflict_to_retry_not_a_failure(runtime):
    """Two workers' commits emitting one key at once (PostgreSQL): the loser retries and aliases."""
    import pytest

    from workflow.engine.errors import StoreConflict
    from workflow.stores import DjangoStore

    run_id = run_graph(runtime, [{"id": "a", "kind": "noop", "dedup": "k"}])
    store = DjangoStore()
    with pytest.raises(StoreConflict) as caught, store._transaction() as cursor:
        cursor.execute(
            "INSERT INTO workflow_step (run_id, step_id, kind, queue, site, dedup_key, metadata, retry, state, attempt,"
            " max_attempts, pending_deps, priority, available_at, created_at, updated_at)"
            " SELECT run_id, 'b', kind, queue, site, dedup_key, metadata, retry, state, attempt, max_attempts,"
            " pending_deps, priority, available_at, created_at, updated_at FROM workflow_step WHERE run_id = %s",
            [run_id],
        )
    assert caught.value.kind == "dedup"
    assert Step.objects.filter(run_id=run_id).count() == 1
