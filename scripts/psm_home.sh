#!/usr/bin/env bash
# Print the default PSM_HOME for `make` and CI: the repository's .psm folder, unless we run as
# root inside a folder that other accounts cannot traverse (for example under /root). The
# managed PostgreSQL then runs as the postgres account, which must reach its data folder, so
# PSM_HOME goes to /var/lib/psm/<checkout name>-<hash> instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" -eq 0 ]; then
  d="$root"
  while [ "$d" != "/" ]; do
    perm="$(stat -c %A "$d")"
    case "${perm:9:1}" in
      x|t) ;;
      *) echo "/var/lib/psm/$(basename "$root")-$(printf %s "$root" | md5sum | cut -c1-8)"; exit 0 ;;
    esac
    d="$(dirname "$d")"
  done
fi
echo "$root/.psm"
