//! Subnet allocation for networks.
//!
//! Owns the configured pool (`docker.subnet_pool`, cut into subnets of `docker.subnet_prefix`)
//! and which of its subnets are handed out: each network gets one of its own, recorded in the
//! store with the network, so a host runs as many networks as the pool holds instead of the
//! ~30 Docker's default pools allow. Allocations are explicit, released explicitly, rebuilt
//! from the store on start-up, and never overlap each other or a subnet the caller says is
//! taken by a network outside nexus. It must not talk to Docker or the store: the orchestrator
//! asks the runtime what is taken and records what it allocates.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

/// Addresses of a subnet that no node can have: the network, the broadcast address and the
/// bridge's gateway.
const RESERVED_ADDRESSES: u64 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error(
        "no free /{prefix} subnet left in the subnet pool {pool} ({total} in all: {in_use} held \
         by nexus networks, {foreign} overlapping networks outside nexus): widen \
         docker.subnet_pool (e.g. a shorter prefix than /{pool_prefix}), choose a longer \
         docker.subnet_prefix if networks are small, or remove networks"
    )]
    Exhausted {
        pool: Ipv4Net,
        pool_prefix: u8,
        prefix: u8,
        total: u64,
        in_use: usize,
        foreign: usize,
    },
    #[error(
        "a /{prefix} subnet holds at most {capacity} nodes, fewer than {nodes}: choose a \
         docker.subnet_prefix of /{fits} or shorter"
    )]
    TooSmall {
        prefix: u8,
        capacity: u64,
        nodes: u16,
        fits: u8,
    },
    #[error("docker.subnet_prefix /{prefix} must be between the pool's /{pool_prefix} and /29")]
    BadPrefix { prefix: u8, pool_prefix: u8 },
}

/// The configured pool: where networks' subnets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetConfig {
    pub pool: Ipv4Net,
    /// Prefix length of each network's subnet.
    pub prefix: u8,
}

impl Default for SubnetConfig {
    /// `10.224.0.0/12` in `/26`s: 16 384 networks of up to 61 nodes each, clear of Docker's
    /// default pools (172.17–31/16, 192.168/16 in /20s) and of the swarm lab's addresses.
    fn default() -> Self {
        Self {
            pool: Ipv4Net::new(std::net::Ipv4Addr::new(10, 224, 0, 0), 12).unwrap_or_default(),
            prefix: 26,
        }
    }
}

impl SubnetConfig {
    /// Checks the prefix fits the pool and holds `max_nodes` nodes.
    pub fn check(&self, max_nodes: u16) -> Result<(), SubnetError> {
        if self.prefix < self.pool.prefix_len() || self.prefix > 29 {
            return Err(SubnetError::BadPrefix {
                prefix: self.prefix,
                pool_prefix: self.pool.prefix_len(),
            });
        }
        fits(self.prefix, max_nodes)
    }

    /// How many subnets the pool holds.
    pub fn total(&self) -> u64 {
        1u64 << (self.prefix - self.pool.prefix_len().min(self.prefix))
    }
}

/// Nodes a subnet of prefix `prefix` holds.
pub fn capacity(prefix: u8) -> u64 {
    (1u64 << (32 - u32::from(prefix.min(32)))).saturating_sub(RESERVED_ADDRESSES)
}

/// Whether a subnet of prefix `prefix` holds `nodes` nodes; the error names the prefix that
/// would.
pub fn fits(prefix: u8, nodes: u16) -> Result<(), SubnetError> {
    let cap = capacity(prefix);
    if cap >= u64::from(nodes) {
        return Ok(());
    }
    let fits = (1..=prefix)
        .rev()
        .find(|p| capacity(*p) >= u64::from(nodes))
        .unwrap_or(1);
    Err(SubnetError::TooSmall {
        prefix,
        capacity: cap,
        nodes,
        fits,
    })
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A subnet the allocator passed over because a network outside nexus holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub subnet: Ipv4Net,
    /// The network that holds it (e.g. `br-lab` or another installation's `nexus-x`).
    pub by: String,
}

/// Which subnets are handed out.
#[derive(Debug)]
pub struct SubnetAllocator {
    cfg: SubnetConfig,
    used: BTreeSet<Ipv4Net>,
    /// Where the next search starts, so a freed subnet is not handed out again at once.
    cursor: u64,
}

impl SubnetAllocator {
    pub fn new(cfg: SubnetConfig) -> Self {
        Self {
            cfg,
            used: BTreeSet::new(),
            cursor: 0,
        }
    }

    pub fn config(&self) -> SubnetConfig {
        self.cfg
    }

    /// How many subnets networks hold.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// The `i`-th subnet of the pool.
    fn nth(&self, i: u64) -> Option<Ipv4Net> {
        let step = 1u64 << (32 - u32::from(self.cfg.prefix));
        let base = u64::from(u32::from(self.cfg.pool.network()));
        let addr = u32::try_from(base + i * step).ok()?;
        Ipv4Net::new(addr.into(), self.cfg.prefix).ok()
    }

