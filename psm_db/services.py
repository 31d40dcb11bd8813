"""Project-managed PostgreSQL (with PostGIS + pgvector) and Redis under ``PSM_HOME``."""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from psm_db import credentials
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
    """Where the service listens; a password in it is shown as ``***`` (``psm db url`` prints it)."""
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", credentials.redact(self.url))


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
    os.chmod(run, 0o700)  # the server's socket: nobody else's business
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
        secured = secure_postgres(settings)
        ensure_database(settings)
        return "already running" + ("; now asks every connection for a SCRAM password" if secured else "")
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
                # No TCP login at all until secure_postgres has set the passwords; the socket
                # (in a folder only the service account may enter) is trusted meanwhile.
                [str(bindir / "initdb"), "-D", str(data), "-U", "psm", "--auth-local=trust",
                 "--auth-host=reject", "-E", "UTF8", "--locale=C.UTF-8"]
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
    secure_postgres(settings)
    ensure_database(settings)
    return "started"


# Every connection to the managed cluster, over TCP or its socket, the owner's included, must
# give its role's SCRAM password (generated once under PSM_HOME/secrets).
SCRAM_HBA = """\
# written by psm services: every role gives its SCRAM password (kept in PSM_HOME/secrets/postgres.json)
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""

# While the passwords are being set: the socket only (its folder is the service account's alone).
SETUP_HBA = """\
# written by psm services while it sets the roles' passwords; replaced at once
local   all       all                 trust
"""


def _write_hba(settings: Settings, text: str) -> None:
    """Replace pg_hba.conf (atomically, owned like the data folder) and make the server reload it."""
    data, _, _ = _pg_paths(settings)
    target = data / "pg_hba.conf"
    tmp = data / ".pg_hba.conf.psm"
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    st = os.stat(data)
    if _is_root():
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, target)
    bindir = pg_bin_dir(settings)
    _run(_as_service_user([str(bindir / "pg_ctl"), "reload", "-D", str(data)]), "reloading PostgreSQL")


def _socket_dir(settings: Settings) -> str:
    """The folder of the running server's socket (postmaster.pid says; a copied cluster keeps its old one)."""
    data, run, _ = _pg_paths(settings)
    try:
        lines = (data / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except OSError:
        return str(run)
    return lines[4].strip() if len(lines) > 4 and lines[4].strip() else str(run)


def _socket_conninfo(settings: Settings) -> str:
    return make_conninfo(host=_socket_dir(settings), port=settings.pg_port, user=credentials.OWNER_ROLE,
                         dbname="postgres", connect_timeout=5)


def _wait_for(check, what: str, timeout: float = 15.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ServiceError(f"PostgreSQL did not {what} within {timeout:g} s")
        time.sleep(0.05)


def _can_connect(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def _admin_url(settings: Settings) -> str:
    """The owner's URL to the managed cluster's maintenance database."""
    return settings.url_as(credentials.OWNER_ROLE, f"postgresql://psm@127.0.0.1:{settings.pg_port}/postgres")


def _held_verifiers(conn: psycopg.Connection, roles: list[str]) -> dict[str, str]:
    """What pg_authid holds as each role's password (a SCRAM verifier); needs a superuser."""
    rows = conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (roles,)).fetchall()
    return {str(name): str(verifier) for name, verifier in rows}


def _passwords_in_place(settings: Settings) -> bool:
    """True when the server asks for passwords and holds the verifiers this PSM_HOME recorded."""
    data, _, _ = _pg_paths(settings)
    try:
        if (data / "pg_hba.conf").read_text(encoding="utf-8") != SCRAM_HBA:
            return False
    except OSError:
        return False
    recorded = credentials.verifiers(settings.home)
    if set(recorded) != set(credentials.ROLES):
        return False
    try:
        with psycopg.connect(_admin_url(settings), connect_timeout=10) as conn:
            return _held_verifiers(conn, list(credentials.ROLES)) == recorded
    except psycopg.OperationalError:
        return False


def secure_postgres(settings: Settings) -> bool:
    """Make the managed cluster ask every connection for a SCRAM password; True when it changed anything.

    The passwords are generated once (``PSM_HOME/secrets/postgres.json``, mode 0600). A cluster
    that trusts its connections (one made before passwords, or whose passwords file was lost) is
    switched over: for a moment only the socket, in the service account's own folder, is trusted
    while each role's password is set; then pg_hba.conf asks every connection for one.
    """
    passwords = credentials.ensure_passwords(settings.home)
    if _passwords_in_place(settings):
        return False
    log.info("setting the roles' passwords on the managed cluster")
    data, _, _ = _pg_paths(settings)
    before = (data / "pg_hba.conf").read_text(encoding="utf-8")
    _write_hba(settings, SETUP_HBA)
    try:
        _wait_for(lambda: _can_connect(_socket_conninfo(settings)),
                  f"take the setup pg_hba.conf (socket in {_socket_dir(settings)})")
        set_verifiers: dict[str, str] = {}
        with psycopg.connect(_socket_conninfo(settings), autocommit=True) as conn:
            for role in credentials.ROLES:
                # The verifier is made here, so the password itself never reaches the server or its log.
                verifier = conn.pgconn.encrypt_password(passwords[role].encode(), role.encode(),
                                                        b"scram-sha-256").decode()
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                                 sql.Literal(verifier)))
                set_verifiers[role] = verifier
    except BaseException:
        _write_hba(settings, before)  # as it was: a failed switch must not lock everyone out
        raise
    credentials.save_verifiers(settings.home, set_verifiers)
    _write_hba(settings, SCRAM_HBA)
    _wait_for(lambda: _can_connect(_admin_url(settings)), "take the passwords over TCP")
    return True


