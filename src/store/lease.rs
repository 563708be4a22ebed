//! The store's records of who owns it: the instance it belongs to and the lease of the daemon
//! acting for that instance (see [`super::Store::claim_instance`] and
//! [`super::Store::acquire_lease`]). Values only; when to take, renew or give up a lease is
//! [`crate::instance`]'s decision.

use std::fmt;

use crate::names::InstanceName;

/// Who holds (or asks for) a lease: one daemon process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Random per process: tells two daemons apart even with the same host and pid.
    pub id: String,
    /// The host name the daemon runs on.
    pub host: String,
    pub pid: u32,
}

/// An instance's lease as stored. Times are unix milliseconds of the store's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub instance: InstanceName,
    pub holder: LeaseHolder,
    pub acquired_at: i64,
    pub renewed_at: i64,
    pub expires_at: i64,
    /// The store's clock when this was read (to say how long until it expires).
    pub now: i64,
}

impl Lease {
    /// Milliseconds until it expires (0 once expired).
    pub fn remaining_ms(&self) -> i64 {
        (self.expires_at - self.now).max(0)
    }
}

impl fmt::Display for Lease {
    /// `host <host>, pid <pid> since <UTC time>, expires in <n>s unless renewed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {}, pid {} (daemon {}) since {}; it expires in {:.1}s unless renewed",
            self.holder.host,
            self.holder.pid,
            self.holder.id,
            utc(self.acquired_at),
            self.remaining_ms() as f64 / 1000.0
        )
    }
}

/// What [`super::Store::acquire_lease`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease now (it was free, expired, or already the caller's).
    Acquired(Lease),
    /// Another holder's lease is live; the caller holds nothing.
    Held(Lease),
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_unix_milliseconds() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_300_845_999), "2026-12-03 12:27:25 UTC");
    }

    #[test]
    fn display_names_the_holder_and_expiry() {
        let lease = Lease {
            instance: InstanceName::new("n-0123456789ab").unwrap(),
            holder: LeaseHolder {
                id: "abcd".into(),
                host: "box".into(),
                pid: 42,
            },
            acquired_at: 0,
            renewed_at: 0,
            expires_at: 30_000,
            now: 2_500,
        };
        let shown = lease.to_string();
        assert!(shown.contains("host box, pid 42"), "{shown}");
        assert!(shown.contains("1970-01-01 00:00:00 UTC"), "{shown}");
        assert!(shown.contains("27.5s"), "{shown}");
    }
}
