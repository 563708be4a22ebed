//! 1,000 pins through `POST /pins` on a network whose nodes have none of their CIDs: paging
//! by `before`/`after`, every filter over them, and each one ending `failed`, never stuck.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::common;
use super::fixture::*;

pub(crate) fn thousand_pins(d: &Daemon, other: &str, alice: &str, their_id: &str) {
    // 1,000 pins of CIDs no node has, through POST /pins on the other network.
    let (s, _) = call(
        Form::Host,
        other,
        "DELETE",
        &format!("/{their_id}"),
        Some(alice),
        None,
    );
    assert_eq!(s, 202);
    let started = Instant::now();
    let bodies: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "cid": absent_cid(),
                "name": format!("Item-{i:04}"),
                "meta": {"batch": "b1", "parity": if i % 2 == 0 { "even" } else { "odd" }},
            })
        })
        .collect();
    let answers: Vec<(u16, Bytes)> = block_on(async {
        let mut out = Vec::new();
        for chunk in bodies.chunks(25) {
            let calls = chunk.iter().map(|b| {
                common::send(request(Form::Host, other, "POST", "", Some(alice), Some(b)))
            });
            out.extend(futures_util::future::join_all(calls).await);
        }
        out
    });
    let accept_secs = started.elapsed().as_secs_f64();
    let mut added: Vec<Value> = Vec::new();
    for (s, b) in &answers {
        assert_eq!(*s, 202, "{}", String::from_utf8_lossy(b));
        added.push(serde_json::from_slice(b).expect("PinStatus"));
    }
    eprintln!(
        "1000 pins accepted in {accept_secs:.2}s ({:.0}/s)",
        1000.0 / accept_secs
    );
    assert_eq!(count(other, alice, ""), 1000);

    // Paging: newest first, distinct `created`; `before` walks every page, `after` the rest.
    let all = list(other, alice, "limit=1000");
    let results = all["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    let times: Vec<i64> = results
        .iter()
        .map(|r| {
            let t = r["created"].as_str().expect("created");
            nexus::delegator::pinsvc::wire::parse_rfc3339(t).expect("RFC 3339")
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first, no two alike"
    );
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..11 {
        let q = match &before {
            Some(b) => format!("limit=100&before={}", enc(b)),
            None => "limit=100".to_string(),
        };
        let page = list(other, alice, &q);
        let rs = page["results"].as_array().expect("results").clone();
        if rs.is_empty() {
            break;
        }
        assert!(rs.len() <= 100);
        before = rs
            .last()
            .and_then(|r| r["created"].as_str())
            .map(str::to_string);
        seen.extend(
            rs.iter()
                .map(|r| r["requestid"].as_str().unwrap_or("").to_string()),
        );
    }
    let all_ids: Vec<String> = results
        .iter()
        .map(|r| r["requestid"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        seen, all_ids,
        "paging by `before` returns every pin once, in order"
    );
    let mid = results[499]["created"].as_str().expect("created");
    assert_eq!(count(other, alice, &format!("after={}", enc(mid))), 499);
    assert_eq!(count(other, alice, &format!("before={}", enc(mid))), 500);
    let first_page = list(other, alice, "");
    assert_eq!(
        first_page["results"].as_array().map(Vec::len),
        Some(10),
        "default limit 10"
    );

    // Every filter over the 1,000.
    let cids: Vec<&str> = added[..3]
        .iter()
        .filter_map(|a| a["pin"]["cid"].as_str())
        .collect();
    assert_eq!(count(other, alice, &format!("cid={}", cids.join(","))), 3);
    let eleven: Vec<&str> = added[..11]
        .iter()
        .filter_map(|a| a["pin"]["cid"].as_str())
        .collect();
    refused(
        call(
            Form::Host,
            other,
            "GET",
            &format!("?cid={}", eleven.join(",")),
            Some(alice),
            None,
        ),
        400,
        "BAD_REQUEST",
        "11 CIDs",
    );
    assert_eq!(count(other, alice, "name=Item-0007"), 1);
    assert_eq!(count(other, alice, "name=item-0007"), 0);
    assert_eq!(count(other, alice, "name=item-0007&match=iexact"), 1);
    assert_eq!(count(other, alice, "name=Item-00&match=partial"), 100);
    assert_eq!(count(other, alice, "name=item-00&match=partial"), 0);
    assert_eq!(count(other, alice, "name=item-00&match=ipartial"), 100);
    assert_eq!(
        count(other, alice, &meta_q(&json!({"parity": "even"}))),
        500
    );
    assert_eq!(
        count(
            other,
            alice,
            &meta_q(&json!({"parity": "odd", "batch": "b1"}))
        ),
        500
    );
    assert_eq!(count(other, alice, &meta_q(&json!({"parity": "none"}))), 0);
    assert_eq!(
        count(
            other,
            alice,
            &format!(
                "name=Item-0008&match=exact&{}",
                meta_q(&json!({"parity": "even"}))
            )
        ),
        1
    );

    // None is stuck: every one ends `failed` with a reason after pin_fail_after.
    assert!(
        poll_until(Duration::from_secs(120), || count(
            other,
            alice,
            "status=failed"
        ) == 1000),
        "not all failed: {}\n{}",
        list(other, alice, "status=queued,pinning&limit=3"),
        d.logs()
    );
    assert_eq!(count(other, alice, "status=queued,pinning,pinned"), 0);
    let one = call(
        Form::Path,
        other,
        "GET",
        &format!("/{}", added[0]["requestid"].as_str().unwrap_or("")),
        Some(alice),
        None,
    )
    .1;
    assert_eq!(one["status"], "failed");
    assert!(
        one["info"]["status_details"]
            .as_str()
            .unwrap_or("")
            .contains("no node could pin"),
        "{one}"
    );
    // The default listing (pinned only) shows none of them.
    assert_eq!(
        call(Form::Host, other, "GET", "", Some(alice), None).1["count"],
        0
    );
}
