"""``manage.py createapitoken USERNAME [--name NAME]``: make an API token; the last line is the token alone."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflow.api.tokens import create_token


class Command(BaseCommand):
    help = "Create an HTTP API token for a user. It is shown once: only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the token acts as (its permissions apply)")
        parser.add_argument("--name", default="", help="what the token is for, e.g. 'ci-deploy'")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["username"])
        except model.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive: a token for it would not work")
        if len(options["name"]) > 100:
            raise CommandError("--name must be at most 100 characters")
        token, raw = create_token(user, name=options["name"])
        self.stderr.write(f"Created API token {token.prefix}… for {user.get_username()}. "
                          "Store it now: it cannot be shown again.")
        self.stdout.write(raw)
