"""The parts and arrows drawn in docs/architecture.md, enforced on the code's imports.

Every import (module level or inside a function) of a module of ours is checked against the
``parts`` and ``arrows`` blocks of the drawing: an import from part A of part B must be an arrow
``A -> B``. Any import circle between modules fails, and so does an import of the old top-level
names ``shared``, ``bot`` or ``hookscript``. Read with the standard library's ``ast`` only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRAWING = ROOT / "docs" / "architecture.md"
HOOK = ROOT / "hookscript" / "migration-guard-hook"
PACKAGES = {
    "migration_guard": ROOT / "shared" / "migration_guard",
    "migration_guard_bot": ROOT / "bot" / "migration_guard_bot",
}
OURS = ("migration_guard", "migration_guard_bot", "migration_guard_hook", "shared", "bot", "hookscript")
# what the project card rules out, whatever the drawing says
NEVER = {
    ("Engine", "Cluster"),
    ("Engine", "Store"),
    ("Engine", "Api"),
    ("Engine", "Bot"),
    ("Cluster", "Service"),
    ("Cluster", "Api"),
    ("Store", "Service"),
    ("Store", "Api"),
    ("Bot", "Cluster"),
}


def block(name: str) -> list[str]:
    text = DRAWING.read_text(encoding="utf-8")
    found = re.search(rf"^```{name}\n(.*?)^```", text, re.S | re.M)
    assert found, f"docs/architecture.md has no ```{name} block"
    return [line.strip() for line in found.group(1).splitlines() if line.strip()]


def drawing() -> tuple[dict[str, str], dict[str, set[str]]]:
    parts: dict[str, str] = {}
    for line in block("parts"):
        part, _, prefixes = line.partition("=")
        for prefix in prefixes.split(","):
            parts[prefix.strip()] = part.strip()
    arrows: dict[str, set[str]] = {}
    for line in block("arrows"):
        part, _, targets = line.partition("->")
        arrows[part.strip()] = {t.strip() for t in targets.split(",") if t.strip()}
    return parts, arrows


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            found[".".join((name, *rel))] = path
    return found


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name.split(".")[0] in OURS}


def part_of(module: str, parts: dict[str, str]) -> str | None:
    best = max((p for p in parts if module == p or module.startswith(p + ".")), key=len, default=None)
    return parts[best] if best else None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_drawing_is_a_drawing():
    parts, arrows = drawing()
    names = set(parts.values())
    assert set(arrows) == names, "every part has one line in the arrows block"
    for source, targets in arrows.items():
        assert targets <= names, f"{source} points at unknown parts {targets - names}"
        assert source not in targets
    assert not {(a, b) for a, targets in arrows.items() for b in targets} & NEVER, "an arrow the card forbids"


def test_every_module_belongs_to_a_part():
    parts, _ = drawing()
    lost = [name for name in modules() if part_of(name, parts) is None]
    assert not lost, f"modules in no part of docs/architecture.md: {lost}"


def test_imports_follow_the_arrows():
    parts, arrows = drawing()
    wrong = []
    for module, targets in sorted(graph().items()):
        source = part_of(module, parts)
        for target in sorted(targets):
            if target.split(".")[0] in ("shared", "bot", "hookscript"):
                wrong.append(f"{module} imports {target}: the old top-level name is not installed")
                continue
            to = part_of(target, parts)
            if to is None:
                wrong.append(f"{module} imports {target}, which is in no part")
            elif to != source and to not in arrows[source]:
                wrong.append(f"{module} ({source}) imports {target} ({to}): no arrow {source} -> {to}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("path", [HOOK, *sorted(HOOK.parent.glob("*.py"))], ids=lambda p: p.name)
def test_the_hook_imports_nothing_of_ours(path):
    """The launcher and the modules installed beside it: the standard library and each other only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] in OURS}
    beside = {p.stem for p in HOOK.parent.glob("*.py")}
    stdlib = set(sys.stdlib_module_names) | beside
    assert {n.split(".")[0] for n in names if n} <= stdlib, "the hook runs on a bare Proxmox node"


@pytest.mark.parametrize("folder", ["benchmarks", "tools"])
def test_benchmarks_and_tools_import_nothing_from_tests(folder):
    for path in (ROOT / folder).glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "tests"], f"{path.name} imports from tests/"


def test_pyproject_lists_every_package_folder():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders <= listed, f"package folders missing from pyproject's packages: {folders - listed}"
