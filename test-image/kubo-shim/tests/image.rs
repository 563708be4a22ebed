//! Owns the test image's integration tests: real Docker (the `docker` CLI), the built image
//! (`NEXUS_TEST_IMAGE`, from scripts/build-test-image.sh) and real libkubo nodes talking over a
//! user-defined Docker network. Every test cleans up its containers/networks via a Drop guard.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn image() -> String {
    std::env::var("NEXUS_TEST_IMAGE").unwrap_or_else(|_| {
        panic!(
            "NEXUS_TEST_IMAGE is not set: build the image first with \
             `NEXUS_TEST_IMAGE=$(scripts/build-test-image.sh | tail -1) cargo test -p kubo-shim`"
        )
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!(
        "{prefix}-{:x}{:x}{n}",
        (nanos as u64) & 0xffff_ffff,
        std::process::id()
    )
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("cannot run the docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes everything a test created, even when the test panics.
#[derive(Default)]
struct Guard {
    containers: Vec<String>,
    networks: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Guard {
    fn network(&mut self) -> String {
        let name = unique("kshim-net");
        docker_ok(&["network", "create", &name]);
        self.networks.push(name.clone());
        name
    }

    fn tempdir(&mut self) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(unique("kshim-test"));
        std::fs::create_dir_all(&d).expect("create temp dir");
        self.dirs.push(d.clone());
        d
    }

    /// `docker create` a node (API and gateway published on 127.0.0.1) without starting it.
    fn create(&mut self, network: &str, env: &[&str]) -> String {
        let name = unique("kshim-node");
        let mut args = vec![
            "create",
            "--name",
            &name,
            "--network",
            network,
            "-p",
            "127.0.0.1::5001",
            "-p",
            "127.0.0.1::8080",
        ];
        for e in env {
            args.push("-e");
            args.push(e);
        }
        let img = image();
        args.push(&img);
        docker_ok(&args);
        self.containers.push(name.clone());
        name
    }
}

/// Copy a host file into a (created) container with the given mode.
fn copy_in(dir: &std::path::Path, container: &str, dest: &str, content: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let local = dir.join(unique("f"));
    std::fs::write(&local, content).expect("write temp file");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(mode)).expect("chmod");
    docker_ok(&[
        "cp",
        local.to_str().expect("utf-8 path"),
        &format!("{container}:{dest}"),
    ]);
}

fn logs(container: &str) -> String {
    let out = docker(&["logs", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn running(container: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", container])
        .stdout
        .starts_with(b"true")
}

/// Wait for `Daemon is ready`; returns the time it took.
fn wait_ready(container: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if logs(container).contains("Daemon is ready") {
            return start.elapsed();
        }
        if !running(container) && start.elapsed() > Duration::from_secs(2) {
            panic!(
                "{container} exited before becoming ready:\n{}",
                logs(container)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{container} not ready in 60 s:\n{}", logs(container));
}

fn host_port(container: &str, port: &str) -> String {
    let out = docker_ok(&["port", container, port]);
    out.lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no 127.0.0.1 mapping for {container}:{port}: {out}"))
        .to_string()
}

struct Resp {
    status: u16,
    /// The status line and headers, lowercased.
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "invalid JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A minimal HTTP/1.1 client (Connection: close).
fn http(method: &str, addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("set timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut body = buf[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..nl])
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )
            .expect("chunk size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = out;
    }
    Resp { status, head, body }
}

fn rpc(api: &str, cmd: &str) -> Resp {
    http("POST", api, &format!("/api/v0/{cmd}"), &[], b"")
}

fn add(api: &str, name: &str, data: &[u8]) -> serde_json::Value {
    let boundary = "kshimboundary7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = http(
        "POST",
        api,
        "/api/v0/add",
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(r.status, 200, "add failed: {}", r.text());
    let line = r.text();
    serde_json::from_str(line.lines().next().expect("one NDJSON line")).expect("add JSON")
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
    let mut b = vec![0u8; n];
    f.read_exact(&mut b).expect("read urandom");
    b
}

fn swarm_key() -> String {
    let hex: String = random_bytes(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
}

fn identity() -> (String, String) {
    use base64::Engine;
    let kp = libp2p_identity::Keypair::generate_ed25519();
    let id = kp.public().to_peer_id().to_base58();
    let key = base64::engine::general_purpose::STANDARD
        .encode(kp.to_protobuf_encoding().expect("encode key"));
    (id, key)
}

/// A /container-init.d script with pnet-safe settings, a pre-generated identity written with
/// sed (as nexus does: kubo refuses PrivKey through `ipfs config`), and a bootstrap peer.
fn init_script(id: &(String, String), bootstrap: &str) -> String {
    format!(
        r#"#!/bin/sh
set -e
ipfs config --json AutoConf.Enabled false
ipfs config --json Addresses.Swarm '["/ip4/0.0.0.0/tcp/4001"]'
ipfs config --json Discovery.MDNS.Enabled false
ipfs config --json Bootstrap '{bootstrap}'
sed -i -e 's|"PeerID": "[^"]*"|"PeerID": "{pid}"|' -e 's|"PrivKey": "[^"]*"|"PrivKey": "{key}"|' "$IPFS_PATH/config"
"#,
        pid = id.0,
        key = id.1,
    )
}

fn peers_of(api: &str) -> Vec<String> {
    let r = rpc(api, "swarm/peers");
    assert_eq!(r.status, 200, "swarm/peers: {}", r.text());
    let v = r.json();
    v["Peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["Peer"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn fingerprint(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix("Swarm key fingerprint: "))
        .map(str::to_string)
}

#[test]
fn same_key_nodes_mesh_via_dns_bootstrap_and_exchange_content() {
    let mut g = Guard::default();
    let dir = g.tempdir();
    let net = g.network();
    let key = swarm_key();
    let env = ["IPFS_SWARM_KEY_FILE=/run/swarm.key"];
    let a = g.create(&net, &env);
    let b = g.create(&net, &env);
    let (ida, idb) = (identity(), identity());
    for (me, my_id, other, other_id) in [(&a, &ida, &b, &idb), (&b, &idb, &a, &ida)] {
        copy_in(&dir, me, "/run/swarm.key", &key, 0o644);
        let boot = format!("[\"/dns4/{other}/tcp/4001/p2p/{}\"]", other_id.0);
        copy_in(
            &dir,
            me,
            "/container-init.d/10-nexus.sh",
            &init_script(my_id, &boot),
            0o755,
        );
    }
    let t0 = Instant::now();
    docker_ok(&["start", &a, &b]);
    wait_ready(&a);
    wait_ready(&b);
    let (api_a, api_b) = (host_port(&a, "5001"), host_port(&b, "5001"));

    // The pre-generated identities are in use.
    assert_eq!(rpc(&api_a, "id").json()["ID"], ida.0);
    assert_eq!(rpc(&api_b, "id").json()["ID"], idb.0);

    // Both print the same key fingerprint.
    let (la, lb) = (logs(&a), logs(&b));
    assert!(la.contains("Swarm is limited to private network of peers with the swarm key"));
    assert_eq!(fingerprint(&la), fingerprint(&lb));
    assert!(fingerprint(&la).is_some_and(|f| f.len() == 32));

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (pa, pb) = (peers_of(&api_a), peers_of(&api_b));
        if pa.contains(&idb.0) && pb.contains(&ida.0) {
            eprintln!("mesh after {:?} from docker start", t0.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no mesh in 90 s: a={pa:?} b={pb:?}\n{}\n{}",
            logs(&a),
            logs(&b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let data = random_bytes(300_000); // two 256 KiB chunks
    let added = add(&api_a, "blob.bin", &data);
    let cid = added["Hash"].as_str().expect("Hash").to_string();
    assert_eq!(added["Name"], "blob.bin");
    assert!(cid.starts_with("Qm"), "{added}");
    let t = Instant::now();
    let got = rpc(&api_b, &format!("cat?arg={cid}"));
    assert_eq!(got.status, 200, "cat on b: {}", got.text());
    assert_eq!(got.body, data, "cat on b returned other bytes");
    eprintln!("cat of 300 kB across nodes took {:?}", t.elapsed());
    // And the other direction.
    let back = random_bytes(5000);
    let cid_b = add(&api_b, "back.bin", &back)["Hash"]
        .as_str()
        .expect("Hash")
        .to_string();
    let got = rpc(&api_a, &format!("cat?arg={cid_b}"));
    assert_eq!(got.status, 200, "cat on a: {}", got.text());
    assert_eq!(got.body, back);

    let gw_b = host_port(&b, "8080");
    let r = http("GET", &gw_b, &format!("/ipfs/{cid}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data, "gateway on b returned other bytes");
}

#[test]
fn node_with_other_key_gets_no_peers() {
    let mut g = Guard::default();
    let dir = g.tempdir();
    let net = g.network();
    let env = ["IPFS_SWARM_KEY_FILE=/run/swarm.key"];
    let x = g.create(&net, &env);
    let y = g.create(&net, &env);
    let (idx, idy) = (identity(), identity());
    copy_in(&dir, &x, "/run/swarm.key", &swarm_key(), 0o644);
    copy_in(&dir, &y, "/run/swarm.key", &swarm_key(), 0o644);
    copy_in(
        &dir,
        &x,
        "/container-init.d/10-nexus.sh",
        &init_script(&idx, "[]"),
        0o755,
    );
    let boot = format!("[\"/dns4/{x}/tcp/4001/p2p/{}\"]", idx.0);
    copy_in(
        &dir,
        &y,
        "/container-init.d/10-nexus.sh",
        &init_script(&idy, &boot),
        0o755,
    );
    docker_ok(&["start", &x]);
    wait_ready(&x);
    docker_ok(&["start", &y]);
    wait_ready(&y);
    let (api_x, api_y) = (host_port(&x, "5001"), host_port(&y, "5001"));
    assert_ne!(fingerprint(&logs(&x)), fingerprint(&logs(&y)));

    let ip_x = docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &x,
    ]);
    let r = rpc(
        &api_y,
        &format!("swarm/connect?arg=/ip4/{ip_x}/tcp/4001/p2p/{}", idx.0),
    );
    assert_eq!(r.status, 500, "connect across keys must fail: {}", r.text());
    let err = r.json();
    assert_eq!(err["Type"], "error");
    assert!(err["Message"]
        .as_str()
        .is_some_and(|m| m.starts_with(&format!("connect {} failure", idx.0))));

    std::thread::sleep(Duration::from_secs(3));
    assert!(peers_of(&api_x).is_empty(), "x has peers");
    assert!(peers_of(&api_y).is_empty(), "y has peers");
    // kubo's shape with zero connections: a null list.
    assert_eq!(
        rpc(&api_x, "swarm/peers").json(),
        serde_json::json!({"Peers": null})
    );
}

#[test]
fn rpc_rejects_get_and_foreign_origin_and_answers_like_kubo() {
    let mut g = Guard::default();
    let net = g.network();
    let n = g.create(&net, &["KUBO_SHIM_FETCH_TIMEOUT=2"]);
    docker_ok(&["start", &n]);
    wait_ready(&n);
    let api = host_port(&n, "5001");

    assert_eq!(http("GET", &api, "/api/v0/id", &[], b"").status, 405);
    let r = http(
        "POST",
        &api,
        "/api/v0/id",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.status, 403);

    let id = rpc(&api, "id").json();
    assert!(id["ID"].as_str().is_some_and(|s| s.starts_with("12D3KooW")));
    assert!(id["PublicKey"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(id["AgentVersion"]
        .as_str()
        .is_some_and(|s| s.ends_with("/docker")));

    let bad = rpc(&api, "cat?arg=not-a-cid");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["Code"], 1);
    assert_eq!(bad.json()["Type"], "error");

    let gw = host_port(&n, "8080");
    assert_eq!(http("GET", &gw, "/ipfs/not-a-cid", &[], b"").status, 400);
    // A well-formed CID nobody has: the gateway gives up with 504.
    let mut mh = vec![0x12, 0x20];
    mh.extend(random_bytes(32));
    let missing = libp2p_identity::PeerId::from_bytes(&mh)
        .expect("sha256 multihash")
        .to_base58();
    assert!(missing.starts_with("Qm"));
    let t = Instant::now();
    let r = http("GET", &gw, &format!("/ipfs/{missing}"), &[], b"");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(10));
    let added = add(&api, "hello.txt", b"hello world\n");
    assert_eq!(
        added,
        serde_json::json!({"Name": "hello.txt", "Hash": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "Size": "20"})
    );
    let r = http(
        "HEAD",
        &gw,
        "/ipfs/QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // The image's HEALTHCHECK command.
    let out = docker(&[
        "exec",
        &n,
        "ipfs",
        "--api=/ip4/127.0.0.1/tcp/5001",
        "diag",
        "healthy",
    ]);
    assert!(
        out.status.success(),
        "healthcheck failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stat = rpc(&api, "repo/stat").json();
    assert_eq!(stat["StorageMax"], 10_000_000_000u64);
    assert_eq!(stat["RepoPath"], "/data/ipfs");
    // size-only: kubo reports RepoSize and StorageMax, the rest as zero values.
    let small = rpc(&api, "repo/stat?size-only=true").json();
    assert_eq!(small["StorageMax"], 10_000_000_000u64);
    assert!(small["RepoSize"].as_u64().unwrap() > 0);
    assert_eq!(small["NumObjects"], 0);
    assert_eq!(small["RepoPath"], "");
    assert_eq!(small["Version"], "");

    // Config over RPC hides nothing but the private key.
    let shown = rpc(&api, "config/show").json();
    assert!(shown["Identity"]["PeerID"].is_string());
    assert!(shown["Identity"].get("PrivKey").is_none());
    assert_eq!(
        rpc(&api, "config?arg=Addresses.API").json()["Value"],
        "/ip4/0.0.0.0/tcp/5001"
    );
    assert_eq!(
        rpc(&api, "config?arg=Identity.PrivKey&arg=x").status,
        500,
        "setting PrivKey over RPC must fail"
    );
}

/// The value of an unlabelled sample on a Prometheus text page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no sample {name} in\n{page}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}\n{page}"))
}

#[test]
fn metrics_page_reports_the_daemon_process_like_kubo() {
    let mut g = Guard::default();
    let net = g.network();
    let n = g.create(&net, &[]);
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64()
    };
    let before = unix_now();
    docker_ok(&["start", &n]);
    wait_ready(&n);
    let ready = unix_now();
    let api = host_port(&n, "5001");

    // Any method, outside the commands' Origin check, in the text format 0.0.4.
    let get = http("GET", &api, "/debug/metrics/prometheus", &[], b"");
    assert_eq!(get.status, 200, "{}", get.text());
    assert!(
        get.head
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        get.head
    );
    let post = http(
        "POST",
        &api,
        "/debug/metrics/prometheus",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(post.status, 200, "{}", post.text());
    let page = get.text();
    for l in page.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(l.ends_with(" gauge") || l.ends_with(" counter"), "{l}");
    }
    assert!(
        page.contains("# TYPE process_cpu_seconds_total counter")
            && page.contains("# TYPE process_resident_memory_bytes gauge")
            && page.contains("# TYPE process_start_time_seconds gauge"),
        "{page}"
    );

    // The daemon's own process: started by this `docker start` (btime is whole seconds),
    // resident in tens of MB (libkubo is most of it), and it has used CPU starting libkubo.
    let start = sample(&page, "process_start_time_seconds");
    assert!(
        start >= before - 2.0 && start <= ready + 1.0,
        "start {start} not between {before} and {ready}"
    );
    let rss = sample(&page, "process_resident_memory_bytes");
    assert!((5e6..2e9).contains(&rss), "resident {rss}");
    assert!(sample(&page, "process_virtual_memory_bytes") >= rss);
    let cpu = sample(&page, "process_cpu_seconds_total");
    assert!(cpu > 0.0, "cpu {cpu}");
    assert!(sample(&page, "process_open_fds") > 0.0);

    // Live figures: adding content costs CPU, the start time stays.
    add(&api, "load.bin", &random_bytes(4 << 20));
    let later = http("GET", &api, "/debug/metrics/prometheus", &[], b"").text();
    assert!(
        sample(&later, "process_cpu_seconds_total") > cpu,
        "CPU did not move:\n{later}"
    );
    assert!((sample(&later, "process_start_time_seconds") - start).abs() <= 1.0);
    let rx = sample(&later, "process_network_receive_bytes_total");
    assert!(
        rx > 4e6,
        "4 MiB were sent to the node over its network: {rx}"
    );
    println!(
        "metrics: start {:.2} s after `docker start`, resident {:.1} MiB, cpu {cpu:.2} s",
        start - before,
        rss / 1048576.0
    );
}

#[test]
fn autoconf_with_swarm_key_is_fatal() {
    let mut g = Guard::default();
    let net = g.network();
    let key = swarm_key();
    let env_key = format!("IPFS_SWARM_KEY={}", key.trim_end());
    let n = g.create(&net, &[env_key.as_str()]);
    docker_ok(&["start", &n]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(&n) {
        assert!(
            Instant::now() < deadline,
            "node with AutoConf + swarm key kept running:\n{}",
            logs(&n)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &n]);
    assert_ne!(code, "0", "must exit non-zero:\n{}", logs(&n));
    let l = logs(&n);
    assert!(
        l.contains("Error: AutoConf cannot use the default mainnet URL"),
        "{l}"
    );
    assert!(l.contains("Copying swarm key from variable..."), "{l}");
}

#[test]
fn stop_is_fast_and_restart_keeps_identity_and_data() {
    let mut g = Guard::default();
    let net = g.network();
    let n = g.create(&net, &[]);
    docker_ok(&["start", &n]);
    wait_ready(&n);
    let api = host_port(&n, "5001");
    let id = rpc(&api, "id").json()["ID"].clone();
    let data = random_bytes(1000);
    let cid = add(&api, "keep.bin", &data)["Hash"]
        .as_str()
        .expect("Hash")
        .to_string();

    let t = Instant::now();
    docker_ok(&["stop", &n]);
    let took = t.elapsed();
    eprintln!("docker stop took {took:?}");
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &n]),
        "0",
        "{}",
        logs(&n)
    );

    let t = Instant::now();
    docker_ok(&["start", &n]);
    // Wait for the second "Daemon is ready".
    while logs(&n).matches("Daemon is ready").count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", logs(&n));
        assert!(
            running(&n) || t.elapsed() < Duration::from_secs(2),
            "{}",
            logs(&n)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("docker start → Daemon is ready: {:?}", t.elapsed());
    let l = logs(&n);
    assert!(l.contains("Found IPFS fs-repo at /data/ipfs"), "{l}");
    let api = host_port(&n, "5001");
    assert_eq!(rpc(&api, "id").json()["ID"], id);
    let got = rpc(&api, &format!("cat?arg={cid}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    let pins = rpc(&api, "pin/ls").json();
    assert!(pins["Keys"].get(&cid).is_some(), "{pins}");
}

#[test]
fn peering_peers_alone_connects_nodes() {
    let mut g = Guard::default();
    let dir = g.tempdir();
    let net = g.network();
    let key = swarm_key();
    let env = ["IPFS_SWARM_KEY_FILE=/run/swarm.key"];
    let a = g.create(&net, &env);
    let b = g.create(&net, &env);
    let (ida, idb) = (identity(), identity());
    copy_in(&dir, &a, "/run/swarm.key", &key, 0o644);
    copy_in(&dir, &b, "/run/swarm.key", &key, 0o644);
    copy_in(
        &dir,
        &a,
        "/container-init.d/10-nexus.sh",
        &init_script(&ida, "[]"),
        0o755,
    );
    // b: no Bootstrap, only Peering.Peers naming a by DNS name.
    let peering = format!(
        "{}ipfs config --json Peering.Peers '[{{\"ID\": \"{}\", \"Addrs\": [\"/dns4/{a}/tcp/4001\"]}}]'\n",
        init_script(&idb, "[]"),
        ida.0
    );
    copy_in(&dir, &b, "/container-init.d/10-nexus.sh", &peering, 0o755);
    docker_ok(&["start", &a]);
    wait_ready(&a);
    let t0 = Instant::now();
    docker_ok(&["start", &b]);
    wait_ready(&b);
    let api_b = host_port(&b, "5001");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !peers_of(&api_b).contains(&ida.0) {
        assert!(
            Instant::now() < deadline,
            "Peering.Peers did not connect in 60 s:\n{}",
            logs(&b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "Peering.Peers connected {:?} after docker start",
        t0.elapsed()
    );
}

/// Upload `dir`'s contents to `/` of a created container as a tar whose entries are owned by
/// `uid:gid` (`docker cp -a` keeps the tar's owners, like Docker's archive API).
fn upload_owned(dir: &std::path::Path, container: &str, uid: u32, gid: u32) {
    let tar = Command::new("tar")
        .args([
            "-C",
            dir.to_str().expect("utf-8 path"),
            &format!("--owner={uid}"),
            &format!("--group={gid}"),
            "--numeric-owner",
            "-cf",
            "-",
            ".",
        ])
        .output()
        .expect("run tar");
    assert!(tar.status.success(), "tar failed");
    let mut child = Command::new("docker")
        .args(["cp", "-a", "-", &format!("{container}:/")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("docker cp");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&tar.stdout)
        .expect("write tar");
    assert!(
        child.wait().expect("docker cp").success(),
        "docker cp -a failed"
    );
}

#[test]
fn nexus_style_provisioning_with_force_pnet() {
    use std::os::unix::fs::PermissionsExt;
    let mut g = Guard::default();
    let net = g.network();
    let id = identity();
    let env = [
        "LIBP2P_FORCE_PNET=1",
        "IPFS_SWARM_KEY_FILE=/nexus/swarm.key",
        "GOMEMLIMIT=200MiB",
    ];
    let n = g.create(&net, &env);
    // Files owned by uid 1000 with mode 0400 in a 0500 directory, as nexus uploads them.
    let owned = g.tempdir();
    let nexus = owned.join("nexus");
    std::fs::create_dir(&nexus).expect("mkdir");
    std::fs::write(nexus.join("swarm.key"), swarm_key()).expect("write key");
    std::fs::write(
        nexus.join("identity.sed"),
        format!(
            "s|\"PeerID\": \"[^\"]*\"|\"PeerID\": \"{}\"|\ns|\"PrivKey\": \"[^\"]*\"|\"PrivKey\": \"{}\"|\n",
            id.0, id.1
        ),
    )
    .expect("write sed");
    for f in ["swarm.key", "identity.sed"] {
        std::fs::set_permissions(nexus.join(f), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
    }
    std::fs::set_permissions(&nexus, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    upload_owned(&owned, &n, 1000, 100);
    std::fs::set_permissions(&nexus, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    let root_owned = g.tempdir();
    let initd = root_owned.join("container-init.d");
    std::fs::create_dir(&initd).expect("mkdir");
    let script = format!(
        r#"#!/bin/sh
set -e
rm -f "$IPFS_PATH/swarm.key"
cat /nexus/swarm.key > "$IPFS_PATH/swarm.key"
chmod 0400 "$IPFS_PATH/swarm.key"
sed -i -f /nexus/identity.sed "$IPFS_PATH/config"
grep -q '"PeerID": "{pid}"' "$IPFS_PATH/config"
ipfs config --json AutoConf.Enabled false
ipfs config --json AutoTLS.Enabled false
ipfs config --json Bootstrap '[]'
ipfs config --json Routing.Type '"dht"'
ipfs config --json DNS.Resolvers '{{}}'
ipfs config --json Addresses.Swarm '["/ip4/0.0.0.0/tcp/4001"]'
ipfs config --json Swarm.Transports.Network.QUIC false
ipfs config --json Swarm.Transports.Network.Websocket false
ipfs config --json Swarm.ResourceMgr.MaxMemory '"128MB"'
ipfs config --json Datastore.StorageMax '"1GB"'
du -s "$IPFS_PATH" >/dev/null
stat "$IPFS_PATH/config" >/dev/null
"#,
        pid = id.0
    );
    std::fs::write(initd.join("00-nexus.sh"), script).expect("write script");
    std::fs::set_permissions(
        initd.join("00-nexus.sh"),
        std::fs::Permissions::from_mode(0o555),
    )
    .expect("chmod");
    upload_owned(&root_owned, &n, 0, 0);

    docker_ok(&["start", &n]);
    wait_ready(&n);
    let l = logs(&n);
    assert!(
        l.contains("Executing '/container-init.d/00-nexus.sh'..."),
        "{l}"
    );
    assert!(l.contains("Swarm is limited to private network"), "{l}");
    let api = host_port(&n, "5001");
    assert_eq!(rpc(&api, "id").json()["ID"], id.0);
    assert_eq!(
        rpc(&api, "repo/stat").json()["StorageMax"],
        1_000_000_000u64
    );
    let cfg = rpc(&api, "config/show").json();
    assert_eq!(cfg["Swarm"]["ResourceMgr"]["MaxMemory"], "128MB");

    // The same provisioning without a key: LIBP2P_FORCE_PNET makes the daemon refuse to start.
    let m = g.create(&net, &["LIBP2P_FORCE_PNET=1"]);
    let script = "#!/bin/sh\nset -e\nipfs config --json AutoConf.Enabled false\nipfs config --json Bootstrap '[]'\n";
    let d = g.tempdir();
    copy_in(&d, &m, "/container-init.d/00-nexus.sh", script, 0o755);
    docker_ok(&["start", &m]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(&m) {
        assert!(Instant::now() < deadline, "{}", logs(&m));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &m]),
        "1"
    );
    assert!(
        logs(&m).contains("private network was not configured but is enforced by the environment")
    );
}

// --- kubo 0.43's own checks (docs/test-image.md, "What the stand-in refuses") ---------------

/// Run a shell script in a fresh container of the image as the `ipfs` user (no entrypoint, no
/// daemon unless the script starts one); (exit code, stdout + stderr).
fn run_sh(g: &mut Guard, env: &[&str], script: &str) -> (i32, String) {
    let name = unique("kshim-sh");
    g.containers.push(name.clone());
    let mut args = vec![
        "run",
        "--name",
        &name,
        "--user",
        "1000:100",
        "--entrypoint",
        "/bin/sh",
    ];
    for e in env {
        args.push("-e");
        args.push(e);
    }
    let img = image();
    args.extend([img.as_str(), "-c", script]);
    let out = docker(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Lines `<tag> rc=<n>` printed by the scripts below.
fn rc_of(out: &str, tag: &str) -> i32 {
    let prefix = format!("{tag} rc=");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
}

#[test]
fn config_refuses_unknown_keys_and_wrong_json_types_like_kubo() {
    let mut g = Guard::default();
    let (code, out) = run_sh(
        &mut g,
        &[],
        r#"ipfs init >/dev/null
ipfs config --json AutoConf.Enable false; echo "misspelled rc=$?"
ipfs config --json autoconf.Enabled false; echo "miscased rc=$?"
ipfs config AutoConf.Enabled false; echo "string-for-flag rc=$?"
ipfs config --json Swarm.ResourceMgr.MaxMemory '"lots"'; echo "bad-bytes rc=$?"
ipfs config --json Datastore.StorageGCWatermark '"90"'; echo "string-for-int rc=$?"
ipfs config --json AutoConf.Enabled false; echo "good rc=$?"
ipfs config --json Swarm.ResourceMgr.MaxMemory '"536870912"'; echo "good-bytes rc=$?"
echo "value=$(ipfs config AutoConf.Enabled)"
"#,
    );
    assert_eq!(code, 0, "{out}");
    for bad in [
        "misspelled",
        "miscased",
        "string-for-flag",
        "bad-bytes",
        "string-for-int",
    ] {
        assert_eq!(rc_of(&out, bad), 1, "{bad} must be refused:\n{out}");
    }
    assert_eq!(rc_of(&out, "good"), 0, "{out}");
    assert_eq!(rc_of(&out, "good-bytes"), 0, "{out}");
    assert!(
        out.contains(
            "Error: failed to set config value: AutoConf.Enable not found (maybe use --json?)"
        ),
        "{out}"
    );
    assert!(
        out.contains("Error: failed to set config value: autoconf not found"),
        "{out}"
    );
    assert!(
        out.contains("into a flag: must be null/undefined, true, or false"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "value=false"), "{out}");
}

#[test]
fn repo_lock_refuses_a_second_daemon_and_local_config_while_the_daemon_runs() {
    let mut g = Guard::default();
    let net = g.network();
    let n = g.create(&net, &[]);
    docker_ok(&["start", &n]);
    wait_ready(&n);
    let exec = |script: &str| -> (i32, String) {
        let out = docker(&["exec", "-u", "1000:100", &n, "/bin/sh", "-c", script]);
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // A second daemon opens the repo itself: refused with go-fs-lock's message.
    let (code, out) = exec("ipfs daemon");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Error: lock /data/ipfs/repo.lock: someone else has the lock"),
        "{out}"
    );
    // With the api file, `ipfs config` goes to the daemon (and is checked there).
    let (code, out) = exec(
        "ipfs config --json Gateway.ExposeRoutingAPI false && ipfs config Gateway.ExposeRoutingAPI",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "false");
    let (code, out) = exec("ipfs config --json Nope.Key 1");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Nope not found"), "{out}");
    // Without it, the CLI opens the repo locally and meets the daemon's lock.
    let (code, out) = exec(
        "mv /data/ipfs/api /tmp/api; ipfs config --json AutoConf.Enabled false; rc=$?; mv /tmp/api /data/ipfs/api; exit $rc",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Error: lock /data/ipfs/repo.lock: someone else has the lock"),
        "{out}"
    );
    assert!(running(&n), "the daemon must survive:\n{}", logs(&n));
    // Once the daemon is gone the lock is free (a stale api file falls back to local).
    docker_ok(&["stop", &n]);
    let out = docker(&[
        "run", "--rm", "--user", "1000:100", "--volumes-from", &n, "--entrypoint", "/bin/sh",
        &image(), "-c", "echo /ip4/127.0.0.1/tcp/5001 > /data/ipfs/api; ipfs config --json AutoConf.Enabled false && echo ok",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn repo_of_another_version_is_refused_unless_the_daemon_migrates() {
    let mut g = Guard::default();
    let (code, out) = run_sh(
        &mut g,
        &[],
        r#"ipfs init >/dev/null
v=$(cat $IPFS_PATH/version)
echo "binary=$v"
echo $((v + 1)) > $IPFS_PATH/version
ipfs config Addresses.API; echo "newer-config rc=$?"
ipfs daemon --migrate=true; echo "newer-daemon rc=$?"
echo $((v - 1)) > $IPFS_PATH/version
ipfs config Addresses.API; echo "older-config rc=$?"
ipfs daemon; echo "older-daemon rc=$?"
ipfs daemon --migrate=true > /tmp/d.log 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q "Daemon is ready" /tmp/d.log && break; sleep 0.1; done
kill $pid; wait $pid
cat /tmp/d.log
echo "after=$(cat $IPFS_PATH/version)"
ipfs config Addresses.API; echo "migrated-config rc=$?"
"#,
    );
    assert_eq!(code, 0, "{out}");
    let v: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("binary="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(rc_of(&out, "newer-config"), 1, "{out}");
    assert_eq!(rc_of(&out, "newer-daemon"), 1, "{out}");
    assert!(
        out.contains(&format!(
            "Error: Your programs version ({v}) is lower than your repos ({}).",
            v + 1
        )),
        "{out}"
    );
    assert_eq!(rc_of(&out, "older-config"), 1, "{out}");
    assert!(
        out.contains("Error: ipfs repo needs migration, please run migration tool."),
        "{out}"
    );
    assert_eq!(rc_of(&out, "older-daemon"), 1, "{out}");
    assert!(out.contains("Error: fs-repo requires migration"), "{out}");
    assert!(
        out.contains("Re-run daemon with --migrate or see 'ipfs repo migrate --help'"),
        "{out}"
    );
    assert!(out.contains("Daemon is ready"), "{out}");
    assert!(out.contains(&format!("after={v}")), "{out}");
    assert_eq!(rc_of(&out, "migrated-config"), 0, "{out}");
}

#[test]
fn config_replace_refuses_any_private_key_and_takes_the_spec_from_the_file() {
    let mut g = Guard::default();
    let (code, out) = run_sh(
        &mut g,
        &[],
        r#"ipfs init >/dev/null
cp $IPFS_PATH/config /tmp/with-key.json
ipfs config replace /tmp/with-key.json; echo "own-key rc=$?"
ipfs config show > /tmp/shown.json
ipfs config replace /tmp/shown.json; echo "shown rc=$?"
ipfs config Addresses.API; echo "still-opens rc=$?"
echo '{"Bootstrap": []}' > /tmp/no-spec.json
ipfs config replace /tmp/no-spec.json; echo "no-spec rc=$?"
ipfs config Addresses.API; echo "after-no-spec rc=$?"
"#,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(rc_of(&out, "own-key"), 1, "{out}");
    assert!(
        out.contains("Error: setting private key with API is not supported"),
        "{out}"
    );
    assert_eq!(rc_of(&out, "shown"), 0, "{out}");
    assert_eq!(rc_of(&out, "still-opens"), 0, "{out}");
    assert_eq!(rc_of(&out, "no-spec"), 0, "{out}");
    assert_eq!(rc_of(&out, "after-no-spec"), 1, "{out}");
    assert!(
        out.contains("Error: required Datastore.Spec entry missing from config file"),
        "{out}"
    );
}

#[test]
fn fatal_start_up_checks_stop_the_daemon_with_kubos_messages() {
    let mut g = Guard::default();
    let key = swarm_key();
    let script = format!(
        r#"ipfs init >/dev/null
ipfs config --json AutoConf.Enabled false
ipfs config --json Bootstrap '[]'
cp $IPFS_PATH/config /tmp/base
reset() {{ cp /tmp/base $IPFS_PATH/config; rm -f $IPFS_PATH/swarm.key; }}
ipfs config --json Swarm.EnableHolePunching true
ipfs config --json Swarm.RelayClient.Enabled false
ipfs daemon; echo "holepunch rc=$?"; reset
printf '%s' '{key}' > $IPFS_PATH/swarm.key
ipfs config Routing.Type autoclient
ipfs daemon; echo "autoclient rc=$?"; reset
ipfs config Provider.Strategy all
ipfs daemon; echo "provider rc=$?"; reset
ipfs config Reprovider.Interval 12h
ipfs daemon; echo "reprovider rc=$?"; reset
ipfs config --json Swarm.Transports.Network.Relay false
ipfs config --json Swarm.RelayService.Enabled true
ipfs daemon; echo "relay rc=$?"; reset
IPFS_REUSEPORT=true ipfs daemon; echo "reuseport rc=$?"; reset
"#
    );
    let (code, out) = run_sh(&mut g, &[], &script);
    assert_eq!(code, 0, "{out}");
    for (tag, msg) in [
        ("holepunch", "Error: constructing the node (see log for full detail): failed to enable Swarm.EnableHolePunching: it requires Swarm.RelayClient.Enabled to be true"),
        ("autoclient", "Error: private network does not work with Routing.Type=auto. Update your config to Routing.Type=dht (or none, and do manual peering)"),
        ("provider", "Error: deprecated configuration detected. Manually migrate 'Provider' fields to 'Provide'"),
        ("reprovider", "Error: deprecated configuration detected. Manually migrate 'Reprovider' fields to 'Provide'"),
        ("relay", "FATAL\tcore:constructor\tgroups.go:129\tFailed to enable `Swarm.RelayService`, it requires `Swarm.Transports.Network.Relay` to be true."),
        ("reuseport", "Error: support for IPFS_REUSEPORT was removed. Use LIBP2P_TCP_REUSEPORT instead"),
    ] {
        assert_eq!(rc_of(&out, tag), 1, "{tag}:\n{out}");
        assert!(out.contains(msg), "{tag}: expected {msg:?} in:\n{out}");
    }
    assert!(!out.contains("Daemon is ready"), "{out}");
}

#[test]
fn health_check_is_a_whole_ipfs_process_start_and_passes() {
    let mut g = Guard::default();
    let hc = docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Healthcheck.Test}}",
        &image(),
    ]);
    assert!(
        hc.contains("ipfs --api=/ip4/127.0.0.1/tcp/5001 diag healthy > /dev/null 2>&1 || exit 1"),
        "{hc}"
    );
    let net = g.network();
    let name = unique("kshim-health");
    let img = image();
    docker_ok(&[
        "create",
        "--name",
        &name,
        "--network",
        &net,
        "--health-interval=1s",
        "--health-start-period=1s",
        &img,
    ]);
    g.containers.push(name.clone());
    docker_ok(&["start", &name]);
    wait_ready(&name);
    // Every `ipfs` command starts the Go runtime (libkubo) before it runs, as kubo's does.
    let out = docker(&[
        "exec",
        "-u",
        "1000:100",
        "-e",
        "KUBO_SHIM_TRACE_START=1",
        &name,
        "ipfs",
        "--api=/ip4/127.0.0.1/tcp/5001",
        "diag",
        "healthy",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("kubo-shim: Go runtime started"), "{err}");
    println!("health check process: {}", err.trim());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        if s == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health status {s}:\n{}",
            logs(&name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
