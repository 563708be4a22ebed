//! Parsers for the value types configuration (and the command line) uses: sizes, CPU amounts
//! and durations. (IP networks are the delegator's, DNS names and [`Secret`] leaves of their
//! own.)
//!
//! Each parser returns a [`ValueError`] that says what a valid value looks like; callers add
//! which key or flag the value came from.

use std::time::Duration;

pub(crate) use crate::names::clip;

/// A value that does not parse; the message says what a valid one looks like. Works as a clap
/// `value_parser` error and with `anyhow`'s `?`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn bad(msg: impl Into<String>) -> ValueError {
    ValueError(msg.into())
}

/// Parses a size: a number with an optional unit, `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000); case-insensitive; `1.5GiB` is allowed.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        bad(format!(
            "`{}` is not a size: use e.g. 512MiB, 2GiB or 10GB",
            clip(s)
        ))
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(bad(format!(
                "unknown size unit `{}` in `{}`: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB",
                clip(other),
                clip(s)
            )))
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad(format!("size `{}` is out of range", clip(s))));
    }
    Ok(bytes as u64)
}

/// Parses a CPU amount in cores (`0.5`, `2`) into thousandths of a core.
pub fn parse_cpus(s: &str) -> Result<u32, ValueError> {
    let n: f64 = s.trim().parse().map_err(|_| {
        bad(format!(
            "`{}` is not a number of CPU cores (e.g. 0.5 or 2)",
            clip(s)
        ))
    })?;
    if !n.is_finite() || n <= 0.0 || n > 256.0 {
        return Err(bad(format!(
            "CPU cores must be between 0.01 and 256, not `{}`",
            clip(s)
        )));
    }
    Ok((n * 1000.0).round() as u32)
}

/// Parses a positive duration in humantime syntax: `500ms`, `60s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        bad(format!(
            "`{}` is not a duration: use e.g. 500ms, 60s, 5m or 1h",
            clip(s)
        ))
    })?;
    if d.is_zero() {
        return Err(bad("the duration must be longer than zero"));
    }
    Ok(d)
}

/// `cpu_millis` as cores for messages: `1500` → `1.5`.
pub(crate) fn cores_text(cpu_millis: u32) -> String {
    let cores = f64::from(cpu_millis) / 1000.0;
    format!("{cores}")
}

/// Sizes for messages: `1073741824` → `1 GiB`, `1500000000` → `1.4 GiB`.
pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5 gib").unwrap(), 3 << 29);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("ten").unwrap_err().0.contains("512MiB"));
        assert!(parse_size("1 parsec")
            .unwrap_err()
            .0
            .contains("unknown size unit"));
        assert!(parse_size("0").is_err());
        assert_eq!(parse_cpus("0.5").unwrap(), 500);
        assert_eq!(parse_cpus(" 2 ").unwrap(), 2000);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("lots").is_err());
        assert!(parse_cpus("NaN").is_err());
        assert_eq!(size_text(1 << 30), "1 GiB");
        assert_eq!(cores_text(1500), "1.5");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").unwrap_err().0.contains("60s"));
    }
}
