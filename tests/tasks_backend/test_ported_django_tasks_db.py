"""django-tasks-db's backend tests (tests/tests.py, BSD-3-Clause), ported to ``WorkflowBackend``.

Ported: the behaviour every task backend must have (enqueue, results, refresh, errors, priorities,
``run_after``, queues, signals, context, the worker command and real worker processes). What is
specific to their models (row counts via ``DBTaskResult``, ``assertNumQueries`` of their SQL,
``id_function``, their ``db_worker`` flags, their admin and migrations) is swapped for ours or
left out; the list is in the module's closing comment. Their "a killed task stays RUNNING"
(django-tasks-db issue 46) is turned round: ours recovers once the lease expires.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import SimpleTestCase, TransactionTestCase, override_settings
from django.utils import timezone

from tests.processes import wait_for
from tests.tasks_backend import sample_tasks as test_tasks
from workflow.models import Lease, Run, Step, Worker
from workflow.tasks import WorkflowBackend
from workflow.tasks.compat import (
    InvalidTaskError,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)


def ready_count() -> int:
    return Step.objects.filter(run__package="tasks", state__in=["ready", "pending"]).count()


def state_count(state: str) -> int:
    return Step.objects.filter(run__package="tasks", state=state).count()


class DatabaseBackendTestCase(TransactionTestCase):
    @contextlib.contextmanager
    def _capture_task_enqueued_signal(self) -> Iterator[list[tuple[type, Any]]]:
        received: list[tuple[type, Any]] = []

        def capture_signal(sender: type, task_result: Any, **kwargs: Any) -> None:
            received.append((sender, task_result))

        task_enqueued.connect(capture_signal, dispatch_uid="db_enqueue_signal", weak=False)
        try:
            yield received
        finally:
            task_enqueued.disconnect(capture_signal, dispatch_uid="db_enqueue_signal")

    def get_task_count_in_new_connection(self) -> int:
        """See what other connections see."""
        new_connection = connections.create_connection("default")
        try:
            with new_connection.cursor() as c:
                c.execute("SELECT id FROM workflow_run WHERE package = 'tasks'")
                return len(c.fetchall())
        finally:
            new_connection.close()

    def test_using_correct_backend(self) -> None:
        self.assertIsInstance(task_backends["default"], WorkflowBackend)
        self.assertEqual(task_backends["default"].alias, "default")

    def test_enqueue_task(self) -> None:
        for task in [test_tasks.noop_task, test_tasks.noop_task_async]:
            with self.subTest(task):
                with self._capture_task_enqueued_signal() as received:
                    result = task.enqueue(1, two=3)

                self.assertEqual(uuid.UUID(result.id).version, 7)  # ours: time-ordered (theirs: 4)
                self.assertEqual(result.status, TaskResultStatus.READY)
                self.assertFalse(result.is_finished)
                self.assertIsNone(result.started_at)
                self.assertIsNone(result.last_attempted_at)
                self.assertIsNone(result.finished_at)
                self.assertIsNotNone(result.enqueued_at)
                with self.assertRaisesMessage(ValueError, "Task has not finished yet"):
                    result.return_value  # noqa: B018
                self.assertEqual(result.task, task)
                self.assertEqual(result.args, [1])
                self.assertEqual(result.kwargs, {"two": 3})
                self.assertEqual(result.attempts, 0)
                self.assertEqual(received, [(WorkflowBackend, result)])

    async def test_enqueue_task_async(self) -> None:
        for task in [test_tasks.noop_task, test_tasks.noop_task_async]:
            with self.subTest(task):
                with self._capture_task_enqueued_signal() as received:
                    result = await task.aenqueue()

                self.assertEqual(uuid.UUID(result.id).version, 7)  # ours: time-ordered (theirs: 4)
                self.assertEqual(result.status, TaskResultStatus.READY)
                self.assertFalse(result.is_finished)
                self.assertEqual(result.args, [])
                self.assertEqual(result.kwargs, {})
                self.assertEqual(result.attempts, 0)
                self.assertEqual(received, [(WorkflowBackend, result)])

    def test_get_result(self) -> None:
        result = task_backends["default"].enqueue(test_tasks.noop_task, [], {})
        new_result = task_backends["default"].get_result(result.id)
        self.assertEqual(result, new_result)

    async def test_get_result_async(self) -> None:
        result = await task_backends["default"].aenqueue(test_tasks.noop_task, [], {})
        new_result = await task_backends["default"].aget_result(result.id)
        self.assertEqual(result, new_result)

    def test_refresh_result(self) -> None:
        result = task_backends["default"].enqueue(test_tasks.calculate_meaning_of_life, (), {})
        self.assertEqual(result.status, TaskResultStatus.READY)
        self.assertEqual(result.attempts, 0)

        # Theirs updates the row by hand; ours runs the worker, the only writer of step rows.
        call_command("runworkers", burst=True, verbosity=0)
        self.assertEqual(result.status, TaskResultStatus.READY)
        self.assertIsNone(result.started_at)

        result.refresh()
        self.assertIsNotNone(result.started_at)
        self.assertIsNotNone(result.last_attempted_at)
        self.assertIsNotNone(result.finished_at)
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
        self.assertTrue(result.is_finished)
        self.assertEqual(result.return_value, 42)
        self.assertEqual(result.attempts, 1)

    async def test_refresh_result_async(self) -> None:
        from asgiref.sync import sync_to_async

        result = await task_backends["default"].aenqueue(test_tasks.calculate_meaning_of_life, (), {})
        await sync_to_async(call_command, thread_sensitive=True)("runworkers", burst=True, verbosity=0)
        self.assertEqual(result.status, TaskResultStatus.READY)
        await result.arefresh()
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
        self.assertEqual(result.return_value, 42)
        self.assertEqual(result.attempts, 1)

    def test_get_missing_result(self) -> None:
        with self.assertRaises(TaskResultDoesNotExist):
            task_backends["default"].get_result(str(uuid.uuid4()))

    async def test_async_get_missing_result(self) -> None:
        with self.assertRaises(TaskResultDoesNotExist):
            await task_backends["default"].aget_result(str(uuid.uuid4()))

    def test_invalid_uuid(self) -> None:
        with self.assertRaises(TaskResultDoesNotExist):
            task_backends["default"].get_result("123")

    async def test_async_invalid_uuid(self) -> None:
        with self.assertRaises(TaskResultDoesNotExist):
            await task_backends["default"].aget_result("123")

    def test_result_of_a_workflow_run_is_not_a_task(self) -> None:
        # Ours: only runs of the tasks package are task results.
        Run.objects.create(id="not-a-task", package="t", state="pending", created_at=timezone.now(),
                           updated_at=timezone.now())
        with self.assertRaises(TaskResultDoesNotExist):
            task_backends["default"].get_result("not-a-task")

    def test_check(self) -> None:
        errors = list(task_backends["default"].check())
        self.assertEqual(len(errors), 0, errors)

    def test_database_backend_app_missing(self) -> None:
        with override_settings(INSTALLED_APPS=[]):
            errors = list(task_backends["default"].check())
        self.assertEqual(len(errors), 1)
        self.assertIn("workflow", errors[0].hint)

    def test_priority_range_check(self) -> None:
        for priority in (-101, 101, 3.1):
            with self.subTest(priority), self.assertRaises(InvalidTaskError):
                test_tasks.noop_task.using(priority=priority)
        for priority in (100, -100, 0):
            test_tasks.noop_task.using(priority=priority).enqueue()
        self.assertEqual(sorted(Step.objects.values_list("priority", flat=True)), [-100, 0, 100])

    def test_waits_for_the_callers_transaction(self) -> None:
        # Theirs is named test_doesnt_wait_until_transaction_commit: the row is written at once,
        # inside the caller's transaction, and other connections see it only after the commit.
        with transaction.atomic():
            result = test_tasks.noop_task.enqueue()
            self.assertIsNotNone(result.enqueued_at)
            self.assertEqual(Run.objects.filter(package="tasks").count(), 1)
            if connection.vendor != "sqlite":  # SQLite locks the database during this transaction
                self.assertEqual(self.get_task_count_in_new_connection(), 0)
        self.assertEqual(self.get_task_count_in_new_connection(), 1)

    def test_enqueue_logs(self) -> None:
        with self.assertLogs("django_tasks" if "django_tasks" in sys.modules and _backport() else "django.tasks",
                             level="DEBUG") as captured_logs:
            result = test_tasks.noop_task.enqueue()
        self.assertEqual(len(captured_logs.output), 1)
        self.assertIn("enqueued", captured_logs.output[0])
        self.assertIn(result.id, captured_logs.output[0])

    def test_run_after_tz(self) -> None:
        result = test_tasks.noop_task.enqueue()
        self.assertIsNone(task_backends["default"].get_result(result.id).task.run_after)

    def test_validate_on_enqueue(self) -> None:
        with override_settings(TASKS={"default": {"BACKEND": "workflow.tasks.WorkflowBackend",
                                                  "QUEUES": ["unknown_queue"]}}):
            task_with_custom_queue_name = test_tasks.noop_task.using(queue_name="unknown_queue")
        with self.assertRaisesMessage(InvalidTaskError, "Queue 'unknown_queue' is not valid for backend"):
            task_with_custom_queue_name.enqueue()

    async def test_validate_on_aenqueue(self) -> None:
        with override_settings(TASKS={"default": {"BACKEND": "workflow.tasks.WorkflowBackend",
                                                  "QUEUES": ["unknown_queue"]}}):
            task_with_custom_queue_name = test_tasks.noop_task.using(queue_name="unknown_queue")
        with self.assertRaisesMessage(InvalidTaskError, "Queue 'unknown_queue' is not valid for backend"):
            await task_with_custom_queue_name.aenqueue()


def _backport() -> bool:
    import django

    return django.VERSION < (6, 0)


class DatabaseBackendWorkerTestCase(TransactionTestCase):
    @staticmethod
    def run_worker(**options: Any) -> None:
        call_command("runworkers", burst=True, verbosity=0, **options)

    def tearDown(self) -> None:
        for name in ("django_tasks", "django.tasks"):
            tasks_logger = logging.getLogger(name)
            for handler in list(tasks_logger.handlers):
                tasks_logger.removeHandler(handler)

    def test_run_enqueued_task(self) -> None:
        for task in [test_tasks.noop_task, test_tasks.noop_task_async]:
            with self.subTest(task):
                result = task.enqueue()
                self.assertEqual(ready_count(), 1)
                self.assertEqual(result.status, TaskResultStatus.READY)

                self.run_worker()

                self.assertEqual(result.status, TaskResultStatus.READY)
                self.assertEqual(result.attempts, 0)
                result.refresh()
                self.assertIsNotNone(result.started_at)
                self.assertIsNotNone(result.last_attempted_at)
                self.assertIsNotNone(result.finished_at)
                self.assertGreaterEqual(result.started_at, result.enqueued_at)
                self.assertGreaterEqual(result.finished_at, result.started_at)
                self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
                self.assertEqual(result.attempts, 1)
                self.assertEqual(ready_count(), 0)

    def test_batch_processes_all_tasks(self) -> None:
        for _ in range(3):
            test_tasks.noop_task.enqueue()
        test_tasks.failing_task_value_error.enqueue()
        self.assertEqual(ready_count(), 4)

        self.run_worker()

        self.assertEqual(ready_count(), 0)
        self.assertEqual(state_count("succeeded"), 3)
        self.assertEqual(state_count("failed"), 1)

    def test_no_tasks(self) -> None:
        self.run_worker()
        self.assertEqual(ready_count(), 0)

    def test_doesnt_process_different_queue(self) -> None:
        result = test_tasks.noop_task.using(queue_name="queue-1").enqueue()
        self.assertEqual(ready_count(), 1)

        self.run_worker(queues=["default"])
        self.assertEqual(ready_count(), 1)

        self.run_worker(queues=[result.task.queue_name])
        self.assertEqual(ready_count(), 0)

    def test_process_all_queues(self) -> None:
        test_tasks.noop_task.using(queue_name="queue-1").enqueue()
        self.assertEqual(ready_count(), 1)

        self.run_worker(queues=["default"])
        self.assertEqual(ready_count(), 1)

        self.run_worker()  # theirs: --queue-name=*; ours serves every queue by default
        self.assertEqual(ready_count(), 0)

    def test_failing_task(self) -> None:
        result = test_tasks.failing_task_value_error.enqueue()
        self.assertEqual(ready_count(), 1)

        self.run_worker()

        self.assertEqual(result.status, TaskResultStatus.READY)
        result.refresh()
        self.assertIsNotNone(result.started_at)
        self.assertIsNotNone(result.last_attempted_at)
        self.assertIsNotNone(result.finished_at)
        self.assertGreaterEqual(result.started_at, result.enqueued_at)
        self.assertGreaterEqual(result.finished_at, result.started_at)
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        with self.assertRaisesMessage(ValueError, "Task failed"):
            result.return_value  # noqa: B018

        self.assertEqual(result.errors[0].exception_class, ValueError)
        traceback = result.errors[0].traceback
        self.assertTrue(traceback and traceback.endswith("ValueError: This task failed due to ValueError\n"), traceback)
        self.assertEqual(ready_count(), 0)

    def test_complex_exception(self) -> None:
        result = test_tasks.complex_exception.enqueue()
        self.run_worker()
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        with self.assertRaisesMessage(ValueError, "Task failed"):
            result.return_value  # noqa: B018
        self.assertEqual(result.errors[0].exception_class, ValueError)
        self.assertIn('ValueError(ValueError("This task failed"))', result.errors[0].traceback)
        self.assertEqual(ready_count(), 0)

    def test_complex_return_value(self) -> None:
        result = test_tasks.complex_return_value.enqueue()
        self.run_worker()
        result.refresh()

        self.assertEqual(result.status, TaskResultStatus.FAILED)
        self.assertIsNotNone(result.started_at)
        self.assertIsNotNone(result.finished_at)
        self.assertGreaterEqual(result.finished_at, result.started_at)
        self.assertIsNone(result._return_value)
        self.assertEqual(result.errors[0].exception_class, TypeError)
        self.assertIn("function", result.errors[0].traceback)  # Django's normalize_json names the type

    def test_run_after(self) -> None:
        result = test_tasks.noop_task.using(run_after=timezone.now() + timedelta(hours=10)).enqueue()
        self.assertEqual(Run.objects.filter(package="tasks").count(), 1)

        self.run_worker()
        self.assertEqual(state_count("succeeded"), 0)

        Step.objects.filter(run_id=result.id).update(available_at=timezone.now())
        self.run_worker()
        self.assertEqual(state_count("succeeded"), 1)

    def test_run_after_priority(self) -> None:
        """The order the worker starts tasks in: priority first, then the earliest ``run_after``."""
        now = timezone.now()
        old_task = test_tasks.noop_task.using(priority=20, run_after=now - timedelta(hours=2)).enqueue()
        very_old_task = test_tasks.noop_task.using(priority=20, run_after=now - timedelta(hours=10)).enqueue()
        test_tasks.noop_task.using(run_after=now + timedelta(hours=10)).enqueue()
        test_tasks.noop_task.using(priority=10, run_after=now + timedelta(hours=10)).enqueue()
        test_tasks.noop_task.using(run_after=now + timedelta(hours=2)).enqueue()
        high_priority_result = test_tasks.noop_task.using(priority=10).enqueue()
        low_priority_result = test_tasks.noop_task.using(priority=2).enqueue()
        lower_priority_result = test_tasks.noop_task.using(priority=-2).enqueue()

        call_command("runworkers", burst=True, verbosity=0, max_workers=1)

        started = list(
            Lease.objects.filter(run__package="tasks").order_by("started_at", "id").values_list("run_id", flat=True)
        )
        # Steps created before their run_after are available at once (run_after in the past).
        self.assertEqual(
            started,
            [very_old_task.id, old_task.id, high_priority_result.id, low_priority_result.id,
             lower_priority_result.id],
        )

    def test_invalid_task_path(self) -> None:
        result = test_tasks.noop_task.enqueue()
        Step.objects.filter(run_id=result.id).update(metadata={"task": "subprocess.check_output",
                                                               "backend": "default"})
        self.run_worker()
        self.assertEqual(Step.objects.get(run_id=result.id).state, "failed")
        self.assertEqual(Step.objects.get(run_id=result.id).error["code"], "task_not_found")

    def test_missing_task_path(self) -> None:
        result = test_tasks.noop_task.enqueue()
        Step.objects.filter(run_id=result.id).update(metadata={"task": "missing.func", "backend": "default"})
        self.run_worker()
        step = Step.objects.get(run_id=result.id)
        self.assertEqual(step.state, "failed")
        self.assertIn("missing.func", step.error["message"])

    def test_worker_doesnt_exit(self) -> None:
        result = test_tasks.exit_task.enqueue()
        self.run_worker()
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        self.assertEqual(result.errors[0].exception_class, SystemExit)

    def test_worker_with_locked_rows(self) -> None:
        if connection.vendor == "sqlite":
            self.skipTest("SQLite locks the entire database")
        result_1 = test_tasks.noop_task.enqueue()
        new_connection = connections.create_connection("default")
        try:
            with new_connection.cursor() as c:
                c.execute("BEGIN")
                c.execute("SELECT id FROM workflow_step WHERE run_id = %s FOR UPDATE", [result_1.id])
                self.assertEqual(len(c.fetchall()), 1)
            result_2 = test_tasks.noop_task.enqueue()
            # Not --burst: the locked row stays due, so a burst worker would wait for it.
            call_command("runworkers", max_cycles=5, verbosity=0)
        finally:
            new_connection.close()
        result_1.refresh()
        result_2.refresh()
        self.assertEqual(result_1.status, TaskResultStatus.READY)
        self.assertEqual(result_2.status, TaskResultStatus.SUCCESSFUL)

    def test_takes_context(self) -> None:
        result = test_tasks.get_task_id.enqueue()
        self.run_worker()
        result.refresh()
        self.assertEqual(result.return_value, result.id)

    def test_context(self) -> None:
        result = test_tasks.test_context.enqueue(1)
        self.run_worker()
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL, result.errors)

    def test_task_import_string(self) -> None:
        result = test_tasks.noop_task.enqueue()
        Step.objects.filter(run_id=result.id).update(metadata={"task": "tests.tasks_backend.sample_tasks.some_test",
                                                               "backend": "default"})
        self.run_worker()
        step = Step.objects.get(run_id=result.id)
        self.assertEqual(step.state, "failed")
        self.assertIn("cannot import", step.error["message"])


@pytest.mark.processes
class DatabaseWorkerProcessTestCase(TransactionTestCase):
    """Real ``runworkers`` processes (theirs: ``db_worker``), sent real signals."""

    WORKER_STARTUP_TIME = 15  # an upper bound: waits poll for the state, not a fixed sleep

    def setUp(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def tearDown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)

    def start_worker(self, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "manage.py", "runworkers", "--verbosity", "1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**_env(), "DJANGO_SETTINGS_MODULE": "tests.settings"},
        )
        self.processes.append(p)
        return p

    def wait_running(self, result: Any) -> None:
        def running() -> bool:
            result.refresh()
            return result.status == TaskResultStatus.RUNNING

        wait_for(running, self.WORKER_STARTUP_TIME, "the task to start")

    def test_run_subprocess(self) -> None:
        result = test_tasks.noop_task.enqueue()
        process = self.start_worker("--burst")
        process.wait(timeout=60)
        self.assertEqual(process.returncode, 0)
        self.assertEqual(result.status, TaskResultStatus.READY)
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)

    def test_interrupt_no_tasks(self) -> None:
        process = self.start_worker()
        # Theirs sleeps a second; ours waits until the worker registered (its signal handlers are in place).
        wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).exists(), 60, "the worker to start")
        process.terminate()
        process.wait(timeout=30)
        self.assertEqual(process.returncode, 0)

    def test_interrupt_signals(self) -> None:
        for sig in [signal.SIGINT, signal.SIGTERM]:
            with self.subTest(sig):
                result = test_tasks.sleep_for.enqueue(2)
                self.assertEqual(result.worker_ids, [])
                process = self.start_worker()
                self.wait_running(result)
                self.assertNotEqual(result.worker_ids, [])

                process.send_signal(sig)
                process.wait(timeout=30)
                self.assertEqual(process.returncode, 0)

                result.refresh()
                self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)

    def test_repeat_ctrl_c(self) -> None:
        """Theirs fails the task with SystemExit; ours hands it back to ``ready`` for another worker."""
        result = test_tasks.hang.enqueue()
        process = self.start_worker("--worker-id", "impatient")
        self.wait_running(result)
        self.assertEqual(result.worker_ids, ["impatient"])

        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        self.assertIsNone(process.poll())  # the first signal drains: the task keeps running
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.RUNNING)

        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.READY)

    def test_kill(self) -> None:
        """Turned round from django-tasks-db (issue 46): the killed worker's task runs again."""
        result = test_tasks.resilient_sleep.enqueue(2.5)
        process = self.start_worker("--lease-duration", "2", "--worker-id", "victim")
        self.wait_running(result)
        process.kill()
        process.wait(timeout=10)
        self.assertEqual(process.returncode, -signal.SIGKILL)

        rescuer = self.start_worker("--lease-duration", "2", "--worker-id", "rescuer", "--burst")

        def finished() -> bool:
            result.refresh()
            return result.is_finished

        wait_for(finished, 60, "the rescuer to finish the task")
        rescuer.wait(timeout=60)
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL, result.errors)
        self.assertEqual(result.return_value, "slept")
        self.assertEqual(result.worker_ids, ["victim", "rescuer"])

    def test_system_exit_task(self) -> None:
        result = test_tasks.failing_task_system_exit.enqueue()
        process = self.start_worker("--burst")
        process.wait(timeout=60)
        self.assertEqual(process.returncode, 0)
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        self.assertEqual(result.errors[0].exception_class, SystemExit)

    def test_keyboard_interrupt_task(self) -> None:
        result = test_tasks.failing_task_keyboard_interrupt.enqueue()
        process = self.start_worker("--burst")
        process.wait(timeout=60)
        self.assertEqual(process.returncode, 0)
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        self.assertEqual(result.errors[0].exception_class, KeyboardInterrupt)

    def test_multiple_workers(self) -> None:
        results = [test_tasks.sleep_for.enqueue(0.1) for _ in range(10)]
        for _ in range(3):
            self.start_worker("--burst")
        for process in self.processes:
            process.wait(timeout=60)
            self.assertEqual(process.returncode, 0)
        for result in results:
            result.refresh()
            self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
            self.assertEqual(result.attempts, 1)  # each ran once, on one of the three


