#!/usr/bin/env bash
# Runs every test of the project, installing what it needs first. Safe to run again.
# Used as is by CI (.ci/run) on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# One target directory for every step, so nothing is built twice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Test builds keep line tables (a panic's backtrace still names file and line) but not full
# debug info, and CI builds nothing incrementally: a fresh clone's run took ~13 GB with full
# debug info and filled a CI disk once; with this its target is ~6 GB, and links are faster.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

step() { printf '\n==> %s\n' "$*"; }

step "disk space where the builds go (a whole run fills ~6 GB of target)"
mkdir -p "$CARGO_TARGET_DIR"
df -h "$CARGO_TARGET_DIR" | tail -n 1

step "the repository stands on its own (no tracked file refers outside it)"
python3 scripts/check_self_contained.py

step "system tools the README's examples use (curl, jq) and the wallboard's test (chromium)"
missing=$(for tool in curl jq chromium; do command -v "$tool" >/dev/null 2>&1 || echo "$tool"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "missing: $missing (install them, or run as root on Debian to have them installed)" >&2
    exit 1
  fi
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "a throwaway PostgreSQL on loopback for the PostgreSQL store's tests (installed when missing)"
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
trap postgres_stop EXIT
postgres_start

step "Rust tests (unit, rules, model-based, stress, doc, the README's Rust example)"
# The real-process tests (crash, failover) show their servers' logs: a failure can then be
# read from the run's output.
WAITLINE_TEST_SERVER_LOG=1 cargo test --workspace --locked

step "API docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p waitline -p waitline-sim -p waitline-server -p waitline-python

step "Python environment for the compatibility suite (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -r crates/waitline-server/compat/requirements.txt -r python/requirements-dev.txt

step "Telnyx SDK compatibility and OpenAPI conformance of the HTTP service; the README's service examples"
cargo build --locked -p waitline-server --bin waitline
# The README's quickstart runs the release build: built here so that its test starts at once.
cargo build --release --locked -p waitline-server --bin waitline
WAITLINE_BIN="$CARGO_TARGET_DIR/debug/waitline" .venv/bin/python -m pytest -q crates/waitline-server/compat
# The SDK suite again over HTTPS, with a test CA made for the run (a few seconds).
WAITLINE_COMPAT_TLS=1 WAITLINE_BIN="$CARGO_TARGET_DIR/debug/waitline" .venv/bin/python -m pytest -q \
  crates/waitline-server/compat/test_telnyx_sdk.py
# And against three nodes sharing the throwaway PostgreSQL behind a round-robin proxy (the SDK
# with the OpenAPI checks, and a tenant's /metrics; docs/cluster.md says why not the other files).
WAITLINE_COMPAT_CLUSTER=3 WAITLINE_BIN="$CARGO_TARGET_DIR/debug/waitline" .venv/bin/python -m pytest -q \
  crates/waitline-server/compat/test_telnyx_sdk.py crates/waitline-server/compat/test_metrics.py

step "Python package: build the native module into .venv, then its tests (stubs and README examples included)"
(cd python && VIRTUAL_ENV="$PWD/../.venv" ../.venv/bin/maturin develop --quiet)
.venv/bin/python -m pytest -q python/tests

step "benchmark smoke: every suite runs briefly so none can rot (nothing is timed here)"
cargo bench -p waitline-benches --locked -- --test
cargo test -q --locked -p waitline-server --bench request_layer
cargo run -q --locked -p waitline-benches --bin report -- --quick >/dev/null
cargo build -q --locked -p waitline-benches --bin http_load --bin hello_server --bin store_load --bin restart_probe --bin simulate_probe
"$CARGO_TARGET_DIR/debug/store_load" 0.2 4 "$WAITLINE_TEST_POSTGRES_URL" >/dev/null
"$CARGO_TARGET_DIR/debug/restart_probe" 2000 >/dev/null
"$CARGO_TARGET_DIR/debug/restart_probe" 2000 "$WAITLINE_TEST_POSTGRES_URL" >/dev/null
"$CARGO_TARGET_DIR/debug/simulate_probe" 2000 >/dev/null
"$CARGO_TARGET_DIR/debug/http_load" "$CARGO_TARGET_DIR/debug" 0.3 4 >/dev/null
"$CARGO_TARGET_DIR/debug/http_load" "$CARGO_TARGET_DIR/debug" 0.2 4 postgres 1 "$WAITLINE_TEST_POSTGRES_URL" >/dev/null
.venv/bin/python python/benchmarks/bench.py --quick >/dev/null

step "fuzzing: build every target, run each for ${FUZZ_SECONDS:-20} s (corpus replay runs with the Rust tests)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# The toolchain is stable: RUSTC_BOOTSTRAP lets it take cargo-fuzz's nightly flags.
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -s none --target-dir "$CARGO_TARGET_DIR/fuzz")
fuzz_work=$(mktemp -d)
for target in engine_model engine_concurrent http_request json_bodies journal_records webhook_destination snapshot_decode write_ahead_log; do
  mkdir -p "$fuzz_work/$target"
  # New inputs go to a scratch corpus; the committed seeds are read only. A fixed seed
  # makes the test command's run repeatable (a failure here can be replayed as it was);
  # FUZZ_SEED=0 picks a random one, for exploring.
  if (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --target-dir "$CARGO_TARGET_DIR/fuzz" "$target" \
        "$fuzz_work/$target" "corpus/$target" -- -max_total_time="${FUZZ_SECONDS:-20}" -timeout=10 \
        -seed="${FUZZ_SEED:-1}") \
        >"$fuzz_work/$target.log" 2>&1; then
    printf '%s: %s\n' "$target" "$(grep -E '^Done [0-9]+ runs' "$fuzz_work/$target.log" | tail -n 1)"
  else
    tail -n 40 "$fuzz_work/$target.log"
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
done

step "example"
cargo run -q -p waitline-example-embed --locked >/dev/null

printf '\nall tests passed\n'
