"""``manage.py setupdemo``: an operator login and a few demo runs, then (``--welcome``) a greeting.

``make run`` calls it twice: before the site starts (login, demo runs, only the first time) and
once the site answers (``--welcome URL``), so the login and a first thing to look at are the last
lines on screen instead of scrolling away under worker logs.
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from workflow import operator
from workflow.models import Run

WELCOME_WAIT_SECONDS = 30


def login_file() -> Path:
    """Where the generated demo password is kept (owner-only), so later starts can show it again."""
    return Path(settings.VAR_DIR) / "demo-login.txt"


class Command(BaseCommand):
    help = "Create the demo operator login and demo runs (once); --welcome URL greets once the site is up."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="operator")
        parser.add_argument("--runs", type=int, default=3, help="how many demo runs to start")
        parser.add_argument("--again", action="store_true",
                            help="start demo runs even though earlier ones exist (default: only the first time)")
        parser.add_argument("--welcome", metavar="URL", default="",
                            help="wait until URL answers, then print the login and what to look at first")
        parser.add_argument("--site-pid", type=int, default=0,
                            help="with --welcome: the site's process; if it dies (port taken), say so")

    def handle(self, *args: Any, username: str, runs: int, again: bool, welcome: str, site_pid: int,
               **options: Any) -> None:
        if runs < 0:
            raise CommandError("--runs must be 0 or more")
        if welcome:
            self.welcome(welcome, username, site_pid)
            return
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username=username, password=password, is_staff=True)
            user.groups.add(Group.objects.get(name="Operators"))
            path = login_file()
            path.write_text(f"{username}\n{password}\n")
            os.chmod(path, 0o600)
            self.stdout.write(self.style.SUCCESS(f"Operator login created: {username} (password kept in {path})"))
        else:
            self.stdout.write(f"Operator login {username!r} exists.")
        if Run.objects.filter(package="demo").exists() and not again:
            self.stdout.write("Demo runs exist already: none started (--again starts more).")
            return
        for n in range(runs):
            fail = n == runs - 1 and runs > 1  # the last one shows a permanent failure and a blocked step
            handle = operator.start_run("demo", {"chunks": 4 + n, "fail_permanently": fail, "work_seconds": 0.5},
                                        user=user, name=f"Word report #{n + 1}" + (" (fails)" if fail else ""))
            self.stdout.write(f"Started demo run {handle.id}")

    def welcome(self, url: str, username: str, site_pid: int) -> None:
        deadline = time.monotonic() + WELCOME_WAIT_SECONDS
        while True:
            if site_pid and not _alive(site_pid):
                raise CommandError(f"The site stopped before answering at {url} (is the port taken? try PORT=8080).")
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310  (a local URL make passes)
                    break
            except urllib.error.HTTPError:
                break  # it answered (a redirect to the login page is an answer)
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stderr.write(f"The site did not answer at {url} within {WELCOME_WAIT_SECONDS} s.")
                    return
                time.sleep(0.3)
        time.sleep(0.2)
        if site_pid and not _alive(site_pid):  # something else answered on that port
            raise CommandError(f"The site stopped before answering at {url} (is the port taken? try PORT=8080).")
        path = login_file()
        lines = path.read_text().split() if path.exists() else []
        if len(lines) == 2 and lines[0] == username:
            login = f"user {lines[0]}, password {lines[1]}"
        else:
            login = f"user {username} (reset its password with: python manage.py changepassword {username})"
        failed = Run.objects.filter(package="demo", name__endswith="(fails)").order_by("-created_at").first()
        first_look = (f"{url.rstrip('/')}/runs/{failed.id}/" if failed else f"{url.rstrip('/')}/runs/")
        bar = "=" * 72
        self.stdout.write(self.style.SUCCESS(
            f"\n{bar}\n  The dashboard is up: {url}\n  Log in with {login}\n"
            f"  Look first at the failing demo run: {first_look}\n"
            f"  (its banner names the failed step; 'Retry failed steps' reruns it)\n"
            f"  Ctrl-C stops the site and the worker.\n{bar}\n"
        ))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that exited but was not reaped yet still answers kill(0): read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
