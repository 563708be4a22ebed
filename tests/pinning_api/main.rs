//! The IPFS Pinning Service API (spec v1.0.0) through a real daemon's delegator, on real kubo
//! nodes in Docker: endpoint by endpoint (status codes, the `Failure` body), every filter,
//! paging over 1,000 pins, roles and owners, host form and path form, bad input changing
//! nothing, a CID no node has ending `failed`, and `DELETE` unpinning on every node.
//!
//! Ports: only 26000-26999 (swarm 26000-26019, gRPC 26090, delegator 26091).

mod bulk;
#[path = "../common/mod.rs"]
mod common;
mod fixture;

use std::time::Duration;

use serde_json::{json, Value};

use fixture::*;

#[test]
fn pinning_service_api_endpoint_by_endpoint() {
    let d = Daemon::start();
    let net = format!("psa-{}", random_hex(3));
    let other = format!("psb-{}", random_hex(3));
    let users = [
        "--user",
        "alice",
        "--user",
        "bob",
        "--user",
        "rita:reader",
        "--user",
        "root:admin",
    ];
    let mut args = vec![
        "network",
        "create",
        &net,
        "--replicas",
        "2",
        "--replication",
        "2",
        "--allowed-origin",
        "https://app.example",
    ];
    args.extend_from_slice(&users);
    args.push("--start");
    assert_eq!(d.json(&args)["status"], "running");
    let mut args = vec!["network", "create", &other, "--replicas", "1"];
    args.extend_from_slice(&users);
    args.push("--start");
    assert_eq!(d.json(&args)["status"], "running");
    let alice = d.token("alice", &[]);
    let bob = d.token("bob", &[]);
    let rita = d.token("rita", &[]);
    let root = d.token("root", &[]);
    let mallory = d.token("mallory", &[]);
    let alice_other_only = d.token("alice", &["--net", &other]);
    let alice_as_reader = d.token("alice", &["--role", "reader"]);
    let limit = Duration::from_secs(90);

    // 401: no token, a bad token; 403: not a member, a token for another network, a reader.
    let pin_body = json!({"cid": absent_cid()});
    refused(
        call(Form::Host, &net, "GET", "", None, None),
        401,
        "UNAUTHORIZED",
        "no token",
    );
    refused(
        call(
            Form::Path,
            &net,
            "POST",
            "",
            Some("not.a.jwt"),
            Some(&pin_body),
        ),
        401,
        "UNAUTHORIZED",
        "bad token",
    );
    refused(
        call(Form::Host, &net, "GET", "", Some(&mallory), None),
        403,
        "FORBIDDEN",
        "non-member",
    );
    refused(
        call(Form::Host, &net, "GET", "", Some(&alice_other_only), None),
        403,
        "FORBIDDEN",
        "token for another network",
    );
    // A revoked token is refused at once.
    let issued = d.json(&["token", "issue", "--user", "alice", "--ttl", "30m"]);
    let revoked = issued["token"].as_str().expect("token").to_string();
    assert_eq!(
        call(Form::Host, &net, "GET", "", Some(&revoked), None).0,
        200
    );
    d.json(&["token", "revoke", issued["jti"].as_str().expect("jti")]);
    refused(
        call(Form::Path, &net, "GET", "", Some(&revoked), None),
        401,
        "UNAUTHORIZED",
        "revoked token",
    );
    refused(
        call(Form::Host, &net, "POST", "", Some(&rita), Some(&pin_body)),
        403,
        "FORBIDDEN",
        "reader adds",
    );
    refused(
        call(
            Form::Host,
            &net,
            "POST",
            "",
            Some(&alice_as_reader),
            Some(&pin_body),
        ),
        403,
        "FORBIDDEN",
        "token lowered to reader adds",
    );
    refused(
        call(Form::Host, "nosuchnet", "GET", "", Some(&alice), None),
        404,
        "NOT_FOUND",
        "unknown network",
    );
    assert_eq!(count(&net, &root, ""), 0, "refusals added nothing");

    // CORS as on the other features: an allowed origin's preflight (DELETE included) and its
    // answers carry the headers; a foreign origin is refused in the Failure shape.
    let cors = |origin: &str, method: &str, preflight: bool| {
        let mut req = request(Form::Host, &net, method, "", Some(&rita), None);
        let h = req.headers_mut();
        h.insert("origin", origin.parse().expect("origin"));
        if preflight {
            h.insert(
                "access-control-request-method",
                "DELETE".parse().expect("method"),
            );
        }
        block_on(send_with_headers(req))
    };
    let (s, h) = cors("https://app.example", "OPTIONS", true);
    assert_eq!(s, 204, "{h:?}");
    assert_eq!(
        h.get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"https://app.example"[..])
    );
    assert!(h
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("DELETE")));
    let (s, h) = cors("https://app.example", "GET", false);
    assert_eq!(s, 200);
    assert!(h.contains_key("access-control-allow-origin"));
    let (s, _) = cors("https://evil.example", "GET", false);
    assert_eq!(s, 403);

    // Real content: added without pinning, then pinned through POST /pins (host form) on both
    // nodes, read back through GET (path form).
    let cid = add_unpinned(&net, &alice, &format!("pinning api {net}"));
    let (s, created) = call(
        Form::Host,
        &net,
        "POST",
        "",
        Some(&alice),
        Some(&json!({
            "cid": cid,
            "name": "Report",
            "meta": {"app": "e2e"},
            // What kubo's own `pin remote add` sends: its node's addresses, any transport.
            "origins": [
                "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
                "/ip6/2001:db8::7/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            ],
        })),
    );
    assert_eq!(s, 202, "{created}");
    let id = created["requestid"]
        .as_str()
        .expect("requestid")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(created["pin"]["cid"], cid.as_str());
    assert_eq!(created["pin"]["name"], "Report");
    assert!(
        ["queued", "pinning", "pinned"].contains(&created["status"].as_str().unwrap_or("")),
        "{created}"
    );
    let delegates: Vec<&str> = created["delegates"]
        .as_array()
        .expect("delegates")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(delegates.len(), 2, "{created}");
    for dlg in &delegates {
        assert!(
            dlg.starts_with("/ip4/127.0.0.1/tcp/") && dlg.contains("/p2p/12D3"),
            "{dlg}"
        );
    }
    assert_eq!(created["pin"]["origins"].as_array().map(Vec::len), Some(2));
    let created_at = created["created"].as_str().expect("created").to_string();
    assert!(
        created_at.ends_with('Z') && created_at.contains('.'),
        "{created_at}"
    );
    let mut got = Value::Null;
    assert!(
        poll_until(limit, || {
            got = call(
                Form::Path,
                &net,
                "GET",
                &format!("/{id}"),
                Some(&rita),
                None,
            )
            .1;
            got["status"] == "pinned"
        }),
        "never pinned: {got}\n{}",
        d.logs()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(got["info"]["owner"], "alice");
    let holders = |cid: &str| -> Vec<u16> {
        (0..2)
            .filter(|i| node_pins(&format!("nexus-{net}-{i}")).contains(cid))
            .collect()
    };
    assert_eq!(holders(&cid), vec![0, 1], "pinned on both nodes");

    // Filters on it: the default status is pinned; name with its match modes; meta; cid.
    let (s, page) = call(Form::Host, &net, "GET", "", Some(&rita), None);
    assert_eq!((s, &page["count"]), (200, &json!(1)), "{page}");
    assert_eq!(page["results"][0]["requestid"], id.as_str());
    assert_eq!(count(&net, &rita, "status=queued,failed"), 0);
    assert_eq!(count(&net, &rita, "name=Report"), 1);
    assert_eq!(count(&net, &rita, "name=report"), 0);
    assert_eq!(count(&net, &rita, "name=report&match=iexact"), 1);
    assert_eq!(count(&net, &rita, "name=epo&match=partial"), 1);
    assert_eq!(count(&net, &rita, "name=EPO&match=partial"), 0);
    assert_eq!(count(&net, &rita, "name=EPO&match=ipartial"), 1);
    assert_eq!(count(&net, &rita, &meta_q(&json!({"app": "e2e"}))), 1);
    assert_eq!(count(&net, &rita, &meta_q(&json!({"app": "other"}))), 0);
    assert_eq!(
        count(&net, &rita, &meta_q(&json!({"app": "e2e", "x": "y"}))),
        0
    );
    assert_eq!(count(&net, &rita, &format!("cid={cid}")), 1);
    assert_eq!(count(&net, &rita, &format!("cid={}", absent_cid())), 0);

    // Bad input: 400 (or 404) with the Failure body, and nothing changes.
    let before_all = list(&net, &root, "limit=1000");
    for (body, what) in [
        (json!({"cid": "not-a-cid"}), "invalid CID"),
        (json!({"name": "no cid"}), "no CID"),
        (
            json!({"cid": cid, "name": "n".repeat(256)}),
            "oversize name",
        ),
        (
            json!({"cid": cid, "meta": {"k": "v".repeat(5000)}}),
            "oversize meta",
        ),
        (json!({"cid": cid, "meta": {"k": 1}}), "meta not strings"),
        (
            json!({"cid": cid, "origins": ["not a multiaddr"]}),
            "bad origin",
        ),
        (json!("just a string"), "not an object"),
    ] {
        refused(
            call(Form::Host, &net, "POST", "", Some(&alice), Some(&body)),
            400,
            "BAD_REQUEST",
            what,
        );
        refused(
            call(
                Form::Path,
                &net,
                "POST",
                &format!("/{id}"),
                Some(&alice),
                Some(&body),
            ),
            400,
            "BAD_REQUEST",
            &format!("replace: {what}"),
        );
    }
    for q in [
        "limit=0",
        "limit=1001",
        "status=done",
        "match=fuzzy",
        "before=yesterday",
        "meta=%5B%5D",
        "cid=nope",
    ] {
        refused(
            call(Form::Host, &net, "GET", &format!("?{q}"), Some(&rita), None),
            400,
            "BAD_REQUEST",
            q,
        );
    }
    let unknown = random_hex(16);
    for (method, tail) in [
        ("GET", format!("/{unknown}")),
        ("DELETE", format!("/{unknown}")),
        ("GET", "/zz-not-an-id".to_string()),
    ] {
        refused(
            call(Form::Host, &net, method, &tail, Some(&root), None),
            404,
            "NOT_FOUND",
            &tail,
        );
    }
    refused(
        call(
            Form::Host,
            &net,
            "POST",
            &format!("/{unknown}"),
            Some(&root),
            Some(&json!({"cid": cid})),
        ),
        404,
        "NOT_FOUND",
        "replace an unknown id",
    );
    refused(
        call(Form::Host, &net, "PUT", "", Some(&root), None),
        405,
        "METHOD_NOT_ALLOWED",
        "PUT",
    );
    assert_eq!(
        list(&net, &root, "limit=1000"),
        before_all,
        "bad input changed nothing"
    );

    // Another network's request id is not found here, and stays there.
    let (s, theirs) = call(
        Form::Host,
        &other,
        "POST",
        "",
        Some(&alice),
        Some(&json!({"cid": absent_cid()})),
    );
    assert_eq!(s, 202, "{theirs}");
    assert_eq!(
        theirs["status"], "queued",
        "a CID no node has starts queued: {theirs}"
    );
    let their_id = theirs["requestid"].as_str().expect("requestid").to_string();
    for method in ["GET", "DELETE"] {
        refused(
            call(
                Form::Host,
                &net,
                method,
                &format!("/{their_id}"),
                Some(&root),
                None,
            ),
            404,
            "NOT_FOUND",
            "another network's id",
        );
    }
    refused(
        call(
            Form::Host,
            &net,
            "POST",
            &format!("/{their_id}"),
            Some(&root),
            Some(&json!({"cid": cid})),
        ),
        404,
        "NOT_FOUND",
        "replace another network's id",
    );
    assert_eq!(
        call(
            Form::Host,
            &other,
            "GET",
            &format!("/{their_id}"),
            Some(&alice),
            None
        )
        .0,
        200
    );

    // Replace: only the owner (or an admin); a new request id, the old one gone, the CID kept.
    for (tok, who) in [(&bob, "another writer"), (&rita, "a reader")] {
        refused(
            call(
                Form::Host,
                &net,
                "POST",
                &format!("/{id}"),
                Some(tok),
                Some(&json!({"cid": cid})),
            ),
            403,
            "FORBIDDEN",
            who,
        );
        refused(
            call(
                Form::Host,
                &net,
                "DELETE",
                &format!("/{id}"),
                Some(tok),
                None,
            ),
            403,
            "FORBIDDEN",
            who,
        );
    }
    let (s, replaced) = call(
        Form::Path,
        &net,
        "POST",
        &format!("/{id}"),
        Some(&alice),
        Some(&json!({"cid": cid, "name": "Report v2"})),
    );
    assert_eq!(s, 202, "{replaced}");
    let new_id = replaced["requestid"]
        .as_str()
        .expect("requestid")
        .to_string();
    assert_ne!(new_id, id);
    assert_eq!(replaced["pin"]["name"], "Report v2");
    refused(
        call(
            Form::Host,
            &net,
            "GET",
            &format!("/{id}"),
            Some(&alice),
            None,
        ),
        404,
        "NOT_FOUND",
        "replaced id",
    );
    assert!(
        poll_until(limit, || call(
            Form::Host,
            &net,
            "GET",
            &format!("/{new_id}"),
            Some(&alice),
            None
        )
        .1["status"]
            == "pinned"),
        "the replacement is not pinned"
    );
    assert_eq!(holders(&cid), vec![0, 1], "replacing kept the copies");

    // An admin removes anyone's pin.
    let (_, bobs) = call(
        Form::Host,
        &net,
        "POST",
        "",
        Some(&bob),
        Some(&json!({"cid": absent_cid(), "name": "bob's"})),
    );
    let bobs_id = bobs["requestid"].as_str().expect("requestid").to_string();
    let (s, v) = call(
        Form::Host,
        &net,
        "DELETE",
        &format!("/{bobs_id}"),
        Some(&root),
        None,
    );
    assert_eq!((s, v), (202, Value::Null));
    refused(
        call(
            Form::Host,
            &net,
            "GET",
            &format!("/{bobs_id}"),
            Some(&bob),
            None,
        ),
        404,
        "NOT_FOUND",
        "removed by admin",
    );

    // DELETE by the owner: 202, then unpinned on every node.
    let (s, _) = call(
        Form::Host,
        &net,
        "DELETE",
        &format!("/{new_id}"),
        Some(&alice),
        None,
    );
    assert_eq!(s, 202);
    refused(
        call(
            Form::Host,
            &net,
            "GET",
            &format!("/{new_id}"),
            Some(&alice),
            None,
        ),
        404,
        "NOT_FOUND",
        "deleted",
    );
    assert!(
        poll_until(limit, || holders(&cid).is_empty()),
        "still pinned on {:?}",
        holders(&cid)
    );
    assert_eq!(count(&net, &root, ""), 0);

    bulk::thousand_pins(&d, &other, &alice, &their_id);
}
