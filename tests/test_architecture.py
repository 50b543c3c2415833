"""The boundaries the layout promises, checked on the source (conventions.md, "boundaries worth a test")."""

from __future__ import annotations

import ast
import re
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


# -- the store owns every write ---------------------------------------------------------------------
STORES = APP / "stores"
ENGINE_MODELS = {"Run", "Step", "Dependency", "Lease", "Artifact", "Record", "Event", "Queue", "Worker"}
ORM_WRITERS = {"create", "update", "delete", "save", "bulk_create", "bulk_update", "get_or_create",
               "update_or_create", "delete_queryset", "delete_model"}
# Outside stores/, the modules that still write engine rows, each with why. Anything else that writes
# one fails the test below: add a store method instead.
WRITE_EXCEPTIONS = {
    "schedules.py": "the schedule ticker writes its schedule_* events beside its own Schedule rows, in the "
                    "transaction that moves the schedule; it starts runs through the runtime",
    "admin.py": "Django admin deletes finished runs with their history (RunAdmin.delete_queryset); it refuses "
                "active runs, which only the store may end",
}
_RAW_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+\"?\w+\"?\s+SET|DELETE\s+FROM)\b")


def app_modules(*, outside_stores: bool = False) -> list[Path]:
    paths = [p for p in APP.rglob("*.py") if "migrations" not in p.parts]
    if outside_stores:
        paths = [p for p in paths if STORES not in p.parents]
    return sorted(paths)


def string_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """Every literal piece of text in a module: plain strings and the constant parts of f-strings."""
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def engine_model_names(tree: ast.AST) -> set[str]:
    """The engine models this module imports from ``workflow.models``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models") and node.level > 0:
            names.update(a.asname or a.name for a in node.names if a.name in ENGINE_MODELS)
    return names


def orm_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that write an engine model through the ORM: a manager or queryset of one, or an instance."""
    models = engine_model_names(tree)
    if not models:
        return []
    instances: set[str] = set()  # names bound to an engine model instance: ``row = Run(...)``
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if ast.unparse(node.value.func) in models:
                instances.update(t.id for t in node.targets if isinstance(t, ast.Name))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ORM_WRITERS):
            continue
        receiver = node.func.value
        text = ast.unparse(receiver)
        through_manager = any(re.search(rf"\b{m}\.objects\b", text) for m in models)
        on_instance = (isinstance(receiver, ast.Call) and ast.unparse(receiver.func) in models) or text in instances
        via_admin = node.func.attr in {"delete_queryset", "delete_model"}
        if through_manager or on_instance or via_admin:
            found.append((node.lineno, ast.unparse(node)[:90]))
    return found


def test_stores__only_the_stores_write_raw_sql():
    for path in app_modules(outside_stores=True):
        for lineno, text in string_parts(ast.parse(path.read_text())):
            assert not _RAW_WRITE.search(text), f"{path.relative_to(ROOT)}:{lineno} writes raw SQL: {text[:80]!r}"


def test_stores__only_the_stores_write_engine_rows_through_the_orm():
    writers = set()
    for path in app_modules(outside_stores=True):
        writes = orm_writes(ast.parse(path.read_text()))
        rel = str(path.relative_to(APP))
        if writes:
            writers.add(rel)
        assert not writes or rel in WRITE_EXCEPTIONS, f"{rel} writes engine rows outside workflow/stores/: {writes}"
    assert writers == set(WRITE_EXCEPTIONS), f"exceptions no longer needed: {set(WRITE_EXCEPTIONS) - writers}"


def test_orm_writes__the_detector_finds_each_kind_of_write():
    """The check above must be able to fail: each way of writing a row is caught, reads are not."""
    source = (
        "from ..models import Run, Event\n"
        "Run.objects.filter(pk=1).update(state='x')\n"
        "Event.objects.using('a').bulk_create([])\n"
        "row = Run(id='r')\nrow.save()\n"
        "Event(kind='k').save(using='a')\n"
        "Run.objects.filter(pk=1).first()\n"
        "fields = {}\nfields.update(a=1)\n"
    )
    assert [line for line, _ in orm_writes(ast.parse(source))] == [2, 3, 5, 6]
    assert _RAW_WRITE.search("UPDATE workflow_step SET state = %s")
    assert _RAW_WRITE.search('DELETE FROM "workflow_run" WHERE id = %s')
    assert not _RAW_WRITE.search("SELECT id FROM workflow_step")


