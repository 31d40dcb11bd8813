"""Static checks of docker/: no Docker engine runs here, so parse and cross-check the files."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from psm_db.settings import DEFAULT_PG_PORT, DEFAULT_REDIS_PORT, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def _copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY (flags such as --chown skipped)."""
    out = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY"):
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            out.append((words[:-1], words[-1]))
    return out


def _cli():
    from typer.main import get_command

    from worker.cli import app

    return get_command(app)


def test_services_present(compose):
    assert set(compose["services"]) == {"db", "redis", "worker", "dashboard", "migrate", "demo"}


def test_every_build_points_at_an_existing_dockerfile(compose):
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (DOCKER / svc["build"]["context"]).resolve()
            dockerfile = context / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_dockerfile_copies_exist():
    dockerfiles = list(DOCKER.glob("*.Dockerfile"))
    assert len(dockerfiles) == 2
    for dockerfile in dockerfiles:
        copies = _copies(dockerfile)
        assert copies, dockerfile.name
        for sources, _ in copies:
            for src in sources:
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY source {src} missing"


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
               or fnmatch.fnmatch(Path(p).name, pat.removeprefix("**/"))
               for pat in patterns for p in prefixes)


def test_dockerignore_keeps_local_state_out_and_copies_in(compose):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for entry in (".git", ".venv", ".psm", "test-artifacts", "**/__pycache__", ".pytest_cache", ".mypy_cache",
                  ".ruff_cache", ".import_linter_cache"):
        assert entry in patterns, entry
    for path in (".venv/bin/python", ".psm/services/postgres", "psm_db/__pycache__/x.pyc", ".git/HEAD"):
        assert _ignored(path, patterns), path
    # the context is the repository root, where .dockerignore is read
    for name, svc in compose["services"].items():
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"]).resolve() == ROOT, name
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for sources, _ in _copies(dockerfile):
            for src in sources:
                assert not _ignored(src, patterns), f"{dockerfile.name}: COPY {src} is excluded by .dockerignore"


def test_cpu_images_everywhere_but_the_worker(compose):
    services = compose["services"]
    text = (DOCKER / "app.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    default = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", text, re.M)
    assert default and default.group(1) == "https://download.pytorch.org/whl/cpu"
    for name in ("migrate", "dashboard", "demo"):
        svc = services[name]
        assert svc["image"] == "psm-app:cpu", name
        assert svc["build"]["dockerfile"] == "docker/app.Dockerfile"
        assert svc["build"].get("args", {}).get("TORCH_INDEX_URL", default.group(1)).endswith("/whl/cpu"), name
        assert "deploy" not in svc, f"{name} reserves a GPU"
    worker = services["worker"]
    assert worker["image"] == "psm-app:cuda"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", worker["build"]["args"]["TORCH_INDEX_URL"])
    assert _env(worker)["PSM_DEVICE"] == "cuda"
    # one image tag, one build: every service naming psm-app:cpu builds it the same way
    builds = {str(services[n]["build"]) for n in services if services[n].get("image") == "psm-app:cpu"}
    assert len(builds) == 1


def test_images_install_the_constraints(compose):
    text = (DOCKER / "app.Dockerfile").read_text()
    copied = {src for sources, _ in _copies(DOCKER / "app.Dockerfile") for src in sources}
    assert "constraints.txt" in copied
    installs = [line for line in text.splitlines() if "pip install" in line]
    torch_line, *rest = installs
    assert '--no-deps "torch==2.13.0" --index-url "$TORCH_INDEX_URL"' in torch_line
    assert rest and all("-c constraints.txt" in line for line in rest), rest
    # the torch layer comes before the project's sources, the dependencies before the code
    order = [src for sources, _ in _copies(DOCKER / "app.Dockerfile") for src in sources]
    assert order.index("constraints.txt") < order.index("psm_model")


def test_app_image_pins_the_project_torch():
    text = (DOCKER / "app.Dockerfile").read_text()
    assert '"torch==2.13.0"' in text
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()