def _env() -> dict[str, str]:
    import os

    from tests.processes import database_url

    return {**os.environ, "DATABASE_URL": database_url()}


class CompatTestCase(SimpleTestCase):
    def test_compat_picks_djangos_own_framework_when_present(self) -> None:
        import django

        from workflow.tasks import compat

        expected = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
        self.assertTrue(compat.Task.__module__.startswith(expected), compat.Task.__module__)


# Left out, and why:
# - test_invalid_task_path / test_missing_task_path / test_task_name of DatabaseBackendTestCase and
#   test_index_scan_for_ready, test_run_after_null_0016_migration, test_custom_id_function,
#   test_unknown_id_function, test_postgres_*_id_function*: properties of their DBTaskResult model,
#   its migrations and its id_function option (ours: run ids; the ready-index plan is asserted by
#   tests/tasks_backend/test_backend.py::test_claim__reads_the_priority_ready_index).
# - test_process_all_queues_excluding_one_queue, test_exclude_queues_*, test_doesnt_process_different_backend,
#   test_unknown_backend, test_incorrect_backend, test_*_interval, test_negative_max_tasks,
#   test_*_worker_id, test_max_tasks, test_verbose_logging, test_fractional_interval: flags and log
#   lines of db_worker; runworkers has its own (validated in tests/engine).
# - DatabaseTaskResultTestCase, ConnectionExclusiveTranscationTestCase: their row-locking helpers.
# - DatabaseBackendPruneTaskResultsTestCase: prune_db_task_results; ours is prunewf (test_backend.py).
# - DBTaskResultOrderingTestCase, AdminTestCase: their model's ordering and admin
#   (ours: test_run_after_priority above orders real claims).
