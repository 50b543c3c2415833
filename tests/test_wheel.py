"""The built wheel, installed as a user would: a fresh virtualenv, ``startproject``, two lines, one app.

The repository's own settings play no part here: the new site has only what ``django-admin
startproject`` writes, ``"workflow"`` in ``INSTALLED_APPS`` and ``include("workflow.urls")``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.wheel

SOURCES = ["pyproject.toml", "MANIFEST.in", "README.md", "workflow"]
# The test run's own settings, database and path must not leak into the new site.
LEAKS = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "WFSITE_VAR_DIR", "PYTHONPATH", "VIRTUAL_ENV"}


def sh(*args: str | Path, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items() if k not in LEAKS}, **(env or {})})
    command = " ".join(str(a) for a in args)[:200]
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it (``python -m build``), from a copy of what the sdist needs."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    sh(sys.executable, "-m", "build", "--outdir", root / "dist", src, cwd=root)
    return root / "dist"


def test_wheel__holds_only_the_app_with_its_templates_static_and_migrations(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"workflow", "django_workflow-0.1.0.dist-info"}, top
    for expected in ["workflow/templates/workflow/base.html", "workflow/templates/workflow/registration/login.html",
                     "workflow/templates/workflow/consoles/overview.html", "workflow/static/workflow/app.css",
                     "workflow/static/workflow/vendor/htmx-2.0.10.min.js", "workflow/migrations/0001_initial.py",
                     "workflow/management/commands/runworkers.py"]:
        assert expected in names, f"{expected} is missing from the wheel"
    metadata = zipfile.ZipFile(wheel).read("django_workflow-0.1.0.dist-info/METADATA").decode()
    assert "Provides-Extra: postgres" in metadata


def test_sdist__holds_only_the_app_and_its_metadata(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    top = {n.split("/")[0] for n in names}
    assert top == {"workflow", "django_workflow.egg-info", "PKG-INFO", "pyproject.toml", "README.md",
                   "MANIFEST.in", "setup.cfg"}, top
    assert "workflow/templates/workflow/base.html" in names


WORKFLOWS_PY = '''
from workflow import Package, StepContext, require

greet = Package("greet", display_name="Greet someone")


@greet.entrypoint
def start(run, params: dict) -> None:
    hello = run.step("hello", {"name": params["name"]}, kind="hello")
    run.step("report", {}, kind="report", depends_on=require(hello))


@greet.executor("hello")
def hello(step: StepContext) -> dict:
    return {"greeting": "hello " + step.raw_input["name"]}


@greet.executor("report")
def report(step: StepContext) -> dict:
    step.artifact("greeting.txt", "text/plain", step.dependency_data("hello")["greeting"].encode())
    step.record("greetings", step.step.run_id, {"done": True})
    return {"reported": True}
'''

# Run inside the new site: log in through the dashboard's own login page, then GET every page.
CHECK_PAGES_PY = '''
import json, os, re, sys
import django

os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
from django.urls import reverse
from django.contrib.auth.models import User
from workflow.models import Artifact, Run, Step

setup_test_environment()
User.objects.create_user("ada", password="a-long-password-1", is_staff=True, is_superuser=True)
run = Run.objects.get()
report = {"run_status": run.state, "steps": {s.step_id: [s.state, s.error_code] for s in Step.objects.all()}, "pages": {}}
client = Client()
anonymous = client.get("/workflows/runs/")
report["anonymous"] = [anonymous.status_code, anonymous.headers.get("Location", "")]
login_page = client.get(anonymous.headers["Location"])
report["login_page"] = [login_page.status_code, "Log in" in login_page.content.decode()]
logged_in = client.post(anonymous.headers["Location"], {"username": "ada", "password": "a-long-password-1"})
report["logged_in"] = [logged_in.status_code, logged_in.headers.get("Location", "")]
pages = [reverse(n) for n in ["workflow:overview", "workflow:runs", "workflow:records", "consoles:overview",
                              "consoles:steps", "consoles:queues", "consoles:events", "consoles:packages",
                              "consoles:submissions", "consoles:engine"]]
pages += [reverse(n, args=[run.pk]) for n in ["workflow:run", "workflow:results", "workflow:artifacts"]]
pages += [reverse("workflow:step", args=[run.pk, s.step_id]) for s in Step.objects.all()]
pages += [reverse("consoles:start_run", args=["greet"])]
pages += [reverse("workflow:download_artifact", args=[a.pk]) for a in Artifact.objects.all()]
links = set()
for url in pages:
    response = client.get(url)
    body = b"".join(response.streaming_content if response.streaming else [response.content]).decode(errors="replace")
    report["pages"][url] = response.status_code
    links.update(re.findall(r'(?:href|src|action|hx-get|hx-post)="(/[^"]*)"', body))
report["links"] = sorted(links)
fragment = client.get(reverse("workflow:runs"), headers={"HX-Request": "true", "HX-Target": "runs-table"})
report["htmx_fragment"] = [fragment.status_code, "<html" in fragment.content.decode(), "runs-table" in fragment.content.decode()]
logout = client.post(reverse("workflow:logout"))
report["logout"] = [logout.status_code, logout.headers.get("Location", "")]
print(json.dumps(report))
'''


def test_wheel__two_line_install_runs_a_workflow_and_serves_every_page(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    sh(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=tmp_path, timeout=300)
    site = tmp_path / "site"
    site.mkdir()
    sh(bin_dir / "django-admin", "startproject", "mysite", site, cwd=tmp_path)
    app = site / "jobs"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "workflows.py").write_text(WORKFLOWS_PY)
    settings = site / "mysite" / "settings.py"
    # The two lines (plus the new app holding workflows.py, and STATIC_ROOT for collectstatic).
    settings.write_text(settings.read_text() + textwrap.dedent('''
        INSTALLED_APPS += ["workflow", "jobs"]
        STATIC_ROOT = BASE_DIR / "staticfiles"
    '''))
    urls = site / "mysite" / "urls.py"
    text = urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
    urls.write_text(text.replace("urlpatterns = [", 'urlpatterns = [\n    path("workflows/", include("workflow.urls")),'))

    manage = [python, "manage.py"]
    assert "no issues" in sh(*manage, "check", "--fail-level", "WARNING", cwd=site)
    sh(*manage, "migrate", "--noinput", cwd=site)
    sh(*manage, "collectstatic", "--noinput", cwd=site)
    assert (site / "staticfiles" / "workflow" / "app.css").is_file()
    assert (site / "staticfiles" / "workflow" / "vendor" / "htmx-2.0.10.min.js").is_file()
    sh(*manage, "startrun", "greet", "--input", '{"name": "Ada"}', cwd=site)
    sh(*manage, "runworkers", "--burst", cwd=site, timeout=120)

    report = json.loads(sh(python, "-c", CHECK_PAGES_PY, cwd=site))
    assert report["run_status"] == "succeeded", report
    assert {step: state for step, (state, _code) in report["steps"].items()} == {
        "hello": "succeeded", "report": "succeeded"}, report["steps"]
    assert report["anonymous"] == [302, "/workflows/login/?next=/workflows/runs/"]
    assert report["login_page"] == [200, True]
    assert report["logged_in"] == [302, "/workflows/runs/"]
    assert len(report["pages"]) == 17, report["pages"]
    # The submissions fragment says "stop polling" (286) once nothing is in flight; every page is a 200.
    assert report["pages"].pop("/workflows/ops/submissions/") == 286
    assert {url: status for url, status in report["pages"].items() if status != 200} == {}
    assert all(url.startswith("/workflows/") for url in report["pages"])
    # No page links to a path outside the app's prefix, the site's static files or the admin.
    strays = [link for link in report["links"] if not link.startswith(("/workflows/", "/static/", "/admin/"))]
    assert strays == [], strays
    assert "/static/workflow/vendor/htmx-2.0.10.min.js" in report["links"]
    # htmx without the site adding django-htmx's middleware: the fragment alone (the runs list stays live: 200).
    assert report["htmx_fragment"] == [200, False, True]
    assert report["logout"] == [302, "/workflows/login/"]
