"""Sample tasks, vendored from django-tasks-db's tests/tasks.py (BSD-3-Clause), plus a few of ours."""

import time
from typing import Any

from workflow.tasks.compat import TaskContext, task


@task()
def noop_task(*args: Any, **kwargs: Any) -> None:
    return None


@task
def noop_task_from_bare_decorator(*args: Any, **kwargs: Any) -> None:
    return None


@task()
async def noop_task_async(*args: Any, **kwargs: Any) -> None:
    return None


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def failing_task_keyboard_interrupt() -> None:
    raise KeyboardInterrupt("This task failed due to KeyboardInterrupt")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> Any:
    # Return something which isn't JSON serializable nor picklable
    return lambda: True


@task()
def exit_task() -> None:
    exit(1)


@task()
def hang() -> None:
    """
    Do nothing for 5 minutes
    """
    time.sleep(300)


@task()
def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


@task(takes_context=True)
def get_task_id(context: TaskContext) -> str:
    return context.task_result.id


@task(takes_context=True)
def test_context(context: TaskContext, attempt: int) -> None:
    assert isinstance(context, TaskContext)
    assert context.attempt == attempt


# -- ours -----------------------------------------------------------------------------------
@task()
async def async_add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def fail_until_attempt(context: TaskContext, succeed_on: int) -> int:
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt


@task()
def record_order(name: str) -> str:
    """Append ``name`` to a file named by the environment, so a test sees the order tasks started in."""
    import os

    with open(os.environ["WORKFLOW_TASK_ORDER_FILE"], "a") as fh:
        fh.write(name + "\n")
    return name


@task(retry={"max_attempts": 3, "initial_backoff": 0})
def resilient_sleep(seconds: float) -> str:
    """A task with its own retry policy (``@task`` passes ``retry`` to ``WorkflowTask``)."""
    time.sleep(seconds)
    return "slept"
