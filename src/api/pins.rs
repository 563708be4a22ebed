//! The pinset's wire mapping: pin messages ↔ the orchestrator's pin types.
//!
//! Owns `AddPinRequest` → [`AddPin`], `ListPinsRequest` → [`PinQuery`] (bad filter values are
//! `INVALID_ARGUMENT` naming the field), and [`PinView`]/[`PinCounts`] → messages. Pure
//! conversions: it must not call the orchestrator (the service does) nor check CIDs, names or
//! meta (the orchestrator does).

use tonic::Status;

use super::pb;
use crate::orchestrator::{AddPin, PinQuery, PinView};
use crate::store::{NameMatch, PinCounts, PinStatus};

/// An `AddPin` request as the orchestrator's (the operator's own: no owner).
pub fn add_pin_request(r: pb::AddPinRequest) -> AddPin {
    AddPin {
        cid: r.cid,
        name: (!r.name.is_empty()).then_some(r.name),
        meta: r.meta.into_iter().collect(),
        origins: r.origins,
        owner: String::new(),
    }
}

/// A network's pins by status as a message.
pub fn pin_counts_message(c: PinCounts) -> pb::PinCounts {
    pb::PinCounts {
        queued: c.queued,
        pinning: c.pinning,
        pinned: c.pinned,
        failed: c.failed,
    }
}

/// A pin as a message.
pub fn pin_message(network: &str, p: PinView) -> pb::Pin {
    pb::Pin {
        request_id: p.request_id,
        network: network.to_string(),
        cid: p.cid,
        name: p.name.unwrap_or_default(),
        meta: p.meta.into_iter().collect(),
        origins: p.origins,
        owner: p.owner,
        created_at_ms: p.created_at,
        status: p.status.as_str().into(),
        reason: p.reason.unwrap_or_default(),
        allocations: p
            .allocations
            .into_iter()
            .map(|a| pb::PinAllocation {
                node: u32::from(a.node),
                status: a.status.as_str().into(),
                reason: a.reason.unwrap_or_default(),
                attempts: a.attempts,
                updated_at_ms: a.updated_at,
            })
            .collect(),
    }
}

/// `ListPins`' filter from its request. Bad values are INVALID_ARGUMENT naming the field.
#[allow(clippy::result_large_err)]
pub(super) fn pin_query(r: &pb::ListPinsRequest) -> Result<PinQuery, Status> {
    let name_match = match r.r#match.as_str() {
        "" => NameMatch::Exact,
        m => NameMatch::parse(m).ok_or_else(|| {
            Status::invalid_argument(format!(
                "match: `{m}` is not one of exact, iexact, partial, ipartial"
            ))
        })?,
    };
    let statuses = r
        .status
        .iter()
        .map(|s| {
            PinStatus::parse(s).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "status: `{s}` is not one of queued, pinning, pinned, failed"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = match r.limit {
        0 => 10,
        n @ 1..=1000 => n as usize,
        n => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} is above 1000"
            )))
        }
    };
    Ok(PinQuery {
        cids: r.cid.clone(),
        name: (!r.name.is_empty()).then(|| r.name.clone()),
        name_match,
        statuses,
        before: (r.before_ms != 0).then_some(r.before_ms),
        after: (r.after_ms != 0).then_some(r.after_ms),
        meta: r.meta.clone().into_iter().collect(),
        limit,
    })
}
