//! Host port allocation for node containers.
//!
//! Owns the configured swarm port ranges (the only host port a node has: its RPC API and
//! gateway are unix sockets), which ports are handed out,
//! and the check that a host port is actually free before handing it out. Allocations are
//! explicit and released explicitly (the Go original only let a 5-minute cache expire), are
//! rebuilt from the store on start-up, and are never given to two live nodes. It also reads the
//! kernel's ephemeral port range, for the daemon's warning about ranges inside it. It must not
//! talk to Docker or the store: the orchestrator records what it allocates.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use crate::node::Ports;

/// Which of a node's host ports (only the swarm port is published).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    Swarm,
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Swarm => "swarm",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error(
        "`{0}` is not a port range: use `PORT` or `LOW-HIGH` with ports 1–65535 and LOW ≤ HIGH"
    )]
    BadRange(String),
    #[error("the {0} port ranges are empty: configure at least one port")]
    Empty(PortKind),
    #[error("port {port} is in both the {a} and the {b} ranges: the ranges must not overlap")]
    Overlap { port: u16, a: PortKind, b: PortKind },
    #[error(
        "no free {kind} port left in {ranges} ({in_use} in use by nexus, the rest taken by other \
         programs): widen the {kind} port range in the configuration or remove networks"
    )]
    Exhausted {
        kind: PortKind,
        ranges: String,
        in_use: usize,
    },
    #[error("{kind} port {port} is outside the configured ranges {ranges}")]
    OutOfRange {
        kind: PortKind,
        port: u16,
        ranges: String,
    },
    #[error("{kind} port {port} is already allocated to another node")]
    InUse { kind: PortKind, port: u16 },
}

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// Parses `4001` or `4001-4999`.
    pub fn parse(s: &str) -> Result<Self, PortError> {
        let bad = || PortError::BadRange(s.chars().take(40).collect());
        let t = s.trim();
        let (a, b) = t.split_once('-').unwrap_or((t, t));
        let low: u16 = a.trim().parse().map_err(|_| bad())?;
        let high: u16 = b.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(Self { low, high })
    }

    fn contains(&self, p: u16) -> bool {
        (self.low..=self.high).contains(&p)
    }

    fn len(&self) -> usize {
        usize::from(self.high - self.low) + 1
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// Tells whether a host port can be bound right now.
pub trait PortProbe: Send + Sync {
    fn is_free(&self, ip: IpAddr, port: u16) -> bool;
}

/// Probes by binding a TCP listener and closing it at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct BindProbe;

impl PortProbe for BindProbe {
    fn is_free(&self, ip: IpAddr, port: u16) -> bool {
        TcpListener::bind(SocketAddr::new(ip, port)).is_ok()
    }
}

/// Where the kernel takes the local ports of outgoing connections
/// (`/proc/sys/net/ipv4/ip_local_port_range`); `None` when it cannot be read.
pub fn kernel_ephemeral_range() -> Option<PortRange> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(low)), Some(Ok(high))) = (it.next(), it.next()) else {
        return None;
    };
    (low <= high).then_some(PortRange { low, high })
}

/// How many ports of `ranges` lie in `ephemeral`: any of them can be taken by an outgoing
/// connection between its allocation and the node's start (nexus then moves the node to
/// another port, but the node's address changes).
pub fn overlap_with(ranges: &[PortRange], ephemeral: PortRange) -> usize {
    ranges
        .iter()
        .map(|r| {
            let (low, high) = (r.low.max(ephemeral.low), r.high.min(ephemeral.high));
            if low <= high {
                usize::from(high - low) + 1
            } else {
                0
            }
        })
        .sum()
}

/// One kind's ranges and allocations.
#[derive(Debug)]
struct Pool {
    kind: PortKind,
    ranges: Vec<PortRange>,
    bind_ip: IpAddr,
    used: BTreeSet<u16>,
    /// Where the next search starts, so freed ports are not reused at once.
    cursor: usize,
}

