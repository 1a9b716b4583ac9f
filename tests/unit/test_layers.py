"""The arrows between layers run one way (docs: DESIGN.md, "Layers"): the model never imports
the facade, the runtime, the engines or ``oban.testing``, neither at module level nor inside
a function, so ``import oban.decorators`` cannot form a circle through ``oban.oban``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import oban

SOURCE = Path(oban.__file__).parent
MODEL = [
    "_backoff.py",
    "_cron.py",
    "_instances.py",
    "_jsonable.py",
    "_modes.py",
    "_options.py",
    "_recorded.py",
    "_unique.py",
    "decorators.py",
    "errors.py",
    "job.py",
    "worker.py",
]
ALLOWED = {f"oban.{name.removesuffix('.py')}" for name in MODEL}


def _imports(path: Path) -> set[str]:
    """Every oban module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(f"oban.{node.module}")
            else:  # from . import testing
                found.update(f"oban.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            found.add(f"{'.' * node.level}{node.module or ''}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "oban":
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "oban")
    return found


@pytest.mark.parametrize("name", MODEL)
def test_a_model_module_imports_only_the_model(name: str) -> None:
    imported = _imports(SOURCE / name)

    assert imported <= ALLOWED, f"{name} imports {sorted(imported - ALLOWED)}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    path = tmp_path / "module.py"
    path.write_text("def f():\n    from .oban import Oban\n    from . import testing\n")

    assert _imports(path) == {"oban.oban", "oban.testing"}