def ensure_database(settings: Settings) -> None:
    """Create the ``psm`` database and its extensions on the managed cluster if missing."""
    admin = _admin_url(settings)
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


# --------------------------------------------------------------------------- the reader's watchdog
#
# ``ALTER ROLE psm_reader SET statement_timeout = '30s'`` is only a default: a psm_reader session
# can ``SET statement_timeout = 0`` and run for ever, and PostgreSQL lets every role change its
# own role defaults (``SET default_transaction_read_only = off`` then ``ALTER ROLE psm_reader SET
# statement_timeout = 0``: no privilege can be revoked to stop it, and event triggers do not
# fire for roles). So the bound is kept from outside the reader's sessions: a watchdog, run by
# the owner role, cancels every psm_reader statement that has run longer than the limit (and
# ends the backend when a cancel did not stop it within another limit), and puts back the
# reader's role defaults (read-only, the statement timeout) when a reader lifted them.

READER_ROLE = "psm_reader"
"""The read-only role whose statements the watchdog bounds."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}


def _timeout_ms(value: str) -> float | None:
    """A statement_timeout setting in milliseconds (0: none), or None when it cannot be read."""
    m = _DURATION.match(value)
    return None if m is None else float(m.group(1)) * _UNIT_MS[m.group(2) or "ms"]


def _limit_text(limit_s: float) -> str:
    ms = max(1, int(round(limit_s * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def cancel_overrunning_readers(conn: psycopg.Connection, limit_s: float, role: str = READER_ROLE) -> list[int]:
    """Cancel every statement of ``role`` (in any database of the server) running longer than ``limit_s``.

    A backend still running twice the limit after that (a statement that ignores cancels) is
    ended. Needs the owner role: a superuser, or a member of pg_signal_backend. Returns the
    pids signalled.
    """
    rows = conn.execute(
        "SELECT pid, CASE WHEN now() - query_start > 2 * make_interval(secs => %(limit)s)"
        " THEN pg_terminate_backend(pid) ELSE pg_cancel_backend(pid) END"
        " FROM pg_stat_activity WHERE usename = %(role)s AND state = 'active' AND pid <> pg_backend_pid()"
        " AND now() - query_start > make_interval(secs => %(limit)s)",
        {"limit": float(limit_s), "role": role}).fetchall()
    for pid, _ in rows:
        log.warning("cancelled a %s statement that ran longer than %g s (pid %s)", role, limit_s, pid)
    return [int(pid) for pid, signalled in rows if signalled]


def restore_reader_defaults(conn: psycopg.Connection, limit_s: float, role: str = READER_ROLE) -> list[str]:
    """Put back the role defaults of ``role`` that a reader lifted; return what was changed.

    The role (and each per-database default of it) must say ``default_transaction_read_only =
    on`` and a ``statement_timeout`` of at most ``limit_s``; anything else is set back.
    """
    rows = conn.execute(
        "SELECT d.datname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
        " LEFT JOIN pg_database d ON d.oid = s.setdatabase WHERE r.rolname = %s", (role,)).fetchall()
    configs: dict[str | None, dict[str, str]] = {None: {}}
    for datname, config in rows:
        configs[datname] = dict(item.split("=", 1) for item in (config or []))
    limit = _limit_text(limit_s)
    changed = []
    for datname, config in configs.items():
        where = sql.SQL("") if datname is None else sql.SQL(" IN DATABASE {}").format(sql.Identifier(datname))
        wanted: dict[str, str] = {}
        timeout = config.get("statement_timeout")
        if (datname is None and timeout is None) or timeout is not None and (
                (ms := _timeout_ms(timeout)) is None or ms <= 0 or ms > limit_s * 1000):
            wanted["statement_timeout"] = limit
        read_only = config.get("default_transaction_read_only")
        if (datname is None and read_only is None) or read_only is not None and read_only.lower() not in (
                "on", "true", "yes", "1"):
            wanted["default_transaction_read_only"] = "on"
        for name, value in wanted.items():
            conn.execute(sql.SQL("ALTER ROLE {}{} SET {} = {}").format(
                sql.Identifier(role), where, sql.Identifier(name), sql.Literal(value)))
            scope = role if datname is None else f"{role} in database {datname}"
            changed.append(f"{scope}: {name} = {value} (was {config.get(name, 'unset')})")
            log.warning("put back %s: %s = %s (was %s)", scope, name, value, config.get(name, "unset"))
    return changed


def restore_role_passwords(conn: psycopg.Connection, home: Path) -> list[str]:
    """Set back the password of every managed role that changed its own; return those roles.

    PostgreSQL lets any role change its own password; a reader doing so would lock the dashboard
    and every psql user out. The verifiers recorded under ``home`` say what pg_authid should hold.
    """
    recorded = credentials.verifiers(home)
    if not recorded:
        return []
    held = _held_verifiers(conn, list(recorded))
    changed = []
    for role, verifier in recorded.items():
        if role in held and held[role] != verifier:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
            log.warning("put back the password of %s, which changed it", role)
            changed.append(role)
    return changed


def watchdog(settings: Settings, stop: threading.Event | None = None) -> None:
    """Bound the reader's statements until ``stop`` is set (or for ever), every ``watchdog_interval`` s.

    Runs on the owner URL (``PSM_DATABASE_URL``); a database that is down is retried on the next
    round.
    """
    stop = stop or threading.Event()
    limit = settings.reader_limit_seconds
    conn: psycopg.Connection | None = None
    log.info("watching %s statements: at most %g s (every %g s)", READER_ROLE, limit, settings.watchdog_interval)
    while True:
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(settings.db_url, autocommit=True, connect_timeout=10,
                                       application_name="psm-watchdog")
            cancel_overrunning_readers(conn, limit)
            restore_reader_defaults(conn, limit)
            if settings.manages_postgres():
                restore_role_passwords(conn, settings.home)
        except psycopg.Error as e:
            log.warning("watchdog: %s", " ".join(str(e).split()))
            if conn is not None:
                conn.close()
            conn = None
        if stop.wait(settings.watchdog_interval):
            break
    if conn is not None:
        conn.close()


def _watchdog_paths(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.services_dir / "watchdog"
    return base, base / "watchdog.pid", base / "watchdog.log"


def _watchdog_pid(settings: Settings) -> int | None:
    _, pidfile, _ = _watchdog_paths(settings)
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"psm_db.services" in cmdline else None


def watchdog_running(settings: Settings) -> bool:
    """True when the managed cluster's watchdog runs."""
    return _watchdog_pid(settings) is not None


