//! The Pinning Service API's endpoints: `GET|POST /pins`, `GET|POST|DELETE /pins/{requestid}`.
//!
//! Owns what each endpoint does: the role it needs ([`policy::PIN_ROLES`]), the ownership rule
//! (a writer replaces and removes only its own pins, an admin anyone's), the [`PinService`] call
//! and the answer (202 on create, replace and delete; `PinStatus`/`PinResults` JSON with the
//! network's delegates). It must not parse the wire format (`wire` does), check a pin's input
//! (the service does), nor authenticate (the pipeline has, before).

use serde_json::Value;

use super::wire;
use super::Failure;
use crate::access::Role;
use crate::delegator::policy::{self, OTHERS_PINS};
use crate::node::NetworkName;
use crate::pinsink::{PinEntry, PinService};

/// Largest request body: a `Pin` is at most a CID, a 255-character name, 20 origins and 4 KiB
/// of `meta`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who calls, as the pipeline authenticated them: the token's user and its role on the network.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub role: Role,
}

/// A successful answer: the status and the JSON body, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
}

/// Which endpoint a path names: `None` is `/pins`, `Some(id)` is `/pins/{id}`.
fn endpoint(path: &str) -> Option<Option<&str>> {
    let rest = path.strip_prefix("/pins")?;
    match rest {
        "" | "/" => Some(None),
        _ => {
            let id = rest.strip_prefix('/')?;
            let id = id.strip_suffix('/').unwrap_or(id);
            (!id.is_empty() && !id.contains('/')).then_some(Some(id))
        }
    }
}

/// Handles one call on `network`'s pinset.
pub async fn handle(
    svc: &dyn PinService,
    network: &NetworkName,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    caller: Caller<'_>,
) -> Result<Answer, Failure> {
    let Some(item) = endpoint(path) else {
        return Err(Failure::not_found(format!(
            "no such endpoint `{}`: use /pins or /pins/{{requestid}}",
            path.chars().take(64).collect::<String>()
        )));
    };
    let Some(needed) = policy::pin_role(method, item.is_some()) else {
        let allowed = if item.is_some() {
            "GET, POST or DELETE"
        } else {
            "GET or POST"
        };
        return Err(Failure::new(
            405,
            format!("method {method} is not allowed here: use {allowed}"),
        ));
    };
    if caller.role < needed {
        return Err(Failure::forbidden(format!(
            "role `{}` may not {method} {}: it needs `{needed}`",
            caller.role,
            if item.is_some() {
                "/pins/{requestid}"
            } else {
                "/pins"
            }
        )));
    }
    match (method, item) {
        ("GET", None) => {
            let filter = wire::parse_query(query)?;
            let (count, pins) = svc.list(network, &filter).await?;
            let delegates = if pins.is_empty() {
                Vec::new()
            } else {
                svc.delegates(network).await?
            };
            Ok(ok(200, wire::pin_results(count, &pins, &delegates)))
        }
        ("POST", None) => {
            let pin = wire::parse_pin(body, caller.user)?;
            let added = svc.add(network, pin).await?;
            Ok(ok(202, status_json(svc, network, &added).await?))
        }
        ("GET", Some(id)) => {
            let pin = svc.get(network, id).await?;
            Ok(ok(200, status_json(svc, network, &pin).await?))
        }
        ("POST", Some(id)) => {
            let pin = wire::parse_pin(body, caller.user)?;
            owned(svc, network, id, caller).await?;
            let new = svc.replace(network, id, pin).await?;
            Ok(ok(202, status_json(svc, network, &new).await?))
        }
        ("DELETE", Some(id)) => {
            owned(svc, network, id, caller).await?;
            svc.remove(network, id).await?;
            Ok(Answer {
                status: 202,
                body: None,
            })
        }
        _ => Err(Failure::new(
            405,
            format!("method {method} is not allowed here"),
        )),
    }
}

fn ok(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: Some(body),
    }
}

async fn status_json(
    svc: &dyn PinService,
    network: &NetworkName,
    pin: &PinEntry,
) -> Result<Value, Failure> {
    let delegates = svc.delegates(network).await?;
    Ok(wire::pin_status(pin, &delegates))
}

