//! The delegator's access log writer: one JSON line per request, formatted by hand into a
//! reused buffer and written to stderr by a thread of its own, off the request path.
//!
//! Owns the JSON building blocks of a line ([`JsonLine`]: the same layout, keys and escaping as
//! `tracing-subscriber`'s JSON formatter with flattened events, so an access line reads like
//! every other line the daemon writes) and the writer ([`install_stderr`], [`write`],
//! [`flush`]). A request appends its line to a shared buffer and goes on; the writer thread
//! wakes when the buffer stops being empty, gathers for [`GATHER`] and writes the lot with one
//! `write` under stderr's lock (so lines never interleave with `tracing`'s). When the buffer
//! holds [`CAPACITY`] bytes (stderr blocked or too slow), a line is dropped and counted in
//! `nexus_delegator_access_log_dropped_total` instead of making the request wait.
//!
//! It must not decide what a line says (the delegator's `proxy::access` does), nor block a
//! request on I/O; it writes only what it is given.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::lock;
use crate::telemetry::names;

/// Bytes the buffer may hold before lines are dropped (≈ 3,000 lines; 0.1 s at 30 k rps).
pub const CAPACITY: usize = 1 << 20;

/// How long the writer gathers lines after the first one before writing them.
pub const GATHER: Duration = Duration::from_millis(5);

/// Where lines go: the buffer requests append to and the thread that writes it.
struct Writer {
    buf: Mutex<Vec<u8>>,
    thread: Thread,
    out: Mutex<Box<dyn Write + Send>>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Starts the writer thread, writing to stderr. Once per process: later calls (and calls after
/// [`install_with`]) change nothing. Returns `false` if the thread could not be started (lines
/// then go through `tracing`, as without a writer).
pub fn install_stderr() -> bool {
    install_with(Box::new(std::io::stderr()))
}

/// Like [`install_stderr`], to any writer (tests). Each `write` call gets whole lines.
pub fn install_with(out: Box<dyn Write + Send>) -> bool {
    if WRITER.get().is_some() {
        return true;
    }
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| {
            // Wait until `install_with` has published the writer.
            let w = loop {
                if let Some(w) = WRITER.get() {
                    break w;
                }
                std::thread::park();
            };
            let mut spare = Vec::with_capacity(64 * 1024);
            loop {
                std::thread::park();
                std::thread::sleep(GATHER);
                write_out(w, &mut spare);
            }
        });
    let Ok(handle) = spawned else { return false };
    let thread = handle.thread().clone();
    let _ = WRITER.set(Writer {
        buf: Mutex::new(Vec::with_capacity(64 * 1024)),
        thread,
        out: Mutex::new(out),
    });
    if let Some(w) = WRITER.get() {
        w.thread.unpark();
    }
    true
}

/// Whether a writer is installed (else the caller logs through `tracing`).
pub fn installed() -> bool {
    WRITER.get().is_some()
}

/// Swaps the buffer with `spare` and writes what it held; `spare` comes back empty.
/// The output's lock is taken first, so two writers (the thread and [`flush`]) keep the order.
fn write_out(w: &Writer, spare: &mut Vec<u8>) {
    let mut out = lock(&w.out);
    std::mem::swap(&mut *lock(&w.buf), spare);
    if spare.is_empty() {
        return;
    }
    // A failed write (stderr closed) loses these lines; there is nowhere to report it.
    let _ = out.write_all(spare).and_then(|()| out.flush());
    spare.clear();
}

/// Hands one whole line (ending in `\n`) to the writer; never blocks on I/O. Returns `false`
/// when no writer is installed. A full buffer drops the line and counts it.
pub fn write(line: &[u8]) -> bool {
    let Some(w) = WRITER.get() else { return false };
    let pushed = push(&mut lock(&w.buf), line, CAPACITY);
    match pushed {
        Pushed::Dropped => {
            metrics::counter!(names::DELEGATOR_ACCESS_LOG_DROPPED).increment(1);
        }
        // The writer sleeps while the buffer is empty: the first line wakes it.
        Pushed::First => w.thread.unpark(),
        Pushed::More => {}
    }
    true
}

/// What [`push`] did with a line.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// Appended to an empty buffer.
    First,
    /// Appended after others.
    More,
    /// Not appended: the buffer would pass its capacity.
    Dropped,
}

