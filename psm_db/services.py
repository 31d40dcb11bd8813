"""Project-managed PostgreSQL (with PostGIS + pgvector) and Redis under ``PSM_HOME``."""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from psm_db.errors import MissingDependencyError, PortInUseError, ServiceError
from psm_db.settings import Settings

log = logging.getLogger(__name__)

SERVICE_USER = "postgres"
"""The unprivileged account that runs PostgreSQL when we are root (initdb refuses root)."""


@dataclass(frozen=True)
class ServiceStatus:
    """What one service is doing right now."""

    name: str
    managed: bool
    running: bool
    url: str
    detail: str = ""


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _is_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------- PostgreSQL


def pg_bin_dir(settings: Settings) -> Path:
    """Find the PostgreSQL server binaries (initdb, pg_ctl, postgres)."""
    candidates: list[Path] = []
    if settings.pg_bin_dir:
        candidates.append(Path(settings.pg_bin_dir))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += [Path(p) for p in versions]
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    raise MissingDependencyError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
        "`make bootstrap`, or `apt-get install postgresql-15 postgresql-15-postgis-3` "
        "(and pgvector), or point PSM_PG_BIN_DIR at the bin folder."
    )


def check_extensions(bindir: Path) -> None:
    """Raise MissingDependencyError unless PostGIS and pgvector are installed for this server."""
    pg_config = bindir / "pg_config"
    sharedir = None
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True)
        sharedir = Path(out.stdout.strip()) if out.returncode == 0 else None
    if sharedir is None:
        sharedir = Path("/usr/share/postgresql") / bindir.parent.name
    major = bindir.parent.name
    missing = []
    if not (sharedir / "extension" / "postgis.control").exists():
        missing.append(f"PostGIS (apt-get install postgresql-{major}-postgis-3)")
    if not (sharedir / "extension" / "vector.control").exists():
        missing.append(
            f"pgvector >= 0.8 (apt-get install postgresql-{major}-pgvector, or `make bootstrap`, "
            "which builds it from Debian's source package)"
        )
    if missing:
        raise MissingDependencyError(
            f"PostgreSQL {major} at {bindir} lacks: " + "; ".join(missing) + "."
        )


def _pg_paths(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.services_dir / "postgres"
    return base / "data", base / "run", base / "postgres.log"


def _as_service_user(cmd: list[str]) -> list[str]:
    if not _is_root():
        return cmd
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError as e:
        raise MissingDependencyError(
            f"running as root needs the '{SERVICE_USER}' account to own the cluster "
            "(initdb refuses root); it comes with the postgresql package"
        ) from e
    return ["runuser", "-u", SERVICE_USER, "--", *cmd]


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ServiceError(f"{what} failed ({' '.join(cmd)}):\n{out.stderr.strip() or out.stdout.strip()}")
    return out


def _prepare_dirs(settings: Settings) -> None:
    data, run, logfile = _pg_paths(settings)
    for d in (data.parent, run):
        d.mkdir(parents=True, exist_ok=True)
    if _is_root():
        entry = pwd.getpwnam(SERVICE_USER)
        for path in (data.parent, run):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if data.exists():
            os.chown(data, entry.pw_uid, entry.pw_gid)
        # The service user must be able to reach PSM_HOME through every parent folder.
        probe = subprocess.run(
            _as_service_user(["test", "-w", str(data.parent)]), capture_output=True, check=False
        )
        if probe.returncode != 0:
            raise ServiceError(
                f"the '{SERVICE_USER}' account cannot reach {data.parent}; PostgreSQL runs as that "
                "account when psm runs as root. Set PSM_HOME to a folder whose parents are "
                "world-traversable (for example /var/lib/psm or the repository's .psm folder)."
            )


def postgres_running(settings: Settings) -> bool:
    """True when the project-managed cluster is up."""
    data, _, _ = _pg_paths(settings)
    if not (data / "PG_VERSION").exists():
        return False
    bindir = pg_bin_dir(settings)
    out = subprocess.run(
        _as_service_user([str(bindir / "pg_ctl"), "status", "-D", str(data)]),
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode == 0


def postgres_up(settings: Settings) -> str:
    """Initialise (once) and start the managed cluster; create the database and extensions."""
    bindir = pg_bin_dir(settings)
    check_extensions(bindir)
    data, run, logfile = _pg_paths(settings)
    if postgres_running(settings):
        ensure_database(settings)
        return "already running"
    if _port_open(settings.pg_port):
        raise PortInUseError(
            f"port {settings.pg_port} is already taken by another process, so the project's "
            "PostgreSQL cannot start there. Stop that process, or choose another port with "
            "PSM_PG_PORT (or point PSM_DATABASE_URL at a server you run yourself)."
        )
    _prepare_dirs(settings)
    if not (data / "PG_VERSION").exists():
        log.info("initialising PostgreSQL cluster in %s", data)
        _run(
            _as_service_user(
                [str(bindir / "initdb"), "-D", str(data), "-U", "psm", "--auth=trust",
                 "-E", "UTF8", "--locale=C.UTF-8"]
            ),
            "initdb",
        )
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# written by psm services\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{run}'\n"
                "work_mem = 64MB\n"
                "maintenance_work_mem = 1GB\n"
                "max_wal_size = 4GB\n"
                "max_connections = 200\n"
            )
    _run(
        _as_service_user(
            [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data),
             "-l", str(logfile), "-o", f"-p {settings.pg_port} -c shared_buffers={settings.pg_shared_buffers}"]
        ),
        f"starting PostgreSQL (log: {logfile})",
    )
    ensure_database(settings)
    return "started"


