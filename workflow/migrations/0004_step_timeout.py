from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0003_step_parent_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="step",
            name="timeout_seconds",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="step",
            name="awaiting_thread_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
