"""Imports run with the grain: every import in every module of a part (function-level ones too,
parsed with `ast`, nothing executed) is checked against ARCHITECTURE.md's table "Parts and what each
may import", which the test reads, so the document and the code cannot drift apart."""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Parts and what each may import"


@dataclass(frozen=True)
class Part:
    name: str  # "engine", or "cli.py" for a module at the root
    paths: tuple[Path, ...]
    parts: frozenset[str] | None  # the parts it may import (None: all)
    packages: frozenset[str] | None  # the packages it imports, exactly (None: any)


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def parse_table(text: str) -> list[Part]:
    """The rows of the table under HEADING: `part | job | parts it may import | packages it may import`."""
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    parts = []
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 4, f"ARCHITECTURE.md: a row of the parts table has {len(cells)} cells, not 4: {row}"
        names = [n for n in ticked(cells[0]) if n.endswith("/") or n.endswith(".py")]
        may_parts = None if cells[2] == "all" else frozenset(n.split(".")[0] for n in ticked(cells[2]))
        may_packages = None if cells[3] == "all" else frozenset(ticked(cells[3]))
        for name in names:
            parts.append(Part(name.rstrip("/"), tuple(_files(name)), may_parts, may_packages))
    return parts


def _files(name: str) -> list[Path]:
    path = ROOT / name
    return [path] if name.endswith(".py") else sorted(path.rglob("*.py"))


def module_name(part: Part) -> str:
    return part.name.removesuffix(".py")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import in the file; relative ones stay in the part."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


TABLE = parse_table((ROOT / "ARCHITECTURE.md").read_text())
INTERNAL = {module_name(p) for p in TABLE}


def test_the_table_covers_every_part_of_the_code():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    modules = {p.stem for p in ROOT.glob("*.py") if p.name != "conftest.py"}
    assert packages | modules == INTERNAL, "ARCHITECTURE.md's parts table must name each package and root module"
    assert all(part.paths for part in TABLE)


@pytest.mark.parametrize("part", TABLE, ids=lambda p: p.name)
def test_a_part_imports_only_the_parts_its_row_allows(part):
    if part.parts is None:
        return
    allowed = part.parts | {module_name(part)}
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in part.paths
             for line, name in imports(path) if name in INTERNAL and name not in allowed]
    assert not wrong, f"{part.name} may import only {sorted(part.parts)} (ARCHITECTURE.md):\n" + "\n".join(wrong)


@pytest.mark.parametrize("part", [p for p in TABLE if p.packages is not None], ids=lambda p: p.name)
def test_a_part_imports_exactly_the_packages_its_row_names(part):
    used: dict[str, str] = {}
    for path in part.paths:
        for line, name in imports(path):
            if name not in INTERNAL and name not in sys.stdlib_module_names:
                used.setdefault(name, f"{path.relative_to(ROOT)}:{line}")
    unlisted = {name: where for name, where in used.items() if name not in part.packages}
    assert not unlisted, f"{part.name} imports packages its row in ARCHITECTURE.md does not name: {unlisted}"
    assert not part.packages - set(used), (
        f"{part.name}'s row in ARCHITECTURE.md names packages it never imports: {sorted(part.packages - set(used))}")


def test_the_checks_see_function_level_imports_and_every_row(tmp_path):
    """The parser finds an upward import hidden in a function, and reads the table's 'all' and 'none'."""
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from ui.app import build_app\n    import gradio.themes\n"
                      "    from . import sibling\n")
    assert imports(module) == [(1, "os"), (4, "ui"), (5, "gradio")]
    table = parse_table(f"{HEADING}\n| part | job | parts | packages |\n|---|---|---|---|\n"
                        "| `engine/` | models | none | `torch` |\n| `cli.py` | entry | all | all |\n\n## Next\n")
    assert [(p.name, p.parts, p.packages) for p in table] == [
        ("engine", frozenset(), frozenset({"torch"})), ("cli.py", None, None)]
    by_name = {p.name: p for p in TABLE}
    assert by_name["engine"].parts == frozenset() and "ui" not in by_name["study"].parts
    assert "training" not in by_name["ui"].parts and by_name["cli.py"].parts is None