impl Pool {
    fn ranges_text(&self) -> String {
        self.ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn total(&self) -> usize {
        self.ranges.iter().map(PortRange::len).sum()
    }

    fn nth(&self, mut i: usize) -> u16 {
        for r in &self.ranges {
            if i < r.len() {
                return r.low + i as u16;
            }
            i -= r.len();
        }
        // `i` is always taken modulo `total()`.
        self.ranges[0].low
    }

    fn allocate(&mut self, probe: &dyn PortProbe) -> Result<u16, PortError> {
        let total = self.total();
        for step in 0..total {
            let i = (self.cursor + step) % total;
            let port = self.nth(i);
            if self.used.contains(&port) || !probe.is_free(self.bind_ip, port) {
                continue;
            }
            self.used.insert(port);
            self.cursor = (i + 1) % total;
            return Ok(port);
        }
        Err(PortError::Exhausted {
            kind: self.kind,
            ranges: self.ranges_text(),
            in_use: self.used.len(),
        })
    }

    fn reserve(&mut self, port: u16) -> Result<(), PortError> {
        if !self.ranges.iter().any(|r| r.contains(port)) {
            return Err(PortError::OutOfRange {
                kind: self.kind,
                port,
                ranges: self.ranges_text(),
            });
        }
        if !self.used.insert(port) {
            return Err(PortError::InUse {
                kind: self.kind,
                port,
            });
        }
        Ok(())
    }
}

/// Configured host port ranges.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub swarm: Vec<PortRange>,
}

impl Default for PortConfig {
    /// The Go original's swarm range, 4001-5000.
    fn default() -> Self {
        Self {
            swarm: vec![PortRange {
                low: 4001,
                high: 5000,
            }],
        }
    }
}

/// Use of one configured port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortUsage {
    pub kind: PortKind,
    pub range: PortRange,
    pub used: usize,
    pub size: usize,
}

/// Allocates the host ports of each node.
pub struct PortAllocator {
    pools: [Pool; 1],
    probe: Box<dyn PortProbe>,
}

impl fmt::Debug for PortAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortAllocator")
            .field("pools", &self.pools)
            .finish()
    }
}

impl PortAllocator {
    /// Validates the ranges (non-empty, no overlap). The swarm port is probed on all
    /// interfaces, as it is published.
    pub fn new(cfg: &PortConfig, probe: Box<dyn PortProbe>) -> Result<Self, PortError> {
        let kind = PortKind::Swarm;
        if cfg.swarm.is_empty() {
            return Err(PortError::Empty(kind));
        }
        for (x, a) in cfg.swarm.iter().enumerate() {
            for b in cfg.swarm.iter().skip(x + 1) {
                if a.low <= b.high && b.low <= a.high {
                    return Err(PortError::Overlap {
                        port: a.low.max(b.low),
                        a: kind,
                        b: kind,
                    });
                }
            }
        }
        Ok(Self {
            pools: [Pool {
                kind,
                ranges: cfg.swarm.clone(),
                bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                used: BTreeSet::new(),
                cursor: 0,
            }],
            probe,
        })
    }

    /// The ports of a new node, or none at all.
    pub fn allocate(&mut self) -> Result<Ports, PortError> {
        let swarm = self.pools[0].allocate(self.probe.as_ref())?;
        Ok(Ports { swarm: Some(swarm) })
    }

    /// How many ports of each configured range are allocated (for metrics).
    pub fn usage(&self) -> Vec<PortUsage> {
        self.pools
            .iter()
            .flat_map(|pool| {
                pool.ranges.iter().map(move |r| PortUsage {
                    kind: pool.kind,
                    range: *r,
                    used: pool.used.range(r.low..=r.high).count(),
                    size: r.len(),
                })
            })
            .collect()
    }

    /// Marks ports recorded in the store as taken (start-up). All or nothing.
    pub fn reserve(&mut self, ports: &Ports) -> Result<(), PortError> {
        let wanted = [ports.swarm];
        let mut done: Vec<(usize, u16)> = Vec::new();
        for (i, p) in wanted.into_iter().enumerate() {
            let Some(p) = p else { continue };
            if let Err(e) = self.pools[i].reserve(p) {
                for (j, q) in done {
                    self.pools[j].used.remove(&q);
                }
                return Err(e);
            }
            done.push((i, p));
        }
        Ok(())
    }

    /// Returns a node's ports to the pools.
    pub fn release(&mut self, ports: &Ports) {
        for (i, p) in [ports.swarm].into_iter().enumerate() {
            if let Some(p) = p {
                self.pools[i].used.remove(&p);
            }
        }
    }

