//! Unit tests of configuration: layering, validation, secrets, `nexus init`. They never read
//! or change the process environment: every test builds its own [`Env`] and temporary home.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::keys::{assign, fingerprint, Incoming};
use super::*;
use crate::delegator::JwtKey;
use crate::node::{DockerRuntimeConfig, Resources};
use crate::orchestrator::ports::PortRange;
use crate::orchestrator::OrchestratorConfig;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nexus-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An environment with `home` as HOME, no system-wide file, and `vars`.
fn env_in(home: &Path, vars: &[(&str, &str)]) -> Env {
    let mut pairs: Vec<(String, String)> = vec![("HOME".into(), home.display().to_string())];
    pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Env::from_pairs(pairs).with_system_dir(home.join("etc-nexus"))
}

/// A config from `toml` (written to a file under `home`) and `vars`, not validated.
fn load(home: &TempDir, toml: &str, vars: &[(&str, &str)]) -> Result<Config> {
    let path = home.write("cfg/nexus.toml", toml);
    Config::load(Some(&path), &env_in(home.path(), vars))
}

/// The error of validating `toml` + `vars`, which must fail (at load or validate).
fn error_of(toml: &str, vars: &[(&str, &str)]) -> ConfigError {
    let home = TempDir::new();
    match load(&home, toml, vars) {
        Err(e) => e,
        Ok(cfg) => match cfg.validate() {
            Err(e) => e,
            Ok(_) => panic!("accepted: {toml} {vars:?}"),
        },
    }
}

const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn defaults_are_valid_with_no_file() {
    let home = TempDir::new();
    let env = env_in(home.path(), &[]);
    assert_eq!(find_config_file(None, &env).unwrap(), None);
    let cfg = Config::load(None, &env).unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!(cfg.file(), None);
    let data = home.path().join(".local/share/nexus");
    assert_eq!(s.data_dir, data);
    assert_eq!(
        s.store_url.expose(),
        format!("sqlite://{}", data.join("nexus.db").display())
    );
    assert_eq!(s.docker.endpoint.as_deref(), Some(DEFAULT_DOCKER_ENDPOINT));
    assert_eq!(s.secrets_path(), data.join("secrets.toml"));

    let o = &s.orchestrator;
    let d = OrchestratorConfig::default();
    assert_eq!(o.image, "ipfs/kubo:v0.43.1");
    assert_eq!(o.image, d.image);
    assert_eq!(o.max_replicas, d.max_replicas);
    assert_eq!(o.default_resources, d.default_resources);
    assert_eq!(o.max_resources, d.max_resources);
    assert_eq!(o.op_timeout, d.op_timeout);
    assert_eq!(o.ports.swarm, d.ports.swarm);
    assert_eq!(o.subnets, d.subnets);
    assert_eq!(o.subnets.pool.to_string(), "10.224.0.0/12");
    let r = &s.docker;
    let rd = DockerRuntimeConfig::default();
    assert_eq!(r.ready_timeout, rd.ready_timeout);
    assert_eq!(r.swarm_host_ip, rd.swarm_host_ip);
    // No configured instance: the daemon takes the store's; the placeholder is a fresh id.
    assert_eq!(s.instance, None);
    assert!(r.instance.as_str().starts_with("n-"), "{}", r.instance);
    assert_ne!(r.instance, rd.instance);
    assert_eq!(s.lease_ttl, Duration::from_secs(30));
    assert_eq!(s.metrics.scrape_token, None);
    assert_eq!(r.endpoint.as_deref(), Some(DEFAULT_DOCKER_ENDPOINT));

    assert_eq!(s.grpc.listen.to_string(), "127.0.0.1:7700");
    assert_eq!(s.client.address, "http://127.0.0.1:7700");
    assert_eq!(s.client.api_key, None);
    assert_eq!(s.client.tls_ca, None);
    assert_eq!(s.grpc.tls, None);
    assert_eq!(
        s.metrics.listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:7790")
    );
    assert_eq!(s.metrics.interval, Duration::from_secs(15));
    assert_eq!(s.log.format, LogFormat::Text);
    assert_eq!(s.log.filter, "info");
    assert!(s.public_address.parse::<IpAddr>().is_ok());
    assert!(s.delegator.enabled);
    assert!(s.delegator.config.is_none(), "no key before the secrets");
    assert!(cfg.warnings().is_empty());
}

#[test]
fn computed_defaults_follow_the_environment() {
    let home = TempDir::new();
    let xdg = home.path().join("xdg-data");
    let env = env_in(
        home.path(),
        &[
            ("XDG_DATA_HOME", &xdg.display().to_string()),
            ("DOCKER_HOST", "tcp://docker.internal:2375"),
        ],
    );
    let s = Config::load(None, &env).unwrap().validate().unwrap();
    assert_eq!(s.data_dir, xdg.join("nexus"));
    assert_eq!(
        s.docker.endpoint.as_deref(),
        Some("tcp://docker.internal:2375")
    );
    // No home at all: the system location.
    assert_eq!(
        Config::default().validate().unwrap().data_dir,
        PathBuf::from("/var/lib/nexus")
    );
}

#[test]
fn every_key_is_in_the_table_once_with_a_default_that_parses() {
    let mut names = std::collections::BTreeSet::new();
    let mut vars = std::collections::BTreeSet::new();
    for def in keys() {
        assert!(SECTIONS.contains(&def.section), "{def:?}");
        assert!(names.insert(def.name), "{def:?} twice");
        assert!(vars.insert(def.env_var()), "{def:?} variable twice");
        assert!(!def.help.is_empty() && !def.help.contains('\n'), "{def:?}");
        let t: toml::Table = format!("v = {}", def.default).parse().unwrap();
        let mut cfg = Config::default();
        let before = fingerprint(&def.value(&cfg));
        assign((def.set)(&mut cfg), Incoming::Toml(&t["v"])).unwrap();
        assert_eq!(before, fingerprint(&def.value(&cfg)), "{def:?}");
    }
    assert_eq!(
        keys()
            .iter()
            .filter(|k| k.secret)
            .map(|k| k.name)
            .collect::<Vec<_>>(),
        [
            "store.seal_key",
            "store.seal_previous_keys",
            "grpc.api_keys",
            "client.api_key",
            "delegator.jwt_secret",
            "metrics.scrape_token"
        ]
    );
    assert_eq!(
        keys()
            .iter()
            .find(|k| k.name == "daemon.data_dir")
            .unwrap()
            .env_var(),
        "NEXUS_DAEMON_DATA_DIR"
    );
}

