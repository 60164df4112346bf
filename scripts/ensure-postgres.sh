#!/bin/sh
# Make sure Debian's PostgreSQL server binaries are installed (for the store's tests and benchmarks).
# Idempotent: does nothing when /usr/lib/postgresql/*/bin/initdb exists. The tests start throwaway clusters
# of their own, so the system cluster the package creates is stopped and left disabled.
set -eu

have_binaries() {
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$candidate" ] && return 0
    done
    return 1
}

if have_binaries; then
    echo "ensure-postgres: PostgreSQL binaries present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-postgres: PostgreSQL is not installed and this is not root; run: sudo $0" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends postgresql

# The package may start the system cluster (port 5432); the tests do not use it.
if command -v pg_ctlcluster >/dev/null 2>&1; then
    for cluster in $(pg_lsclusters --no-header 2>/dev/null | awk '{print $1 "/" $2}'); do
        pg_ctlcluster "${cluster%/*}" "${cluster#*/}" stop 2>/dev/null || true
    done
fi

have_binaries || { echo "ensure-postgres: installation finished but initdb is still missing" >&2; exit 1; }
echo "ensure-postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
