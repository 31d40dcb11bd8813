"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and break when they should."""

from __future__ import annotations

import ast
import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("dashboard", "worker", "psm_db", "psm_model")


def _lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    only = [x for c in contracts for x in ("--contract", c)]
    return subprocess.run([LINT_IMPORTS, str(root / "pyproject.toml"), "--no-cache", "--no-logo", *only],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_the_contracts_hold():
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and f"{len(_contracts())} kept" in out.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("psm_model/_bad.py", "import psm_db.settings\n", "layers"),
    ("psm_db/_bad.py", "from worker import api\n", "layers"),
    ("worker/_bad.py", "import dashboard.store\n", "layers"),
    ("dashboard/_bad.py", "from worker.embed import submit\n", "dashboard-uses-worker-api"),
    ("dashboard/_bad.py", "import worker.cli.common\n", "dashboard-uses-worker-api"),
    ("worker/_bad.py", "import psycopg\n", "rows-through-sqlalchemy"),
    ("psm_db/ranking/_bad.py", "from psycopg.types.json import Jsonb\n", "rows-through-sqlalchemy"),
])
def test_a_wrong_import_breaks_its_contract(tmp_path, module, line, contract):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint_imports(tmp_path).returncode == 0  # the copy is analysed, and it is clean
    (tmp_path / module).write_text(line)
    out = _lint_imports(tmp_path, contract)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout + out.stderr
    assert "_bad" in out.stdout
    others = [c for c in _contracts() if c != contract]
    assert _lint_imports(tmp_path, *others).returncode == 0


def test_the_dashboard_contract_names_every_worker_module_but_the_api():
    """A new worker module is internal until listed: the contract must forbid it too."""
    # the package's own folder: under pytest, tests/worker can join the name "worker" on sys.path
    modules = {f"worker.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "worker")])}
    forbidden = set(_contracts()["dashboard-uses-worker-api"]["forbidden_modules"])
    assert "worker.api" in modules and "worker.cli" in modules
    assert forbidden == modules - {"worker.api"}


PSYCOPG_MODULES = {"psm_db.bulk", "psm_db.pgbinary", "psm_db.tiles", "psm_db.engine", "psm_db.services"}
"""The modules that may use psycopg itself: binary COPY, the engine and its connections, the services."""


def test_the_psycopg_contract_names_every_other_psm_db_module():
    """A new psm_db module reads rows through SQLAlchemy until listed as a COPY module."""
    import psm_db

    modules = {f"psm_db.{m.name}" for m in pkgutil.iter_modules(psm_db.__path__)}
    sources = set(_contracts()["rows-through-sqlalchemy"]["source_modules"])
    assert PSYCOPG_MODULES <= modules
    assert {"dashboard", "worker", "psm_model"} <= sources
    assert sources - {"dashboard", "worker", "psm_model"} == modules - PSYCOPG_MODULES


def _sql_string_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, call) of ``x.execute("...")``-like calls with SQL as a literal or f-string, and of psycopg.connect."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        target = node.func.value
        if name == "connect" and isinstance(target, ast.Name) and target.id == "psycopg":
            found.append((node.lineno, "psycopg.connect("))
        elif name in ("execute", "executemany", "scalar", "scalars") and node.args and (
                isinstance(node.args[0], ast.JoinedStr)
                or (isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))):
            found.append((node.lineno, f".{name}(<SQL string>)"))
    return found


def test_no_raw_sql_strings_outside_the_copy_modules():
    """Rows are touched with SQLAlchemy statements: no SQL string handed to execute, no psycopg.connect."""
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT)
            module = ".".join(rel.with_suffix("").parts)
            if module in PSYCOPG_MODULES or rel.parts[:2] == ("psm_db", "migrations"):
                continue
            offenders += [f"{rel}:{line}: {call}" for line, call in _sql_string_calls(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_raw_sql_check_finds_what_it_should():
    tree = ast.parse('conn.execute("SELECT 1")\nc.execute(f"SELECT {x}", (1,))\npsycopg.connect(url)\n'
                     'conn.execute(select(Job))\nsession.scalar(stmt)\n')
    assert [call for _, call in _sql_string_calls(tree)] == [
        ".execute(<SQL string>)", ".execute(<SQL string>)", "psycopg.connect("]


def test_no_command_line_code_below_the_worker():
    """psm_db and psm_model import neither typer nor click: the command line lives in worker/cli/."""
    offenders = []
    for pkg in ("psm_db", "psm_model"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                              if n.split(".")[0] in ("typer", "click")]
    assert offenders == []