#[test]
fn file_then_env_then_flags() {
    let home = TempDir::new();
    let toml = format!(
        r#"
[grpc]
listen = "0.0.0.0:7701"
api_keys = ["{KEY_A}"]

[node]
image = "example/kubo:1"
max_replicas = 8
cpus = 0.5
ready_timeout = "2m"

[delegator]
enabled = false
trusted_proxies = ["10.0.0.0/8"]
"#
    );
    let mut cfg = load(
        &home,
        &toml,
        &[
            ("NEXUS_GRPC_LISTEN", "127.0.0.1:7799"),
            ("NEXUS_GRPC_API_KEYS", &format!("{KEY_A}, {KEY_B}")),
            ("NEXUS_NODE_MAX_REPLICAS", "12"),
            ("NEXUS_DELEGATOR_ENABLED", "yes"),
            ("NEXUS_DELEGATOR_TRUSTED_PROXIES", "192.168.0.0/16,fd00::/8"),
        ],
    )
    .unwrap();
    let s = cfg.validate().unwrap();
    // File only.
    assert_eq!(cfg.node.image, "example/kubo:1");
    assert_eq!(s.orchestrator.default_resources.cpu_millis, 500);
    assert_eq!(s.docker.ready_timeout, Duration::from_secs(120));
    // Env over file.
    assert_eq!(cfg.grpc.listen, "127.0.0.1:7799");
    assert_eq!(
        cfg.grpc.api_keys,
        vec![Secret::from(KEY_A), Secret::from(KEY_B)]
    );
    assert_eq!(cfg.node.max_replicas, 12);
    assert!(cfg.delegator.enabled);
    assert_eq!(
        cfg.delegator.trusted_proxies,
        ["192.168.0.0/16", "fd00::/8"]
    );
    // Flags over env.
    cfg.set("grpc.listen", "127.0.0.1:7800").unwrap();
    cfg.node.image = "example/kubo:2".into();
    let s = cfg.validate().unwrap();
    assert_eq!(s.orchestrator.image, "example/kubo:2");
    assert_eq!(s.orchestrator.max_replicas, 12);
    assert_eq!(s.client.address, "http://127.0.0.1:7800");
    assert_eq!(s.client.api_key, Some(Secret::from(KEY_A)));
}

#[test]
fn typed_settings_reach_the_other_modules() {
    let home = TempDir::new();
    let cfg = load(
        &home,
        r#"
[daemon]
data_dir = "~/state"
[store]
url = "postgres://nexus:pw@db:5432/nexus"
[docker]
endpoint = "unix:///run/user/1000/docker.sock"
instance = "prod-1"
[node]
cpus = "2"
memory = "2GiB"
disk = "20GiB"
max_cpus = "8"
max_memory = "16GiB"
max_disk = "2TiB"
op_timeout = "5m"
public_address = "ipfs.example.com"
[ports]
swarm = "10000-10010, 10020"
swarm_host_ip = "203.0.113.7"
[metrics]
listen = ""
[log]
format = "json"
level = "info,nexus=debug"
"#,
        &[],
    )
    .unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!(s.data_dir, home.path().join("state"));
    assert_eq!(s.store_url.expose(), "postgres://nexus:pw@db:5432/nexus");
    assert_eq!(
        redact_url(s.store_url.expose()),
        "postgres://nexus:<redacted>@db:5432/nexus"
    );
    let o = &s.orchestrator;
    assert_eq!(
        o.default_resources,
        Resources {
            cpu_millis: 2000,
            memory_bytes: 2 << 30,
            disk_bytes: 20 << 30
        }
    );
    assert_eq!(
        o.max_resources,
        Resources {
            cpu_millis: 8000,
            memory_bytes: 16 << 30,
            disk_bytes: 2 << 40
        }
    );
    assert_eq!(o.op_timeout, Duration::from_secs(300));
    assert_eq!(
        o.ports.swarm,
        vec![
            PortRange {
                low: 10000,
                high: 10010
            },
            PortRange {
                low: 10020,
                high: 10020
            }
        ]
    );
    let r = &s.docker;
    assert_eq!(r.instance.as_str(), "prod-1");
    assert_eq!(s.instance.as_ref().map(|i| i.as_str()), Some("prod-1"));
    assert_eq!(r.swarm_host_ip, "203.0.113.7");
    assert_eq!(
        r.endpoint.as_deref(),
        Some("unix:///run/user/1000/docker.sock")
    );
    assert_eq!(s.public_address, "ipfs.example.com");
    assert_eq!(s.metrics.listen, None);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.log.filter, "info,nexus=debug");
}

#[test]
fn an_unknown_key_in_any_section_is_an_error_naming_it() {
    for section in SECTIONS {
        let e = error_of(&format!("[{section}]\nbogus_key = 1\n"), &[]);
        let text = e.to_string();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if *key == format!("{section}.bogus_key")),
            "{text}"
        );
        assert!(text.contains("nexus.toml"), "{text}");
        let first = keys().iter().find(|k| k.section == section).unwrap();
        assert!(text.contains(first.key), "lists the valid keys: {text}");
    }
    let e = error_of("[grcp]\nlisten = \"127.0.0.1:1\"\n", &[]);
    assert!(matches!(e, ConfigError::UnknownSection { .. }), "{e}");
    assert!(
        e.to_string().contains("[grcp]") && e.to_string().contains("grpc"),
        "{e}"
    );
    let e = error_of("listen = \"127.0.0.1:1\"\n", &[]);
    assert!(e.to_string().contains("[listen]"), "{e}");
    let e = error_of("grpc = 1\n", &[]);
    assert_eq!(e.key(), Some("grpc"), "{e}");
}

