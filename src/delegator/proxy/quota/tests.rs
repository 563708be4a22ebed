use super::*;
use crate::access::Access;
use crate::node::NetworkName;
use http_body_util::StreamBody;
use std::sync::atomic::{AtomicUsize, Ordering};

const LIMIT: u64 = 1000;

fn ready(index: u16) -> ReadyNode {
    ReadyNode {
        index,
        peer_id: format!("peer{index}"),
        api: Endpoint::Tcp(([127, 0, 0, 1], 5001 + index).into()),
        gateway: Endpoint::Tcp(([127, 0, 0, 1], 8001 + index).into()),
    }
}

fn entry(nodes: u16, limit: Option<u64>) -> NetworkEntry {
    NetworkEntry {
        name: NetworkName::new("quota").unwrap(),
        disk_bytes: limit,
        access: Access::default(),
        nodes: (0..nodes).map(ready).collect(),
    }
}

fn chunks(sizes: &[usize]) -> ProxyBody {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = sizes
        .iter()
        .map(|&n| Ok(Frame::data(Bytes::from(vec![7u8; n]))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// A reader that answers `size` for every node and counts its calls.
fn reader(
    size: u64,
    calls: &AtomicUsize,
) -> impl Fn(&ReadyNode) -> std::future::Ready<Result<u64, ReadError>> + '_ {
    move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(size))
    }
}

fn in_flight(q: &Quotas, peer: &str) -> u64 {
    lock(&q.node(peer).state).in_flight
}

#[test]
fn the_write_list() {
    for c in [
        "add",
        "block/put",
        "dag/put",
        "dag/import",
        "pin/add",
        "pin/update",
        "files/write",
        "files/cp",
        "files/mkdir",
        "urlstore/add",
        "tar/add",
        "object/put",
        "object/new",
        "object/patch/add-link",
        "object/patch/append-data",
        "object/patch/set-data",
    ] {
        assert!(is_write(c), "{c}");
    }
    for c in [
        "cat",
        "get",
        "ls",
        "id",
        "version",
        "pin/ls",
        "pin/rm",
        "pin/verify",
        "dag/get",
        "dag/stat",
        "dag/export",
        "block/get",
        "block/stat",
        "files/read",
        "files/ls",
        "files/stat",
        "repo/stat",
        "addx",
        "name/publish",
        "object/get",
    ] {
        assert!(!is_write(c), "{c}");
    }
    // Every rule is a command path the allow-list can name, and no write is retried as a
    // read-only command.
    for w in WRITES {
        assert!(crate::access::is_command_path(w), "{w}");
        assert!(!policy::read_only(w), "{w}");
    }
}

#[tokio::test]
async fn no_limit_no_measurement() {
    let q = Quotas::default();
    let calls = AtomicUsize::new(0);
    let a = q
        .admit_with(&entry(1, None), Some(10), chunks(&[10]), reader(0, &calls))
        .await
        .unwrap();
    assert!(a.ticket.is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_declared_length_is_admitted_or_refused_up_front_and_released_on_completion() {
    let q = Quotas::default();
    let calls = AtomicUsize::new(0);
    let e = entry(1, Some(LIMIT));
    // 600 in the repo: 401 bytes would pass 1000, 400 fit exactly.
    let err = q
        .admit_with(&e, Some(401), chunks(&[401]), reader(600, &calls))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err,
        QuotaError::Full {
            network: "quota".into(),
            node: 0,
            limit: LIMIT,
            repo: 600,
            in_flight: 0,
            write: WriteSize::Declared(401),
        }
    );
    assert_eq!(err.status(), StatusCode::INSUFFICIENT_STORAGE);
    let text = err.to_string();
    assert!(text.contains("limit 1000 bytes") && text.contains("in use 600 bytes"));
    let fields = err.fields().unwrap();
    assert_eq!(fields["limit_bytes"], 1000);
    assert_eq!(fields["used_bytes"], 600);
    assert_eq!(in_flight(&q, "peer0"), 0);

    let a = q
        .admit_with(&e, Some(400), chunks(&[400]), reader(600, &calls))
        .await
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the fresh reading is reused"
    );
    assert_eq!(in_flight(&q, "peer0"), 400);
    // While it is in flight, nothing more fits.
    assert!(q
        .admit_with(&e, Some(1), chunks(&[1]), reader(600, &calls))
        .await
        .is_err());
    // The body streams within what was admitted.
    let ticket = a.ticket.unwrap();
    let body = a.body.collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 400);
    assert!(ticket.cut().is_none());
    assert_eq!(in_flight(&q, "peer0"), 400, "counted until the answer ends");
    // The answer ends: released; the bytes count as repo until the next reading.
    let resp = ticket.hold(full(Bytes::from_static(b"ok")));
    drop(resp.collect().await.unwrap());
    let node = q.node("peer0");
    let s = lock(&node.state);
    assert_eq!((s.in_flight, s.repo, s.read_at), (0, 1000, None));
}

