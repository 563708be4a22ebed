//! Benchmark host for the delegator (issue 7, `scripts/bench/run delegator`).
//!
//! Runs the daemon's `Delegator` — same code, same defaults, the same layout (one serving thread
//! per core), the daemon's Prometheus recorder and its access log at `info` on stderr (text, or
//! JSON with `--log-format json`) — in front of upstreams named on the command line instead of the orchestrator's registry, so the proxy can be put in front of a static
//! server (the proxy's own ceiling) as well as a kubo node. It is a program for the benchmark
//! driver, not a test: it measures nothing itself.
//!
//! ```text
//! delegator_host --route <network>=<api-addr>,<gateway-addr> [--route …] [--domain D] [--public]
//!                [--log-format text|json|json-tracing] [--revoked N] [--runtime multi|current|per-core[:N]]
//! ```
//! `--runtime` picks the layout measured by `scripts/bench/run proxy` (issue 18): the daemon's
//! (`Delegator::serve_on` over `Listeners`; default: one thread per core, `per-core:N` N of
//! them, `current` one), each thread a current-thread runtime with its own `SO_REUSEPORT`
//! listener on the same port, all serving one delegator; or `multi`, the delegator on one
//! multi-thread runtime (the daemon's layout until issue 18).
//! Every network's gateway is private (the JWT check runs; `--public` turns it off, for
//! profiling) and its only user is `bench`. `--revoked N` puts N other token ids on the
//! revocation list, so every request pays the list's lookup (empty by default: one atomic load). `NEXUS_LOG` overrides the log filter (`info`). On
//! start it prints one JSON line `{"addr": …, "token": …}` on stdout, then serves until stdin
//! is closed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nexus::access::Access;
use nexus::delegator::{mint_token, Delegator, DelegatorConfig, JwtConfig, Listeners};
use nexus::node::endpoint::Endpoint;
use nexus::node::NetworkName;
use nexus::orchestrator::registry::{NetworkEntry, ReadyNode, Registry};
use std::io::Read;

struct Args {
    domain: String,
    routes: Vec<(NetworkName, Endpoint, Endpoint)>,
    public: bool,
    json_log: bool,
    /// With JSON logs, the access line written by hand off the request path (the daemon's
    /// way), else through `tracing`'s JSON formatter (`--log-format json-tracing`).
    line_by_hand: bool,
    revoked: usize,
    runtime: Layout,
}

/// How the host runs the delegator (`--runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The daemon's layout until issue 18: one multi-thread tokio runtime (a worker per core),
    /// one listener.
    Multi,
    /// The daemon's layout with one serving thread (a current-thread runtime, one listener).
    Current,
    /// The daemon's layout: `n` serving threads, each a current-thread runtime with its own
    /// upstream pool and `SO_REUSEPORT` listener on the same port (the kernel spreads
    /// connections), all serving one delegator (shared limits and caps).
    PerCore(usize),
}

/// `IP:PORT`, or `unix:/path` (a node's socket).
fn endpoint(s: &str) -> Result<Endpoint> {
    Ok(match s.strip_prefix("unix:") {
        Some(path) => Endpoint::Unix(path.into()),
        None => Endpoint::Tcp(s.parse::<SocketAddr>()?),
    })
}