#[test]
fn an_unknown_variable_of_a_known_section_is_an_error_naming_it() {
    let e = error_of("", &[("NEXUS_GRPC_LISTN", "127.0.0.1:1")]);
    let text = e.to_string();
    assert!(matches!(e, ConfigError::UnknownVariable { .. }), "{text}");
    assert!(text.contains("NEXUS_GRPC_LISTN"), "{text}");
    assert!(
        text.contains("NEXUS_GRPC_LISTEN"),
        "lists the valid ones: {text}"
    );
    assert!(!text.contains("127.0.0.1:1"), "{text}");

    // Not configuration: ignored.
    let home = TempDir::new();
    let cfg = load(
        &home,
        "",
        &[
            ("NEXUS_TEST_IMAGE", "x"),
            ("NEXUS_CACHE_DIR", "/tmp"),
            ("NEXUS_LOG", "debug"),
            ("NEXUS_TEST_POSTGRES_URL", "postgres://x"),
            ("NEXUS_LOGS_LEVEL", "x"),
            ("nexus_grpc_listen", "bogus"),
        ],
    )
    .unwrap();
    cfg.validate().unwrap();
}

/// `delegator.threads`: 0 (the default) is one serving thread per core; a count is kept.
#[test]
fn delegator_threads_default_to_one_per_core() {
    let home = TempDir::new();
    let cores = std::thread::available_parallelism().unwrap().get();
    let s = load(&home, "", &[]).unwrap().validate().unwrap();
    assert_eq!(s.delegator.threads, cores);
    let s = load(&home, "[delegator]\nthreads = 3\n", &[])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(s.delegator.threads, 3);
    let s = load(&home, "", &[("NEXUS_DELEGATOR_THREADS", "1")])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(s.delegator.threads, 1);
}

#[test]
fn values_of_the_wrong_type_name_the_key_and_the_source() {
    let e = error_of("[node]\nmax_replicas = \"many\"\n", &[]);
    assert_eq!(e.key(), Some("node.max_replicas"), "{e}");
    assert!(e.to_string().contains("nexus.toml"), "{e}");
    let e = error_of("[delegator]\nenabled = \"yes\"\n", &[]);
    assert_eq!(e.key(), Some("delegator.enabled"), "{e}");
    let e = error_of("[grpc]\napi_keys = \"k\"\n", &[]);
    assert_eq!(e.key(), Some("grpc.api_keys"), "{e}");
    let e = error_of("", &[("NEXUS_NODE_MAX_REPLICAS", "lots")]);
    assert_eq!(e.key(), Some("node.max_replicas"), "{e}");
    assert!(e.to_string().contains("NEXUS_NODE_MAX_REPLICAS"), "{e}");
    let e = error_of("", &[("NEXUS_DELEGATOR_ENABLED", "maybe")]);
    assert_eq!(e.key(), Some("delegator.enabled"), "{e}");
    let e = error_of("[node]\nmax_replicas = 70000\n", &[]);
    assert_eq!(e.key(), Some("node.max_replicas"), "{e}");
}

