"""The layers, as the code's own imports draw them: steward → flows → reports → tasks / governance → core. An import
never runs back up, tasks and governance never import each other, and only flows/ imports Prefect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import of the project (besides itself).
MAY_IMPORT = {
    "core": set(),
    "tasks": {"core"},
    "governance": {"core"},
    "reports": {"core", "governance"},
    "flows": {"core", "tasks", "governance", "reports"},
    "steward": {"core", "tasks", "governance", "reports", "flows"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_run_down_only(package: str) -> None:
    own = set(MAY_IMPORT)
    upward = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources(package)
        for module in imported_modules(path)
        if module.split(".")[0] in own - MAY_IMPORT[package] - {package}
    ]
    assert upward == []


@pytest.mark.parametrize("package", sorted(set(MAY_IMPORT) - {"flows"}))
def test_only_flows_imports_prefect(package: str) -> None:
    prefect = [str(path.relative_to(ROOT)) for path in sources(package)
               if any(module.split(".")[0] == "prefect" for module in imported_modules(path))]
    assert prefect == []