def test_setting_names_match_the_settings_class(compose):
    fields = {f"PSM_{name.upper()}" for name in Settings.model_fields}
    for name, svc in compose["services"].items():
        for key in _env(svc):
            if key.startswith("PSM_"):
                assert key in fields, f"{name}: {key} is not a Settings field"
    app_env = _env(compose["services"]["worker"])
    assert {"PSM_DATABASE_URL", "PSM_BROKER_URL", "PSM_HOME"} <= set(app_env)


def test_urls_point_at_the_compose_services(compose):
    env = _env(compose["services"]["worker"])
    db_env = _env(compose["services"]["db"])
    assert env["PSM_DATABASE_URL"].startswith(f"postgresql://{db_env['POSTGRES_USER']}:")
    assert env["PSM_DATABASE_URL"].endswith(f"@db:5432/{db_env['POSTGRES_DB']}")
    assert env["PSM_BROKER_URL"].startswith("redis://redis:6379/")
    assert Settings(database_url=env["PSM_DATABASE_URL"]).sqlalchemy_url.startswith(
        "postgresql+psycopg://")


def test_healthchecks_and_dependency_conditions(compose):
    services = compose["services"]
    for name in ("db", "redis", "worker", "dashboard"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in ("worker", "dashboard", "demo"):
        deps = services[name]["depends_on"]
        assert deps["db"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    # the dashboard waits for the demo job when its profile is on, and only then
    assert services["dashboard"]["depends_on"]["demo"] == {"condition": "service_completed_successfully",
                                                           "required": False}


def test_ports_agree(compose):
    services = compose["services"]
    assert "55432:5432" in services["db"]["ports"]
    assert "56379:6379" in services["redis"]["ports"]
    assert "8501:8501" in services["dashboard"]["ports"]
    assert "EXPOSE 5432" in (DOCKER / "db.Dockerfile").read_text()
    assert "EXPOSE 8501" in (DOCKER / "app.Dockerfile").read_text()
    assert "8501" in " ".join(services["dashboard"]["healthcheck"]["test"])
    assert (DEFAULT_PG_PORT, DEFAULT_REDIS_PORT) == (55432, 56379)


def test_worker_has_gpu_reservation_and_one_process(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
    cmd = worker["command"]
    assert cmd[:4] == ["celery", "-A", "worker", "worker"]
    assert cmd[cmd.index("-c") + 1] == "1"


def test_commands_run_things_that_exist(compose):
    services = compose["services"]
    cli = _cli()
    dash = services["dashboard"]["command"]
    assert dash[:2] == ["psm", "dashboard"]
    ctx = cli.commands["dashboard"].make_context("dashboard", list(dash[2:]))  # type: ignore[attr-defined]
    assert (ctx.params["address"], ctx.params["port"], ctx.args) == ("0.0.0.0", 8501, [])
    migrate = services["migrate"]["command"]
    assert migrate == ["psm", "db", "upgrade"]
    assert "upgrade" in cli.commands["db"].commands  # type: ignore[attr-defined]
    scripts = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^psm = "worker\.cli:main"', scripts, re.M)
    assert (ROOT / "worker" / "__init__.py").is_file()


def test_initdb_script_creates_extensions():
    sql = (DOCKER / "initdb" / "10-extensions.sql").read_text()
    assert "CREATE EXTENSION IF NOT EXISTS postgis" in sql
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql


def test_demo_profile_is_a_one_shot_job_in_the_image(compose):
    services = compose["services"]
    demo = services["demo"]
    assert demo["profiles"] == ["demo"] and demo["restart"] == "no"
    assert [s for s, svc in services.items() if "profiles" in svc] == ["demo"]
    assert demo["command"] == ["bash", "docker/demo.sh"]
    # the script and what it reads are copied to those paths under WORKDIR /app
    text = (DOCKER / "app.Dockerfile").read_text()
    assert "WORKDIR /app" in text
    dests = {dest: sources for sources, dest in _copies(DOCKER / "app.Dockerfile")}
    assert dests["docker/demo.sh"] == ["docker/demo.sh"]
    script = (ROOT / "docker" / "demo.sh").read_text()
    for path in re.findall(r"\b(scripts/[\w.-]+)", script):
        assert dests.get(path) == [path], f"demo.sh reads {path}, not copied into the image"
    assert "psmhome:/data/psm" in demo["volumes"] and _env(demo)["PSM_HOME"] == "/data/psm"
    assert "psmhome:/data/psm" in services["dashboard"]["volumes"]


def _psm_calls(script: str) -> list[tuple[list[str], list[str]]]:
    """(words after ``psm`` up to the first option or variable, the options) of every psm call."""
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(?:^|\$\(|\s)psm ([^|]+)", line):
            rest = m.group(1)
            words = re.match(r"((?:[a-z][\w-]* )*)", rest + " ").group(1).split()  # type: ignore[union-attr]
            calls.append((words, re.findall(r"(?:^|\s)(--?[A-Za-z][\w-]*)", rest)))
    return calls


def test_demo_script_calls_existing_commands_and_options():
    """Every ``psm`` call of docker/demo.sh names a command and options the CLI has."""
    cli = _cli()
    calls = _psm_calls((ROOT / "docker" / "demo.sh").read_text())
    names = []
    for words, options in calls:
        cmd, path = cli, []
        while hasattr(cmd, "commands") and words and words[0] in cmd.commands:  # type: ignore[attr-defined]
            path.append(words[0])
            cmd = cmd.commands[words.pop(0)]  # type: ignore[attr-defined]
        assert path and not hasattr(cmd, "commands"), f"psm {' '.join(path + words)}: no such command"
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for o in options:
            assert o in opts, f"psm {' '.join(path)}: no option {o}"
        names.append(" ".join(path))
    assert {"world build", "train", "register-model", "eval", "embed-region", "regions load",
            "query embed"} <= set(names)
    # the options held in arrays: TRAIN_ARGS go to psm train, CONDS to psm embed-region
    script = (ROOT / "docker" / "demo.sh").read_text()
    for array, command in (("TRAIN_ARGS", "train"), ("CONDS", "embed-region")):
        found = re.findall(rf"{array}=\(([^)]*)\)", script, re.S)
        assert found, array
        opts = {o for p in cli.commands[command].params for o in (*p.opts, *p.secondary_opts)}  # type: ignore[attr-defined]
        for body in found:
            for o in re.findall(r"(?:^|\s)(--?[A-Za-z][\w-]*)", body):
                assert o in opts, f"{array}: psm {command} has no option {o}"
    # the embedding needs a worker: the script starts one on the image's celery
    assert "celery -A worker worker" in (ROOT / "docker" / "demo.sh").read_text()


@pytest.mark.slow
def test_demo_job_script_fills_a_database(session_database, settings, tmp_path):
    """docker/demo.sh in its fast mode, outside Docker, on the real services: the job the demo
    profile runs leaves a model, an eval run, embeddings, the demo regions and three queries;
    a second run reuses all of it."""
    import os
    import subprocess
    import sys
    import uuid

    import psycopg

    db_url = session_database("psm_demojob")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PSM_HOME": str(tmp_path / "home"), "PSM_DATABASE_URL": db_url, "PSM_BROKER_URL": settings.broker,
           "PSM_RESULT_BACKEND": settings.results, "PSM_QUEUE": f"psm-demojob-{uuid.uuid4().hex[:8]}",
           "PSM_DEMO_FAST": "1", "PSM_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for run in (1, 2):
        log = tmp_path / f"demo{run}.log"
        with open(log, "w") as out:
            proc = subprocess.run(["bash", str(DOCKER / "demo.sh")], cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=600)
        text = log.read_text()
        assert proc.returncode == 0, text[-4000:]
        assert "==> " in text and "done: the dashboard is on" in text
    assert text.count("reusing") == 4, text[-3000:]
    with psycopg.connect(db_url) as c:
        models, evals, emb, conds, regions, queries = c.execute(
            "SELECT (SELECT count(*) FROM psm.model_versions), (SELECT count(*) FROM psm.eval_runs),"
            " (SELECT count(*) FROM psm.embeddings), (SELECT count(DISTINCT condition_id) FROM psm.embeddings),"
            " (SELECT count(*) FROM psm.regions WHERE set_name = 'demo'), (SELECT count(*) FROM psm.queries)"
        ).fetchone()
    assert (models, evals, conds, queries) == (1, 1, 4, 3)
    assert emb > 100 and regions > 0
