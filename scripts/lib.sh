# Shared by scripts/test.sh and scripts/bench/run: make Docker and a throwaway Postgres be there.
# Source it; it defines functions only. LOG_TAG names the caller in log lines.

log() { echo "[${LOG_TAG:-nexus}] $*" >&2; }
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

# The directory holding Postgres's initdb and pg_ctl (newest Debian version first, then PATH).
postgres_bin_dir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  return 1
}

PG_TMP=""
PG_BIN=""
# Runs a Postgres command as the cluster's owner (initdb and postgres refuse to run as root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then runuser -u nobody -- "$@"
    else setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups -- "$@"; fi
  else "$@"; fi
}

stop_postgres() {
  if [ -n "$PG_TMP" ] && [ -d "$PG_TMP" ]; then
    if [ -f "$PG_TMP/data/postmaster.pid" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_TMP" || true
  fi
}

ensure_postgres() {
  if [ -n "${NEXUS_TEST_POSTGRES_URL:-}" ]; then
    log "using the Postgres server given by NEXUS_TEST_POSTGRES_URL"
    return 0
  fi
  if ! PG_BIN="$(postgres_bin_dir)"; then
    log "Postgres is not installed: installing Debian's postgresql"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN="$(postgres_bin_dir)" || { log "postgresql installed but initdb/pg_ctl not found"; exit 1; }
  fi
  PG_TMP="$(mktemp -d /tmp/nexus-pg.XXXXXX)"
  trap stop_postgres EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$PG_TMP/sock"
  if [ "$(id -u)" -eq 0 ]; then chown -R nobody "$PG_TMP"; fi
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log "starting a throwaway Postgres ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$port in $PG_TMP"
  as_pg "$PG_BIN/initdb" -D "$PG_TMP/data" -A trust -U nexus -E UTF8 --no-locale >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; log "initdb failed"; exit 1; }
  as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP/sock -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null \
    || { cat "$PG_TMP/postgres.log" >&2; log "Postgres did not start"; exit 1; }
  export NEXUS_TEST_POSTGRES_URL="postgres://nexus@127.0.0.1:$port/postgres"
}

# The swarm lab (scripts/swarm-lab): a Docker Swarm of 3 dockerd hosts on this machine, for the
# swarm runtime's tests. Brings it up with the given images in its registry and exports its
# NEXUS_LAB_* settings; stop_swarm_lab removes all of it and fails if anything is left.
SWARM_LAB_UP=""
ensure_swarm_lab() {
  local env
  log "bringing up the swarm lab (3 hosts, registry)"
  env="$(as_root scripts/swarm-lab up -n 3 "${@/#/--image=}" | grep '^NEXUS_LAB_')" \
    || { log "the swarm lab did not come up; removing what it made"; as_root scripts/swarm-lab down || true; exit 1; }
  SWARM_LAB_UP=1
  while IFS= read -r line; do export "${line?}"; done <<<"$env"
  log "swarm lab: $NEXUS_LAB_HOSTS hosts, registry $NEXUS_LAB_REGISTRY"
}

stop_swarm_lab() {
  if [ -n "$SWARM_LAB_UP" ]; then
    SWARM_LAB_UP=""
    as_root scripts/swarm-lab down || { log "FAIL: the swarm lab left something behind"; return 1; }
  fi
}

# The gate image (scripts/build-gate-image.sh; arguments pass through, e.g. --release):
# builds it if needed and prints its reference, e.g. `GATE_IMAGE="$(build_gate_image)"`.
build_gate_image() {
  local ref
  ref="$("$(dirname "${BASH_SOURCE[0]}")/build-gate-image.sh" "$@" | tail -n 1)" \
    || { log "building the gate image failed"; return 1; }
  echo "$ref"
}
