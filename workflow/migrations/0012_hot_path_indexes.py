"""Fewer index entries per step: every claim and commit wrote entries no query needed.

- ``run_state_idx`` (state, -created_at) is a prefix of ``run_state_newest_idx``.
- ``step_lease_idx`` and ``step_running_queue_idx`` (both over running steps only) become one
  ``step_running_idx`` (queue, lease_expires_at).
- The foreign-key indexes on ``step.run_id`` and ``lease.run_id`` are prefixes of the unique
  (run, step_id), ``step_run_state_idx`` and ``lease_run_idx``; on PostgreSQL Django also adds a
  ``varchar_pattern_ops`` twin to each, and to the lease token, for LIKE queries nothing makes.
  They are dropped by name (Django's own names), so no table is rebuilt on SQLite.
"""

from django.db import migrations, models
import django.db.models.deletion

import workflow.engine.values

FK_INDEXES = {"workflow_step": "workflow_step_run_id_b18d1e5b", "workflow_lease": "workflow_lease_run_id_1dd7e340"}
TOKEN_LIKE = "workflow_lease_token_f5d291bc_like"


def drop_covered_indexes(apps, schema_editor):
    names = list(FK_INDEXES.values())
    if schema_editor.connection.vendor == "postgresql":
        names += [f"{name}_like" for name in FK_INDEXES.values()] + [TOKEN_LIKE]
    for name in names:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def restore_covered_indexes(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for table, name in FK_INDEXES.items():
        schema_editor.execute(f'CREATE INDEX "{name}" ON "{table}" ("run_id")')
        if postgres:
            schema_editor.execute(f'CREATE INDEX "{name}_like" ON "{table}" ("run_id" varchar_pattern_ops)')
    if postgres:
        schema_editor.execute(f'CREATE INDEX "{TOKEN_LIKE}" ON "workflow_lease" ("token" varchar_pattern_ops)')


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0011_step_original_input"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="run", name="run_state_idx"),
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
            ],
            database_operations=[migrations.RunPython(drop_covered_indexes, restore_covered_indexes)],
        ),
    ]