def ensure_database(settings: Settings) -> None:
    """Create the ``psm`` database and its extensions on the managed cluster if missing."""
    admin = f"postgresql://psm@127.0.0.1:{settings.pg_port}/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'psm'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE psm")
    with psycopg.connect(settings.db_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def postgres_down(settings: Settings) -> str:
    """Stop the managed cluster (fast shutdown)."""
    if not postgres_running(settings):
        return "not running"
    data, _, _ = _pg_paths(settings)
    bindir = pg_bin_dir(settings)
    _run(_as_service_user([str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(data)]),
         "stopping PostgreSQL")
    return "stopped"


# --------------------------------------------------------------------------- Redis


def _redis_paths(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.services_dir / "redis"
    return base, base / "redis.pid", base / "redis.log"


def _redis_pid(settings: Settings) -> int | None:
    _, pidfile, _ = _redis_paths(settings)
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def redis_running(settings: Settings) -> bool:
    """True when the project-managed Redis is up."""
    return _redis_pid(settings) is not None


def redis_up(settings: Settings) -> str:
    """Start the managed Redis (append-only file on, so queued tasks survive a restart)."""
    binary = shutil.which(settings.redis_server)
    if binary is None:
        raise MissingDependencyError(
            f"'{settings.redis_server}' was not found. Install it with `make bootstrap` or "
            "`apt-get install redis-server`, or point PSM_BROKER_URL at a Redis you run yourself."
        )
    if redis_running(settings):
        return "already running"
    if _port_open(settings.redis_port):
        raise PortInUseError(
            f"port {settings.redis_port} is already taken by another process, so the project's "
            "Redis cannot start there. Stop that process, or choose another port with "
            "PSM_REDIS_PORT (or point PSM_BROKER_URL at a Redis you run yourself)."
        )
    base, pidfile, logfile = _redis_paths(settings)
    base.mkdir(parents=True, exist_ok=True)
    _run(
        [binary, "--port", str(settings.redis_port), "--bind", "127.0.0.1", "--daemonize", "yes",
         "--pidfile", str(pidfile), "--logfile", str(logfile), "--dir", str(base),
         "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
        "starting Redis",
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _port_open(settings.redis_port) and redis_running(settings):
            return "started"
        time.sleep(0.1)
    raise ServiceError(f"Redis did not come up on port {settings.redis_port}; see {logfile}")


def redis_down(settings: Settings) -> str:
    """Stop the managed Redis."""
    pid = _redis_pid(settings)
    if pid is None:
        return "not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return "stopped"
        time.sleep(0.1)
    raise ServiceError(f"Redis (pid {pid}) did not stop within 20 s")


# --------------------------------------------------------------------------- both


def up(settings: Settings) -> list[ServiceStatus]:
    """Start whatever the settings say the project manages; leave external servers alone."""
    results = []
    if settings.manages_postgres():
        detail = postgres_up(settings)
        results.append(ServiceStatus("postgres", True, True, settings.db_url, detail))
    else:
        results.append(ServiceStatus("postgres", False, _reachable_pg(settings), settings.db_url,
                                     "external: left alone"))
    if settings.manages_redis():
        detail = redis_up(settings)
        results.append(ServiceStatus("redis", True, True, settings.broker, detail))
    else:
        results.append(ServiceStatus("redis", False, True, settings.broker, "external: left alone"))
    return results


def down(settings: Settings) -> list[ServiceStatus]:
    """Stop the managed services; never touches external ones."""
    results = []
    if settings.manages_postgres():
        results.append(ServiceStatus("postgres", True, False, settings.db_url, postgres_down(settings)))
    if settings.manages_redis():
        results.append(ServiceStatus("redis", True, False, settings.broker, redis_down(settings)))
    return results


def status(settings: Settings) -> list[ServiceStatus]:
    """Report what is running and the URLs to use."""
    pg_managed = settings.manages_postgres()
    pg_run = postgres_running(settings) if pg_managed else _reachable_pg(settings)
    rd_managed = settings.manages_redis()
    rd_run = redis_running(settings) if rd_managed else True
    return [
        ServiceStatus("postgres", pg_managed, pg_run, settings.db_url,
                      f"data in {_pg_paths(settings)[0]}" if pg_managed else "external"),
        ServiceStatus("redis", rd_managed, rd_run, settings.broker,
                      f"data in {_redis_paths(settings)[0]}" if rd_managed else "external"),
    ]


def _reachable_pg(settings: Settings) -> bool:
    try:
        with psycopg.connect(settings.db_url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False