def watchdog_up(settings: Settings) -> str:
    """Start the reader's watchdog in the background (``python -m psm_db.services watchdog``)."""
    if watchdog_running(settings):
        return "already running"
    base, pidfile, logfile = _watchdog_paths(settings)
    base.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"PSM_HOME": str(settings.home), "PSM_PG_PORT": str(settings.pg_port),
                "PSM_DATABASE_URL": settings.db_url,
                "PSM_READER_STATEMENT_LIMIT": repr(float(settings.reader_limit_seconds)),
                "PSM_WATCHDOG_INTERVAL": repr(float(settings.watchdog_interval))})
    with open(logfile, "a", encoding="utf-8") as log_out:
        proc = subprocess.Popen([sys.executable, "-m", "psm_db.services", "watchdog"], env=env, cwd=str(base),
                                stdin=subprocess.DEVNULL, stdout=log_out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    pidfile.write_text(str(proc.pid))
    time.sleep(0.3)
    if proc.poll() is not None:
        raise ServiceError(f"the reader's watchdog exited at once (status {proc.returncode}); see {logfile}")
    return f"started (statements of {READER_ROLE} bounded to {settings.reader_limit_seconds:g} s)"


def watchdog_down(settings: Settings) -> str:
    """Stop the reader's watchdog."""
    pid = _watchdog_pid(settings)
    if pid is None:
        return "not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _watchdog_pid(settings) is not None:
        time.sleep(0.05)
    return "stopped"


# --------------------------------------------------------------------------- both


def up(settings: Settings, *, watchdog: bool | None = None) -> list[ServiceStatus]:
    """Start whatever the settings say the project manages; leave external servers alone.

    ``watchdog``: start the reader's watchdog with the managed PostgreSQL (None: when this call
    started PostgreSQL; ``psm services up`` passes True, so it also starts beside a running one).
    """
    results = []
    if settings.manages_postgres():
        detail = postgres_up(settings)
        results.append(ServiceStatus("postgres", True, True, settings.db_url, detail))
        if watchdog or (watchdog is None and detail == "started"):
            results.append(ServiceStatus("watchdog", True, True, settings.db_url, watchdog_up(settings)))
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
        if watchdog_running(settings):
            results.append(ServiceStatus("watchdog", True, False, settings.db_url, watchdog_down(settings)))
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
        *([ServiceStatus("watchdog", True, watchdog_running(settings), settings.db_url,
                         f"bounds {READER_ROLE} statements to {settings.reader_limit_seconds:g} s")]
          if pg_managed else []),
        ServiceStatus("redis", rd_managed, rd_run, settings.broker,
                      f"data in {_redis_paths(settings)[0]}" if rd_managed else "external"),
    ]


def _reachable_pg(settings: Settings) -> bool:
    try:
        with psycopg.connect(settings.db_url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _main(argv: list[str]) -> int:
    if argv != ["watchdog"]:
        print("usage: python -m psm_db.services watchdog", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watchdog(Settings(), stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
