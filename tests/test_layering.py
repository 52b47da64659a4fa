"""Import guard: each layer imports only the layers below it (docs/architecture.md).

    star_cli (the `star` command)  ->  flows (Prefect)  ->  jobs (Ray, MLflow)  ->  star_core.io (storage)  ->  star_core (pure)

No package imports one above it, with no exception.

Checked statically with ``ast`` over the source files, so an import inside a function counts as
much as one at the top of a module (it runs as soon as that function does), and the check needs
none of the heavy packages installed. ``importlib.import_module("x")`` / ``__import__("x")`` with
a constant name count as imports of ``x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # Module-level also covers imports nested in top-level if/try blocks (they run on import).
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        found += [(name, node.lineno, id(node) in top_level) for name in names]
    return found


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _violations(files: list[Path], banned: tuple[str, ...], module_level_only: bool = False) -> list[str]:
    out = []
    for path in files:
        for name, line, top in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                if top or not module_level_only:
                    shown = path.relative_to(REPO) if REPO in path.parents else path
                    out.append(f"{shown}:{line} imports {name}")
    return sorted(out)


def _is_io(path: Path) -> bool:
    return (REPO / "star_core" / "io") in path.parents


def test_the_guard_sees_imports_in_functions_and_through_importlib(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\ntry:\n    import ray\nexcept ImportError:\n    pass\n\ndef f():\n    from mlflow import log_param\n"
                   "    importlib.import_module('prefect')\n")
    assert _imports(src) == [("os", 1, True), ("ray", 3, True), ("mlflow", 8, False), ("prefect", 9, False)]
    assert _violations([src], ("ray", "mlflow")) == [f"{src}:3 imports ray", f"{src}:8 imports mlflow"]
    assert _violations([src], ("ray", "mlflow"), module_level_only=True) == [f"{src}:3 imports ray"]


def test_star_core_never_imports_jobs_flows_the_cli_or_the_services():
    assert _violations(_sources("star_core"), ("jobs", "flows", "star_cli", "ray", "prefect", "mlflow")) == []


def test_the_pure_core_never_imports_storage():
    pure = [p for p in _sources("star_core") if not _is_io(p)]
    assert pure, "no star_core sources found"
    assert _violations(pure, ("fsspec", "s3fs", "pyarrow", "duckdb", "star_core.io")) == []


def test_jobs_never_import_flows_or_the_cli():
    assert _violations(_sources("jobs"), ("flows", "star_cli", "prefect")) == []


def test_flows_never_import_the_cli():
    assert _violations(_sources("flows"), ("star_cli",)) == []


def test_the_cli_is_the_only_package_above_flows():
    """Every Python package of the repository is one of the layers (a new top-level package must be placed)."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == {"star_core", "jobs", "flows", "star_cli"}, packages
