"""The bench's Django task: a no-op, as django-tasks-db's peer bench runs."""

from workflow.tasks.compat import task


@task()
def noop() -> None:
    return None
