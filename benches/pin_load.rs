//! Pinset load program (issue 16, `scripts/bench/run pins`).
//!
//! Adds the CIDs of a file (one per line) to a network's pinset through a running daemon's
//! gRPC API (`AddPin`, the typed client, one HTTP/2 connection, `--concurrency` calls in
//! flight) and prints one JSON line on stdout: how many were accepted, in how many seconds,
//! and the request ids. It is a program for the benchmark driver, not a test: it asserts only
//! that every call was accepted.
//!
//! ```text
//! pin_load --address http://127.0.0.1:PORT --key KEY --network NET --cids FILE
//!          [--concurrency 16]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nexus::api::pb;
use nexus::client::{self, ClientConfig};
use nexus::secret::Secret;

struct Args {
    address: String,
    key: String,
    network: String,
    cids: String,
    concurrency: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        address: String::new(),
        key: String::new(),
        network: String::new(),
        cids: String::new(),
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag}: a value is missing"))?;
        match flag.as_str() {
            "--address" => a.address = value,
            "--key" => a.key = value,
            "--network" => a.network = value,
            "--cids" => a.cids = value,
            "--concurrency" => a.concurrency = value.parse().context("--concurrency")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.address.is_empty() || a.network.is_empty() || a.cids.is_empty() {
        bail!("--address, --network and --cids are required");
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let cids: Vec<String> = std::fs::read_to_string(&args.cids)
        .with_context(|| format!("reading {}", args.cids))?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let conn = client::connect(&ClientConfig {
        address: args.address.clone(),
        api_key: Some(Secret::new(args.key.clone())),
        tls_ca: None,
        connect_timeout: Duration::from_secs(5),
    })
    .await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cids = Arc::new(cids);
    let start = Instant::now();
    let workers = (0..args.concurrency.max(1)).map(|_| {
        let (mut c, next, cids) = (conn.client(), next.clone(), cids.clone());
        let network = args.network.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(cid) = cids.get(i) else {
                    return Ok::<_, anyhow::Error>(ids);
                };
                let p = c
                    .add_pin(pb::AddPinRequest {
                        network: network.clone(),
                        cid: cid.clone(),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("AddPin {cid}"))?
                    .into_inner();
                ids.push(p.request_id);
            }
        })
    });
    let mut ids = Vec::new();
    for w in futures_util::future::join_all(workers).await {
        ids.extend(w??);
    }
    let secs = start.elapsed().as_secs_f64();
    if ids.len() != cids.len() {
        bail!("{} of {} accepted", ids.len(), cids.len());
    }
    let out = serde_json::json!({
        "accepted": ids.len(),
        "secs": secs,
        "per_s": ids.len() as f64 / secs,
        "concurrency": args.concurrency,
        "request_ids": ids,
    });
    println!("{out}");
    Ok(())
}
