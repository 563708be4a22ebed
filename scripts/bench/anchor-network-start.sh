#!/usr/bin/env bash
# The benchmark's anchor for "network start": a private network brought up by hand with the
# docker CLI, the way the compose recipes and the Go original do it — one node after the other:
# create the container, start it, wait until it answers, then `ipfs bootstrap add` and
# `ipfs swarm connect` the nodes started before it. Same image and resources as nexus's run.
#
#   anchor-network-start.sh up   <prefix> <nodes> <image> <cpus> <memory-bytes>
#   anchor-network-start.sh down <prefix> <nodes>
#
# The nodes' RPC APIs are driven with curl on their published ports (what `ipfs --api` does).
# `up` returns when every node is up and connected; it prints each node's published RPC API
# port (127.0.0.1), one per line, so the caller can check the mesh the same way for both.
set -euo pipefail

cmd=$1 prefix=$2 nodes=$3

down() {
  local i
  for i in $(seq 0 $((nodes - 1))); do
    docker rm -f -v "$prefix-$i" >/dev/null 2>&1 || true
  done
  docker network rm "$prefix" >/dev/null 2>&1 || true
}

if [ "$cmd" = down ]; then down; exit 0; fi

image=$4 cpus=$5 memory=$6
workdir=$(mktemp -d /tmp/nexus-anchor.XXXXXX)
trap 'rm -rf "$workdir"' EXIT

# A fresh swarm key, and the settings a private node needs on kubo >= 0.37 (the same keys the
# private-network guides list: no AutoConf, no public bootstrap, TCP only, no relays, no MDNS).
printf '/key/swarm/psk/1.0.0/\n/base16/\n%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  >"$workdir/swarm.key"
cat >"$workdir/001-private.sh" <<'EOF'
#!/bin/sh
set -e
ipfs config --json Bootstrap '[]'
ipfs config --json AutoConf.Enabled false
ipfs config --json AutoTLS.Enabled false
ipfs config --json Routing.Type '"dht"'
ipfs config --json Routing.DelegatedRouters '[]'
ipfs config --json Ipns.DelegatedPublishers '[]'
ipfs config --json DNS.Resolvers '{}'
ipfs config --json Discovery.MDNS.Enabled false
ipfs config --json Addresses.Swarm '["/ip4/0.0.0.0/tcp/4001"]'
ipfs config --json Swarm.Transports.Network.QUIC false
ipfs config --json Swarm.Transports.Network.WebTransport false
ipfs config --json Swarm.Transports.Network.WebRTCDirect false
ipfs config --json Swarm.Transports.Network.Websocket false
ipfs config --json Swarm.RelayClient.Enabled false
ipfs config --json Swarm.RelayService.Enabled false
ipfs config --json Swarm.EnableHolePunching false
EOF
chmod 0555 "$workdir/001-private.sh"
chmod 0444 "$workdir/swarm.key"

docker network create "$prefix" >/dev/null
addrs=()
ports=()
for i in $(seq 0 $((nodes - 1))); do
  name="$prefix-$i"
  docker run -d --name "$name" --network "$prefix" \
    --cpus "$cpus" --memory "$memory" --memory-swap "$memory" \
    -e LIBP2P_FORCE_PNET=1 -e IPFS_SWARM_KEY_FILE=/run/swarm.key \
    -v "$workdir/swarm.key:/run/swarm.key:ro" \
    -v "$workdir/001-private.sh:/container-init.d/001-private.sh:ro" \
    -p 127.0.0.1::5001 \
    "$image" daemon --migrate=true --enable-gc >/dev/null
  port=$(docker port "$name" 5001/tcp | head -n 1 | sed 's/.*://')
  api="http://127.0.0.1:$port/api/v0"
  # Wait until the daemon answers.
  id=""
  for _ in $(seq 1 600); do
    id=$(curl -fsS -X POST "$api/id" 2>/dev/null | sed -n 's/.*"ID": *"\([^"]*\)".*/\1/p') || true
    [ -n "$id" ] && break
    sleep 0.1
  done
  [ -n "$id" ] || { echo "node $name did not come up" >&2; docker logs "$name" >&2; exit 1; }
  # Tell it about the nodes started before it, and connect.
  for a in "${addrs[@]}"; do
    curl -fsS -X POST "$api/bootstrap/add?arg=$a" >/dev/null
    curl -fsS -X POST "$api/swarm/connect?arg=$a" >/dev/null
  done
  addrs+=("/dns4/$name/tcp/4001/p2p/$id")
  ports+=("$port")
done
printf '%s\n' "${ports[@]}"
