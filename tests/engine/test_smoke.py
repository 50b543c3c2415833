from __future__ import annotations

from tests.conftest import drain, run_graph
from workflow import RunState, StepState


def test_run__succeeds_when_every_step_succeeds(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop", "input": {"x": 1}}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    drain(runtime)
    assert runtime.workflow(run_id).state == RunState.SUCCEEDED
    assert runtime.result(run_id, "a").data == {"x": 1}
    assert runtime.result(run_id, "b").state == StepState.SUCCEEDED
