"""Passwords of the project-managed cluster's roles, kept under ``PSM_HOME`` (mode 0600).

``psm services up`` generates one password per role the project uses (the owner ``psm``, the
writer ``psm_writer``, the read-only ``psm_reader``) the first time it runs, and the managed
cluster then asks every connection for a SCRAM password. The settings build their URLs from this
file, so nothing has to be typed; ``psm db url`` prints a URL for psql.

The file also keeps the SCRAM verifier set for each role, so the reader's watchdog can tell when
a role changed its own password (PostgreSQL lets any role do that) and set it back.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

OWNER_ROLE = "psm"
WRITER_ROLE = "psm_writer"
READER_ROLE = "psm_reader"
ROLES = (OWNER_ROLE, WRITER_ROLE, READER_ROLE)


def credentials_path(home: Path) -> Path:
    """Where the managed cluster's passwords live."""
    return home / "secrets" / "postgres.json"


_cache: dict[Path, tuple[tuple[int, int, int], dict[str, dict[str, str]]]] = {}
"""The file as last read, by path, with its inode, size and modification time (the settings read
it for every URL they build; each write replaces the file, so a new inode marks a new content)."""


def _read(home: Path) -> dict[str, dict[str, str]]:
    path = credentials_path(home)
    try:
        st = path.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        return {"passwords": {}, "verifiers": {}}
    cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return {k: dict(v) for k, v in cached[1].items()}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"passwords": {}, "verifiers": {}}
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"cannot read the cluster's passwords at {credentials_path(home)} ({e}); remove the file "
            "and run `psm services up` to make new ones"
        ) from e
    parsed = {"passwords": dict(data.get("passwords", {})), "verifiers": dict(data.get("verifiers", {}))}
    _cache[path] = (stamp, parsed)
    return {k: dict(v) for k, v in parsed.items()}


def _write(home: Path, data: dict[str, dict[str, str]]) -> None:
    """Write the file atomically, readable by its owner only (folder 0700, file 0600)."""
    path = credentials_path(home)
    _cache.pop(path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def password(home: Path, role: str) -> str | None:
    """The stored password of ``role`` on the managed cluster, or None when there is none yet."""
    return _read(home)["passwords"].get(role)


def ensure_passwords(home: Path) -> dict[str, str]:
    """Every role's password, generating (and storing) the ones that are missing."""
    data = _read(home)
    missing = [role for role in ROLES if not data["passwords"].get(role)]
    for role in missing:
        data["passwords"][role] = secrets.token_urlsafe(24)
    if missing or not credentials_path(home).exists():
        _write(home, data)
    return dict(data["passwords"])


def verifiers(home: Path) -> dict[str, str]:
    """The SCRAM verifier last set for each role (what pg_authid should hold)."""
    return dict(_read(home)["verifiers"])


def save_verifiers(home: Path, values: dict[str, str]) -> None:
    """Record the SCRAM verifiers just set on the server."""
    data = _read(home)
    data["verifiers"] = dict(values)
    _write(home, data)


def with_user(url: str, user: str, password: str | None = None) -> str:
    """``url`` with its user (and password) replaced; host, port, database and options kept."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """``url`` with any password shown as ``***`` (for printing and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return with_user(url, parts.username or "", "PASSWORD").replace(":PASSWORD@", ":***@", 1)
