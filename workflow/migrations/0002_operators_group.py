"""Create the "Operators" group: may view every workflow model and operate (retry, cancel, pause, start)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW_MODELS = ["run", "step", "dependency", "lease", "artifact", "record", "event", "queue", "worker"]


def create_operators(apps, schema_editor):
    # Permissions are normally created after migrate; make sure they exist for the group.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Operators")
    codenames = ["operate"] + [f"view_{m}" for m in VIEW_MODELS]
    group.permissions.add(*Permission.objects.filter(content_type__app_label="workflow", codename__in=codenames))


def remove_operators(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Operators").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("workflow", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_operators, remove_operators)]
