"""docs/architecture.md says each stage imports only earlier ones: hold the code to its table.

The table lists the core modules in stage order. A module-level import of a later stage would
make the one-way data flow a claim only; imports inside functions (deferred, so a run without
tools never loads them) and type-only imports are allowed and skipped here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "promptdsl"


def _stage_order() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Modules, in stage order", 1)[1].split("\n## ", 1)[0]
    return [m.rstrip("/").removesuffix(".py") for m in re.findall(r"^\| `([\w/.]+)` \|", table, re.M)]


def _module_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, first part of the target inside promptdsl) of the relative imports a module runs on import."""
    rel = path.relative_to(PACKAGE).parts
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # top level only: not in functions, not under `if TYPE_CHECKING:`
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(rel[:-1])[: len(rel) - node.level]
            target = base + (node.module.split(".") if node.module else [node.names[0].name])
            found.append((node.lineno, target[0].removesuffix(".py")))
    return found


def test_every_core_module_is_in_the_table() -> None:
    order = _stage_order()
    modules = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert modules - {"__init__", "cli"} <= set(order), sorted(modules - {"__init__", "cli"} - set(order))


def test_no_stage_imports_a_later_one_at_import_time() -> None:
    order = _stage_order()
    assert order[:2] == ["errors", "paths"] and "runner" in order  # the table was found and read
    later = []
    for path in sorted(PACKAGE.rglob("*.py")):
        stage = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if stage not in order:
            continue
        for line, target in _module_level_imports(path):
            if target in order and order.index(target) > order.index(stage):
                later.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert later == []


def test_relative_imports_resolve_to_stages() -> None:
    loader = {t for _, t in _module_level_imports(PACKAGE / "loader.py")}
    loop = {t for _, t in _module_level_imports(PACKAGE / "tools" / "loop.py")}
    assert {"errors", "speccache", "inputs"} <= loader and "tools" not in loader  # tools: inside functions
    assert {"errors", "schema", "tools"} <= loop and "runner" not in loop  # runner: for types only
