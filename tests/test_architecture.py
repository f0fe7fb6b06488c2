"""The layers of makd (docs/architecture.md): no import cycle, no upward import, every package in a layer, and every
makd path or module the documentation names exists (issue 19)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "configs").rglob("*.yaml")])


@pytest.fixture(scope="module")
def import_layers():
    return load_tool("import_layers")


def test_no_import_cycle_and_no_upward_import(import_layers):
    shape = import_layers.measure(import_layers.contract_layers())
    assert shape.cycles == []
    assert shape.upward_imports == []
    assert shape.modules > 100 and shape.levels > 1  # the graph was read, not empty


def test_the_measure_finds_cycles_and_upward_imports(import_layers):
    edges = {"p.a": {"p.b"}, "p.b": {"p.a", "p.c"}, "p.c": set(), "p.d": {"p.c"}}
    components = import_layers.strongly_connected(edges)
    assert [c for c in components if len(c) > 1] == [["p.a", "p.b"]]
    assert import_layers.longest_chain(edges, components) == ["p.a", "p.c"]
    layers = import_layers.parse_layers("p.c ; p.a | p.b ; p.d")  # p.c on top
    assert import_layers.upward_imports(edges, layers) == [
        "p.a -> p.b (p.a and p.b are independent)",
        "p.b -> p.a (p.b and p.a are independent)",
        "p.b -> p.c (layer p.c is above p.b)",
        "p.d -> p.c (layer p.c is above p.d)",
    ]
    assert import_layers.upward_imports(edges, import_layers.parse_layers("p.d ; p.a : p.b ; p.c")) == []


def test_every_package_of_makd_sits_in_one_layer(import_layers):
    members = [m for layer in import_layers.contract_layers() for m in layer.modules]
    assert len(members) == len(set(members))
    top = sorted(
        f"makd.{p.stem if p.is_file() else p.name}"
        for p in (REPO / "makd").iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    )
    assert sorted(members) == top


def test_the_architecture_page_lists_the_layers_of_the_contract(import_layers):
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = page.split("## The layers, top first", 1)[1].split("```", 2)[1]
    assert import_layers.parse_layers(block) == import_layers.contract_layers()


def test_the_registered_tasks_are_the_values_of_task():
    import makd.tasks  # noqa: F401  (registers every task)
    from makd.config.defaults import TASKS as TASK_VALUES
    from makd.engine.tasks import TASKS

    assert sorted(TASKS.names()) == sorted(TASK_VALUES)


@cache
def top_level_names(path: Path) -> frozenset[str]:
    """Names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def missing_reference(name: str) -> str | None:
    """Why the makd path (makd/a/b.py, makd/a/) or dotted name (makd.a.b[.attribute]) does not exist, or None."""
    if "/" in name:
        return None if (REPO / name).exists() else "no such file or folder"
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:end])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[end:]
            if not rest or rest[0] in top_level_names(module):
                return None
            return f"{'.'.join(parts[:end])} has no {rest[0]!r}"
    return "no such module"


def test_every_makd_path_and_module_named_in_the_documentation_exists():
    pattern = re.compile(r"(?<![\w/.-])makd(?:/[\w.]+)+/?|(?<![\w/.-])makd(?:\.[A-Za-z_]\w*)+")
    problems = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
            for match in pattern.finditer(line):
                name = match.group(0).rstrip(".")
                if name.endswith((".yaml", ".md")) and "/" not in name:  # makd.yaml: a config file name
                    continue
                why = missing_reference(name)
                if why:
                    problems.append(f"{document.relative_to(REPO)}:{number}: {name}: {why}")
    assert not problems, "\n".join(problems)
