#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: sourced by scripts/test.sh, or run as
#   scripts/postgres.sh COMMAND [ARGS...]
# to run one command (say `cargo test -p waitline-store`) with a cluster beside it.
# The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port with trust
# authentication for user `waitline`, and is stopped and removed on exit. Its URL is
# exported as WAITLINE_TEST_POSTGRES_URL. It also takes TLS (plaintext still works) with a
# server certificate for 127.0.0.1 from a CA made at start; the CA's PEM file is exported as
# WAITLINE_TEST_POSTGRES_CA. PostgreSQL and openssl are installed from Debian's packages
# when missing and running as root (as CI does).

postgres_bin_dir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

# Installs Debian's package $1 when we are root, or says what is missing ($2).
postgres_apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $1 (Debian's package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
  else
    echo "$2 is missing: install it, or run as root on Debian to have it installed" >&2
    return 1
  fi
}

postgres_install() {
  postgres_bin_dir >/dev/null || postgres_apt_install postgresql "PostgreSQL (initdb)" || return 1
  command -v openssl >/dev/null 2>&1 || postgres_apt_install openssl openssl
}

# A CA and a server certificate for 127.0.0.1 signed by it, in $1: ca.pem, server.pem and
# server.key (the key readable by the server's user only, as PostgreSQL demands).
postgres_certificates() {
  local dir=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=waitline test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 || return 1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1 || return 1
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" >/dev/null 2>&1 || return 1
  rm -f "$dir/ca.key" "$dir/server.csr"
  chmod 0600 "$dir/server.key"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir/server.key"; fi
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
  mkdir "$POSTGRES_WORK/tls"
  postgres_certificates "$POSTGRES_WORK/tls" || { echo "could not make the test certificates (openssl)" >&2; return 1; }
  # Durability settings stay at their defaults: the tests measure nothing, but they must see
  # what a real server does. Many connections: tests run in parallel, each with a few.
  if ! postgres_as "$POSTGRES_BIN/pg_ctl" -D "$POSTGRES_WORK/pg" -l "$POSTGRES_WORK/pg.log" -w start \
      -o "-p $port -k $POSTGRES_WORK -c listen_addresses=127.0.0.1 -c max_connections=300 \
         -c ssl=on -c ssl_cert_file=$POSTGRES_WORK/tls/server.pem -c ssl_key_file=$POSTGRES_WORK/tls/server.key" >/dev/null; then
    cat "$POSTGRES_WORK/pg.log" >&2
    return 1
  fi
  export WAITLINE_TEST_POSTGRES_URL="postgres://waitline@127.0.0.1:$port/postgres"
  export WAITLINE_TEST_POSTGRES_CA="$POSTGRES_WORK/tls/ca.pem"
  echo "a throwaway PostgreSQL at $WAITLINE_TEST_POSTGRES_URL (TLS with the CA $WAITLINE_TEST_POSTGRES_CA)"
}

# Run as a program: start, run the command, stop (whatever the command's outcome).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  trap postgres_stop EXIT
  postgres_start
  "$@"
fi
