"""Static checks of docker/: no Docker engine runs here, so parse and cross-check the files."""

from __future__ import annotations

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


def test_services_present(compose):
    assert {"db", "redis", "worker", "dashboard", "migrate"} <= set(compose["services"])


def test_every_build_points_at_an_existing_dockerfile(compose):
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (DOCKER / svc["build"]["context"]).resolve()
            dockerfile = context / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_dockerfile_copies_exist():
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY"):
                sources = line.split()[1:-1]
                for src in sources:
                    assert (ROOT / src).exists(), f"{dockerfile.name}: COPY source {src} missing"


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
    for name in ("worker", "dashboard"):
        deps = services[name]["depends_on"]
        assert deps["db"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"


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
    dash = services["dashboard"]["command"]
    assert dash[:2] == ["streamlit", "run"] and (ROOT / dash[2]).is_file()
    migrate = services["migrate"]["command"]
    assert migrate == ["psm", "db", "upgrade"]
    from typer.main import get_command

    from worker.cli import app

    cli = get_command(app)
    assert "upgrade" in cli.commands["db"].commands  # type: ignore[attr-defined]
    scripts = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^psm = "worker\.cli:main"', scripts, re.M)
    assert (ROOT / "worker" / "__init__.py").is_file()


def test_initdb_script_creates_extensions():
    sql = (DOCKER / "initdb" / "10-extensions.sql").read_text()
    assert "CREATE EXTENSION IF NOT EXISTS postgis" in sql
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