#[test]
fn invalid_values_are_errors_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("[grpc]\nlisten = \"localhost\"", "grpc.listen", "IP:PORT"),
        ("[delegator]\nlisten = \"1.2.3.4\"", "delegator.listen", "IP:PORT"),
        ("[delegator]\nthreads = 257", "delegator.threads", "at most 256"),
        ("[metrics]\nlisten = \":9090\"", "metrics.listen", "IP:PORT"),
        ("[metrics]\nlisten = \"127.0.0.1:7700\"", "metrics.listen", "grpc.listen"),
        ("[node]\nmemory = \"lots\"", "node.memory", "512MiB"),
        ("[node]\nmemory = \"64MiB\"", "node.memory", "128 MiB"),
        ("[node]\ndisk = \"1 parsec\"", "node.disk", "unit"),
        ("[node]\ncpus = \"many\"", "node.cpus", "0.5"),
        ("[node]\ncpus = \"8\"", "node.cpus", "node.max_cpus"),
        ("[node]\nmemory = \"16GiB\"", "node.memory", "node.max_memory"),
        ("[node]\nmax_disk = \"1GiB\"", "node.disk", "node.max_disk"),
        ("[node]\nmax_cpus = \"0\"", "node.max_cpus", "between"),
        ("[node]\nmax_replicas = 0", "node.max_replicas", "between 1 and 64"),
        ("[node]\nmax_replicas = 65", "node.max_replicas", "between 1 and 64"),
        ("[node]\nready_timeout = \"soon\"", "node.ready_timeout", "60s"),
        ("[node]\ncpu_budget = \"1.5\"", "node.cpu_budget", "from 0 to 1"),
        ("[node]\ncpu_budget = \"half\"", "node.cpu_budget", "from 0 to 1"),
        ("[node]\ncpu_meter_interval = \"100ms\"", "node.cpu_meter_interval", "shorter than 1s"),
        ("[node]\nop_timeout = \"0s\"", "node.op_timeout", "longer than zero"),
        ("[node]\nimage = \"Not An Image\"", "node.image", "ipfs/kubo"),
        ("[node]\npublic_address = \"0.0.0.0\"", "node.public_address", "DNS name"),
        ("[node]\npublic_address = \"not a host\"", "node.public_address", "DNS name"),
        // Gone with TCP node APIs: the unknown-key error lists what [ports] has.
        ("[ports]\napi = \"4500-5500\"", "ports.api", "swarm"),
        ("[ports]\ngateway = \"5500\"", "ports.gateway", "swarm"),
        ("[ports]\nswarm = \"4001-4100,4050-4200\"", "ports.swarm", "each other"),
        ("[docker]\nsubnet_pool = \"10.224.0.0\"", "docker.subnet_pool", "CIDR"),
        ("[docker]\nsubnet_pool = \"fd00::/8\"", "docker.subnet_pool", "IPv4"),
        ("[docker]\nsubnet_pool = \"10.224.1.0/12\"", "docker.subnet_pool", "10.224.0.0/12"),
        ("[docker]\nsubnet_prefix = 8", "docker.subnet_prefix", "between"),
        ("[docker]\nsubnet_prefix = 30", "docker.subnet_prefix", "/29"),
        ("[docker]\nsubnet_prefix = 300", "docker.subnet_prefix", "between"),
        (
            "[docker]\nsubnet_prefix = 28\n[node]\nmax_replicas = 16",
            "docker.subnet_prefix",
            "/27 or shorter",
        ),
        ("[ports]\nswarm = \"\"", "ports.swarm", "4001-5000"),
        ("[ports]\nswarm = \"5000-4001\"", "ports.swarm", "LOW-HIGH"),
        ("[ports]\nswarm_host_ip = \"everywhere\"", "ports.swarm_host_ip", "0.0.0.0"),
        ("[grpc]\ntls_cert = \"/etc/nexus/cert.pem\"", "grpc.tls_key", "both"),
        ("[grpc]\ntls_key = \"/etc/nexus/key.pem\"", "grpc.tls_cert", "both"),
        ("[delegator]\ntls_cert = \"/etc/nexus/cert.pem\"", "delegator.tls_key", "both"),
        ("[grpc]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"", "grpc.tls_cert", "absolute"),
        ("[grpc]\napi_keys = [\"short-key\"]", "grpc.api_keys[0]", "32 characters"),
        (
            "[grpc]\napi_keys = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"has a space in it but is long enough\"]",
            "grpc.api_keys[1]",
            "no spaces",
        ),
        ("[client]\napi_key = \"tiny\"", "client.api_key", "32 characters"),
        ("[client]\naddress = \"127.0.0.1:7700\"", "client.address", "http://"),
        ("[client]\ntls_ca = \"ca.pem\"", "client.tls_ca", "absolute"),
        (
            "[delegator]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\njwt_public_key = \"/etc/nexus/jwt.pem\"",
            "delegator.jwt_public_key",
            "not both",
        ),
        ("[delegator]\njwt_secret = \"too-short\"", "delegator.jwt_secret", "32 bytes"),
        ("[delegator]\njwt_algorithm = \"RS256\"", "delegator.jwt_algorithm", "jwt_public_key"),
        (
            "[delegator]\njwt_algorithm = \"HS256\"\njwt_public_key = \"/etc/nexus/jwt.pem\"",
            "delegator.jwt_algorithm",
            "RS256",
        ),
        ("[delegator]\njwt_algorithm = \"none\"", "delegator.jwt_algorithm", "HS256"),
        ("[delegator]\ndomain = \"bad_domain\"", "delegator.domain", "DNS name"),
        ("[delegator]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]", "delegator.trusted_proxies[1]", "10.0.0.0/8"),
        ("[delegator]\nmax_body = \"huge\"", "delegator.max_body", "GiB"),
        ("[delegator]\nidle_timeout = \"forever\"", "delegator.idle_timeout", "60s"),
        ("[delegator]\nlisten = \"127.0.0.1:7700\"", "delegator.listen", "grpc.listen"),
        ("[docker]\ninstance = \"Prod\"", "docker.instance", "lower-case"),
        ("[store]\nlease_ttl = \"500ms\"", "store.lease_ttl", "at least 1s"),
        ("[store]\nlease_ttl = \"soon\"", "store.lease_ttl", ""),
        ("[metrics]\nscrape_token = \"short\"", "metrics.scrape_token", "32 characters"),
        ("[docker]\nendpoint = \"ssh://host\"", "docker.endpoint", "unix://"),
        ("[docker]\nendpoint = \"unix://docker.sock\"", "docker.endpoint", "unix://"),
        ("[store]\nurl = \"mysql://u@h/db\"", "store.url", "postgres://"),
        ("[daemon]\ndata_dir = \"relative/dir\"", "daemon.data_dir", "absolute"),
        ("[log]\nformat = \"xml\"", "log.format", "json"),
        ("[log]\nlevel = \"nexus=loud\"", "log.level", "directives"),
    ];
    for (toml, key, hint) in cases {
        let e = error_of(toml, &[]);
        let text = e.to_string();
        assert_eq!(e.key(), Some(*key), "{toml}: {text}");
        assert!(text.contains(hint), "{toml}: `{hint}` missing in: {text}");
        assert!(
            text.contains("nexus.toml"),
            "{toml}: names the file: {text}"
        );
    }
    // A disabled delegator may share its (unused) address.
    let home = TempDir::new();
    load(
        &home,
        "[delegator]\nenabled = false\nlisten = \"127.0.0.1:7700\"",
        &[],
    )
    .unwrap()
    .validate()
    .unwrap();
}

#[test]
fn errors_say_where_the_value_came_from() {
    let e = error_of(
        "[grpc]\nlisten = \"127.0.0.1:1\"",
        &[("NEXUS_GRPC_LISTEN", "nowhere")],
    );
    assert!(e.to_string().contains("(from NEXUS_GRPC_LISTEN)"), "{e}");

    let home = TempDir::new();
    let mut cfg = load(&home, "[grpc]\nlisten = \"nowhere\"", &[]).unwrap();
    let e = cfg.validate().unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("(in {}", home.path().display())),
        "{e}"
    );
    cfg.grpc.listen = "still nowhere".into();
    let e = cfg.validate().unwrap_err();
    assert!(e.to_string().contains("(set on the command line)"), "{e}");
    cfg.grpc.listen = "127.0.0.1:7711".into();
    cfg.validate().unwrap();
}

#[test]
fn syntax_errors_give_the_position_but_not_the_line() {
    let e = error_of(
        "[grpc]\napi_keys = [\"supersecret-supersecret-supersecret-1\"\n[node]\n",
        &[],
    );
    let text = e.to_string();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{text}");
    assert!(text.contains("line"), "{text}");
    assert!(!text.contains("supersecret"), "{text}");
}