    /// Ports handed out, per kind.
    pub fn in_use(&self, kind: PortKind) -> usize {
        self.pools
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.used.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A probe that says given ports are taken by someone else.
    struct Taken(HashSet<u16>);
    impl PortProbe for Taken {
        fn is_free(&self, _: IpAddr, port: u16) -> bool {
            !self.0.contains(&port)
        }
    }

    #[test]
    fn ports_in_the_ephemeral_range_are_counted() {
        let eph = PortRange {
            low: 32768,
            high: 60999,
        };
        assert_eq!(overlap_with(&cfg("4001-5000").swarm, eph), 0);
        assert_eq!(overlap_with(&cfg("32760-32769,60990-61010").swarm, eph), 12);
        assert_eq!(overlap_with(&cfg("43000-43019").swarm, eph), 20);
    }

    fn cfg(s: &str) -> PortConfig {
        let p = |t: &str| t.split(',').map(|r| PortRange::parse(r).unwrap()).collect();
        PortConfig { swarm: p(s) }
    }

    fn alloc(c: &PortConfig, taken: &[u16]) -> PortAllocator {
        PortAllocator::new(c, Box::new(Taken(taken.iter().copied().collect()))).unwrap()
    }

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        assert_eq!(
            PortRange::parse("4001").unwrap(),
            PortRange {
                low: 4001,
                high: 4001
            }
        );
        assert_eq!(
            PortRange::parse(" 10-20 ").unwrap(),
            PortRange { low: 10, high: 20 }
        );
        for bad in ["", "0", "20-10", "a-b", "1-70000", "-5", "5-"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlapping_or_empty_configs_are_refused() {
        let self_over = cfg("100-200,150");
        assert!(matches!(
            PortAllocator::new(&self_over, Box::new(BindProbe)),
            Err(PortError::Overlap { .. })
        ));
        let mut empty = PortConfig::default();
        empty.swarm.clear();
        assert!(matches!(
            PortAllocator::new(&empty, Box::new(BindProbe)),
            Err(PortError::Empty(PortKind::Swarm))
        ));
        assert!(PortAllocator::new(&PortConfig::default(), Box::new(BindProbe)).is_ok());
        assert!(PortAllocator::new(&cfg("100-102,300"), Box::new(BindProbe)).is_ok());
    }

    #[test]
    fn never_the_same_port_twice_and_exhaustion_is_clear() {
        let c = cfg("100-102");
        let mut a = alloc(&c, &[]);
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let p = a.allocate().unwrap();
            assert!(seen.insert(p.swarm.unwrap()));
        }
        let err = a.allocate().unwrap_err();
        assert!(matches!(
            err,
            PortError::Exhausted {
                kind: PortKind::Swarm,
                in_use: 3,
                ..
            }
        ));
        assert!(
            err.to_string().contains("widen the swarm port range"),
            "{err}"
        );
    }

    #[test]
    fn ports_taken_by_other_programs_are_skipped() {
        let c = cfg("100-102");
        let mut a = alloc(&c, &[100, 101]);
        let p = a.allocate().unwrap();
        assert_eq!(p.swarm, Some(102));
        // Only 100 and 101 remain in the swarm range, both taken by someone else.
        assert!(matches!(
            a.allocate(),
            Err(PortError::Exhausted {
                kind: PortKind::Swarm,
                ..
            })
        ));
        assert_eq!(a.in_use(PortKind::Swarm), 1);
    }

    #[test]
    fn release_and_reserve() {
        let c = cfg("100-101");
        let mut a = alloc(&c, &[]);
        let p1 = a.allocate().unwrap();
        let p2 = a.allocate().unwrap();
        assert!(a.allocate().is_err());
        a.release(&p1);
        let p3 = a.allocate().unwrap();
        assert_eq!(p3, p1);
        // Start-up: what the store recorded is reserved; duplicates and strays are refused.
        let mut b = alloc(&c, &[]);
        b.reserve(&p2).unwrap();
        assert!(matches!(b.reserve(&p2), Err(PortError::InUse { .. })));
        let stray = Ports { swarm: Some(9999) };
        assert!(matches!(
            b.reserve(&stray),
            Err(PortError::OutOfRange { .. })
        ));
        assert_eq!(b.in_use(PortKind::Swarm), 1);
        let next = b.allocate().unwrap();
        assert_ne!(next.swarm, p2.swarm);
    }

    #[test]
    fn bind_probe_sees_a_listening_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!BindProbe.is_free(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        drop(l);
        assert!(BindProbe.is_free(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
}
