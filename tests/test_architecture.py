"""The rules of ../shared/ARCHITECTURE.md, checked on the source: import direction, cycles, sizes, one Optuna door."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "hpsearch"
MAX_LINES = 400
MAX_CLASS_LINES = 200
EXECUTORS = ("dispatch.inline", "dispatch.pool", "dispatch.handout")  # the modules that take a TrialSource
CORE = {
    "errors",
    "spec",
    "workloads.spec",
    "space",
    "strategy",
    "pruner",
    "border",
    "refine",
    "trials",
    "divergence",
    "direction",
    "repeats",
    "limits",
    "durations",
    "warm_start",
}
# A private Optuna name: one of these attributes, or an import from one of Optuna's _private modules.
PRIVATE_OPTUNA = re.compile(
    r"\._(storage|study_id|trial_id|suggest|get_stale_trial_ids|pop_waiting_trial_id|thread_local|backend|cached_trial_ids)\b"
    r"|optuna(\.\w+)*\._\w+"
)
RAW_SQL = re.compile(r"sqlalchemy\.text|\bSELECT\b|\bUPDATE\b \w+ SET")


def _modules() -> dict[str, Path]:
    """Dotted name (without the 'hpsearch.' prefix; '' for the package) -> file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every hpsearch module `path` imports, anywhere in it (function-level and TYPE_CHECKING imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name == "hpsearch" or name.startswith("hpsearch."):
                out.add(name.removeprefix("hpsearch").removeprefix("."))
    return out


def _third_party(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path):
            while target and target not in modules:  # `from hpsearch.x import name`: the module is hpsearch.x
                target = target.rpartition(".")[0]
            # Importing a.b runs a/__init__.py first.
            parts = target.split(".") if target else []
            edges |= {".".join(parts[: i + 1]) for i in range(len(parts))}
        # A package's own modules import their siblings through it: no edge back to an enclosing package.
        parts = name.split(".")
        edges -= {".".join(parts[:i]) for i in range(len(parts) + 1)}
        edges.discard("")  # hpsearch/__init__.py imports nothing at import time (its exports are lazy)
        graph[name] = edges
    return graph


def test_architecture_has_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_architecture_core_imports_only_core_and_never_torch() -> None:
    graph, modules = _graph(), _modules()
    for name in CORE:
        allowed = CORE | {
            "workloads",
            "workloads.loader",
            "workloads.api",
        }  # spec checks a workload path without importing it
        assert graph[name] <= allowed, f"{name} imports {graph[name] - allowed}"
        assert not _third_party(modules[name]) & {"torch", "typer", "rich", "matplotlib"}, name


def test_architecture_layers_point_down() -> None:
    graph = _graph()
    assert not any(t.startswith("dispatch") for t in graph["search.coordinator"]), "the executor is handed in"
    for name, edges in graph.items():
        if name.startswith("workloads"):
            banned = {e for e in edges if e.split(".")[0] in {"store", "search", "dispatch", "cli"}}
            assert not banned, f"{name} imports {banned}"
        if name.startswith("instruments") or name.startswith("report"):
            assert not any(e.startswith("cli") for e in edges), f"{name} imports the CLI"


def test_architecture_only_cli_imports_typer_and_rich() -> None:
    for name, path in _modules().items():
        if not name.startswith("cli"):
            assert not _third_party(path) & {"typer", "rich"}, f"{name} imports typer/rich"


def test_architecture_no_module_over_400_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_architecture_no_class_over_200_lines() -> None:
    """A class that long holds two ideas (ARCHITECTURE.md): the coordinator and the pool were split for it."""
    long = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (n := (node.end_lineno or 0) - node.lineno + 1) > MAX_CLASS_LINES:
                long[f"{name}.{node.name}"] = n
    assert not long, long


def test_architecture_dispatch_sees_search_only_through_the_trial_source() -> None:
    """Executors (and everything else in dispatch/) import nothing of search/ but what dispatch/source.py
    re-exports: the coordinator is handed in, and known to them only as a TrialSource."""
    graph = _graph()
    for name, edges in graph.items():
        if name.startswith("dispatch") and name != "dispatch.source":
            assert not {e for e in edges if e.startswith("search")}, f"{name} imports {edges}"


def test_architecture_executors_call_only_the_trial_source() -> None:
    """Every attribute an executor reads of the source it was handed is one TrialSource lists."""
    from hpsearch.dispatch.source import TrialSource

    allowed = {n for n in vars(TrialSource) if not n.startswith("_")}
    modules = _modules()
    for name in EXECUTORS:
        used = {
            node.attr
            for node in ast.walk(ast.parse(modules[name].read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "source"
        }
        assert used, f"{name} reads nothing of its source: the check looks at the wrong name"
        assert used <= allowed, f"{name} reads {used - allowed} of the coordinator, outside TrialSource"


def test_architecture_private_optuna_names_only_in_optuna_compat() -> None:
    for name, path in _modules().items():
        if name == "store.optuna_compat":
            continue
        text = path.read_text()
        assert not PRIVATE_OPTUNA.search(text), f"{name}: {PRIVATE_OPTUNA.search(text).group(0)}"  # type: ignore[union-attr]
        assert not RAW_SQL.search(text), f"{name}: raw SQL {RAW_SQL.search(text).group(0)}"  # type: ignore[union-attr]
    assert PRIVATE_OPTUNA.search((PACKAGE / "store" / "optuna_compat.py").read_text())  # the pattern does find them


def test_architecture_cli_start_up_imports_no_torch_optuna_or_pandas() -> None:
    code = (
        "import sys, hpsearch.cli; "
        "print(sorted(m for m in ('torch', 'optuna', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_architecture_public_api_is_exported() -> None:
    import hpsearch

    assert "load_spec" in hpsearch.__all__ and "run_stage" in hpsearch.__all__
    for name in hpsearch.__all__:
        assert getattr(hpsearch, name) is not None, name
    with pytest.raises(AttributeError):
        hpsearch.no_such_thing  # noqa: B018


def test_architecture_library_errors_name_settings_not_flags() -> None:
    """Outside cli/, no raised message mentions a command-line flag: the CLI adds those ($setting -> --flag)."""
    flag = re.compile(r"(?<![\w-])--[a-z]")
    for name, path in _modules().items():
        if name.startswith("cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                texts = [
                    c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                bad = [t for t in texts if flag.search(t)]
                assert not bad, f"{name}:{node.lineno} raises a message naming a flag: {bad}"
