"""Fewer index entries per step: every claim and commit wrote entries no query needed.

- ``run_state_idx`` (state, -created_at) is a prefix of ``run_state_newest_idx``.
- ``run_finished_idx`` holds finished runs only: a run enters it once, when it ends.
- ``step_lease_idx`` and ``step_running_queue_idx`` (both over running steps only) become one
  ``step_running_idx`` (queue, lease_expires_at).
- The foreign-key indexes on ``step.run_id``, ``lease.run_id``, ``event.run_id`` and
  ``dependency.step_id`` are prefixes of the unique (run, step_id), ``step_run_state_idx``,
  ``lease_run_idx``, ``event_run_idx`` and ``dependency_unique``; on PostgreSQL Django also adds a
  ``varchar_pattern_ops`` twin to each text one, and to the lease token, for LIKE queries nothing makes.
  They are dropped by name (Django's own names), so no table is rebuilt on SQLite.
"""

from django.db import migrations, models
import django.db.models.deletion

import workflow.engine.values

# (table, column, Django's name for its index, whether the column is text: PostgreSQL's LIKE twin)
FK_INDEXES = [
    ("workflow_step", "run_id", "workflow_step_run_id_b18d1e5b", True),
    ("workflow_lease", "run_id", "workflow_lease_run_id_1dd7e340", True),
    ("workflow_event", "run_id", "workflow_event_run_id_d9921443", True),
    ("workflow_dependency", "step_id", "workflow_dependency_step_id_2f397682", False),
]
TOKEN_LIKE = "workflow_lease_token_f5d291bc_like"


def drop_covered_indexes(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    names = [name for _, _, name, _ in FK_INDEXES]
    if postgres:
        names += [f"{name}_like" for _, _, name, text in FK_INDEXES if text] + [TOKEN_LIKE]
    for name in names:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def restore_covered_indexes(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for table, column, name, text in FK_INDEXES:
        schema_editor.execute(f'CREATE INDEX "{name}" ON "{table}" ("{column}")')
        if postgres and text:
            schema_editor.execute(f'CREATE INDEX "{name}_like" ON "{table}" ("{column}" varchar_pattern_ops)')
    if postgres:
        schema_editor.execute(f'CREATE INDEX "{TOKEN_LIKE}" ON "workflow_lease" ("token" varchar_pattern_ops)')


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0011_step_original_input"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="run", name="run_state_idx"),
        migrations.RemoveIndex(model_name="run", name="run_finished_idx"),
        migrations.AddIndex(
            model_name="run",
            index=models.Index(condition=models.Q(("finished_at__isnull", False)), fields=["finished_at"],
                               name="run_finished_idx"),
        ),
        migrations.RemoveIndex(model_name="step", name="step_lease_idx"),
        migrations.RemoveIndex(model_name="step", name="step_running_queue_idx"),
        migrations.AddIndex(
            model_name="step",
            index=models.Index(
                condition=models.Q(("state", workflow.engine.values.StepState["RUNNING"])),
                fields=["queue", "lease_expires_at"],
                name="step_running_idx",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="lease",
                    name="run",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="leases", to="workflow.run"),
                ),
                migrations.AlterField(
                    model_name="step",
                    name="run",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="steps", to="workflow.run"),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="run",
                    field=models.ForeignKey(blank=True, db_index=False, null=True,
                                            on_delete=django.db.models.deletion.CASCADE, related_name="events",
                                            to="workflow.run"),
                ),
                migrations.AlterField(
                    model_name="dependency",
                    name="step",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="dependencies", to="workflow.step"),
                ),
            ],
            database_operations=[migrations.RunPython(drop_covered_indexes, restore_covered_indexes)],
        ),
    ]
