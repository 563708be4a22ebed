//! Reading the CIDs a write pinned (or unpinned) from the node's answer as it streams through.
//!
//! Owns [`Tap`] (which commands are read: `add` unless `pin=false`, `pin/add`, `dag/import`
//! unless `pin-roots=false`, `pin/rm`) and the body wrapper that passes every frame on
//! unchanged while scanning its lines: at most [`MAX_LINE`] bytes of one line are kept (a longer
//! line is skipped) and at most [`MAX_CIDS`] CIDs, so memory stays bounded whatever the size of
//! the answer. Only an answer that ends normally is reported, once, to the
//! [`crate::pinsink::PinSink`]; `pin/rm` is reported from its `arg`s ([`args`]). It must not change the answer nor wait on the sink.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;

use super::{BoxError, ProxyBody};
use crate::node::NetworkName;
use crate::pinsink::{PinChange, PinSink};

/// Longest answer line read (kubo's lines are a few hundred bytes).
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Most CIDs taken from one answer.
pub(crate) const MAX_CIDS: usize = 10_000;

/// Which answer is read, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tap {
    /// `add`: the top-level entries (or only the wrapping directory).
    Add { wrapped: bool },
    /// `pin/add`: `Pins`.
    PinAdd,
    /// `dag/import`: the roots pinned without error.
    DagImport,
    /// `pin/rm`: `Pins`.
    PinRm,
}

fn query_flag(query: Option<&str>, key: &str) -> Option<bool> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
        (k == key).then_some(!matches!(v, "false" | "0"))
    })
}

/// The `arg` values of a query (percent-decoded), at most [`MAX_CIDS`].
pub(crate) fn args(query: Option<&str>) -> Vec<String> {
    let Some(q) = query else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|kv| kv.strip_prefix("arg="))
        .map(crate::delegator::pinsvc::wire::percent_decode)
        .map(|a| a.trim_start_matches("/ipfs/").to_string())
        .take(MAX_CIDS)
        .collect()
}

impl Tap {
    /// The tap of an RPC command, if its answer says what it pinned.
    pub(crate) fn of(command: &str, query: Option<&str>) -> Option<Self> {
        match command {
            "add"
                if query_flag(query, "pin") != Some(false)
                    && query_flag(query, "only-hash") != Some(true) =>
            {
                Some(Self::Add {
                    wrapped: query_flag(query, "wrap-with-directory") == Some(true)
                        || query_flag(query, "w") == Some(true),
                })
            }
            "pin/add" => Some(Self::PinAdd),
            "dag/import" if query_flag(query, "pin-roots") != Some(false) => Some(Self::DagImport),
            "pin/rm" => Some(Self::PinRm),
            _ => None,
        }
    }

    fn change(&self) -> PinChange {
        match self {
            Self::PinRm => PinChange::Unpinned,
            _ => PinChange::Pinned,
        }
    }
}

/// What a scan of the lines found so far.
struct Scan {
    tap: Tap,
    line: Vec<u8>,
    /// The current line went over [`MAX_LINE`]: skip it to its end.
    skipping: bool,
    cids: Vec<String>,
    /// `add` with wrapping: only the last entry (the directory) counts.
    last: Option<String>,
}

