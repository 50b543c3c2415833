"""The boundaries the layout promises, checked on the source (conventions.md, "boundaries worth a test")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "workflow"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names.add("." * node.level + base)
    return names


def test_engine__imports_nothing_from_django_or_the_web_layer():
    for path in (APP / "engine").glob("*.py"):
        for name in imports_of(path):
            assert not name.startswith("django"), f"{path.name} imports {name}"
            assert not name.startswith(".."), f"{path.name} reaches out of the engine: {name}"
            assert not name.startswith("workflow"), f"{path.name} imports {name}"


def test_settings__only_conf_reads_the_workflow_settings():
    for path in APP.rglob("*.py"):
        if path.name == "conf.py" or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            reads = (isinstance(node, ast.Attribute) and node.attr == "WORKFLOW") or (
                isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr" and "'WORKFLOW'" in ast.unparse(node)
            )
            assert not reads, f"{path.name}:{node.lineno} reads settings.WORKFLOW; ask workflow.conf"


def test_views_and_admin__change_state_only_through_the_operator_service():
    writers = ("update", "delete", "create", "bulk_create", "bulk_update", "save", "get_or_create", "update_or_create")
    sources = [APP / "admin.py", *(APP / "views").glob("*.py")] if (APP / "views").is_dir() else [APP / "admin.py"]
    for path in sources:
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in writers:
                target = ast.unparse(node.func.value)
                assert "objects" not in target and not target.endswith(("_set", "steps", "runs")), (
                    f"{path.name}:{node.lineno} writes models directly: {ast.unparse(node)[:80]}"
                )


def test_importing_workflow__starts_no_threads():
    code = (
        "import threading, django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings');"
        "django.setup(); import workflow, workflow.conf, workflow.stores.db;"
        "print(threading.active_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
