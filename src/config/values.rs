//! Parsers for the value types configuration (and the command line) uses: sizes, CPU amounts,
//! durations, IP networks, DNS names, and the redacting [`Secret`] wrapper.
//!
//! Each parser returns a [`ValueError`] that says what a valid value looks like; callers add
//! which key or flag the value came from.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// A value that does not parse; the message says what a valid one looks like. Works as a clap
/// `value_parser` error and with `anyhow`'s `?`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn bad(msg: impl Into<String>) -> ValueError {
    ValueError(msg.into())
}

/// At most 40 characters of user input, for messages.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// A secret (API key, JWT secret): compares and clones like a string, but its `Debug` never
/// shows the value and it has no `Display`. Use [`Secret::expose`] where the value is needed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: pass it on, never print or log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
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

/// Whether `s` is a DNS name: dot-separated labels of 1–63 letters, digits and hyphens, not
/// starting or ending with a hyphen, 253 characters at most (`localhost`, `nexus.example.com`).
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label_ci)
}

fn is_dns_label_ci(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Whether `s` is a lower-case DNS label (`default`, `prod-1`).
pub fn is_dns_label(s: &str) -> bool {
    is_dns_label_ci(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// An IP address or network in CIDR notation (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`). Host bits
/// below the prefix are ignored. IPv4-mapped IPv6 addresses match the IPv4 networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let t = s.trim();
        let err = || {
            bad(format!(
                "`{}` is not an IP address or network: use e.g. 10.0.0.1, 10.0.0.0/8 or fd00::/8",
                clip(s)
            ))
        };
        let (ip, prefix) = match t.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (t, None),
        };
        let addr = unmap(ip.parse::<IpAddr>().map_err(|_| err())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for IpNet {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
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

    #[test]
    fn ip_networks() {
        let n = IpNet::parse("10.1.2.3/8").unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let one = IpNet::parse("192.168.0.7").unwrap();
        assert!(one.contains("192.168.0.7".parse().unwrap()));
        assert!(!one.contains("192.168.0.8".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "host",
            "10.0.0.0/",
            "1.2.3.4/x",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("localhost"));
        assert!(is_dns_name("nexus.example.com"));
        assert!(is_dns_name("A-1.b"));
        for bad in ["", "a..b", "-a.b", "a-.b", "a_b.c", "a b", &"x".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(is_dns_label("prod-1"));
        assert!(!is_dns_label("Prod"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2-hunter2-hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(<empty>)");
        assert_eq!(s.expose(), "hunter2-hunter2-hunter2-hunter2-hunter2");
    }
}