fn parse_args() -> Result<Args> {
    let mut domain = "bench.localhost".to_owned();
    let mut routes = Vec::new();
    let mut public = false;
    let mut json_log = false;
    let mut line_by_hand = true;
    let mut revoked = 0;
    // The daemon's layout: one serving thread per core (`delegator.threads = 0`).
    let mut runtime = Layout::PerCore(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--domain" => domain = it.next().context("--domain needs a value")?,
            "--route" => {
                let v = it
                    .next()
                    .context("--route needs <network>=<api>,<gateway>")?;
                let (name, addrs) = v.split_once('=').context("--route: missing `=`")?;
                let (api, gw) = addrs.split_once(',').context("--route: missing `,`")?;
                routes.push((
                    NetworkName::new(name)?,
                    endpoint(api).context("--route: bad API address")?,
                    endpoint(gw).context("--route: bad gateway address")?,
                ));
            }
            "--public" => public = true,
            "--revoked" => {
                revoked = it
                    .next()
                    .context("--revoked needs a count")?
                    .parse()
                    .context("--revoked: not a count")?
            }
            "--log-format" => match it.next().as_deref() {
                Some("json") => (json_log, line_by_hand) = (true, true),
                // The access line through `tracing`'s JSON formatter, as before issue 18.
                Some("json-tracing") => (json_log, line_by_hand) = (true, false),
                Some("text") => json_log = false,
                _ => bail!("--log-format takes text, json or json-tracing"),
            },
            "--runtime" => {
                runtime = match it.next().as_deref() {
                    Some("multi") => Layout::Multi,
                    Some("current") => Layout::Current,
                    Some(v) if v.starts_with("per-core") => {
                        let n = match v.strip_prefix("per-core:") {
                            Some(n) => n.parse().context("--runtime per-core:<threads>")?,
                            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                        };
                        if n == 0 {
                            bail!("--runtime per-core needs at least one thread");
                        }
                        Layout::PerCore(n)
                    }
                    _ => bail!("--runtime takes multi, current or per-core[:<threads>]"),
                }
            }
            // `cargo bench` passes `--bench` to harness-less targets.
            "--bench" => {}
            other => bail!("unknown argument `{other}`"),
        }
    }
    if routes.is_empty() {
        bail!(
            "give at least one --route <network>=<api-addr>,<gateway-addr> (IP:PORT or unix:/path)"
        );
    }
    Ok(Args {
        domain,
        routes,
        public,
        json_log,
        line_by_hand,
        revoked,
        runtime,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // The daemon's logging: `info`, text by default, JSON with --log-format json.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if args.json_log {
        if args.line_by_hand {
            nexus::telemetry::access_log::install_stderr();
        }
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    nexus::telemetry::install(Duration::from_secs(60));

    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).context("random secret")?;
    let jwt = JwtConfig::hs256(hex::encode(secret))?;
    let token = mint_token(&jwt, "bench", Duration::from_secs(86_400))?;

    let registry = Registry::new();
    for (name, api, gateway) in args.routes {
        registry.publish(NetworkEntry {
            name,
            disk_bytes: None,
            access: Access {
                users: vec!["bench".into()],
                gateway_public: args.public,
                ..Access::default()
            },
            nodes: vec![ReadyNode {
                index: 0,
                peer_id: "bench".into(),
                api,
                gateway,
            }],
        });
    }
    let revocations = nexus::revocations::Revocations::default();
    let forget_at = i64::try_from(jsonwebtoken::get_current_timestamp())? + 86_400;
    for i in 0..args.revoked {
        revocations.insert(&format!("bench-revoked-{i}"), forget_at);
    }
    let cfg = DelegatorConfig::new(args.domain, jwt);
    // Blocking stdin on a plain thread (tokio's stdin needs a feature the daemon does not).
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(true);
    });
    let stdin_closed = move || {
        let mut rx = closed_rx.clone();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    };
    let announce = |addr: SocketAddr| {
        println!(
            "{}",
            serde_json::json!({ "addr": addr.to_string(), "token": token })
        );
    };
    match args.runtime {
        Layout::Multi => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let delegator = Delegator::with_revocations(registry, revocations, cfg)?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                announce(listener.local_addr()?);
                delegator.serve(listener, None, stdin_closed()).await?;
                anyhow::Ok(())
            })?;
        }
        // The daemon's layout (`Delegator::serve_on`), with one thread or one per core; the
        // caller's runtime only waits.
        Layout::Current | Layout::PerCore(_) => {
            let threads = match args.runtime {
                Layout::PerCore(n) => n,
                _ => 1,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let delegator = Delegator::with_revocations(registry, revocations, cfg)?;
                let listeners = Listeners::bind("127.0.0.1:0".parse()?, threads)?;
                announce(listeners.local_addr());
                delegator.serve_on(listeners, None, stdin_closed()).await?;
                anyhow::Ok(())
            })?;
        }
    }
    nexus::telemetry::access_log::flush();
    Ok(())
}
