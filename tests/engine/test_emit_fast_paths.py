"""The emit path's shortcuts give the same values and the same refusals as the full checks."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any

import pytest

from workflow.engine import builder, validation
from workflow.engine.errors import InvalidGraph, InvalidInput
from workflow.engine.values import Dependency, RetryPolicy, StepSpec, checked_step_spec


def _slow_json(value: Any) -> Any:
    """What to_json_value returned before its scalar shortcut: the JSON round trip and its checks."""
    import json

    text = json.dumps(value, allow_nan=False)
    return validation.check_json_text(text, json.loads(text), label="input", field="input")


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 2**62, 1.5, -0.0, "", "k000001", "é ü", "[" * 80])
def test_to_json_value__scalar_shortcut_returns_what_the_round_trip_did(value: Any) -> None:
    got = builder.to_json_value("input", value, field="input", step="s")
    assert got == _slow_json(value) and type(got) is type(_slow_json(value))


@pytest.mark.parametrize("value", ["a\x00b", "lone \ud800", math.nan, math.inf, "huge int"])
def test_to_json_value__refusals_still_refused(value: Any) -> None:
    value = 10**5000 if value == "huge int" else value  # past Python's int-to-text limit
    with pytest.raises(InvalidInput, match="step 's': input"):
        builder.to_json_value("input", value, field="input", step="s")


@pytest.mark.parametrize("value", ["", " ", "a\tb", "x" * 256, ".", "..", 5, None, "\ud800"])
def test_check_id__shortcut_refuses_what_it_refused(value: Any) -> None:
    with pytest.raises(InvalidInput):
        builder.check_id("step id", value, field="id", step="s")


def test_check_queue_name__remembered_names_only_skip_for_strings() -> None:
    assert validation.check_queue_name("default") == "default"
    assert validation.check_queue_name("default") == "default"
    with pytest.raises(InvalidInput, match="must be a string"):
        validation.check_queue_name(["default"])


def test_checked_step_spec__equals_the_dataclass_constructor() -> None:
    values = dict(id="k", kind="noop", input={"a": 1}, queue="q", site="s", dedup_key="d",
                  depends_on=(Dependency(step_id="x"),), retry=RetryPolicy(max_attempts=2), metadata={"m": "v"},
                  parent_id="p", priority=3, not_before=None, timeout=timedelta(seconds=4))
    assert {f.name for f in dataclasses.fields(StepSpec)} == set(values)
    fast, slow = checked_step_spec(**values), StepSpec(**values)  # type: ignore[arg-type]
    assert fast == slow and hash(fast.depends_on) == hash(slow.depends_on)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.id = "other"  # type: ignore[misc]


def _spec(sid: str, *deps: str) -> StepSpec:
    return StepSpec(id=sid, kind="noop", depends_on=tuple(Dependency(step_id=d) for d in deps))


def test_validate_graph__leaves_do_not_change_the_cycle_named() -> None:
    steps = [_spec("leaf1"), _spec("a", "leaf1", "b"), _spec("leaf2"), _spec("b", "leaf2", "c"), _spec("c", "a")]
    with pytest.raises(InvalidGraph, match=r"^dependency cycle: a -> b -> c -> a$"):
        builder.validate_graph(steps)


def test_validate_graph__first_missing_dependency_is_named_before_any_cycle() -> None:
    steps = [_spec("a", "b"), _spec("b", "a"), _spec("c", "gone"), _spec("d", "also-gone")]
    with pytest.raises(InvalidGraph, match=r"^step 'c' depends on missing step 'gone'$"):
        builder.validate_graph(steps, existing={"x"})


def test_validate_graph__fan_in_over_many_children_passes() -> None:
    kids = [_spec(f"k{i}") for i in range(1000)]
    builder.validate_graph([*kids, _spec("join", *(k.id for k in kids), "old")], existing={"old"})
