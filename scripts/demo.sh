#!/usr/bin/env bash
# The demo: services and migrations are done by `make migrate`; this runs a smoke query.
# It grows into the full pipeline (world -> train -> eval -> worker -> embed -> dashboard).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
"$BIN/psm" services status
"$BIN/psm" db smoke