#[tokio::test]
async fn a_streamed_body_is_cut_at_the_limit() {
    let q = Quotas::default();
    let calls = AtomicUsize::new(0);
    let e = entry(1, Some(LIMIT));
    let a = q
        .admit_with(&e, None, chunks(&[300, 300, 300, 300]), reader(200, &calls))
        .await
        .unwrap();
    let ticket = a.ticket.unwrap();
    let mut body = a.body;
    let mut forwarded = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => forwarded += f.into_data().unwrap().len(),
            Some(Err(e)) => break e,
            None => panic!("the body passed the limit"),
        }
    };
    // 200 + 300 + 300 = 800 ≤ 1000; the third frame would make 1100.
    assert_eq!(forwarded, 600);
    assert!(err.to_string().contains("after 600 bytes"), "{err}");
    assert!(body.frame().await.is_none(), "a cut body stays ended");
    let cut = ticket.cut().expect("cut");
    assert_eq!(cut.fields().unwrap()["used_bytes"], 800);
    assert_eq!(in_flight(&q, "peer0"), 600);
    // The node answered before the cut: its answer ends with the error, not cleanly.
    let mut resp = ticket.hold(full(Bytes::from_static(b"{}")));
    assert!(resp.frame().await.unwrap().is_ok());
    assert!(resp.frame().await.unwrap().is_err());
    drop(resp);
    assert_eq!(
        in_flight(&q, "peer0"),
        600,
        "the request body still holds it"
    );
    drop(body);
    assert_eq!(
        in_flight(&q, "peer0"),
        0,
        "released once both bodies are gone"
    );
}

#[tokio::test]
async fn released_on_error_and_on_cancel() {
    let q = Quotas::default();
    let calls = AtomicUsize::new(0);
    let e = entry(1, Some(LIMIT));
    // The forward failed: the pipeline drops the admitted write unanswered.
    let a = q
        .admit_with(&e, Some(500), chunks(&[500]), reader(0, &calls))
        .await
        .unwrap();
    assert_eq!(in_flight(&q, "peer0"), 500);
    drop(a);
    assert_eq!(in_flight(&q, "peer0"), 0);
    // The client went away mid-stream: both bodies are dropped half read.
    let a = q
        .admit_with(&e, None, chunks(&[100, 100, 100]), reader(0, &calls))
        .await
        .unwrap();
    let mut body = a.body;
    body.frame().await.unwrap().unwrap();
    let resp = a.ticket.unwrap().hold(chunks(&[1, 1]));
    assert_eq!(in_flight(&q, "peer0"), 100);
    drop(body);
    assert_eq!(in_flight(&q, "peer0"), 100, "the answer still holds it");
    drop(resp);
    assert_eq!(in_flight(&q, "peer0"), 0);
    // The node read again after each completed write (2 writes, then this one).
    assert!(q
        .admit_with(&e, Some(1), chunks(&[1]), reader(0, &calls))
        .await
        .is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_full_node_takes_no_write_and_an_unreadable_node_is_skipped() {
    let q = Quotas::default();
    let calls = AtomicUsize::new(0);
    let e = entry(2, Some(LIMIT));
    let err = q
        .admit_with(&e, None, chunks(&[1]), reader(LIMIT, &calls))
        .await
        .err()
        .expect("full");
    assert!(matches!(
        err,
        QuotaError::Full {
            write: WriteSize::Unknown,
            ..
        }
    ));
    assert!(err.to_string().contains("the node is full"));
    // Node 0 cannot be read: the write is measured on (and may only go to) node 1.
    let q = Quotas::default();
    let first_fails = |n: &ReadyNode| {
        std::future::ready(if n.index == 0 {
            Err(ReadError::Status(StatusCode::INTERNAL_SERVER_ERROR))
        } else {
            Ok(0)
        })
    };
    let a = q
        .admit_with(&e, Some(10), chunks(&[10]), first_fails)
        .await
        .unwrap();
    assert_eq!(a.skip, 1);
    assert_eq!(in_flight(&q, "peer1"), 10);
    // No node can be read: no write.
    let q = Quotas::default();
    let none = |_: &ReadyNode| std::future::ready(Err(ReadError::Timeout(READ_TIMEOUT)));
    let err = q
        .admit_with(&e, Some(10), chunks(&[10]), none)
        .await
        .err()
        .unwrap();
    assert_eq!(err, QuotaError::Unmeasured("quota".into()));
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

#[test]
fn a_reading_that_raced_a_completion_is_not_believed() {
    let n = NodeUse::new();
    n.observe(100, 0);
    assert!(n.fresh());
    n.reserve(50, LIMIT).unwrap();
    let before = lock(&n.state).completed;
    n.complete(50);
    // A reading begun before the completion may miss its 50 bytes.
    n.observe(100, before);
    let s = lock(&n.state);
    assert_eq!((s.repo, s.read_at.is_none()), (150, true));
}

#[tokio::test]
async fn a_cut_is_recognised_in_an_upstream_error() {
    let q = Quotas::default();
    let calls = AtomicUsize::new(0);
    let a = q
        .admit_with(
            &entry(1, Some(LIMIT)),
            None,
            chunks(&[2000]),
            reader(0, &calls),
        )
        .await
        .unwrap();
    let cut = a.body.collect().await.expect_err("cut");
    assert!(cut_at_limit(&*cut));
    let other: BoxError = "connection reset".into();
    assert!(!cut_at_limit(&*other));
}

#[test]
fn repo_stat_answers_parse() {
    let size = parse_repo_size(
        br#"{"RepoSize":4096,"StorageMax":67108864,"NumObjects":0,"RepoPath":"","Version":""}"#,
    )
    .unwrap();
    assert_eq!(size, 4096);
    assert!(parse_repo_size(b"{}").is_err());
    assert!(parse_repo_size(br#"{"RepoSize":-1}"#).is_err());
}