    /// Hands out the next subnet of the pool that overlaps no network's and none of `foreign`
    /// (subnets of networks outside nexus, with their names). Returns it and the subnets it
    /// passed over because of `foreign`.
    pub fn allocate(
        &mut self,
        foreign: &[(Ipv4Net, String)],
    ) -> Result<(Ipv4Net, Vec<Skipped>), SubnetError> {
        let total = self.cfg.total();
        let mut skipped = Vec::new();
        let mut foreign_hits = BTreeSet::new();
        for step in 0..total {
            let i = (self.cursor + step) % total;
            let Some(candidate) = self.nth(i) else {
                continue;
            };
            if self.used.iter().any(|u| overlaps(u, &candidate)) {
                continue;
            }
            if let Some((_, by)) = foreign.iter().find(|(f, _)| overlaps(f, &candidate)) {
                foreign_hits.insert(candidate);
                skipped.push(Skipped {
                    subnet: candidate,
                    by: by.clone(),
                });
                continue;
            }
            self.used.insert(candidate);
            self.cursor = (i + 1) % total;
            return Ok((candidate, skipped));
        }
        Err(SubnetError::Exhausted {
            pool: self.cfg.pool,
            pool_prefix: self.cfg.pool.prefix_len(),
            prefix: self.cfg.prefix,
            total,
            in_use: self.used.len(),
            foreign: foreign_hits.len(),
        })
    }

    /// Marks a subnet a stored network already holds (rebuilding from the store). A subnet
    /// outside the pool (the pool was changed since) is kept too: it is that network's.
    pub fn reserve(&mut self, subnet: Ipv4Net) {
        self.used.insert(subnet);
    }

    /// Gives a subnet back (its network was removed, or its create did not happen).
    pub fn release(&mut self, subnet: &Ipv4Net) {
        self.used.remove(subnet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn pool(p: &str, prefix: u8) -> SubnetAllocator {
        SubnetAllocator::new(SubnetConfig {
            pool: net(p),
            prefix,
        })
    }

    #[test]
    fn the_default_pool_holds_thousands_of_networks_of_sixty_nodes() {
        let cfg = SubnetConfig::default();
        assert_eq!(cfg.pool, net("10.224.0.0/12"));
        assert_eq!(cfg.total(), 16_384);
        assert_eq!(capacity(cfg.prefix), 61);
        cfg.check(16).unwrap();
        assert!(matches!(
            cfg.check(64),
            Err(SubnetError::TooSmall { fits: 25, .. })
        ));
    }

    #[test]
    fn allocations_are_distinct_and_run_out_with_a_clear_error() {
        let mut a = pool("10.9.0.0/24", 26);
        let got: Vec<_> = (0..4).map(|_| a.allocate(&[]).unwrap().0).collect();
        assert_eq!(
            got,
            [
                "10.9.0.0/26",
                "10.9.0.64/26",
                "10.9.0.128/26",
                "10.9.0.192/26"
            ]
            .map(net)
        );
        let err = a.allocate(&[]).unwrap_err();
        assert_eq!(
            err,
            SubnetError::Exhausted {
                pool: net("10.9.0.0/24"),
                pool_prefix: 24,
                prefix: 26,
                total: 4,
                in_use: 4,
                foreign: 0,
            }
        );
        let text = err.to_string();
        assert!(text.contains("10.9.0.0/24") && text.contains("widen docker.subnet_pool"));
        // A released subnet is handed out again.
        a.release(&got[1]);
        assert_eq!(a.allocate(&[]).unwrap().0, got[1]);
    }

    #[test]
    fn foreign_networks_are_skipped_and_named() {
        let mut a = pool("10.9.0.0/24", 26);
        // A /25 outside nexus covers the first two subnets; a /28 inside the fourth.
        let foreign = vec![
            (net("10.9.0.0/25"), "br-lab".to_owned()),
            (net("10.9.0.200/29"), "other".to_owned()),
        ];
        let (s, skipped) = a.allocate(&foreign).unwrap();
        assert_eq!(s, net("10.9.0.128/26"));
        assert_eq!(
            skipped,
            vec![
                Skipped {
                    subnet: net("10.9.0.0/26"),
                    by: "br-lab".into()
                },
                Skipped {
                    subnet: net("10.9.0.64/26"),
                    by: "br-lab".into()
                },
            ]
        );
        match a.allocate(&foreign) {
            Err(SubnetError::Exhausted {
                in_use: 1,
                foreign: 3,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // A foreign network that covers the whole pool.
        let mut b = pool("10.9.0.0/24", 26);
        assert!(b.allocate(&[(net("10.0.0.0/8"), "big".into())]).is_err());
    }

    #[test]
    fn reserved_subnets_are_never_handed_out_even_outside_the_pool() {
        let mut a = pool("10.9.0.0/24", 26);
        a.reserve(net("10.9.0.0/26"));
        a.reserve(net("10.9.0.128/25")); // from an earlier, coarser configuration
        assert_eq!(a.allocate(&[]).unwrap().0, net("10.9.0.64/26"));
        assert!(a.allocate(&[]).is_err());
        assert_eq!(a.in_use(), 3);
    }

    #[test]
    fn prefixes_are_checked_against_the_pool_and_the_largest_network() {
        let cfg = |p: &str, prefix| SubnetConfig {
            pool: net(p),
            prefix,
        };
        assert!(matches!(
            cfg("10.0.0.0/16", 12).check(1),
            Err(SubnetError::BadPrefix { .. })
        ));
        assert!(matches!(
            cfg("10.0.0.0/16", 30).check(1),
            Err(SubnetError::BadPrefix { .. })
        ));
        cfg("10.0.0.0/16", 29).check(5).unwrap();
        let err = cfg("10.0.0.0/16", 29).check(6).unwrap_err();
        assert!(err.to_string().contains("/28 or shorter"), "{err}");
        assert_eq!(cfg("10.0.0.0/16", 24).total(), 256);
    }
}
