//! Rendering for people: tables, sizes, durations, times. `--json` output does not pass here.

use std::io::Write;

/// Prints rows as left-aligned columns; the first row is the header.
pub fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

/// `1.5 GiB`, `512 B`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Thousandths of a core as cores: `0.5`, `2`.
pub fn cpus(millis: u32) -> String {
    let s = format!("{:.3}", f64::from(millis) / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A port, or `-` when none.
pub fn port(p: u32) -> String {
    if p == 0 {
        "-".into()
    } else {
        p.to_string()
    }
}

/// `-` for an empty string.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// A list, comma-separated, or `-`.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// Unix milliseconds as an RFC 3339 UTC time (seconds precision), `-` for 0.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in milliseconds, rounded to seconds: `1h 2m 3s`.
pub fn duration_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_people() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(cpus(500), "0.5");
        assert_eq!(cpus(2000), "2");
        assert_eq!(cpus(1250), "1.25");
        assert_eq!(port(0), "-");
        assert_eq!(time(0), "-");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(duration_ms(61_500), "1m 1s");
    }
}
