"""`scripts/bench/run pins` (issue 16): the replicated pinset under load.

1,000 small pins through the gRPC API (`AddPin`, by `benches/pin_load.rs`) on a 3-node
network with replication 2: accepted per second, and the time until all are `pinned` (on two
nodes, each node's own `pin/ls`). Then one node and its volume are lost (`docker rm -f`, volume
removed): the time until every pin is held on two nodes again, with no call to nexus. The
anchor, in the same run on the same network: what a user does without nexus, a script that
`pin/add`s every CID on a second node (1,000 other small blocks added to a surviving node, one
call after the other).
The content is added unpinned on node 0 first (`add?pin=false`, 100 files per call), so every
copy elsewhere is fetched from a peer, as a replica would be. Imported by bench.py.
"""

import json
import os
import secrets
import subprocess
import tempfile
import time

from bench import Daemon, http_post, log, md_table, node_socket

GOALS = {"accepted_per_s": 500, "rereplicate_s": 30}


def add_unpinned(sock, n, tag):
    """n small distinct files added on one node without pinning; their CIDs."""
    cids = []
    for start in range(0, n, 100):
        boundary = "nexus-bench-" + secrets.token_hex(4)
        parts = []
        for i in range(start, min(n, start + 100)):
            data = f"{tag} {i} {secrets.token_hex(16)}\n".encode() * 16
            parts.append(
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"f{i}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
                + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        out = http_post(sock, "/api/v0/add?pin=false", body,
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=60)
        for line in out.decode().splitlines():
            if line.strip():
                cids.append(json.loads(line)["Hash"])
    return cids


def node_pins(d, net, i):
    """The CIDs node i pins recursively, or None when it does not answer."""
    try:
        out = http_post(node_socket(d.data_dir, f"nexus-{net}-{i}"),
                        "/api/v0/pin/ls?type=recursive", timeout=10)
        return set((json.loads(out) or {}).get("Keys") or {})
    except Exception:
        return None


def copies(d, net, cids, last):
    """How many of `cids` are held on at least two nodes (a node that does not answer keeps
    its last answer in `last`)."""
    for i in range(3):
        seen = node_pins(d, net, i)
        if seen is not None:
            last[i] = seen
    return sum(1 for c in cids if sum(1 for s in last.values() if c in s) >= 2)


def wait_copies(d, net, cids, limit):
    """Seconds until every CID is on two nodes (their own pin/ls), or None after `limit`."""
    start = time.monotonic()
    last = {}
    while time.monotonic() - start < limit:
        if copies(d, net, cids, last) == len(cids):
            return time.monotonic() - start
        time.sleep(0.25)
    return None


def bench_pins(a):
    n = a.pins
    d = Daemon(a.nexus, a.image,
               extra_node='cpus = "1"\nmemory = "512MiB"\ndisk = "2GiB"',
               ports={"swarm": "27400-27419", "grpc": 27420, "delegator": 27421}, log_level="info")
    raw = {"pins": n}
    try:
        net = "pinbench"
        d.cli("network", "create", net, "--replicas", "3", "--replication", "2", "--start")
        sock0 = node_socket(d.data_dir, f"nexus-{net}-0")
        cids = add_unpinned(sock0, n, "nexus")
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".cids") as f:
            f.write("\n".join(cids))
            cid_file = f.name

        # 1. Accepted per second through the API, then until all are pinned on two nodes.
        t0 = time.monotonic()
        load = subprocess.run([a.pin_load, "--address", f"http://127.0.0.1:{d.grpc}",
                               "--key", d.key, "--network", net, "--cids", cid_file,
                               "--concurrency", "16"], capture_output=True, text=True)
        os.unlink(cid_file)
        if load.returncode != 0:
            raise RuntimeError(f"pin_load: {load.stderr.strip()}")
        accepted = json.loads(load.stdout)
        raw["accepted_secs"] = accepted["secs"]
        raw["accepted_per_s"] = accepted["per_s"]
        log(f"{n} pins accepted in {accepted['secs']:.2f} s")
        status_pinned = None
        while time.monotonic() - t0 < 600:
            r = json.loads(d.cli("pin", "ls", net, "--status", "pinned", "--limit", "1").stdout)
            if int(r.get("count", 0)) == n:
                status_pinned = time.monotonic() - t0
                break
            time.sleep(0.5)
        raw["all_pinned_secs"] = status_pinned
        on_two = wait_copies(d, net, cids, 600)
        raw["all_on_two_nodes_secs"] = None if on_two is None else time.monotonic() - t0
        log(f"all pinned after {status_pinned} s")

        # 2. A node and its volume lost: until every pin is on two nodes again.
        last = {}
        copies(d, net, cids, last)
        lost = max(range(3), key=lambda i: len(set(cids) & last.get(i, set())))
        raw["lost_node_held"] = len(set(cids) & last.get(lost, set()))
        t1 = time.monotonic()
        subprocess.run(["docker", "rm", "-f", f"nexus-{net}-{lost}"], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", f"nexus-{net}-{lost}-data"],
                       capture_output=True)
        # Count from the loss: wait until copies are seen missing, then whole again.
        back = None
        seen_short = False
        last = {i: s for i, s in last.items() if i != lost}
        while time.monotonic() - t1 < 600:
            held = copies(d, net, cids, last)
            if held < n:
                seen_short = True
            elif seen_short:
                back = time.monotonic() - t1
                break
            time.sleep(0.25)
        raw["rereplicate_secs"] = back
        log(f"re-replicated {raw['lost_node_held']} pins of node {lost} after {back} s")
        g = json.loads(d.cli("network", "get", net).stdout)
        raw["under_replicated_pins_after"] = g.get("under_replicated_pins")

        # 3. The anchor: a script pin/adds every CID on a second node, one after the other.
        # Its content is on one surviving node only; the script pins it on another.
        src, dst = (lost + 1) % 3, (lost + 2) % 3
        other = add_unpinned(node_socket(d.data_dir, f"nexus-{net}-{src}"), n, "anchor")
        sock_dst = node_socket(d.data_dir, f"nexus-{net}-{dst}")
        t2 = time.monotonic()
        for c in other:
            http_post(sock_dst, f"/api/v0/pin/add?arg={c}", timeout=60)
        raw["anchor_secs"] = time.monotonic() - t2
        log(f"anchor: {n} pin/add on a second node in {raw['anchor_secs']:.2f} s")
    finally:
        d.stop()

    def secs(v):
        return "did not finish" if v is None else f"{v:.1f} s"
    rows = [
        [f"{n:,} pins accepted through the API (`AddPin`, 16 in flight)",
         f"{raw['accepted_per_s']:.0f} pins/s ({raw['accepted_secs']:.2f} s)",
         f"≥ {GOALS['accepted_per_s']} pins/s"],
        ["Until all are `pinned` (from the first call)", secs(raw["all_pinned_secs"]), "–"],
        ["Until all are on two nodes (each node's `pin/ls`)", secs(raw["all_on_two_nodes_secs"]), "–"],
        [f"Re-replication after a node and its volume are lost ({raw['lost_node_held']:,} copies)",
         secs(raw["rereplicate_secs"]), f"< {GOALS['rereplicate_s']} s"],
        [f"Anchor: a script `pin/add`s {n:,} CIDs on a second node, one after the other",
         secs(raw["anchor_secs"]), "–"],
    ]
    return raw, md_table(["What", "Measured", "Target"], rows)
