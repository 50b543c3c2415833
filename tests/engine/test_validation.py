"""Every value a caller passes is checked when it is built: ``InvalidInput`` names step and field, nothing is written.

One bad row read inside every claim stops every worker, so the engine refuses it at the door.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import drain
from workflow import InvalidInput, Package, QueueConfig, RateLimitPolicy, RetryPolicy
from workflow.engine import validation
from workflow.engine.errors import ConfigurationError
from workflow.engine.runtime import Config
from workflow.engine.values import BackoffKind
from workflow.models import Artifact, Dependency, Event, Queue, Record, Run, Step, Worker


def assert_nothing_written() -> None:
    assert (Run.objects.count(), Step.objects.count(), Dependency.objects.count(), Event.objects.count()) == (0, 0, 0, 0)


def start_one_step(runtime: Any, registry: Any, **step_options: Any) -> Any:
    """Start a run of a one-step package built with ``step_options``; returns the handle."""
    pkg = Package("v")

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step(step_options.pop("id", "a"), step_options.pop("input", None), kind="noop", **step_options)

    registry.register(pkg)
    return runtime.start_run("v")


# -- RetryPolicy --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"backoff": "bogus"}, "retry.backoff", "RetryPolicy.backoff must be one of fixed, linear, exponential"),
        ({"backoff_coefficient": 0.5}, "retry.backoff_coefficient", "at least 1"),
        ({"backoff_coefficient": float("nan")}, "retry.backoff_coefficient", "at least 1"),
        ({"initial_backoff": timedelta(seconds=-1)}, "retry.initial_backoff", "non-negative"),
        ({"max_backoff": 5}, "retry.max_backoff", "timedelta"),
        ({"max_attempts": 0}, "retry.max_attempts", "at least 1"),
        ({"max_attempts": "3"}, "retry.max_attempts", "integer"),
        ({"jitter": 1.5}, "retry.jitter", "between 0 and 1"),
        ({"jitter": -0.1}, "retry.jitter", "between 0 and 1"),
    ],
)
def test_retry_policy__bad_value_is_refused_naming_the_field(options, field, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        RetryPolicy(**options)
    assert caught.value.field == field


def test_retry_policy__a_typo_never_reaches_the_database(runtime, registry):
    with pytest.raises(InvalidInput, match="'bogus'"):
        start_one_step(runtime, registry, retry=RetryPolicy(backoff="bogus"))
    assert_nothing_written()


def test_retry_policy__string_backoff_becomes_the_enum():
    policy = RetryPolicy(backoff="linear", initial_backoff=timedelta(seconds=2), jitter=0)
    assert policy.backoff is BackoffKind.LINEAR
    assert policy.delay(3) == timedelta(seconds=6)  # linear: 2 s x attempt 3; a fixed 2 s before
    assert RetryPolicy(backoff="exponential", jitter=0).delay(3) == timedelta(seconds=4)


def test_step__retry_that_is_not_a_policy_names_step_and_field(runtime, registry):
    with pytest.raises(InvalidInput, match="step 'a': retry must be a RetryPolicy") as caught:
        start_one_step(runtime, registry, retry={"max_attempts": 3})
    assert (caught.value.step, caught.value.field) == ("a", "retry")
    assert_nothing_written()


# -- RateLimitPolicy, QueueConfig --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate": 0}, "rate_limit.rate"),
        ({"rate": float("nan")}, "rate_limit.rate"),
        ({"rate": float("inf")}, "rate_limit.rate"),
        ({"rate": "10"}, "rate_limit.rate"),
        ({"rate": 1, "per": timedelta(0)}, "rate_limit.per"),
        ({"rate": 1, "per": 1}, "rate_limit.per"),
        ({"rate": 1, "burst": 0}, "rate_limit.burst"),
        ({"rate": 1, "burst": 1.5}, "rate_limit.burst"),
    ],
)
def test_rate_limit_policy__bad_value_is_refused_naming_the_field(options, field):
    with pytest.raises(InvalidInput) as caught:
        RateLimitPolicy(**options)
    assert caught.value.field == field


@pytest.mark.parametrize("max_workers", [0, -1, 2.5, "4", True])
def test_queue_config__bad_cap_is_refused(max_workers):
    with pytest.raises(InvalidInput, match="max_workers"):
        QueueConfig(max_workers=max_workers)


def test_configure_queue__bad_name_is_refused_before_any_write(runtime):
    with pytest.raises(InvalidInput, match="may only hold"):
        runtime.configure_queue("bad/name", QueueConfig(max_workers=1))
    assert not Queue.objects.filter(name="bad/name").exists()


# -- queue names -------------------------------------------------------------------------------------
@pytest.mark.parametrize("queue", ["a/b", ".", "..", "has space", "q\x00", "é" * 3, "x" * 101])
def test_step__bad_queue_name_names_step_and_field(runtime, registry, queue):
    with pytest.raises(InvalidInput, match="step 'a': queue name") as caught:
        start_one_step(runtime, registry, queue=queue)
    assert (caught.value.step, caught.value.field) == ("a", "queue")
    assert_nothing_written()


@pytest.mark.parametrize("queue", ["default", "io.slow", "a-b_c.1", "x" * 100])
def test_step__safe_queue_names_are_accepted(runtime, registry, queue):
    start_one_step(runtime, registry, queue=queue)
    assert Step.objects.get().queue == queue


def test_config__settings_queue_with_a_bad_name_is_refused():
    with pytest.raises(ConfigurationError, match="may only hold") as caught:
        Config(queues={"../etc": QueueConfig()})
    assert caught.value.field == "queues"


# -- ids, names and column lengths -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("step_id", "message"),
    [
        (".", "must not be '.'"),
        ("..", "must not be '..'"),
        ("x" * 256, "longer than the limit of 255"),
        ("a\x00b", "control character"),
        ("a\x1bb", "control character"),
        ("a\ud800", "lone surrogate"),
        ("   ", "must not be empty"),
    ],
)
def test_step__bad_id_is_refused(runtime, registry, step_id, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        start_one_step(runtime, registry, id=step_id)
    assert caught.value.field == "id"
    assert_nothing_written()


def test_step__id_with_a_slash_is_accepted_urls_escape_it(runtime, registry):
    start_one_step(runtime, registry, id="fetch/page-1")
    assert Step.objects.get().step_id == "fetch/page-1"


@pytest.mark.parametrize("run_id", [".", "..", "r" * 256, "r\n1"])
def test_start_run__bad_run_id_is_refused(runtime, run_id):
    with pytest.raises(InvalidInput) as caught:
        runtime.start_run("t", {}, run_id=run_id)
    assert caught.value.field == "run_id"
    assert_nothing_written()


def test_start_run__name_longer_than_its_column_is_refused(runtime):
    with pytest.raises(InvalidInput, match="run name .* longer than the limit of 255") as caught:
        runtime.start_run("t", {}, name="n" * 256)
    assert caught.value.field == "name"
    assert_nothing_written()


def test_step__dedup_key_and_site_longer_than_their_columns_are_refused(runtime, registry):
    with pytest.raises(InvalidInput, match="step 'a': dedup key") as caught:
        start_one_step(runtime, registry, dedup_key="k" * 256)
    assert caught.value.field == "dedup_key"
    registry._packages.pop("v")
    with pytest.raises(InvalidInput, match="step 'a': site .* longer than the limit of 100") as caught:
        start_one_step(runtime, registry, site="s" * 101)
    assert caught.value.field == "site"
    assert_nothing_written()


def test_registry__kind_longer_than_its_column_is_a_configuration_error():
    pkg = Package("long")
    with pytest.raises(ConfigurationError, match="longer than the limit of 100"):
        pkg.executor("k" * 101)(lambda step: None)
    with pytest.raises(ConfigurationError, match="kind .ok.: queue .no/slashes. may only hold"):
        pkg.executor("ok", queue="no/slashes")(lambda step: None)
    with pytest.raises(ConfigurationError, match="longer than 100"):
        Package("p" * 101)


@pytest.mark.parametrize(
    ("constant", "model", "field"),
    [
        ("MAX_RUN_ID_LENGTH", Run, "id"),
        ("MAX_PACKAGE_LENGTH", Run, "package"),
        ("MAX_RUN_NAME_LENGTH", Run, "name"),
        ("MAX_STEP_ID_LENGTH", Step, "step_id"),
        ("MAX_STEP_ID_LENGTH", Step, "parent_step_id"),
        ("MAX_KIND_LENGTH", Step, "kind"),
        ("MAX_QUEUE_LENGTH", Step, "queue"),
        ("MAX_QUEUE_LENGTH", Queue, "name"),
        ("MAX_SITE_LENGTH", Step, "site"),
        ("MAX_DEDUP_KEY_LENGTH", Step, "dedup_key"),
        ("MAX_WORKER_ID_LENGTH", Worker, "id"),
        ("MAX_WORKER_ID_LENGTH", Step, "lease_owner"),
        ("MAX_RECORD_COLLECTION_LENGTH", Record, "collection"),
        ("MAX_RECORD_KEY_LENGTH", Record, "key"),
        ("MAX_ARTIFACT_NAME_LENGTH", Artifact, "name"),
        ("MAX_ARTIFACT_KIND_LENGTH", Artifact, "kind"),
        ("MAX_CONTENT_TYPE_LENGTH", Artifact, "content_type"),
    ],
)
def test_length_limits__mirror_the_model_columns(constant, model, field):
    assert getattr(validation, constant) == model._meta.get_field(field).max_length


# -- JSON --------------------------------------------------------------------------------------------
def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"text": "a\x00b"}, r"NUL character at \$\.text"),
        ({"k\x00": 1}, "NUL character"),
        (["ok", "\udc80"], r"lone surrogate at \$\[1\]"),
        (nested(validation.MAX_JSON_DEPTH + 1), "nested deeper than 64 levels"),
        (nested(5000), "nested deeper than 64 levels"),
        ({"x": float("nan")}, "not JSON-serialisable"),
    ],
)
def test_step__input_the_databases_cannot_store_is_refused(runtime, registry, value, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        start_one_step(runtime, registry, input=value)
    assert (caught.value.step, caught.value.field) == ("a", "input")
    assert_nothing_written()


def test_step__input_at_the_depth_limit_is_accepted(runtime, registry):
    start_one_step(runtime, registry, input=nested(validation.MAX_JSON_DEPTH))
    assert Step.objects.count() == 1


def test_start_run__metadata_and_input_with_nul_are_refused(runtime):
    with pytest.raises(InvalidInput, match="run metadata contains a NUL") as caught:
        runtime.start_run("t", {}, metadata={"who": "a\x00"})
    assert caught.value.field == "metadata"
    self_referencing: list[Any] = []
    self_referencing.append(self_referencing)
    with pytest.raises(InvalidInput, match="nested deeper") as caught:
        runtime.start_run("t", {"loop": self_referencing})
    assert caught.value.field == "input"
    assert_nothing_written()


def test_executor__result_with_nul_fails_the_step_with_invalid_output(runtime, registry):
    pkg = Package("nul")

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step("a", kind="nul-result")

    @pkg.executor("nul-result")
    def result(step: Any) -> dict:
        return {"text": "bad\x00"}

    registry.register(pkg)
    run_id = runtime.start_run("nul").id
    drain(runtime)
    step = Step.objects.get(run_id=run_id)
    assert step.state == "failed"
    assert step.error["code"] == "invalid_output"
    assert "step 'a': result contains a NUL character" in step.error["message"]


def test_emit__bad_child_queue_fails_the_parent_naming_the_child(runtime, registry):
    pkg = Package("emitbad")

    @pkg.entrypoint
    def start(run: Any) -> None:
        run.step("parent", kind="emit-bad")

    @pkg.executor("emit-bad")
    def emit_bad(step: Any) -> None:
        step.emit("child", kind="noop", queue="../x")

    registry.register(pkg)
    run_id = runtime.start_run("emitbad").id
    drain(runtime)
    parent = Step.objects.get(run_id=run_id, step_id="parent")
    assert parent.state == "failed"
    assert "step 'child': queue name '../x'" in parent.error["message"]
    assert not Step.objects.filter(step_id="child").exists()
