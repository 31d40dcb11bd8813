#!/usr/bin/env bash
# Install the system services PSM needs (PostgreSQL + PostGIS + pgvector, Redis,
# Chromium for browser tests) and the project's virtual environment.
# Idempotent: a second run only checks, and returns in seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PSM_VENV:-$ROOT/.venv}"
PG_MAJOR="${PSM_PG_MAJOR:-15}"
# Python 3.11 only (pyproject's requires-python): python3.11 where it exists, else python3.
PYTHON="${PYTHON:-$(command -v python3.11 || echo python3)}"
# The torch wheel index; empty means PyPI (on Linux its wheel is the CUDA build). For a CPU-only
# machine: PSM_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL="${PSM_TORCH_INDEX_URL:-}"
WITH_BROWSER="${PSM_WITH_BROWSER:-1}"

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*"; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "PSM needs Python 3.11 (pyproject requires-python); $PYTHON is $("$PYTHON" -V 2>&1 || echo missing)." >&2
  echo "Install one (Debian 12: python3; Ubuntu 22.04: python3.11) and set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if command -v apt-get >/dev/null 2>&1; then
  pkgs=(postgresql-$PG_MAJOR postgresql-$PG_MAJOR-postgis-3 postgresql-server-dev-$PG_MAJOR
        redis-server build-essential libpq-dev sox)
  [ "$WITH_BROWSER" = "1" ] && pkgs+=(chromium chromium-driver)
  apt_install "${pkgs[@]}"

  # venv needs ensurepip, which Debian ships apart (python3-venv, or python3.X-venv for a
  # Python other than the system's python3).
  if ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
    if [ "$("$PYTHON" -V 2>&1)" = "$(python3 -V 2>&1)" ]; then
      apt_install python3-venv
    else
      apt_install python3.11-venv
    fi
  fi

  PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
  SHAREDIR="$($PG_CONFIG --sharedir)"
  if [ ! -f "$SHAREDIR/extension/vector.control" ]; then
    if [ $apt_updated -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    if apt-cache show "postgresql-$PG_MAJOR-pgvector" >/dev/null 2>&1; then
      apt_install "postgresql-$PG_MAJOR-pgvector"
    else
      # Debian 12 has no pgvector package: build Debian trixie's source package.
      log "building pgvector from Debian's source package"
      src_list=/etc/apt/sources.list.d/psm-trixie-src.list
      if [ ! -f "$src_list" ]; then
        echo "deb-src http://deb.debian.org/debian trixie main" | $SUDO tee "$src_list" >/dev/null
        $SUDO apt-get update -qq
      fi
      build="$(mktemp -d)"
      (cd "$build" && apt-get source --download-only pgvector >/dev/null 2>&1 \
        && dpkg-source -x --no-check ./pgvector_*.dsc src >/dev/null \
        && cd src && make -s PG_CONFIG="$PG_CONFIG" >/dev/null \
        && $SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null)
      rm -rf "$build"
    fi
    [ -f "$SHAREDIR/extension/vector.control" ] || { echo "pgvector install failed" >&2; exit 1; }
  fi
else
  log "not a Debian/Ubuntu machine: install PostgreSQL $PG_MAJOR with PostGIS 3 and pgvector >= 0.8, and Redis, yourself"
fi

stamp="$VENV/.psm-installed"
CONSTRAINTS="$ROOT/constraints.txt"  # the tested versions (scripts/constraints.py)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
  log "installing the project into $VENV (versions from constraints.txt)"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  if [ -n "$TORCH_INDEX_URL" ]; then
    "$VENV/bin/pip" install -q --no-deps "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  fi
  "$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" "torch==2.13.0"
  "$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
  touch "$stamp"
fi
log "ready: $VENV"
