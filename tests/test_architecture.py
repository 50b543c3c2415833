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


def engine_import_graph() -> dict[str, set[str]]:
    """Each engine module and the engine modules it imports: top level, in functions, under ``TYPE_CHECKING``."""
    engine = APP / "engine"
    modules = {path.stem for path in engine.glob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for path in engine.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    targets.append(node.module.split(".")[0])
                else:  # from . import typed, validation
                    targets.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("workflow.engine."):
                targets.append(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                targets.extend(a.name.split(".")[2] for a in node.names if a.name.startswith("workflow.engine."))
            graph[path.stem].update(t for t in targets if t in modules and t != path.stem)
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if not state.get(target):
                found = visit(target)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if not state.get(node):
            found = visit(node)
            if found:
                return found
    return None


def test_import_cycle__names_the_circle_and_accepts_a_tree():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_engine__has_no_import_cycle_type_checking_imports_included():
    graph = engine_import_graph()
    assert {"runtime", "scheduler", "runner", "context", "builder", "registry"} <= graph.keys()
    assert "registry" in graph["runner"] and "context" in graph["runner"]  # the graph sees real edges
    assert {"builder", "context"} <= graph["registry"]  # imported only under ``if TYPE_CHECKING:``
    assert "typed" in graph["context"]  # imported inside a function
    cycle = import_cycle(graph)
    assert cycle is None, "workflow/engine imports in a circle: " + " -> ".join(cycle or [])


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
