"""pyproject.toml gives ranges, constraints.txt the exact tested versions; they must agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = canonicalize_name(PYPROJECT["name"])


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.!]*)", line)
        assert m, f"constraints.txt: {line!r} is not an exact pin name==version (no local label, no extras)"
        key = canonicalize_name(m.group(1))
        assert key not in pins, f"constraints.txt pins {key} twice"
        pins[key] = Version(m.group(2))
    return pins


def _requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for group in PYPROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in group]
    return [r for r in reqs if canonicalize_name(r.name) != NAME]


REQUIREMENTS = _requirements()


@pytest.mark.parametrize("req", REQUIREMENTS, ids=str)
def test_every_dependency_is_pinned_inside_its_range(req):
    pins = _pins()
    key = canonicalize_name(req.name)
    assert key in pins, f"{req.name} is in pyproject.toml but not pinned in constraints.txt"
    assert req.specifier.contains(pins[key], prereleases=True), (
        f"constraints.txt pins {key}=={pins[key]}, outside pyproject's {req}")


def test_ranges_are_ranges_and_torch_stays_exact():
    for req in REQUIREMENTS:
        ops = {s.operator for s in req.specifier}
        if canonicalize_name(req.name) == "torch":
            assert str(req.specifier) == "==2.13.0"
            continue
        assert ops == {">=", "<"}, f"{req}: give a range >=tested,<next-breaking"
        low = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        high = next(Version(s.version) for s in req.specifier if s.operator == "<")
        assert low < high, str(req)
    assert _pins()["torch"] == Version("2.13.0")


def test_extras_of_dependencies_are_pinned_too():
    pins = _pins()
    # psycopg[binary] and celery[redis] pull these in; an unpinned one would float.
    for name in ("psycopg-binary", "kombu", "redis", "pydantic-core", "starlette", "setuptools"):
        assert name in pins, name
    assert NAME not in pins, "the project itself is not a constraint"


def test_constraints_are_the_working_environments_closure():
    """constraints.txt is what scripts/constraints.py writes from this (bootstrapped) venv."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "constraints.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", ["scripts/bootstrap.sh", "docker/app.Dockerfile"])
def test_installs_use_the_constraints_file(path):
    text = (ROOT / path).read_text()
    assert re.search(r"pip[^\n]* install[^\n]*-c [^\n]*constraints\.txt", text), f"{path} does not install with -c constraints.txt"
