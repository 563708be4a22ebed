//! Admission control: whether the host can take a network's nodes, decided before anything
//! starts.
//!
//! Owns [`AdmissionConfig`] (the host's memory, the overcommit ratio, the node cap, the CPU
//! budget), [`Demand`] (what running networks hold: nodes, the sum of their memory limits, swarm
//! ports) and [`admit`], the one rule: a start or an update that would take the host past a
//! limit is refused up front with [`AdmissionError`], which names the limit and by how much.
//! Pure: no store, no runtime, no locks; the operations gather the figures and hold the
//! admission lock ([`super::handle`]). It must not refuse a network that is already admitted
//! (a running network restarting its nodes is never re-checked).

use std::fmt;

/// `node.cpu_budget` by default: idle nodes may take half the host's cores. On the 2-core
/// benchmark host, starts of 10 nodes missed `node.ready_timeout` once idle nodes used about
/// that much (docs/benchmarks.md, density).
pub const DEFAULT_CPU_BUDGET: f64 = 0.5;

/// Limits on what running networks may hold together on this host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionConfig {
    /// The host's memory in bytes; `None`: what the runtime reports (`docker info`), and no
    /// memory check if it reports nothing.
    pub host_memory: Option<u64>,
    /// How many times the host's memory the nodes' memory limits may add up to. 1.0: every
    /// node can use its whole limit at once without the host running out. Idle kubo nodes use
    /// a fraction of their limit, so a host of many idle networks may raise it.
    pub memory_overcommit: f64,
    /// Most nodes of running networks on this host; `None`: no cap.
    pub max_nodes: Option<u32>,
    /// The share of the host's cores that running networks' nodes may use together at the
    /// CPU one node is measured to use (`super::cpu_meter`); the rest is left for starts,
    /// the engine, the daemon and traffic. 0: no CPU check.
    pub cpu_budget: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            host_memory: None,
            memory_overcommit: 1.0,
            max_nodes: None,
            cpu_budget: DEFAULT_CPU_BUDGET,
        }
    }
}

impl AdmissionConfig {
    /// The most the memory limits of running networks' nodes may add up to, if known.
    pub fn memory_budget(&self, reported: Option<u64>) -> Option<u64> {
        let host = self.host_memory.or(reported)?;
        let budget = host as f64 * self.memory_overcommit;
        Some(if budget >= u64::MAX as f64 {
            u64::MAX
        } else {
            budget as u64
        })
    }
}

/// What some nodes hold: how many, the sum of their memory limits, and the swarm ports they
/// still need (nodes without an allocated port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    pub nodes: u32,
    pub memory_bytes: u64,
    pub ports: u32,
}

impl Demand {
    /// `replicas` nodes of `memory_bytes` each.
    pub fn nodes(replicas: u16, memory_bytes: u64) -> Self {
        Self {
            nodes: u32::from(replicas),
            memory_bytes: u64::from(replicas).saturating_mul(memory_bytes),
            ports: 0,
        }
    }

    /// Needing `ports` more swarm ports.
    pub fn with_ports(mut self, ports: u32) -> Self {
        self.ports = ports;
        self
    }

    pub fn plus(self, other: Demand) -> Demand {
        Demand {
            nodes: self.nodes.saturating_add(other.nodes),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            ports: self.ports.saturating_add(other.ports),
        }
    }
}

/// What the host has for running networks, besides the configured limits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Host {
    /// The host's memory as the runtime reports it.
    pub reported_memory: Option<u64>,
    /// Swarm ports not allocated to any node.
    pub free_ports: u32,
    /// The host's cores as the runtime reports them.
    pub cpus: Option<f64>,
    /// What one settled node uses, in cores, as measured (`None`: not measured yet).
    pub cpu_per_node: Option<f64>,
}

/// Why a start or update is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "{what} needs {} of memory limits; this host admits {} ({} of memory × node.memory_overcommit {}), {} of it held by running networks: {} short. Stop a network, give nodes less memory (--memory), or raise node.memory_overcommit",
        Size(*.needed), Size(*.budget), Size(*.host), .overcommit, Size(*.held), Size(*.short)
    )]
    Memory {
        what: String,
        needed: u64,
        budget: u64,
        host: u64,
        overcommit: f64,
        held: u64,
        short: u64,
    },
    #[error(
        "{what} needs {needed} node(s); node.max_nodes allows {max} on this host and running networks hold {held}: {short} too many. Stop a network or raise node.max_nodes"
    )]
    Nodes {
        what: String,
        needed: u32,
        max: u32,
        held: u32,
        short: u32,
    },
    #[error(
        "{what} needs about {:.2} core(s) of CPU at the {:.2} % of a core that one running node uses here (measured); this host admits {:.2} ({cpus} core(s) × node.cpu_budget {share}) and the {held_nodes} node(s) of running networks use about {:.2} of it: {:.2} short. Stop a network, or raise node.cpu_budget if the host has CPU to spare",
        .needed, .per_node * 100.0, .budget, .held, .short
    )]
    Cpu {
        what: String,
        /// Cores the request's nodes would use.
        needed: f64,
        /// Cores one node uses, measured.
        per_node: f64,
        budget: f64,
        cpus: f64,
        share: f64,
        held_nodes: u32,
        /// Cores the running networks' nodes use, at `per_node`.
        held: f64,
        short: f64,
    },
    #[error(
        "{what} needs {needed} more swarm port(s) and {free} of ports.swarm are free: {short} short. Stop a network or widen the swarm port range (ports.swarm)"
    )]
    Ports {
        what: String,
        needed: u32,
        free: u32,
        short: u32,
    },
}

