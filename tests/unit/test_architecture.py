"""The shape of the package: small modules, no import circles, dialects in one place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "ecl_persistence"
MAX_MODULE_LINES = 400
DIALECT_NAMES = {"sqlite", "postgresql", "postgres"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: top level, not for type checking."""
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            yield from (n for n in node.body if isinstance(n, ast.Import | ast.ImportFrom))


def _imported_modules(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from package import module" imports the module; "from module
            # import name" the module the name is in.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        found.update(target for target in targets if target in MODULES and target != name)
    return found


def test_no_module_of_the_package_passes_the_size_of_a_small_room() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    large = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not large, f"modules over {MAX_MODULE_LINES} lines: {large}"


def test_the_modules_import_each_other_without_a_circle() -> None:
    graph = {name: _imported_modules(name, path) for name, path in MODULES.items()}
    # A package's __init__ may import its own modules, which import their
    # siblings: only circles through two or more other modules count.
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circle = [*visiting[visiting.index(module) :], module]
            non_init = [m for m in circle if MODULES[m].name != "__init__.py"]
            if len(set(non_init)) > 1:
                pytest.fail(f"import circle: {' -> '.join(circle)}")
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("ecl_persistence.retention", "ecl_persistence.database"),
        *(
            (name, target)
            for name in MODULES
            if name.startswith("ecl_persistence.repositories")
            for target in ("ecl_persistence.unit_of_work", "ecl_persistence.database")
        ),
    ],
)
def test_lower_layers_do_not_import_the_layers_above(module: str, forbidden: str) -> None:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    names = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert forbidden not in names, f"{module} imports {forbidden}"


def _compares_a_dialect_name(node: ast.Compare) -> bool:
    operands = [node.left, *node.comparators]
    return any(
        isinstance(operand, ast.Constant) and operand.value in DIALECT_NAMES for operand in operands
    )


@pytest.mark.parametrize(
    "module", [name for name in MODULES if not name.startswith("ecl_persistence.dialects")]
)
def test_only_the_dialect_strategies_test_a_dialect_name(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    tests = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and _compares_a_dialect_name(node)
    ]
    assert not tests, f"{module} compares a dialect name on lines {tests}: ask the strategy"
