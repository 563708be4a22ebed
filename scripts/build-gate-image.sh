#!/usr/bin/env bash
# Builds nexus-gate:<tag>: the per-host gate (`nexus gate`, see src/gate/) from this checkout's
# own nexus binary and its shared libraries, from local files only (FROM scratch; nothing is
# pulled).
#
#   scripts/build-gate-image.sh              build if needed; LAST stdout line = image reference
#   scripts/build-gate-image.sh --release    from a release build (default: the debug build the
#                                            test suite makes anyway, debug info stripped)
#   scripts/build-gate-image.sh --prune      also remove other nexus-gate:<tag> images
#
# The image: /usr/local/bin/nexus, ENTRYPOINT ["/usr/local/bin/nexus", "gate"], USER 1000:1000,
# /run/nexus (the default --root) owned by 1000:1000 with mode 0700, so a fresh named volume
# mounted there takes that owner. The caller adds --listen and the credential files.
# The tag is a hash of what goes in (binary, libraries, this script).
# Env: CARGO_TARGET_DIR is honoured. Progress goes to stderr.
set -euo pipefail

IMAGE=nexus-gate
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { echo "build-gate-image: $*" >&2; }
die() { echo "build-gate-image: ERROR: $*" >&2; exit 1; }

PROFILE=debug
PRUNE=0
for arg in "$@"; do
  case "$arg" in
    --release) PROFILE=release ;;
    --prune) PRUNE=1 ;;
    -h|--help) sed -n '2,16p' "$0" >&2; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
command -v docker >/dev/null || die "docker CLI not found"

# 1. The binary.
if [ "$PROFILE" = release ]; then
  log "cargo build --release --bin nexus"
  (cd "$ROOT" && cargo build --release --bin nexus >&2)
else
  log "cargo build --bin nexus"
  (cd "$ROOT" && cargo build --bin nexus >&2)
fi
BIN="$TARGET_DIR/$PROFILE/nexus"
[ -x "$BIN" ] || die "$BIN not found after the build"

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
cp "$BIN" "$CTX/nexus"
if command -v strip >/dev/null; then strip --strip-debug "$CTX/nexus"; fi
LIBS=()
while read -r lib; do LIBS+=("$lib"); done < <(
  ldd "$CTX/nexus" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')

# 2. The tag: a hash of the stripped binary, the libraries and this script.
TAG="$(
  {
    sha256sum "$CTX/nexus" "$0" | cut -d' ' -f1
    for lib in "${LIBS[@]}"; do printf '%s ' "$lib"; sha256sum "$(readlink -f "$lib")" | cut -d' ' -f1; done
  } | sha256sum | cut -c1-12
)"
REF="$IMAGE:$TAG"
prune_old() {
  [ "$PRUNE" = 1 ] || return 0
  docker image ls "$IMAGE" --format '{{.Tag}}' | while read -r t; do
    if [ "$t" != "$TAG" ] && [ "$t" != latest ]; then
      log "removing stale $IMAGE:$t"
      docker rmi "$IMAGE:$t" >/dev/null 2>&1 || true
    fi
  done
}
if docker image inspect "$REF" >/dev/null 2>&1; then
  log "$REF already exists; nothing to do"
  docker tag "$REF" "$IMAGE:latest" >&2 || true
  prune_old
  echo "$REF"
  exit 0
fi

# 3. Root filesystem tar with exact owners and modes, then a FROM-scratch build.
python3 - "$CTX/rootfs.tar" "$CTX/nexus" "${LIBS[@]}" <<'PY'
import io, os, sys, tarfile

out, binary, libs = sys.argv[1], sys.argv[2], sys.argv[3:]
GATE_UID = 1000

def entry(path, kind=tarfile.REGTYPE, mode=0o755, uid=0, size=0):
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.size = kind, mode, uid, uid, 0, size
    return ti

with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
    for d in ["/etc", "/usr", "/usr/local", "/usr/local/bin", "/lib", "/lib64",
              "/lib/x86_64-linux-gnu", "/run"]:
        tar.addfile(entry(d, tarfile.DIRTYPE))
    tar.addfile(entry("/tmp", tarfile.DIRTYPE, 0o1777))
    tar.addfile(entry("/run/nexus", tarfile.DIRTYPE, 0o700, GATE_UID))
    def add(path, data, mode):
        tar.addfile(entry(path, mode=mode, size=len(data)), io.BytesIO(data))
    with open(binary, "rb") as f:
        add("/usr/local/bin/nexus", f.read(), 0o755)
    for lib in dict.fromkeys(libs):
        with open(os.path.realpath(lib), "rb") as f:
            add(lib, f.read(), 0o755)
    add("/etc/passwd", b"root:x:0:0:root:/:/nonexistent\n"
        b"nexus:x:1000:1000:nexus gate:/run/nexus:/nonexistent\n"
        b"nobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n", 0o644)
    add("/etc/group", b"root:x:0:\nnexus:x:1000:\nnogroup:x:65534:\n", 0o644)
PY
cat > "$CTX/Dockerfile" <<'EOF'
# nexus gate: the per-host forwarder to node sockets (src/gate/). Built by
# scripts/build-gate-image.sh from the nexus binary and its libraries only.
FROM scratch
ADD rootfs.tar /
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/nexus", "gate"]
EOF
log "docker build $REF"
docker build --quiet --label "org.nexus.gate-image.profile=$PROFILE" \
  -t "$REF" -t "$IMAGE:latest" "$CTX" >&2
log "built $REF ($(docker image inspect -f '{{.Size}}' "$REF") bytes)"
prune_old
echo "$REF"