#[test]
fn config_file_lookup() {
    let home = TempDir::new();
    let env = env_in(home.path(), &[]);
    let missing = home.path().join("missing.toml");
    let e = find_config_file(Some(&missing), &env).unwrap_err();
    assert!(
        matches!(e, ConfigError::NotFound { .. }) && e.to_string().contains("--config"),
        "{e}"
    );
    let env_missing = env_in(
        home.path(),
        &[("NEXUS_CONFIG", &missing.display().to_string())],
    );
    let e = Config::load(None, &env_missing).unwrap_err();
    assert!(e.to_string().contains("NEXUS_CONFIG"), "{e}");

    // System-wide, then the user's file, which wins; XDG_CONFIG_HOME moves the user's file.
    let system = home.write("etc-nexus/nexus.toml", "[node]\nmax_replicas = 3\n");
    assert_eq!(find_config_file(None, &env).unwrap(), Some(system.clone()));
    let user = home.write(".config/nexus/nexus.toml", "[node]\nmax_replicas = 4\n");
    assert_eq!(find_config_file(None, &env).unwrap(), Some(user.clone()));
    assert_eq!(Config::load(None, &env).unwrap().node.max_replicas, 4);
    assert_eq!(init_config_path(None, &env), user);
    let xdg = home.path().join("xdg");
    let env_xdg = env_in(
        home.path(),
        &[("XDG_CONFIG_HOME", &xdg.display().to_string())],
    );
    assert_eq!(find_config_file(None, &env_xdg).unwrap(), Some(system));
    assert_eq!(
        init_config_path(None, &env_xdg),
        xdg.join("nexus/nexus.toml")
    );
    // An explicit file wins over all.
    let explicit = home.write("x.toml", "[node]\nmax_replicas = 5\n");
    let cfg = Config::load(Some(&explicit), &env).unwrap();
    assert_eq!(
        (cfg.node.max_replicas, cfg.file()),
        (5, Some(explicit.as_path()))
    );
    assert_eq!(init_config_path(Some(&explicit), &env), explicit);
    // No home: /etc/nexus.
    assert_eq!(
        init_config_path(None, &Env::default()),
        PathBuf::from("/etc/nexus/nexus.toml")
    );
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_a_private_commented_file_that_loads_back() {
    let home = TempDir::new();
    let path = home.path().join("new/dir/nexus.toml");
    write_init_file(&path, false).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let text = fs::read_to_string(&path).unwrap();
    for def in keys() {
        assert!(text.contains(&def.env_var()), "{def:?}");
        let line = format!("{} = ", def.key);
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&line)),
            "{def:?}"
        );
    }

    let env = env_in(home.path(), &[]);
    let mut cfg = Config::load(Some(&path), &env).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.grpc.api_keys.len(), 1);
    assert!(cfg.grpc.api_keys[0].expose().len() >= 43);
    assert!(cfg.delegator.jwt_secret.expose().len() >= 43);
    assert_ne!(
        cfg.grpc.api_keys[0].expose(),
        cfg.delegator.jwt_secret.expose()
    );
    assert!(cfg.metrics.scrape_token.expose().len() >= 43);
    assert_ne!(cfg.metrics.scrape_token, cfg.grpc.api_keys[0]);
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    // Every other value is the default.
    let defaults = Config::defaults(&env);
    for def in keys().iter().filter(|k| !k.secret) {
        assert_eq!(
            fingerprint(&def.value(&cfg)),
            fingerprint(&def.value(&defaults)),
            "{def:?}"
        );
    }
    // The configured secrets win: nothing is generated in the data directory.
    cfg.resolve_secrets(Create::Yes).unwrap();
    let s = cfg.validate().unwrap();
    assert!(!s.secrets_path().exists());
    assert_eq!(s.client.api_key.as_ref(), cfg.grpc.api_keys.first());

    let e = write_init_file(&path, false).unwrap_err();
    assert!(matches!(e, ConfigError::Exists { .. }), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(fs::read_to_string(&path).unwrap(), text, "untouched");

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_init_file(&path, true).unwrap();
    assert_eq!(mode(&path), 0o600);
    let again = Config::load(Some(&path), &env).unwrap();
    assert_ne!(again.grpc.api_keys, cfg.grpc.api_keys, "fresh secrets");
    assert_eq!(
        fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "no temporary file left"
    );
}

