#!/usr/bin/env bash
# Stop what `make demo` started: the dashboard, the Celery worker, then the services.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PSM_HOME="${PSM_HOME:-$(bash "$ROOT/scripts/psm_home.sh")}"
for name in dashboard worker; do
  pidfile="$PSM_HOME/run/$name.pid"
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      pkill -TERM -P "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
  fi
done
if [ -x "$ROOT/.venv/bin/psm" ]; then
  PSM_HOME="$PSM_HOME" "$ROOT/.venv/bin/psm" services down
fi