/// Appends `line` to `buf` unless that would take it past `cap` bytes.
fn push(buf: &mut Vec<u8>, line: &[u8], cap: usize) -> Pushed {
    if buf.len() + line.len() > cap {
        return Pushed::Dropped;
    }
    let first = buf.is_empty();
    buf.extend_from_slice(line);
    if first {
        Pushed::First
    } else {
        Pushed::More
    }
}

/// Writes out what the buffer holds now, on the caller's thread (at shutdown).
pub fn flush() {
    if let Some(w) = WRITER.get() {
        let mut spare = Vec::new();
        write_out(w, &mut spare);
    }
}

thread_local! {
    /// Each thread formats its lines into its own reused buffer.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Formats a line with `f` into this thread's buffer and hands it to the writer. Returns
/// `false` (having formatted nothing) when no writer is installed.
pub fn emit(message: &str, f: impl FnOnce(&mut JsonLine<'_>)) -> bool {
    if WRITER.get().is_none() {
        return false;
    }
    LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let mut line = JsonLine::begin(&mut buf, "INFO", message);
            f(&mut line);
            write(&buf)
        }
        // Re-entered from inside `f` (it never is): a fresh buffer.
        Err(_) => {
            let mut buf = Vec::with_capacity(512);
            let mut line = JsonLine::begin(&mut buf, "INFO", message);
            f(&mut line);
            write(&buf)
        }
    })
}

/// One JSON object on one line, in the order `tracing-subscriber`'s JSON formatter writes an
/// event with flattened fields: `timestamp`, `level`, `message` (via [`JsonLine::begin`]), the
/// fields, `target` (via [`JsonLine::end`]). Strings are escaped by `serde_json`, as that formatter does.
pub struct JsonLine<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> JsonLine<'a> {
    /// Opens the object with the current time, `level` and `message`.
    pub fn begin(buf: &'a mut Vec<u8>, level: &str, message: &str) -> Self {
        buf.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(buf, SystemTime::now());
        buf.extend_from_slice(b"\",\"level\":");
        json_str(buf, level);
        let mut line = Self { buf };
        line.str("message", message);
        line
    }

    /// A string field.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        json_str(self.buf, value);
        self
    }

    /// A field written as its `Display` text (what `%value` records), as a string.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.key(key);
        // Written in place; text that needs escaping (it can hold anything) is escaped after.
        let start = self.buf.len();
        self.buf.push(b'"');
        let _ = write!(self.buf, "{value}");
        if self.buf[start + 1..]
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
        {
            let raw = self.buf.split_off(start + 1);
            self.buf.truncate(start);
            json_str(self.buf, &String::from_utf8_lossy(&raw));
        } else {
            self.buf.push(b'"');
        }
        self
    }

    /// An unsigned integer field.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        digits(self.buf, value, 1);
        self
    }

    /// A float field (`null` when not finite, as `serde_json` writes it).
    pub fn f64(&mut self, key: &str, value: f64) -> &mut Self {
        self.key(key);
        if serde_json::to_writer(&mut *self.buf, &value).is_err() {
            self.buf.extend_from_slice(b"null");
        }
        self
    }

    /// Closes the object with `target`, and the line.
    pub fn end(&mut self, target: &str) {
        self.str("target", target);
        self.buf.extend_from_slice(b"}\n");
    }

    fn key(&mut self, key: &str) {
        self.buf.push(b',');
        json_str(self.buf, key);
        self.buf.push(b':');
    }
}

/// `value` as a JSON string, escaped as `serde_json` escapes it: `"`, `\\` and control
/// characters below U+0020, nothing else. Text with none of those (nearly every value) is copied.
fn json_str(buf: &mut Vec<u8>, value: &str) {
    if !value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.reserve(value.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'"');
        return;
    }
    if serde_json::to_writer(&mut *buf, value).is_err() {
        // Writing to a Vec does not fail; keep the line valid JSON regardless.
        buf.extend_from_slice(b"\"\"");
    }
}

