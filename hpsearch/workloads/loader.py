"""Finding a workload: `package.module:function` or `/path/file.py:function`, or a command.

`check_workload` validates a path without importing it (the CLI never imports
torch just to read a study file); `load_workload` imports it, once per process.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpsearch.errors import WorkloadError
from hpsearch.workloads.api import exception_reason
from hpsearch.workloads.spec import Workload


def check_workload(module: str, function: str) -> None:
    """Check that `module:function` exists without importing it (no torch in the CLI).

    `module` is a dotted module name or an absolute path to a .py file.
    Raises LookupError with a message that says what to fix.
    """
    if module.endswith(".py"):
        source_path = Path(module)
        if not source_path.is_file():
            raise LookupError(f"workload file {module} does not exist; the path is relative to the study file")
    else:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            raise LookupError(f"module {module!r} cannot be found; check the name or install it")
        source_path = Path(spec.origin)
        if source_path.suffix != ".py":  # compiled or namespace module: cannot inspect, import decides
            return
    try:
        tree = ast.parse(source_path.read_text(), filename=str(source_path))
    except SyntaxError as e:
        raise LookupError(f"{source_path} has a syntax error at line {e.lineno}: {e.msg}") from None
    defined = _top_level_names(tree)
    if function not in defined:
        available = sorted(n for n in defined if not n.startswith("_"))
        hint = f"; functions there: {', '.join(available)}" if available else ""
        raise LookupError(f"{source_path} defines no function {function!r}{hint}")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def load_workload(workload: Workload | str) -> Callable[..., Any]:
    """The callable that runs one trial: the imported function of `package.module:function` or
    `/path/file.py:function`, or a CommandWorkload. A string is Workload.to_arg's form."""
    if isinstance(workload, str):
        workload = Workload.from_arg(workload)
    if workload.command:
        from hpsearch.workloads.command import CommandWorkload

        return CommandWorkload(workload.command)
    if workload.model is not None:
        from hpsearch.workloads.model import ModelWorkload

        return ModelWorkload(workload.model, load_workload)
    path = workload.function
    module_name, _, function = path.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            # A stable, unique module name so the same file is imported once per process.
            unique = "hpsearch_user_" + "".join(c if c.isalnum() else "_" for c in str(file.resolve()))
            module = sys.modules.get(unique)
            if module is None:
                spec = importlib.util.spec_from_file_location(unique, file)
                if spec is None or spec.loader is None:
                    raise WorkloadError(f"workload file {file} cannot be loaded")
                module = importlib.util.module_from_spec(spec)
                sys.modules[unique] = module
                # The workload's own folder is importable, as when running `python file.py`.
                sys.path.insert(0, str(file.parent))
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except WorkloadError:
        raise
    except Exception as e:
        raise WorkloadError(f"workload {path}: importing it failed: {exception_reason(e)}") from e
    fn = getattr(module, function, None)
    if not callable(fn):
        raise WorkloadError(f"workload {path}: {function!r} is not a function in {module_name}")
    return fn