#[test]
fn a_readable_config_file_with_secrets_is_warned_about() {
    let home = TempDir::new();
    let path = home.write(
        "cfg/nexus.toml",
        &format!("[grpc]\napi_keys = [\"{KEY_A}\"]\n"),
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = Config::load(Some(&path), &env_in(home.path(), &[])).unwrap();
    assert_eq!(cfg.warnings().len(), 1);
    assert!(
        cfg.warnings()[0].contains("chmod 600"),
        "{:?}",
        cfg.warnings()
    );
    assert!(!cfg.warnings()[0].contains(KEY_A));
    // No secrets: no warning.
    let path = home.write("cfg/plain.toml", "[node]\nmax_replicas = 2\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Config::load(Some(&path), &env_in(home.path(), &[]))
        .unwrap()
        .warnings()
        .is_empty());
}

#[test]
fn secrets_are_generated_once_and_read_by_the_cli() {
    let home = TempDir::new();
    let env = env_in(home.path(), &[]);

    // The CLI before the daemon ever ran: nothing to read, nothing written.
    let mut cli = Config::load(None, &env).unwrap();
    cli.resolve_secrets(Create::No).unwrap();
    let s = cli.validate().unwrap();
    assert_eq!(cli.client_settings().unwrap().api_key, None);
    assert_eq!(s.client.api_key, None);
    assert!(!s.data_dir.exists());
    let e = s.delegator.config().unwrap_err();
    assert_eq!(e.key(), Some("delegator.jwt_secret"), "{e}");
    assert!(e.to_string().contains("no key to verify tokens"), "{e}");

    let mut daemon = Config::load(None, &env).unwrap();
    daemon.resolve_secrets(Create::Yes).unwrap();
    let s = daemon.validate().unwrap();
    let path = s.secrets_path();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&s.data_dir), 0o700);
    assert_eq!(s.grpc.api_keys.len(), 1);
    let key = s.grpc.api_keys[0].clone();
    assert!(key.expose().len() >= 43);
    let jwt = &s.delegator.config().unwrap().jwt;
    assert!(
        matches!(&jwt.key, JwtKey::Hs256(k) if k == daemon.delegator.jwt_secret.expose().as_bytes())
    );

    // A restart reads the same secrets; the CLI finds the key.
    let mut again = Config::load(None, &env).unwrap();
    again.resolve_secrets(Create::Yes).unwrap();
    assert_eq!(again.grpc.api_keys, vec![key.clone()]);
    assert_eq!(again.delegator.jwt_secret, daemon.delegator.jwt_secret);
    let mut cli = Config::load(None, &env).unwrap();
    cli.resolve_secrets(Create::No).unwrap();
    let s = cli.validate().unwrap();
    assert_eq!(s.client.api_key, Some(key.clone()));
    assert_eq!(s.client.address, "http://127.0.0.1:7700");
    assert_eq!(cli.client_settings().unwrap(), s.client);

    // Configured values win over the file.
    let mut configured = Config::load(None, &env).unwrap();
    configured.grpc.api_keys = vec![Secret::from(KEY_A)];
    configured.client.api_key = Secret::from(KEY_B);
    configured.resolve_secrets(Create::No).unwrap();
    assert_eq!(configured.grpc.api_keys, vec![Secret::from(KEY_A)]);
    assert_eq!(
        configured.validate().unwrap().client.api_key,
        Some(Secret::from(KEY_B))
    );

    // An invalid key edited into the file is blamed on the file.
    fs::write(
        &path,
        "api_key = \"short\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    let mut edited = Config::load(None, &env).unwrap();
    edited.resolve_secrets(Create::No).unwrap();
    let e = edited.validate().unwrap_err();
    assert_eq!(e.key(), Some("grpc.api_keys[0]"));
    assert!(
        e.to_string().contains("secrets.toml") && !e.to_string().contains("\"short\""),
        "{e}"
    );

    // Readable by others: refused.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let e = Config::load(None, &env)
        .unwrap()
        .resolve_secrets(Create::Yes)
        .unwrap_err();
    assert!(
        matches!(e, ConfigError::Permissions { mode: 0o640, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");

    // A missing entry is added, the other kept.
    fs::write(&path, format!("api_key = \"{KEY_A}\"\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let mut filled = Config::load(None, &env).unwrap();
    filled.resolve_secrets(Create::Yes).unwrap();
    assert_eq!(filled.grpc.api_keys, vec![Secret::from(KEY_A)]);
    assert!(!filled.delegator.jwt_secret.is_empty());
    let file = read_secrets(&path).unwrap().unwrap();
    assert_eq!(file.jwt_secret.as_ref(), Some(&filled.delegator.jwt_secret));

    // Unknown keys in it are errors that do not quote values.
    fs::write(
        &path,
        format!("api_key = \"{KEY_A}\"\ntoken = \"{KEY_B}\"\n"),
    )
    .unwrap();
    let e = read_secrets(&path).unwrap_err();
    assert!(
        e.to_string().contains("token") && !e.to_string().contains(KEY_B),
        "{e}"
    );
}

#[test]
fn a_public_key_sets_the_algorithm_and_no_secret_is_generated() {
    let home = TempDir::new();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_path = home.write("keys/ed.pem", &ed.public_key_pem());
    let rsa_path = home.write("keys/rsa.pem", RSA_PUBLIC_KEY);
    let private_path = home.write("keys/private.pem", &ed.serialize_pem());

    let settings = |toml: String| {
        let mut cfg = load(&home, &toml, &[]).unwrap();
        cfg.resolve_secrets(Create::Yes).unwrap();
        let delegator = cfg.validate().and_then(|s| s.delegator.config().cloned());
        (delegator, cfg)
    };
    let (s, cfg) = settings(format!(
        "[delegator]\njwt_public_key = \"{}\"\njwt_audience = \"nexus\"\ntrusted_proxies = [\"10.0.0.0/8\"]\nmax_body = \"1GiB\"\ndomain = \"Nexus.Example.com\"",
        ed_path.display()
    ));
    let s = s.unwrap();
    assert!(matches!(&s.jwt.key, JwtKey::EdDsa(p) if p.starts_with("-----BEGIN PUBLIC KEY")));
    assert_eq!(s.jwt.audience.as_deref(), Some("nexus"));
    assert_eq!(s.jwt.issuer, None);
    assert_eq!(s.domain, "nexus.example.com");
    assert_eq!(s.max_body_bytes, Some(1 << 30));
    assert!(s.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    assert_eq!(s.connect_timeout, Duration::from_secs(5));
    assert_eq!(s.idle_timeout, Duration::from_secs(90));
    assert!(
        cfg.delegator.jwt_secret.is_empty(),
        "no secret with a public key"
    );

    let (s, _) = settings(format!(
        "[delegator]\njwt_public_key = \"{}\"",
        rsa_path.display()
    ));
    assert!(matches!(s.unwrap().jwt.key, JwtKey::Rs256(_)));
    let (s, _) = settings(format!(
        "[delegator]\njwt_public_key = \"{}\"\njwt_algorithm = \"eddsa\"",
        rsa_path.display()
    ));
    let e = s.unwrap_err();
    assert_eq!(e.key(), Some("delegator.jwt_algorithm"), "{e}");
    let (s, _) = settings(format!(
        "[delegator]\njwt_public_key = \"{}\"",
        private_path.display()
    ));
    let e = s.unwrap_err();
    assert_eq!(e.key(), Some("delegator.jwt_public_key"), "{e}");
    assert!(e.to_string().contains("private key"), "{e}");
    let (s, _) = settings(format!(
        "[delegator]\njwt_public_key = \"{}\"",
        home.path().join("keys/none.pem").display()
    ));
    assert!(matches!(s.unwrap_err(), ConfigError::Read { .. }));
}

const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxB1eGufVxvUNiPD9ohO/
3EchO22mREgeDTIfkyEl4XDLNJEcQDOBhQ0xzhO2UHOrPpScaYJlNK9lg69eT4tv
PPoBfkIzo2IAWe2la3VKBgBQAsVaNFcbHypCvEvHTBSY4ascaWD03lzC6R/MocB3
G+BB3+ixGoVHdtmHOfCNz2aQeiGZz2SpPfrXb+7RK5tcHaRLmrd5OA0zinUvL15P
CrW8pw+BCczGj3imzR5UWRCAESlwDZdDxEFmnODFGRg+PUC8VQXmlJn9qSmokF2S
Qz1Pu+LRXbo9I2A1+mup8WfdFbb5MOhauuAfo5JurH0f8/0dvqEdRLIny4e4mkvW
0QIDAQAB
-----END PUBLIC KEY-----
";

#[test]
fn the_client_finds_a_daemon_listening_anywhere() {
    let home = TempDir::new();
    let certs = format!(
        "tls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"",
        home.path().display()
    );
    let cases = [
        (
            "listen = \"0.0.0.0:7701\"".to_string(),
            "http://127.0.0.1:7701",
            None,
        ),
        (
            "listen = \"[::]:7702\"".to_string(),
            "http://[::1]:7702",
            None,
        ),
        (
            "listen = \"10.1.2.3:7703\"".to_string(),
            "http://10.1.2.3:7703",
            None,
        ),
        (
            format!("listen = \"0.0.0.0:7704\"\n{certs}"),
            "https://127.0.0.1:7704",
            Some(home.path().join("cert.pem")),
        ),
    ];
    for (grpc, address, ca) in cases {
        let cfg = load(&home, &format!("[grpc]\n{grpc}"), &[]).unwrap();
        let s = cfg.validate().unwrap();
        assert_eq!(s.client.address, address);
        assert_eq!(s.client.tls_ca, ca);
    }
    let cfg = load(
        &home,
        &format!("[grpc]\n{certs}\n[client]\naddress = \"https://nexus.example.com:443/\"\ntls_ca = \"~/ca.pem\""),
        &[("NEXUS_CLIENT_API_KEY", KEY_B)],
    )
    .unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!(s.client.address, "https://nexus.example.com:443");
    assert_eq!(s.client.tls_ca, Some(home.path().join("ca.pem")));
    assert_eq!(s.client.api_key, Some(Secret::from(KEY_B)));
    let e = s.client.client_config().unwrap_err();
    assert!(
        e.to_string().starts_with("client.tls_ca: cannot read"),
        "{e}"
    );
    assert_eq!(
        s.grpc.tls,
        Some(TlsFiles {
            cert: home.path().join("cert.pem"),
            key: home.path().join("key.pem")
        })
    );
}

#[test]
fn secrets_never_appear_in_debug_output_or_errors() {
    let home = TempDir::new();
    let jwt = "jwtjwtjwtjwtjwtjwtjwtjwtjwtjwtjwtjwt";
    let client = "clientclientclientclientclientclient";
    let cfg = load(
        &home,
        &format!(
            "[grpc]\napi_keys = [\"{KEY_A}\"]\n[client]\napi_key = \"{client}\"\n[delegator]\njwt_secret = \"{jwt}\"\n[store]\nurl = \"postgres://nexus:pa55word@db/nexus\""
        ),
        &[],
    )
    .unwrap();
    let settings = cfg.validate().unwrap();
    assert!(settings.delegator.config.is_some());
    let debug = format!(
        "{cfg:?} {settings:?} {:?}",
        settings.client.client_config().unwrap()
    );
    for secret in [KEY_A, jwt, client, "pa55word"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("<redacted>"));
    for def in keys().iter().filter(|k| k.secret || k.name == "store.url") {
        let fp = fingerprint(&def.value(&cfg)).to_string();
        assert!(!debug.contains(&fp), "{def:?} fingerprint in {debug}");
    }
    let env = env_in(home.path(), &[("NEXUS_GRPC_API_KEYS", KEY_B)]);
    assert!(!format!("{env:?}").contains(KEY_B));

    let errors = [
        error_of("[store]\nurl = \"mysql://nexus:pa55word@db/nexus\"", &[]),
        error_of("[grpc]\napi_keys = [\"pa55word\"]", &[]),
        error_of(
            "[client]\napi_key = \"pa55word with space that is long enough\"",
            &[],
        ),
        error_of("[delegator]\njwt_secret = \"pa55word\"", &[]),
        error_of("[delegator]\njwt_secret = 12", &[]),
        error_of("", &[("NEXUS_GRPC_API_KEYS", "pa55word")]),
        error_of("", &[("NEXUS_GRPC_API_KEYZ", "pa55word")]),
    ];
    for e in errors {
        assert!(!e.to_string().contains("pa55word"), "{e}");
        assert!(!format!("{e:?}").contains("pa55word"), "{e:?}");
    }
}

#[test]
fn the_reference_documents_every_key() {
    let doc = include_str!("../../docs/configuration.md");
    for def in keys() {
        assert!(doc.contains(&format!("`{}`", def.key)), "{def:?} missing");
        assert!(doc.contains(&def.env_var()), "{} missing", def.env_var());
    }
    for section in SECTIONS {
        assert!(doc.contains(&format!("[{section}]")), "[{section}] missing");
    }
}

#[test]
fn seal_keys_come_from_the_configuration_or_the_key_file() {
    use crate::store::seal::{KeySource, SealKey};
    use base64::Engine;
    let home = TempDir::new();
    // Nothing configured: the key file in the data directory (not read or created here).
    let s = load(&home, "", &[]).unwrap().validate().unwrap();
    match &s.seal {
        KeySource::File(f) => assert_eq!(f.path(), s.data_dir.join("seal.key")),
        other => panic!("{other:?}"),
    }
    assert!(!s.data_dir.join("seal.key").exists());
    let s = load(
        &home,
        "[store]\nseal_key_file = \"/etc/nexus/seal.key\"",
        &[],
    )
    .unwrap()
    .validate()
    .unwrap();
    match &s.seal {
        KeySource::File(f) => assert_eq!(f.path(), Path::new("/etc/nexus/seal.key")),
        other => panic!("{other:?}"),
    }

    // A configured key (as `openssl rand -base64 32` prints it) and a previous one.
    let current = SealKey::generate().unwrap();
    let previous = SealKey::generate().unwrap();
    let openssl_style = |k: &SealKey| {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(k.to_base64().as_str())
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let cur_text = openssl_style(&current);
    let prev_text = previous.to_base64().to_string();
    let cfg = load(
        &home,
        "",
        &[
            ("NEXUS_STORE_SEAL_KEY", &cur_text),
            ("NEXUS_STORE_SEAL_PREVIOUS_KEYS", &prev_text),
        ],
    )
    .unwrap();
    let s = cfg.validate().unwrap();
    match &s.seal {
        KeySource::Configured { keyring, origin } => {
            assert_eq!(keyring.current(), &current);
            assert_eq!(keyring.previous(), std::slice::from_ref(&previous));
            assert!(origin.contains("NEXUS_STORE_SEAL_KEY"), "{origin}");
        }
        other => panic!("{other:?}"),
    }
    let debug = format!("{cfg:?} {s:?}");
    let url_form = current.to_base64();
    for secret in [cur_text.as_str(), prev_text.as_str(), url_form.as_str()] {
        assert!(!debug.contains(secret), "seal key in {debug}");
    }
    assert!(debug.contains(current.id()), "{debug}");

    // Bad values name the key and where it came from, never the value.
    let e = error_of("", &[("NEXUS_STORE_SEAL_KEY", "pa55word-pa55word")]);
    let shown = e.to_string();
    assert_eq!(e.key(), Some("store.seal_key"), "{shown}");
    assert!(
        shown.contains("NEXUS_STORE_SEAL_KEY") && shown.contains("openssl rand -base64 32"),
        "{shown}"
    );
    assert!(!shown.contains("pa55word"), "{shown}");
    let e = error_of(
        "",
        &[
            ("NEXUS_STORE_SEAL_KEY", &cur_text),
            ("NEXUS_STORE_SEAL_PREVIOUS_KEYS", "pa55word"),
        ],
    );
    assert_eq!(e.key(), Some("store.seal_previous_keys[0]"), "{e}");
    assert!(!e.to_string().contains("pa55word"), "{e}");
    let e = error_of("", &[("NEXUS_STORE_SEAL_PREVIOUS_KEYS", &prev_text)]);
    assert_eq!(e.key(), Some("store.seal_previous_keys"), "{e}");
    assert!(e.to_string().contains("store.seal_key"), "{e}");
    let e = error_of(
        "[store]\nseal_key_file = \"/etc/nexus/seal.key\"",
        &[("NEXUS_STORE_SEAL_KEY", &cur_text)],
    );
    assert_eq!(e.key(), Some("store.seal_key_file"), "{e}");
    let e = error_of(
        "",
        &[
            ("NEXUS_STORE_SEAL_KEY", &cur_text),
            ("NEXUS_STORE_SEAL_PREVIOUS_KEYS", &cur_text),
        ],
    );
    assert!(e.to_string().contains(current.id()), "{e}");
}

#[test]
fn the_data_directory_is_private() {
    let home = TempDir::new();
    let dir = home.path().join("a/b/data");
    ensure_private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    ensure_private_dir(&dir).unwrap();
    for loose in [0o755, 0o750, 0o701] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(loose)).unwrap();
        let e = ensure_private_dir(&dir).unwrap_err();
        assert!(matches!(e, ConfigError::DirPermissions { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("chmod 700 {}", dir.display())),
            "{e}"
        );
    }
}

#[test]
fn the_scrape_token_is_generated_apart_from_the_api_key_and_must_differ_from_it() {
    let home = TempDir::new();
    let env = env_in(home.path(), &[]);
    let mut daemon = Config::load(None, &env).unwrap();
    daemon.resolve_secrets(Create::Yes).unwrap();
    let s = daemon.validate().unwrap();
    let token = s.metrics.scrape_token.clone().expect("generated");
    assert!(token.expose().len() >= 43);
    assert!(!s.grpc.api_keys.contains(&token));
    let file = read_secrets(&s.secrets_path()).unwrap().unwrap();
    assert_eq!(file.scrape_token.as_ref(), Some(&token));
    // A restart keeps it.
    let mut again = Config::load(None, &env).unwrap();
    again.resolve_secrets(Create::Yes).unwrap();
    assert_eq!(again.validate().unwrap().metrics.scrape_token, Some(token));

    // A configured one wins; one equal to an API key is refused without echoing it.
    let s = load(
        &home,
        &format!("[metrics]\nscrape_token = \"{KEY_B}\""),
        &[],
    )
    .unwrap();
    assert_eq!(
        s.validate().unwrap().metrics.scrape_token,
        Some(Secret::from(KEY_B))
    );
    let e = error_of(
        &format!("[grpc]\napi_keys = [\"{KEY_A}\"]\n[metrics]\nscrape_token = \"{KEY_A}\""),
        &[],
    );
    assert_eq!(e.key(), Some("metrics.scrape_token"), "{e}");
    assert!(e.to_string().contains("differ from every API key"), "{e}");
    assert!(!e.to_string().contains(KEY_A), "{e}");
}

#[test]
fn plain_text_listeners_beyond_loopback_are_called_out() {
    let home = TempDir::new();
    let listeners = |toml: &str| -> Vec<&'static str> {
        let s = load(&home, toml, &[]).unwrap().validate().unwrap();
        s.plain_text_listeners()
            .into_iter()
            .map(|(w, _)| w)
            .collect()
    };
    // The defaults listen on loopback only.
    assert!(listeners("").is_empty());
    assert!(listeners(
        "[grpc]\nlisten = \"[::1]:7700\"\n[delegator]\nlisten = \"127.0.0.2:7780\"\n[metrics]\nlisten = \"[::ffff:127.0.0.1]:7790\""
    )
    .is_empty());
    // Every interface, or one address beyond loopback, without TLS.
    assert_eq!(
        listeners(
            "[grpc]\nlisten = \"0.0.0.0:7700\"\n[delegator]\nlisten = \"[::]:7780\"\n[metrics]\nlisten = \"192.0.2.1:7790\""
        ),
        ["gRPC API", "delegator", "metrics"]
    );
    // TLS makes gRPC and the delegator fine; metrics has no TLS; a disabled delegator or
    // metrics listener is not listening.
    let certs = format!("{0}/cert.pem", home.path().display());
    let keyf = format!("{0}/key.pem", home.path().display());
    assert_eq!(
        listeners(&format!(
            "[grpc]\nlisten = \"0.0.0.0:7700\"\ntls_cert = \"{certs}\"\ntls_key = \"{keyf}\"\n\
             [delegator]\nlisten = \"0.0.0.0:7780\"\ntls_cert = \"{certs}\"\ntls_key = \"{keyf}\"\n\
             [metrics]\nlisten = \"0.0.0.0:7790\""
        )),
        ["metrics"]
    );
    assert!(listeners(
        "[delegator]\nenabled = false\nlisten = \"0.0.0.0:7780\"\n[metrics]\nlisten = \"\""
    )
    .is_empty());
    assert!(settings::beyond_loopback("10.0.0.1:1".parse().unwrap()));
    assert!(!settings::beyond_loopback("127.9.9.9:1".parse().unwrap()));
}
