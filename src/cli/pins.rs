//! `nexus pin add|ls|get|rm <network>`: a network's pinset from the command line.
//!
//! Owns the pin commands' requests (flags → `AddPin`/`ListPins`/`GetPin`/`RemovePin`) and their
//! output (a pin's fields and its nodes, a table of pins, or one JSON document with `--json`).
//! It must not check CIDs, names or meta itself (the daemon does).

use anyhow::{Context, Result};
use nexus::api::pb;

use super::commands::{connect, print_json, status};
use super::render;
use super::{Global, PinCmd};

/// `KEY=VALUE` flags as a map.
fn meta_flags(flag: &str, pairs: &[String]) -> Result<std::collections::HashMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{flag} `{p}`: use KEY=VALUE"))
        })
        .collect()
}

pub async fn pin(global: &Global, cmd: PinCmd) -> Result<()> {
    const PIN: &str = "nexus.v1.Pin";
    let conn = connect(global).await?;
    let mut c = conn.client();
    match cmd {
        PinCmd::Add {
            network,
            cid,
            name,
            meta,
        } => {
            let req = pb::AddPinRequest {
                network,
                cid,
                name: name.unwrap_or_default(),
                meta: meta_flags("--meta", &meta)?,
                origins: vec![],
            };
            let p = c.add_pin(req).await.map_err(status)?.into_inner();
            if global.json {
                return print_json(PIN, &p);
            }
            print_pin(&p);
            eprintln!(
                "\nfollow it with `nexus pin get {} {}`",
                p.network, p.request_id
            );
        }
        PinCmd::Ls {
            network,
            cids,
            name,
            name_match,
            statuses,
            meta,
            limit,
        } => {
            let req = pb::ListPinsRequest {
                network: network.clone(),
                cid: cids,
                name: name.unwrap_or_default(),
                r#match: name_match.unwrap_or_default(),
                status: statuses,
                before_ms: 0,
                after_ms: 0,
                limit,
                meta: meta_flags("--meta", &meta)?,
            };
            let r = c.list_pins(req).await.map_err(status)?.into_inner();
            if global.json {
                return print_json("nexus.v1.ListPinsResponse", &r);
            }
            if r.pins.is_empty() {
                eprintln!("no pins: add one with `nexus pin add {network} <cid>`");
                return Ok(());
            }
            let mut t = vec![vec![
                "REQUEST ID".into(),
                "CID".into(),
                "NAME".into(),
                "STATUS".into(),
                "NODES".into(),
                "CREATED".into(),
            ]];
            for p in &r.pins {
                t.push(vec![
                    p.request_id.clone(),
                    p.cid.clone(),
                    render::or_dash(&p.name),
                    p.status.clone(),
                    held_on(p),
                    render::time(p.created_at_ms),
                ]);
            }
            render::table(&t);
            if r.count > r.pins.len() as u64 {
                eprintln!("{} of {} shown (--limit)", r.pins.len(), r.count);
            }
        }
        PinCmd::Get {
            network,
            request_id,
        } => {
            let p = c
                .get_pin(pb::GetPinRequest {
                    network,
                    request_id,
                })
                .await
                .map_err(status)?
                .into_inner();
            if global.json {
                return print_json(PIN, &p);
            }
            print_pin(&p);
        }
        PinCmd::Rm {
            network,
            request_id,
        } => {
            let p = c
                .remove_pin(pb::RemovePinRequest {
                    network,
                    request_id,
                })
                .await
                .map_err(status)?
                .into_inner();
            if global.json {
                return print_json(PIN, &p);
            }
            eprintln!(
                "removed pin {} ({}); its nodes unpin it in the background",
                p.request_id, p.cid
            );
        }
    }
    Ok(())
}

/// The nodes that hold a pin, e.g. `0,2`.
fn held_on(p: &pb::Pin) -> String {
    let held: Vec<String> = p
        .allocations
        .iter()
        .filter(|a| a.status == "pinned")
        .map(|a| a.node.to_string())
        .collect();
    render::or_dash(&held.join(","))
}

fn print_pin(p: &pb::Pin) {
    let mut meta: Vec<String> = p.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    meta.sort();
    let rows = [
        ("request id", p.request_id.clone()),
        ("network", p.network.clone()),
        ("cid", p.cid.clone()),
        ("name", render::or_dash(&p.name)),
        ("status", p.status.clone()),
        ("reason", render::or_dash(&p.reason)),
        ("held on", held_on(p)),
        ("meta", render::list(&meta)),
        ("owner", render::or_dash(&p.owner)),
        ("created", render::time(p.created_at_ms)),
    ];
    for (k, v) in rows {
        println!("{k:<11} {v}");
    }
    if p.allocations.is_empty() {
        return;
    }
    println!();
    let mut t = vec![vec![
        "NODE".into(),
        "STATUS".into(),
        "ATTEMPTS".into(),
        "REASON".into(),
    ]];
    for a in &p.allocations {
        t.push(vec![
            a.node.to_string(),
            a.status.clone(),
            a.attempts.to_string(),
            render::or_dash(&a.reason),
        ]);
    }
    render::table(&t);
}
