from django.db import migrations


# run_state_newest_idx (state, -created_at, -id) serves every query this index served, and each
# run is written three times (created, started, finished): one index fewer on each write.


class Migration(migrations.Migration):

    dependencies = [
        ('workflow', '0011_step_original_input'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='run',
            name='run_state_idx',
        ),
    ]
