//! A network's replication factor: on how many of its nodes each pin of its pinset is held.
//!
//! Owns [`Replication`] (a count, or `all` that follows the network's replicas), its text form
//! (`2`, `all`), its default (`min(2, replicas)`), its check against a number of nodes, and
//! its stored integer form (0 = `all`). A leaf value every layer imports; it must not decide
//! where pins go (the orchestrator's pinset does).

use std::fmt;

/// How many copies of each pin a network keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Exactly this many nodes (≥ 1).
    Count(u16),
    /// Every node of the network, however many it has.
    All,
}

/// A replication factor that is not valid, with what to give instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication: `{0}` is not a number of nodes nor `all` (e.g. `--replication 2`)")]
    Syntax(String),
    #[error("replication: {n} is more than the network's {replicas} node(s); give at most {replicas} or `all`, or add nodes with --replicas")]
    AboveReplicas { n: u16, replicas: u16 },
    #[error("replication: must be at least 1 (or `all`)")]
    Zero,
}

impl Replication {
    /// The factor of a network that did not ask for one: two copies, or one on a 1-node network.
    pub fn default_for(replicas: u16) -> Self {
        Self::Count(replicas.clamp(1, 2))
    }

    /// `all`, or a positive number of nodes.
    pub fn parse(text: &str) -> Result<Self, ReplicationError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        match t.parse::<u16>() {
            Ok(0) => Err(ReplicationError::Zero),
            Ok(n) => Ok(Self::Count(n)),
            Err(_) => Err(ReplicationError::Syntax(
                text.chars().take(40).collect::<String>(),
            )),
        }
    }

    /// Whether a network of `replicas` nodes can be asked for this factor (1 ≤ N ≤ replicas).
    pub fn check(&self, replicas: u16) -> Result<(), ReplicationError> {
        match *self {
            Self::All => Ok(()),
            Self::Count(0) => Err(ReplicationError::Zero),
            Self::Count(n) if n > replicas => Err(ReplicationError::AboveReplicas { n, replicas }),
            Self::Count(_) => Ok(()),
        }
    }

    /// How many copies of each pin are wanted on a network of `replicas` nodes. A count above
    /// the replicas (the network was scaled down after) stays wanted: the network is then
    /// under-replicated, which is reported, not an error.
    pub fn wanted(&self, replicas: u16) -> u16 {
        match *self {
            Self::Count(n) => n,
            Self::All => replicas,
        }
    }

    /// The stored form: the count, or 0 for `all`.
    pub fn to_stored(self) -> i64 {
        match self {
            Self::Count(n) => i64::from(n),
            Self::All => 0,
        }
    }

    /// From the stored form; `None` for a value no nexus writes.
    pub fn from_stored(v: i64) -> Option<Self> {
        match v {
            0 => Some(Self::All),
            n => u16::try_from(n).ok().filter(|n| *n > 0).map(Self::Count),
        }
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::All => f.write_str("all"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_all() {
        assert_eq!(Replication::parse("2"), Ok(Replication::Count(2)));
        assert_eq!(Replication::parse("ALL"), Ok(Replication::All));
        assert_eq!(Replication::parse("0"), Err(ReplicationError::Zero));
        assert!(matches!(
            Replication::parse("two"),
            Err(ReplicationError::Syntax(_))
        ));
        assert!(matches!(
            Replication::parse("-1"),
            Err(ReplicationError::Syntax(_))
        ));
    }

    #[test]
    fn default_is_two_or_one() {
        assert_eq!(Replication::default_for(1), Replication::Count(1));
        assert_eq!(Replication::default_for(3), Replication::Count(2));
    }

    #[test]
    fn check_and_wanted() {
        assert!(Replication::Count(3).check(3).is_ok());
        let err = Replication::Count(4).check(3).unwrap_err();
        assert!(err.to_string().contains("at most 3"), "{err}");
        assert!(Replication::All.check(1).is_ok());
        assert_eq!(Replication::All.wanted(5), 5);
        assert_eq!(Replication::Count(2).wanted(1), 2);
    }

    #[test]
    fn stored_form_round_trips() {
        for r in [
            Replication::All,
            Replication::Count(1),
            Replication::Count(64),
        ] {
            assert_eq!(Replication::from_stored(r.to_stored()), Some(r));
        }
        assert_eq!(Replication::from_stored(-3), None);
        assert_eq!(Replication::to_string(&Replication::All), "all");
    }
}