/// The pin `id` exists on this network and `caller` may change it: its own, or an admin.
async fn owned(
    svc: &dyn PinService,
    network: &NetworkName,
    id: &str,
    caller: Caller<'_>,
) -> Result<PinEntry, Failure> {
    let pin = svc.get(network, id).await?;
    if pin.owner != caller.user && caller.role < OTHERS_PINS {
        return Err(Failure::forbidden(format!(
            "pin `{id}` was added by another user: only an `{OTHERS_PINS}` may replace or remove it"
        )));
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::pinsink::{PinRequest, PinServiceError};
    use crate::store::{PinFilter, PinStatus};

    /// An in-memory pinset: enough of the service to check the endpoints' rules.
    #[derive(Default)]
    struct Fake {
        pins: Mutex<Vec<PinEntry>>,
        next: Mutex<u32>,
    }

    impl Fake {
        fn ids(&self) -> Vec<String> {
            crate::sync::lock(&self.pins)
                .iter()
                .map(|p| p.request_id.clone())
                .collect()
        }
    }

    #[async_trait::async_trait]
    impl PinService for Fake {
        async fn add(&self, _: &NetworkName, p: PinRequest) -> Result<PinEntry, PinServiceError> {
            if !p.cid.starts_with("bafy") {
                return Err(PinServiceError::Invalid("cid: not a CID".into()));
            }
            let mut n = crate::sync::lock(&self.next);
            *n += 1;
            let e = PinEntry {
                request_id: format!("{:032x}", *n),
                cid: p.cid,
                name: p.name,
                origins: p.origins,
                meta: p.meta,
                owner: p.owner,
                created_at: i64::from(*n),
                status: PinStatus::Queued,
                reason: None,
                holders: 0,
            };
            crate::sync::lock(&self.pins).push(e.clone());
            Ok(e)
        }
        async fn get(&self, _: &NetworkName, id: &str) -> Result<PinEntry, PinServiceError> {
            crate::sync::lock(&self.pins)
                .iter()
                .find(|p| p.request_id == id)
                .cloned()
                .ok_or_else(|| PinServiceError::NotFound(format!("no pin `{id}`")))
        }
        async fn list(
            &self,
            _: &NetworkName,
            f: &PinFilter,
        ) -> Result<(u64, Vec<PinEntry>), PinServiceError> {
            let all: Vec<PinEntry> = crate::sync::lock(&self.pins)
                .iter()
                .filter(|p| f.statuses.contains(&p.status))
                .cloned()
                .collect();
            let n = all.len() as u64;
            Ok((n, all.into_iter().take(f.limit).collect()))
        }
        async fn replace(
            &self,
            net: &NetworkName,
            id: &str,
            p: PinRequest,
        ) -> Result<PinEntry, PinServiceError> {
            self.get(net, id).await?;
            let new = self.add(net, p).await?;
            self.remove(net, id).await?;
            Ok(new)
        }
        async fn remove(&self, _: &NetworkName, id: &str) -> Result<(), PinServiceError> {
            crate::sync::lock(&self.pins).retain(|p| p.request_id != id);
            Ok(())
        }
        async fn delegates(&self, _: &NetworkName) -> Result<Vec<String>, PinServiceError> {
            Ok(vec!["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW".into()])
        }
    }

    fn call<'a>(
        svc: &'a Fake,
        method: &'a str,
        path: &'a str,
        body: &'a str,
        user: &'a str,
        role: Role,
    ) -> Result<Answer, Failure> {
        let net = NetworkName::new("acme").expect("name");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(handle(
                svc,
                &net,
                method,
                path,
                None,
                body.as_bytes(),
                Caller { user, role },
            ))
    }

    const PIN: &str = r#"{"cid":"bafyx","name":"a"}"#;

    #[test]
    fn paths_name_endpoints() {
        assert_eq!(endpoint("/pins"), Some(None));
        assert_eq!(endpoint("/pins/"), Some(None));
        assert_eq!(endpoint("/pins/ab"), Some(Some("ab")));
        assert_eq!(endpoint("/pins/ab/"), Some(Some("ab")));
        assert_eq!(endpoint("/pins/a/b"), None);
        assert_eq!(endpoint("/pinsx"), None);
        assert_eq!(endpoint("/"), None);
    }

    #[test]
    fn endpoints_answer_with_the_spec_codes() {
        let svc = Fake::default();
        let a = call(&svc, "POST", "/pins", PIN, "alice", Role::Writer).unwrap();
        assert_eq!(a.status, 202);
        let body = a.body.unwrap();
        assert_eq!(body["status"], "queued");
        assert_eq!(body["pin"]["name"], "a");
        assert_eq!(body["delegates"].as_array().map(Vec::len), Some(1));
        let id = body["requestid"].as_str().unwrap().to_string();
        let g = call(&svc, "GET", &format!("/pins/{id}"), "", "bob", Role::Reader).unwrap();
        assert_eq!(
            (g.status, &g.body.unwrap()["requestid"]),
            (200, &Value::from(id.clone()))
        );
        // The default listing shows pinned pins only.
        let l = call(&svc, "GET", "/pins", "", "bob", Role::Reader).unwrap();
        assert_eq!(l.body.unwrap()["count"], 0);
        let e = call(&svc, "GET", "/pins/nope", "", "bob", Role::Reader).unwrap_err();
        assert_eq!((e.status, e.reason), (404, "NOT_FOUND"));
        let e = call(
            &svc,
            "POST",
            "/pins",
            r#"{"cid":"Qm!"}"#,
            "alice",
            Role::Writer,
        )
        .unwrap_err();
        assert_eq!((e.status, e.reason), (400, "BAD_REQUEST"));
        let e = call(&svc, "PUT", "/pins", "", "alice", Role::Admin).unwrap_err();
        assert_eq!(e.status, 405);
        let e = call(&svc, "DELETE", "/pins", "", "alice", Role::Admin).unwrap_err();
        assert_eq!(e.status, 405);
        let e = call(&svc, "GET", "/pins/a/b", "", "alice", Role::Admin).unwrap_err();
        assert_eq!(e.status, 404);
        // Replace: a new request id, the old one gone.
        let r = call(
            &svc,
            "POST",
            &format!("/pins/{id}"),
            PIN,
            "alice",
            Role::Writer,
        )
        .unwrap();
        assert_eq!(r.status, 202);
        let new = r.body.unwrap()["requestid"].as_str().unwrap().to_string();
        assert_ne!(new, id);
        assert_eq!(svc.ids(), vec![new.clone()]);
        let d = call(
            &svc,
            "DELETE",
            &format!("/pins/{new}"),
            "",
            "alice",
            Role::Writer,
        )
        .unwrap();
        assert_eq!((d.status, d.body), (202, None));
        assert!(svc.ids().is_empty());
    }

    #[test]
    fn roles_and_owners() {
        let svc = Fake::default();
        let e = call(&svc, "POST", "/pins", PIN, "rita", Role::Reader).unwrap_err();
        assert_eq!((e.status, e.reason), (403, "FORBIDDEN"));
        assert!(e.details.contains("needs `writer`"), "{}", e.details);
        assert!(svc.ids().is_empty(), "a refusal changes nothing");
        let a = call(&svc, "POST", "/pins", PIN, "alice", Role::Writer).unwrap();
        let id = a.body.unwrap()["requestid"].as_str().unwrap().to_string();
        let item = format!("/pins/{id}");
        for (method, body) in [("DELETE", ""), ("POST", PIN)] {
            let e = call(&svc, method, &item, body, "rita", Role::Reader).unwrap_err();
            assert_eq!(e.status, 403, "reader {method}");
            let e = call(&svc, method, &item, body, "bob", Role::Writer).unwrap_err();
            assert_eq!(e.status, 403, "another writer {method}");
            assert!(e.details.contains("another user"), "{}", e.details);
        }
        assert_eq!(svc.ids(), vec![id.clone()]);
        // A bad body is refused before anything else: nothing changes.
        let e = call(&svc, "POST", &item, "{}", "alice", Role::Writer).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(svc.ids(), vec![id.clone()]);
        // An admin removes anyone's pin.
        let d = call(&svc, "DELETE", &item, "", "root", Role::Admin).unwrap();
        assert_eq!(d.status, 202);
        let e = call(&svc, "DELETE", &item, "", "root", Role::Admin).unwrap_err();
        assert_eq!(e.status, 404);
    }
}
