"""``manage.py setupdemo``: an operator login (printed once, when created) and a few demo runs."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from workflow import operator


class Command(BaseCommand):
    help = "Create the demo operator login (printed once) and start demo runs."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="operator")
        parser.add_argument("--runs", type=int, default=3, help="how many demo runs to start")

    def handle(self, *args: Any, username: str, runs: int, **options: Any) -> None:
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username=username, password=password, is_staff=True)
            user.groups.add(Group.objects.get(name="Operators"))
            self.stdout.write(self.style.SUCCESS(
                f"\n  Operator login created (shown only now):\n    user: {username}\n    password: {password}\n"
            ))
        else:
            self.stdout.write(f"Operator login {username!r} exists (its password was printed when it was created; "
                              f"reset it with: python manage.py changepassword {username}).")
        for n in range(runs):
            fail = n == runs - 1 and runs > 1  # the last one shows a permanent failure and a blocked step
            handle = operator.start_run("demo", {"chunks": 4 + n, "fail_permanently": fail, "work_seconds": 0.5},
                                        user=user, name=f"Word report #{n + 1}" + (" (fails)" if fail else ""))
            self.stdout.write(f"Started demo run {handle.id}")
