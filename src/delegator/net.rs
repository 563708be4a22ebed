//! IP addresses and networks (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`): the delegator's trusted
//! proxies, and a client address's text ([`IpText`]). Parsing and formatting only; it must not
//! decide whom to trust (the proxy does).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::names::clip;

/// Text that is not an IP address or network; the message says what a valid one looks like.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadIpNet(pub String);

/// An IP address or network in CIDR notation (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`). Host bits
/// below the prefix are ignored. IPv4-mapped IPv6 addresses match the IPv4 networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// An IP address's text, formatted once per connection and copied with it: the access line and
/// `X-Forwarded-For` write it on every request.
#[derive(Clone, Copy)]
pub struct IpText {
    len: u8,
    buf: [u8; IpText::MAX],
}

impl IpText {
    /// The longest text of an address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
    const MAX: usize = 45;

    pub fn new(ip: IpAddr) -> Self {
        use std::io::Write;
        let mut buf = [0; Self::MAX];
        let mut rest = &mut buf[..];
        // Every address's text fits: the write cannot fail.
        let _ = write!(rest, "{ip}");
        let len = Self::MAX - rest.len();
        Self {
            len: u8::try_from(len).unwrap_or(0),
            buf,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("-")
    }
}

impl fmt::Debug for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, BadIpNet> {
        let t = s.trim();
        let err = || {
            BadIpNet(format!(
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
    type Err = BadIpNet;
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
    fn an_address_text_is_its_display() {
        for ip in [
            "10.0.0.9",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "fe80::1:2:3:4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }
}