impl AdmissionError {
    /// The limit that refused (a metric label).
    pub fn limit(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Nodes { .. } => "nodes",
            Self::Ports { .. } => "ports",
            Self::Cpu { .. } => "cpu",
        }
    }
}

/// Whether `adding` fits beside `held` (what other running networks hold). `what` names the
/// request in the error ("starting network `acme` (3 nodes)").
pub fn admit(
    cfg: &AdmissionConfig,
    host: Host,
    held: Demand,
    adding: Demand,
    what: &str,
) -> Result<(), AdmissionError> {
    if let Some(max) = cfg.max_nodes {
        let total = held.nodes.saturating_add(adding.nodes);
        if total > max {
            return Err(AdmissionError::Nodes {
                what: what.to_owned(),
                needed: adding.nodes,
                max,
                held: held.nodes,
                short: total - max,
            });
        }
    }
    if let (Some(host_memory), Some(budget)) = (
        cfg.host_memory.or(host.reported_memory),
        cfg.memory_budget(host.reported_memory),
    ) {
        let total = held.memory_bytes.saturating_add(adding.memory_bytes);
        if total > budget {
            return Err(AdmissionError::Memory {
                what: what.to_owned(),
                needed: adding.memory_bytes,
                budget,
                host: host_memory,
                overcommit: cfg.memory_overcommit,
                held: held.memory_bytes,
                short: total - budget,
            });
        }
    }
    if let (true, Some(cpus), Some(per_node)) = (cfg.cpu_budget > 0.0, host.cpus, host.cpu_per_node)
    {
        let budget = cpus * cfg.cpu_budget;
        let held_nodes = held.nodes;
        let held = f64::from(held_nodes) * per_node;
        let needed = f64::from(adding.nodes) * per_node;
        // (A rounding error is not a refusal.)
        if held + needed > budget + 1e-9 {
            return Err(AdmissionError::Cpu {
                what: what.to_owned(),
                needed,
                per_node,
                budget,
                cpus,
                share: cfg.cpu_budget,
                held_nodes,
                held,
                short: held + needed - budget,
            });
        }
    }
    if adding.ports > host.free_ports {
        return Err(AdmissionError::Ports {
            what: what.to_owned(),
            needed: adding.ports,
            free: host.free_ports,
            short: adding.ports - host.free_ports,
        });
    }
    Ok(())
}

