"""The package's layers as the code has them: the import-linter contracts in pyproject.toml, and
the rules import-linter cannot see (docs/architecture.md):

- a function-local import of the package's own modules only where that module brings in a
  heavy or optional dependency when imported (torch, pandas, pytest-xdist, ...): anything else
  belongs at the top, where every reader and tool sees it;
- no private name (`_x`) imported from another module;
- no module over ~500 lines without the reason in its docstring ("Why one module: ...").
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_inferbench"
# importing these costs a second or more, or needs an extra the base install lacks
HEAVY_OR_OPTIONAL = {"torch", "torchvision", "timm", "transformers", "onnxruntime", "onnx",
                     "onnxscript", "pandas", "plotly", "jinja2", "tritonclient", "pytriton",
                     "fastapi", "uvicorn", "aiohttp", "gevent", "grpc", "xdist", "execnet",
                     "hypothesis", "sqlalchemy", "psycopg", "otava", "optuna", "scipy"}
MAX_LINES = 520


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _package_of(name: str) -> str:
    is_package = name in MODULES and MODULES[name].name == "__init__.py"
    return name if is_package else name.rpartition(".")[0]


def _target(name: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = _package_of(name).split(".")
    base = ".".join(parts[:len(parts) - node.level + 1])
    return base + ("." + node.module if node.module else "")


def _in_functions(tree) -> set[int]:
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def _module_level_imports():
    """(package modules, external top-level names) each module imports when it is imported."""
    own, external = defaultdict(set), defaultdict(set)
    for name, tree in TREES.items():
        lazy = _in_functions(tree)
        for node in ast.walk(tree):
            if id(node) in lazy:
                continue
            if isinstance(node, ast.ImportFrom):
                target = _target(name, node)
                if target.startswith("pytest_inferbench"):
                    for alias in node.names:
                        full = f"{target}.{alias.name}"
                        own[name].add(full if full in MODULES else target)
                else:
                    external[name].add(target.split(".")[0])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    (own if alias.name.startswith("pytest_inferbench") else external)[name].add(
                        alias.name if alias.name.startswith("pytest_inferbench")
                        else alias.name.split(".")[0])
    return own, external


def _heavy(name, own, external, seen) -> str | None:
    """The heavy or optional dependency importing `name` brings in, if any."""
    if name in seen:
        return None
    seen.add(name)
    found = external[name] & HEAVY_OR_OPTIONAL
    if found:
        return sorted(found)[0]
    for parent in _parents(name):
        hit = _heavy(parent, own, external, seen)
        if hit:
            return hit
    for dep in sorted(own[name]):
        hit = _heavy(dep, own, external, seen)
        if hit:
            return hit
    return None


def _parents(name: str):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in MODULES]


def test_import_contracts_hold():
    """lint-imports (import-linter) with the contracts in pyproject.toml: layers point down,
    no cycle at any depth, private modules stay in their package, core and spec stay light."""
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        exe = shutil.which("lint-imports")
    if not exe:
        pytest.skip("import-linter is not installed (pip install -e '.[test]' installs it)")
    done = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_function_local_imports_only_defer_heavy_dependencies():
    own, external = _module_level_imports()
    wrong = []
    for name, tree in TREES.items():
        lazy = _in_functions(tree)
        for node in ast.walk(tree):
            if id(node) not in lazy or not isinstance(node, ast.ImportFrom):
                continue
            target = _target(name, node)
            if not target.startswith("pytest_inferbench"):
                continue
            deferred = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                        for a in node.names]
            if not any(_heavy(d, own, external, set()) for d in deferred):
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: "
                             f"{ast.unparse(node)}")
    assert not wrong, ("function-local imports of modules that import nothing heavy (move "
                       "them to the top):\n" + "\n".join(wrong))


def test_the_plugin_imports_nothing_heavy_or_optional():
    """pytest loads the plugin in every session of an environment where it is installed, and
    the base install has no pytest-xdist, tritonclient or aiohttp: importing it must not
    need them, nor cost a torch or pandas import."""
    own, external = _module_level_imports()
    for entry in ("pytest_inferbench.plugin", "pytest_inferbench.__main__"):
        assert _heavy(entry, own, external, set()) is None, entry


def test_no_private_name_crosses_modules():
    wrong = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(name, node)
                if not target.startswith("pytest_inferbench"):
                    continue
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and f"{target}.{alias.name}" not in MODULES:
                        wrong.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: "
                                     f"{alias.name} from {target}")
    assert not wrong, "private names imported from another module:\n" + "\n".join(wrong)


def test_long_modules_say_why():
    wrong = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_LINES and "Why one module:" not in (ast.get_docstring(TREES[name]) or ""):
            wrong.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not wrong, ("modules over ~500 lines without 'Why one module:' in the docstring "
                       "(split them, or say why not):\n" + "\n".join(wrong))


def test_the_checks_see_a_violation(tmp_path):
    """The rules above find what they look for (a checker that finds nothing proves nothing)."""
    tree = ast.parse("def f():\n    from .units import parse_duration\n"
                     "from .stats import _private\n")
    name = "pytest_inferbench.core.fake"
    lazy = _in_functions(tree)
    local = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) in lazy]
    assert [(_target(name, n)) for n in local] == ["pytest_inferbench.core.units"]
    own, external = _module_level_imports()
    assert _heavy("pytest_inferbench.core.units", own, external, set()) is None
    assert _heavy("pytest_inferbench.analysis.frame", own, external, set()) == "pandas"
    private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               for a in n.names if a.name.startswith("_")]
    assert private == ["_private"]
