#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: sourced by scripts/test.sh, or run as
#   scripts/postgres.sh COMMAND [ARGS...]
# to run one command (say `cargo test -p waitline-store`) with a cluster beside it.
# The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port with trust
# authentication for user `waitline`, and is stopped and removed on exit. Its URL is
# exported as WAITLINE_TEST_POSTGRES_URL. PostgreSQL is installed from Debian's packages
# when missing and running as root (as CI does).

postgres_bin_dir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

postgres_install() {
  postgres_bin_dir >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian's package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "PostgreSQL (initdb) is missing: install it, or run as root on Debian to have it installed" >&2
    return 1
  fi
}

# Runs a PostgreSQL program: as the `postgres` user when we are root (initdb refuses root).
postgres_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_stop() {
  if [ -n "${POSTGRES_WORK:-}" ] && [ -d "$POSTGRES_WORK" ]; then
    postgres_as "$POSTGRES_BIN/pg_ctl" -D "$POSTGRES_WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$POSTGRES_WORK"
  fi
  POSTGRES_WORK=""
}

postgres_start() {
  postgres_install || return 1
  POSTGRES_BIN=$(postgres_bin_dir)
  POSTGRES_WORK=$(mktemp -d)
  # The server runs as `postgres` when we are root: it must write here.
  chmod 0777 "$POSTGRES_WORK"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  postgres_as "$POSTGRES_BIN/initdb" -D "$POSTGRES_WORK/pg" -A trust -U waitline >"$POSTGRES_WORK/initdb.log" 2>&1 \
    || { cat "$POSTGRES_WORK/initdb.log" >&2; return 1; }
  # Durability settings stay at their defaults: the tests measure nothing, but they must see
  # what a real server does. Many connections: tests run in parallel, each with a few.
  if ! postgres_as "$POSTGRES_BIN/pg_ctl" -D "$POSTGRES_WORK/pg" -l "$POSTGRES_WORK/pg.log" -w start \
      -o "-p $port -k $POSTGRES_WORK -c listen_addresses=127.0.0.1 -c max_connections=300" >/dev/null; then
    cat "$POSTGRES_WORK/pg.log" >&2
    return 1
  fi
  export WAITLINE_TEST_POSTGRES_URL="postgres://waitline@127.0.0.1:$port/postgres"
  echo "a throwaway PostgreSQL at $WAITLINE_TEST_POSTGRES_URL"
}

# Run as a program: start, run the command, stop (whatever the command's outcome).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  trap postgres_stop EXIT
  postgres_start
  "$@"
fi
