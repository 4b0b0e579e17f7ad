#!/usr/bin/env bash
# Runs the benchmark suites, each measuring waitline and its baseline in the same run, and
# prints the tables of BENCHMARKS.md. Loopback only, bounded in time (a few minutes in all).
#   scripts/bench.sh            all suites
#   scripts/bench.sh core|http|durable|postgres|python
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
what="${1:-all}"

if [[ "$what" == all || "$what" == core ]]; then
  cargo run --release -q -p waitline-benches --bin report
fi

if [[ "$what" == all || "$what" == http ]]; then
  if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q redis-server || (apt-get update -q && apt-get install -y -q redis-server)) >/dev/null
  fi
  cargo build --release -q -p waitline-server --bin waitline
  cargo build --release -q -p waitline-benches --bin http_load --bin hello_server
  "$CARGO_TARGET_DIR/release/http_load" "$CARGO_TARGET_DIR/release" 5 64
fi

if [[ "$what" == all || "$what" == durable ]]; then
  cargo build --release -q -p waitline-server --bin waitline
  cargo build --release -q -p waitline-benches --bin store_load --bin restart_probe --bin http_load
  # In a directory on the disk under test (the system's temporary directory may be memory).
  export TMPDIR="${TMPDIR:-$CARGO_TARGET_DIR}"
  # In memory, always and periodic alternated, 3 s each, 4 rounds: a shared machine shows
  # in the spread.
  "$CARGO_TARGET_DIR/release/http_load" "$CARGO_TARGET_DIR/release" 3 64 durable 4
  "$CARGO_TARGET_DIR/release/store_load" 3 64
  "$CARGO_TARGET_DIR/release/restart_probe" 1000000
fi

if [[ "$what" == all || "$what" == postgres ]]; then
  cargo build --release -q -p waitline-server --bin waitline
  cargo build --release -q -p waitline-benches --bin store_load --bin restart_probe --bin http_load
  # The data directories and the throwaway PostgreSQL's cluster on the same disk.
  export TMPDIR="${TMPDIR:-$CARGO_TARGET_DIR}"
  # One node over PostgreSQL vs one over SQLite, alternated; three nodes vs one over 24
  # tenants; the store alone; a bucket of 100,000 queued calls taken over (from its
  # journal, then from a snapshot).
  # shellcheck disable=SC2016
  scripts/postgres.sh bash -c '
    "$CARGO_TARGET_DIR/release/http_load" "$CARGO_TARGET_DIR/release" 3 64 postgres 4 "$WAITLINE_TEST_POSTGRES_URL"
    "$CARGO_TARGET_DIR/release/http_load" "$CARGO_TARGET_DIR/release" 3 64 cluster 4 "$WAITLINE_TEST_POSTGRES_URL"
    "$CARGO_TARGET_DIR/release/store_load" 3 64 "$WAITLINE_TEST_POSTGRES_URL"
    "$CARGO_TARGET_DIR/release/restart_probe" 100000 "$WAITLINE_TEST_POSTGRES_URL"'
fi

if [[ "$what" == all || "$what" == python ]]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r python/requirements-dev.txt
  (cd python && VIRTUAL_ENV="$PWD/../.venv" ../.venv/bin/maturin develop --release --quiet)
  .venv/bin/python python/benchmarks/bench.py
fi