/// Bytes for people: `768 MiB`, `23.5 GiB`.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = (1u64 << 20) as f64;
        const GIB: f64 = (1u64 << 30) as f64;
        let b = self.0 as f64;
        if b >= GIB {
            write!(f, "{:.1} GiB", b / GIB)
        } else if b >= MIB {
            write!(f, "{:.0} MiB", b / MIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// How many nodes in networks of `replicas` the kernel's neighbour (ARP) table can serve: it
/// is shared by every network namespace of the host and holds at most `limit` entries
/// (`net.ipv4.neigh.default.gc_thresh3`), and each node of a meshed network keeps one for
/// every peer of its network and one for its gateway. Past that, the kernel drops new
/// entries ("neighbor table overflow") and a node's dials wait for ARP to be retried, so
/// starts slow by 5 s and more per dial (measured: docs/benchmarks.md, density).
pub fn neighbour_capacity(limit: u64, replicas: u16) -> u64 {
    limit / u64::from(replicas.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn host(memory: u64, free_ports: u32) -> Host {
        Host {
            reported_memory: Some(memory),
            free_ports,
            ..Host::default()
        }
    }

    #[test]
    fn memory_is_the_sum_of_limits_against_host_times_overcommit() {
        let cfg = AdmissionConfig::default();
        let held = Demand::nodes(3, 256 * MIB);
        // 768 MiB held of 1 GiB: one more 256 MiB node fits exactly, a second does not.
        assert!(admit(&cfg, host(GIB, 100), held, Demand::nodes(1, 256 * MIB), "x").is_ok());
        let e = admit(
            &cfg,
            host(GIB, 100),
            held,
            Demand::nodes(2, 256 * MIB),
            "starting `b`",
        )
        .unwrap_err();
        assert_eq!(e.limit(), "memory");
        let text = e.to_string();
        assert!(text.contains("starting `b` needs 512 MiB"), "{text}");
        assert!(text.contains("768 MiB of it held"), "{text}");
        assert!(text.contains("256 MiB short"), "{text}");
        assert!(text.contains("node.memory_overcommit"), "{text}");
        // Twice the host's memory may be promised with an overcommit of 2.
        let cfg = AdmissionConfig {
            memory_overcommit: 2.0,
            ..cfg
        };
        assert!(admit(&cfg, host(GIB, 100), held, Demand::nodes(5, 256 * MIB), "x").is_ok());
        assert!(admit(&cfg, host(GIB, 100), held, Demand::nodes(6, 256 * MIB), "x").is_err());
    }

    #[test]
    fn configured_memory_wins_over_reported_and_unknown_memory_is_not_checked() {
        let cfg = AdmissionConfig {
            host_memory: Some(512 * MIB),
            ..AdmissionConfig::default()
        };
        let e = admit(
            &cfg,
            host(64 * GIB, 10),
            Demand::default(),
            Demand::nodes(3, 256 * MIB),
            "x",
        )
        .unwrap_err();
        assert!(matches!(e, AdmissionError::Memory { budget, .. } if budget == 512 * MIB));
        let unknown = Host {
            reported_memory: None,
            free_ports: 10,
            ..Host::default()
        };
        let cfg = AdmissionConfig::default();
        assert!(admit(
            &cfg,
            unknown,
            Demand::default(),
            Demand::nodes(9, 8 * GIB),
            "x"
        )
        .is_ok());
    }

    #[test]
    fn node_cap_and_ports() {
        let cfg = AdmissionConfig {
            max_nodes: Some(10),
            ..AdmissionConfig::default()
        };
        let held = Demand::nodes(8, 128 * MIB);
        assert!(admit(
            &cfg,
            host(64 * GIB, 10),
            held,
            Demand::nodes(2, 128 * MIB),
            "x"
        )
        .is_ok());
        let e = admit(
            &cfg,
            host(64 * GIB, 10),
            held,
            Demand::nodes(3, 128 * MIB),
            "x",
        )
        .unwrap_err();
        assert_eq!(
            e,
            AdmissionError::Nodes {
                what: "x".into(),
                needed: 3,
                max: 10,
                held: 8,
                short: 1
            }
        );
        let want = Demand::nodes(3, 128 * MIB).with_ports(3);
        let e = admit(
            &AdmissionConfig::default(),
            host(64 * GIB, 2),
            held,
            want,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("1 short"), "{e}");
        assert_eq!(e.limit(), "ports");
    }

    #[test]
    fn cpu_is_the_nodes_at_the_measured_rate_against_the_cores_times_the_budget() {
        let cfg = AdmissionConfig::default();
        // 2 cores × 0.5 = 1 core for nodes; each uses 0.5 % of a core: 200 nodes fit.
        let measured = Host {
            cpus: Some(2.0),
            cpu_per_node: Some(0.005),
            ..host(64 * GIB, 1000)
        };
        let held = Demand::nodes(190, 128 * MIB);
        assert!(admit(&cfg, measured, held, Demand::nodes(10, 128 * MIB), "x").is_ok());
        let e = admit(
            &cfg,
            measured,
            held,
            Demand::nodes(20, 128 * MIB),
            "starting network `dn20` (20 node(s))",
        )
        .unwrap_err();
        assert_eq!(e.limit(), "cpu");
        let text = e.to_string();
        assert!(text.contains("needs about 0.10 core(s)"), "{text}");
        assert!(text.contains("0.50 % of a core"), "{text}");
        assert!(
            text.contains("admits 1.00 (2 core(s) × node.cpu_budget 0.5)"),
            "{text}"
        );
        assert!(
            text.contains("the 190 node(s) of running networks use about 0.95"),
            "{text}"
        );
        assert!(text.contains("0.05 short"), "{text}");
        // Not measured yet, cores unknown, or the check off: not checked.
        for host in [
            Host {
                cpu_per_node: None,
                ..measured
            },
            Host {
                cpus: None,
                ..measured
            },
        ] {
            assert!(admit(&cfg, host, held, Demand::nodes(500, MIB), "x").is_ok());
        }
        let off = AdmissionConfig {
            cpu_budget: 0.0,
            ..cfg
        };
        assert!(admit(&off, measured, held, Demand::nodes(500, MIB), "x").is_ok());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(Size(768 * MIB).to_string(), "768 MiB");
        assert_eq!(Size(23 * GIB + GIB / 2).to_string(), "23.5 GiB");
        assert_eq!(Size(12).to_string(), "12 bytes");
    }

    #[test]
    fn the_neighbour_table_serves_limit_over_replicas_nodes() {
        // The kernel's default 1,024 entries: about 100 nodes in networks of 10.
        assert_eq!(neighbour_capacity(1024, 10), 102);
        assert_eq!(neighbour_capacity(16_384, 10), 1638);
        assert_eq!(neighbour_capacity(1024, 0), 1024);
    }
}