/// `value` in decimal, at least `width` digits (zeros in front; at most 20 in all).
fn digits(buf: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let width = width.min(tmp.len());
    let mut at = tmp.len();
    while value > 0 || tmp.len() - at < width {
        at -= 1;
        tmp[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    buf.extend_from_slice(&tmp[at..]);
}

/// The date and time to the second (`2026-12-04T01:02:03.`), as text, and its second.
#[derive(Clone, Copy)]
struct Second {
    secs: u64,
    len: u8,
    text: [u8; 32],
}

thread_local! {
    /// The last second a timestamp was written for on this thread: the lines of one second
    /// share its text and differ only in their microseconds.
    static SECOND: Cell<Option<Second>> = const { Cell::new(None) };
}

/// `t` as `tracing-subscriber`'s `SystemTime` timer writes it: RFC 3339, UTC, microseconds.
fn timestamp(buf: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let second = match SECOND.get() {
        Some(s) if s.secs == secs => s,
        _ => {
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, day) = civil_from_days(days);
            let mut text = Vec::with_capacity(32);
            let _ = write!(
                text,
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
            );
            let mut s = Second {
                secs,
                len: 0,
                text: [0; 32],
            };
            let len = text.len().min(s.text.len());
            s.text[..len].copy_from_slice(&text[..len]);
            s.len = len as u8;
            SECOND.set(Some(s));
            s
        }
    };
    buf.extend_from_slice(&second.text[..usize::from(second.len)]);
    digits(buf, u64::from(d.subsec_micros()), 6);
    buf.push(b'Z');
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_the_tracing_timer() {
        // The same second twice (the second from this thread's memory), the next, and back.
        for (secs, nanos, want) in [
            (1_796_346_123, 456_789, "2026-12-04T01:02:03.000456Z"),
            (1_796_346_123, 999_999_999, "2026-12-04T01:02:03.999999Z"),
            (1_796_346_124, 0, "2026-12-04T01:02:04.000000Z"),
            (1_796_346_123, 1_000, "2026-12-04T01:02:03.000001Z"),
            (0, 120_000_000, "1970-01-01T00:00:00.120000Z"),
        ] {
            let mut buf = Vec::new();
            timestamp(&mut buf, UNIX_EPOCH + Duration::new(secs, nanos));
            assert_eq!(String::from_utf8(buf).unwrap(), want);
        }
        for (v, width, want) in [
            (0, 1, "0"),
            (7, 6, "000007"),
            (u64::MAX, 1, "18446744073709551615"),
        ] {
            let mut buf = Vec::new();
            digits(&mut buf, v, width);
            assert_eq!(buf, want.as_bytes());
        }
        for (days, want) in [
            (0, (1970, 1, 1)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_818, (2026, 12, 31)),
        ] {
            assert_eq!(civil_from_days(days), want, "{days}");
        }
    }

    #[test]
    fn a_full_buffer_drops_whole_lines() {
        let mut buf = Vec::new();
        assert_eq!(push(&mut buf, b"one\n", 10), Pushed::First);
        assert_eq!(push(&mut buf, b"two\n", 10), Pushed::More);
        assert_eq!(push(&mut buf, b"three\n", 10), Pushed::Dropped);
        assert_eq!(buf, b"one\ntwo\n");
        assert_eq!(push(&mut buf, b"xy\n", 10), Pushed::Dropped, "9 + 3 > 10");
        assert_eq!(push(&mut buf, b"x\n", 10), Pushed::More, "exactly full");
        assert_eq!(buf.len(), 10);
    }

    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines reach the writer whole and in order; `flush` writes what is waiting at once.
    /// (Each nextest test is a process of its own, so installing here touches no other test.)
    #[test]
    fn the_writer_writes_whole_lines_in_order() {
        let out = Capture::default();
        assert!(install_with(Box::new(out.clone())));
        assert!(installed());
        for i in 0..100 {
            assert!(emit("request", |l| {
                l.u64("i", i).end("t");
            }));
        }
        flush();
        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        let got: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["i"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_line_is_one_json_object() {
        let mut buf = Vec::new();
        JsonLine::begin(&mut buf, "INFO", "request")
            .str("a", "x\"y\\z\n\u{7}é")
            .u64("n", 7)
            .f64("f", 0.25)
            .display("d", "<\r>")
            .end("t");
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["a"], "x\"y\\z\n\u{7}é");
        assert_eq!(v["n"], 7);
        assert_eq!(v["f"], 0.25);
        assert_eq!(v["d"], "<\r>");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["target"], "t");
    }
}
