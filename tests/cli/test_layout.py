"""The command line sits on top of the library: no module outside ``sfvq/cli`` imports from it."""

from __future__ import annotations

import ast
from pathlib import Path

import sfvq

ROOT = Path(sfvq.__file__).resolve().parent


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` (a file of the sfvq package) imports."""
    package = ".".join(("sfvq", *path.relative_to(ROOT).parent.parts))
    return _imported(path.read_text(encoding="utf-8"), package)


def _imported(source: str, package: str) -> list[str]:
    """Absolute names of every module ``source`` (a module of ``package``) imports, relative ones resolved."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names += [module, *(f"{module}.{a.name}" for a in node.names)]
    return names


def test_no_library_module_imports_the_cli() -> None:
    offenders = {
        str(p.relative_to(ROOT)): [n for n in _imports(p) if n == "sfvq.cli" or n.startswith("sfvq.cli.")]
        for p in ROOT.rglob("*.py")
        # sfvq/__main__.py is `python -m sfvq`: the command line's entry point, not library code
        if "cli" not in p.relative_to(ROOT).parts[:1] and p != ROOT / "__main__.py"
    }
    assert {p: names for p, names in offenders.items() if names} == {}


def test_the_check_sees_every_form_of_import() -> None:
    """The import reader resolves relative imports in subpackages (so the check above can fail)."""
    assert "sfvq.explore.params.ApiError" in _imports(ROOT / "explore" / "app.py")
    assert "sfvq.cli.options" in _imported("from ..cli import options\n", "sfvq.explore")
    assert "sfvq.cli" in _imported("from .cli import main\n", "sfvq")
    assert "sfvq.cli.fit" in _imported("import sfvq.cli.fit\n", "sfvq")