# -- one vocabulary ---------------------------------------------------------------------------------
def vocabulary() -> set[str]:
    from workflow.engine.rules import EventKind, LeaseOutcome
    from workflow.engine.values import RunState, StepState

    return {m.value for enum in (StepState, RunState, LeaseOutcome, EventKind) for m in enum}


_SQL = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE)\b.*\b(FROM|SET|INTO|WHERE)\b|\bWHERE\b|\bCASE WHEN\b", re.S)


def sql_literals(text: str, words: set[str]) -> set[str]:
    """The quoted state names or event kinds that a piece of SQL text spells out."""
    if not _SQL.search(text):
        return set()
    return {word for word in re.findall(r"'([a-z_]+)'", text) if word in words}


def test_sql__spells_no_state_name_or_event_kind():
    words = vocabulary()
    for path in app_modules():
        for lineno, text in string_parts(ast.parse(path.read_text())):
            found = sql_literals(text, words)
            assert not found, (
                f"{path.relative_to(ROOT)}:{lineno} spells {sorted(found)} in SQL; format it from the enum"
            )


def test_sql__the_vocabulary_check_can_fail():
    words = vocabulary()
    assert sql_literals("SELECT 1 FROM workflow_step WHERE state = 'ready'", words) == {"ready"}
    assert sql_literals("SELECT payload FROM workflow_event WHERE kind = 'queue_throttled'", words) == {"queue_throttled"}
    assert sql_literals("the step is 'ready'", words) == set()  # prose, not SQL


def test_store__formats_the_enums_into_its_sql():
    from workflow.engine.rules import EventKind, LeaseOutcome
    from workflow.engine.values import StepState
    from workflow.stores import claim, commit, control, leases

    assert f"state = '{StepState.READY}'" in claim._CLAIM_SQL  # a literal: the partial index must match
    assert f"kind = '{EventKind.QUEUE_THROTTLED}'" in claim._RECENT_THROTTLES_SQL
    assert f"'{LeaseOutcome.DISCARDED}'" in commit._DISCARD_LEASE_SQL
    assert f"'{LeaseOutcome.ABANDONED}'" in leases._ABANDON_LEASES_SQL
    assert f"'{StepState.CANCELED}'" in control._CANCEL_STEPS_SQL


def test_lease_outcomes__the_model_choices_are_the_engine_enum():
    from workflow.engine.rules import LeaseOutcome
    from workflow.models import Lease

    assert [c.value for c in Lease.Outcome] == [o.value for o in LeaseOutcome]


# -- sizes ------------------------------------------------------------------------------------------
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
# Today's offenders, each with a ceiling it may not grow past (a ratchet) and the move that ends it.
OVERSIZE_MODULES: dict[str, tuple[int, str]] = {}
OVERSIZE_CLASSES = {
    "engine/scheduler.py:Scheduler": (540, "the loop's lease upkeep (heartbeats, reclaims, hand-backs) can move out next"),
}


def test_sizes__no_module_or_class_grows_past_its_limit():
    for path in app_modules():
        rel = str(path.relative_to(APP))
        tree = ast.parse(path.read_text())
        lines = len(path.read_text().splitlines())
        limit = OVERSIZE_MODULES.get(rel, (MAX_MODULE_LINES, ""))[0]
        assert lines <= limit, f"{rel} has {lines} lines (limit {limit}): split it by concern"
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                key = f"{rel}:{node.name}"
                size = node.end_lineno - node.lineno + 1
                limit = OVERSIZE_CLASSES.get(key, (MAX_CLASS_LINES, ""))[0]
                assert size <= limit, f"{key} has {size} lines (limit {limit}): split it"


def test_read__imports_nothing_from_the_stores():
    """Read models never write: nothing under workflow/read/ imports workflow/stores/."""
    for path in (APP / "read").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                assert "stores" not in target.split("."), f"{path.name} imports {target}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("workflow.stores") for a in node.names), path.name


def test_views__the_run_page_does_not_import_the_step_page():
    """What both pages show (the step panel) lives in views/fragments.py: no run <-> step circle."""
    tree = ast.parse((APP / "views" / "run.py").read_text())
    imported = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "step" not in imported, "views/run.py imports views/step.py"
