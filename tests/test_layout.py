"""The tree reads as DESIGN.md says: small modules and functions, imports that point down,
typer only in the CLI package. Each rule is checked on the package's source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "arcdiff"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_every_module_is_at_most_400_lines():
    long = {rel(p): n for p in MODULES if (n := p.read_text().count("\n")) > MAX_MODULE_LINES}
    assert not long, long


def test_every_function_is_at_most_80_lines():
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{rel(path)}:{node.name}"] = lines
    assert not long, long


def test_only_the_cli_package_imports_typer():
    outside = [rel(p) for p in MODULES if "cli" not in p.relative_to(PACKAGE).parts[:1]]
    users = [
        m for m in outside if any(n.split(".")[0] == "typer" for n in imported(PACKAGE.parent / m))
    ]
    assert not users, users


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("train", ("arcdiff.eval", "arcdiff.adapt", "arcdiff.cli", "arcdiff.pipeline")),
        ("eval", ("arcdiff.train", "arcdiff.adapt", "arcdiff.cli", "arcdiff.pipeline")),
        ("model", ("arcdiff.train", "arcdiff.eval", "arcdiff.runs", "arcdiff.cli")),
        ("diffusion", ("arcdiff.train", "arcdiff.eval", "arcdiff.model", "arcdiff.runs")),
        ("data", ("arcdiff.train", "arcdiff.eval", "arcdiff.runs", "arcdiff.cli")),
        ("runs", ("arcdiff.train", "arcdiff.eval", "arcdiff.adapt", "arcdiff.cli")),
    ],
)
def test_imports_point_down(package, forbidden):
    bad = {
        rel(p): sorted(n for n in imported(p) if n.startswith(forbidden))
        for p in (PACKAGE / package).rglob("*.py")
    }
    assert not {k: v for k, v in bad.items() if v}