impl Scan {
    fn feed(&mut self, data: &[u8]) {
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            let ends = chunk.last() == Some(&b'\n');
            if !self.skipping {
                if self.line.len() + chunk.len() > MAX_LINE {
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            if ends {
                if !self.skipping {
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                }
                self.skipping = false;
                self.line.clear();
            }
        }
    }

    fn push(&mut self, cid: &str) {
        if self.cids.len() < MAX_CIDS && !self.cids.iter().any(|c| c == cid) {
            self.cids.push(cid.to_string());
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        match self.tap {
            Tap::Add { wrapped } => {
                let (Some(hash), Some(name)) = (v["Hash"].as_str(), v["Name"].as_str()) else {
                    return;
                };
                if wrapped {
                    self.last = Some(hash.to_string());
                } else if !name.contains('/') {
                    self.push(hash);
                }
            }
            Tap::PinAdd | Tap::PinRm => {
                for c in v["Pins"].as_array().into_iter().flatten() {
                    if let Some(c) = c.as_str() {
                        self.push(c);
                    }
                }
            }
            Tap::DagImport => {
                let root = &v["Root"];
                let ok = root["PinErrorMsg"].as_str().unwrap_or("").is_empty();
                if let (true, Some(c)) = (ok, root["Cid"]["/"].as_str()) {
                    self.push(c);
                }
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.line.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        if let Some(root) = self.last.take() {
            self.push(&root);
        }
        self.cids
    }
}

/// Where a finished scan goes.
struct Report {
    sink: Arc<dyn PinSink>,
    network: NetworkName,
    user: String,
}

struct Tapped {
    inner: ProxyBody,
    scan: Option<Scan>,
    report: Option<Report>,
}

impl Tapped {
    /// Reports what the scan found, once.
    fn report(&mut self) {
        if let (Some(scan), Some(r)) = (self.scan.take(), self.report.take()) {
            let change = scan.tap.change();
            let cids = scan.finish();
            if !cids.is_empty() {
                r.sink.record(&r.network, &r.user, change, cids);
            }
        }
    }
}

impl Drop for Tapped {
    /// A server stops polling a body of known length once it has sent that many bytes: the
    /// answer is whole if its body says it ended; one dropped before that reports nothing.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.report();
        }
    }
}

impl Body for Tapped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(scan)) = (frame.data_ref(), self.scan.as_mut()) {
                    scan.feed(data);
                }
            }
            Poll::Ready(None) => self.report(),
            Poll::Ready(Some(Err(_))) => {
                // A broken answer reports nothing.
                self.scan = None;
                self.report = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, passed on unchanged, its CIDs reported to `sink` once it ends.
pub(crate) fn tap(
    body: ProxyBody,
    tap: Tap,
    sink: Arc<dyn PinSink>,
    network: NetworkName,
    user: String,
) -> ProxyBody {
    Tapped {
        inner: body,
        scan: Some(Scan {
            tap,
            line: Vec::new(),
            skipping: false,
            cids: Vec::new(),
            last: None,
        }),
        report: Some(Report {
            sink,
            network,
            user,
        }),
    }
    .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(tap: Tap, chunks: &[&str]) -> Vec<String> {
        let mut s = Scan {
            tap,
            line: Vec::new(),
            skipping: false,
            cids: Vec::new(),
            last: None,
        };
        for c in chunks {
            s.feed(c.as_bytes());
        }
        s.finish()
    }

    #[test]
    fn taps_by_command_and_flags() {
        assert_eq!(Tap::of("add", None), Some(Tap::Add { wrapped: false }));
        assert_eq!(Tap::of("add", Some("pin=false")), None);
        assert_eq!(Tap::of("add", Some("only-hash=true")), None);
        assert_eq!(
            Tap::of("add", Some("wrap-with-directory=true")),
            Some(Tap::Add { wrapped: true })
        );
        assert_eq!(Tap::of("dag/import", Some("pin-roots=false")), None);
        assert_eq!(Tap::of("pin/rm", Some("arg=x")), Some(Tap::PinRm));
        assert_eq!(Tap::of("cat", None), None);
        assert_eq!(
            args(Some("arg=QmA&recursive=true&arg=%2Fipfs%2FQmB")),
            vec!["QmA".to_string(), "QmB".to_string()]
        );
    }

    #[test]
    fn add_keeps_top_level_entries_across_split_chunks() {
        let cids = scan(
            Tap::Add { wrapped: false },
            &[
                "{\"Name\":\"f\",\"Bytes\":10}\n{\"Name\":\"d/a\",\"Ha",
                "sh\":\"QmA\"}\n{\"Name\":\"d\",\"Hash\":\"QmD\"}\n{\"Name\":\"g\",\"Hash\":\"QmG\"}",
            ],
        );
        assert_eq!(cids, vec!["QmD".to_string(), "QmG".to_string()]);
        let wrapped = scan(
            Tap::Add { wrapped: true },
            &["{\"Name\":\"f\",\"Hash\":\"QmF\"}\n{\"Name\":\"\",\"Hash\":\"QmW\"}\n"],
        );
        assert_eq!(wrapped, vec!["QmW".to_string()]);
    }

    #[test]
    fn pins_and_roots_and_long_lines() {
        assert_eq!(
            scan(
                Tap::PinAdd,
                &["{\"Progress\":3}\n{\"Pins\":[\"QmX\",\"QmY\"]}\n"]
            ),
            vec!["QmX".to_string(), "QmY".to_string()]
        );
        assert_eq!(
            scan(
                Tap::DagImport,
                &["{\"Root\":{\"Cid\":{\"/\":\"bafyA\"},\"PinErrorMsg\":\"\"}}\n{\"Root\":{\"Cid\":{\"/\":\"bafyB\"},\"PinErrorMsg\":\"boom\"}}\n"]
            ),
            vec!["bafyA".to_string()]
        );
        let long = format!("{{\"Pins\":[\"{}\"]}}\n", "x".repeat(MAX_LINE + 1));
        assert!(scan(Tap::PinRm, &[&long, "{\"Pins\":[\"QmZ\"]}\n"]) == vec!["QmZ".to_string()]);
    }
}
