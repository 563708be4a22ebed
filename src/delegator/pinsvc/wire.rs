//! The Pinning Service API's wire format (spec v1.0.0): query strings → [`PinFilter`], request
//! bodies → [`PinRequest`], [`PinEntry`] → `PinStatus` JSON, RFC 3339 times, percent-decoding.
//!
//! Pure functions, no I/O. It checks only what is the wire's own (parameter syntax, `limit`'s
//! range, at most 10 CIDs, `meta` as a JSON object of strings); the limits of names and `meta`
//! are the store's ([`check_name`], [`check_meta`]) and a CID is parsed by [`Cid`], never here
//! a second time. It must not decide who may do what (the handlers do).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::Failure;
use crate::cid::Cid;
use crate::pinsink::{PinEntry, PinRequest};
use crate::store::{check_meta, check_name, NameMatch, PinFilter, PinStatus};

/// Most CIDs one listing may filter on.
pub const MAX_CIDS: usize = 10;
/// Most results one listing returns.
pub const MAX_LIMIT: usize = 1000;
/// Results a listing returns without `limit`.
pub const DEFAULT_LIMIT: usize = 10;

/// Percent-decodes a query value (`+` is a space); a malformed escape stays as it is.
pub(crate) fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(h)) => {
                match std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad(details: impl Into<String>) -> Failure {
    Failure::bad_request(details)
}

/// `GET /pins`'s query: every filter of the spec, checked; `status` defaults to `pinned`,
/// `limit` to 10. Unknown parameters are ignored.
pub fn parse_query(query: Option<&str>) -> Result<PinFilter, Failure> {
    let mut f = PinFilter {
        limit: DEFAULT_LIMIT,
        ..PinFilter::default()
    };
    let mut name_match = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "cid" => {
                for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    let cid = Cid::parse(c).map_err(|e| bad(format!("cid: {e}")))?;
                    f.cids.push(cid.to_string());
                }
                if f.cids.len() > MAX_CIDS {
                    return Err(bad(format!(
                        "cid: {} given, at most {MAX_CIDS} allowed",
                        f.cids.len()
                    )));
                }
            }
            "name" => {
                check_name(&v).map_err(bad)?;
                f.name = Some(v);
            }
            "match" => {
                name_match = Some(NameMatch::parse(&v).ok_or_else(|| {
                    bad(format!(
                        "match: `{}` is not one of exact, iexact, partial, ipartial",
                        short(&v)
                    ))
                })?);
            }
            "status" => {
                for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let st = PinStatus::parse(s).ok_or_else(|| {
                        bad(format!(
                            "status: `{}` is not one of queued, pinning, pinned, failed",
                            short(s)
                        ))
                    })?;
                    if !f.statuses.contains(&st) {
                        f.statuses.push(st);
                    }
                }
            }
            "before" => f.before = Some(time_param("before", &v)?),
            "after" => f.after = Some(time_param("after", &v)?),
            "limit" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit: `{}` is not a number from 1 to {MAX_LIMIT}",
                            short(&v)
                        ))
                    })?;
            }
            "meta" => {
                let meta: BTreeMap<String, String> = serde_json::from_str(&v)
                    .map_err(|e| bad(format!("meta: not a JSON object of string values ({e})")))?;
                check_meta(&meta).map_err(bad)?;
                f.meta = meta;
            }
            _ => {}
        }
    }
    if let Some(m) = name_match {
        f.name_match = m;
    }
    if f.statuses.is_empty() {
        f.statuses.push(PinStatus::Pinned);
    }
    Ok(f)
}

fn time_param(key: &str, v: &str) -> Result<i64, Failure> {
    parse_rfc3339(v).ok_or_else(|| {
        bad(format!(
            "{key}: `{}` is not an RFC 3339 time such as 2026-12-04T01:02:03.456Z",
            short(v)
        ))
    })
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The spec's `Pin` object, as a client sends it.
#[derive(serde::Deserialize)]
struct WirePin {
    cid: Option<String>,
    name: Option<String>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

/// A `Pin` body (`POST /pins`, `POST /pins/{requestid}`) on behalf of `owner`: JSON with a
/// `cid`. The pin's own limits are checked where the pin is added.
pub fn parse_pin(body: &[u8], owner: &str) -> Result<PinRequest, Failure> {
    let p: WirePin = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is not a Pin object (cid, name, origins, meta as strings): {e}"
        ))
    })?;
    let cid = p
        .cid
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| bad("cid: required"))?;
    Ok(PinRequest {
        cid,
        name: p.name,
        origins: p.origins,
        meta: p.meta,
        owner: owner.to_owned(),
    })
}

/// A `PinStatus` object. `info` carries the owner, how many nodes hold the pin, and why it
/// failed (`status_details`) when it did.
pub fn pin_status(p: &PinEntry, delegates: &[String]) -> Value {
    let mut pin = json!({
        "cid": p.cid,
        "origins": p.origins,
        "meta": p.meta,
    });
    if let (Some(name), Some(obj)) = (&p.name, pin.as_object_mut()) {
        obj.insert("name".into(), Value::String(name.clone()));
    }
    let mut info = serde_json::Map::new();
    info.insert("owner".into(), Value::String(p.owner.clone()));
    info.insert("nodes_pinned".into(), Value::String(p.holders.to_string()));
    if let Some(r) = &p.reason {
        info.insert("status_details".into(), Value::String(r.clone()));
    }
    json!({
        "requestid": p.request_id,
        "status": p.status.as_str(),
        "created": format_rfc3339(p.created_at),
        "pin": pin,
        "delegates": delegates,
        "info": info,
    })
}

/// `PinResults`: how many match, and this page.
pub fn pin_results(count: u64, pins: &[PinEntry], delegates: &[String]) -> Value {
    let results: Vec<Value> = pins.iter().map(|p| pin_status(p, delegates)).collect();
    json!({ "count": count, "results": results })
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2026-12-04T01:02:03.456Z`).
pub fn format_rfc3339(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// An RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) as unix milliseconds; fractions
/// below a millisecond are dropped.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if at(i, b".") {
        i += 1;
        let start = i;
        while at(i, b"0123456789") {
            i += 1;
        }
        let digits = b.get(start..i)?;
        if digits.is_empty() {
            return None;
        }
        for k in 0..3 {
            ms = ms * 10 + digits.get(k).map_or(0, |c| i64::from(c - b'0'));
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    Some(secs * 1000 + ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

    #[test]
    fn times_round_trip() {
        for ms in [
            0,
            1,
            999,
            1_764_810_000_123,
            951_782_400_000,
            4_102_444_799_999,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:30:00-00:30"), Some(0));
        assert_eq!(
            parse_rfc3339("2000-02-29T12:00:00.5Z"),
            Some(951_825_600_500)
        );
        assert_eq!(
            parse_rfc3339("2026-12-04T01:02:03.456789123Z"),
            parse_rfc3339("2026-12-04T01:02:03.456Z")
        );
        assert_eq!(format_rfc3339(1_500), "1970-01-01T00:00:01.500Z");
        for bad in [
            "",
            "2026-12-04",
            "2026-12-04T01:02:03",
            "2026-13-04T01:02:03Z",
            "2026-02-30T01:02:03Z",
            "2025-02-29T00:00:00Z",
            "2026-12-04T24:00:00Z",
            "2026-12-04T01:02:03.Z",
            "2026-12-04T01:02:03+0100",
            "2026-12-04T01:02:03Zjunk",
            "2026-12-04T01:02:03+25:00",
            "not a time at all, no",
            "２026-12-04T01:02:03Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_query_without_filters_lists_ten_pinned() {
        let f = parse_query(None).unwrap();
        assert_eq!(f.statuses, vec![PinStatus::Pinned]);
        assert_eq!(f.limit, 10);
        assert_eq!(f, parse_query(Some("")).unwrap());
    }

    #[test]
    fn every_filter_is_parsed() {
        let q = format!(
            "cid={CID},%20QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG&name=Rep%20ort&match=ipartial\
             &status=queued,failed&before=2026-12-04T00:00:00Z&after=2026-12-03T00:00:00.250Z\
             &limit=1000&meta=%7B%22app%22%3A%22photos%22%7D&unknown=1"
        );
        let f = parse_query(Some(&q)).unwrap();
        assert_eq!(f.cids.len(), 2);
        assert_eq!(f.cids[0], CID);
        assert_eq!(f.cids[1], "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG");
        assert_eq!(f.name.as_deref(), Some("Rep ort"));
        assert_eq!(f.name_match, NameMatch::IPartial);
        assert_eq!(f.statuses, vec![PinStatus::Queued, PinStatus::Failed]);
        assert_eq!(f.before, parse_rfc3339("2026-12-04T00:00:00Z"));
        assert_eq!(f.after.map(|a| a % 1000), Some(250));
        assert_eq!(f.limit, 1000);
        assert_eq!(f.meta.get("app").map(String::as_str), Some("photos"));
    }

    #[test]
    fn bad_queries_are_400_naming_the_parameter() {
        let eleven = [CID; 11].join(",");
        let long = "x".repeat(256);
        let big_meta = format!("{{\"k\":\"{}\"}}", "v".repeat(5000));
        for (q, want) in [
            ("cid=bafy-not-a-cid".to_string(), "cid:"),
            (format!("cid={eleven}"), "at most 10"),
            (format!("name={long}"), "name:"),
            ("match=fuzzy".into(), "match:"),
            ("status=done".into(), "status:"),
            ("before=yesterday".into(), "before:"),
            ("after=2026-12-04".into(), "after:"),
            ("limit=0".into(), "limit:"),
            ("limit=1001".into(), "limit:"),
            ("limit=ten".into(), "limit:"),
            ("meta=%7B%22a%22%3A1%7D".into(), "meta:"),
            ("meta=%5B%5D".into(), "meta:"),
            (format!("meta={big_meta}"), "meta:"),
        ] {
            let e = parse_query(Some(&q)).expect_err(&q);
            assert_eq!((e.status, e.reason), (400, "BAD_REQUEST"), "{q}");
            assert!(e.details.contains(want), "{q}: {}", e.details);
        }
        assert!(parse_query(Some(&format!("name={}", "é".repeat(255)))).is_ok());
    }

    #[test]
    fn pin_bodies() {
        let p = parse_pin(
            br#"{"cid":"bafy","name":"n","origins":["/ip4/1.2.3.4/tcp/4001"],"meta":{"a":"b"},"x":1}"#,
            "alice",
        )
        .unwrap();
        assert_eq!(
            (p.cid.as_str(), p.name.as_deref(), p.owner.as_str()),
            ("bafy", Some("n"), "alice")
        );
        assert_eq!(p.origins.len(), 1);
        assert_eq!(p.meta["a"], "b");
        for body in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"cid":""}"#,
            br#"{"cid":"x","meta":{"a":1}}"#,
            b"{\"cid\":",
        ] {
            let e = parse_pin(body, "alice").expect_err("refused");
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn pin_status_has_the_spec_fields() {
        let e = PinEntry {
            request_id: "ab".repeat(16),
            cid: CID.into(),
            name: None,
            origins: vec![],
            meta: BTreeMap::from([("app".into(), "x".into())]),
            owner: "alice".into(),
            created_at: 1_500,
            status: PinStatus::Failed,
            reason: Some("no node could pin it".into()),
            holders: 0,
        };
        let v = pin_status(&e, &["/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo".into()]);
        assert_eq!(v["requestid"], "ab".repeat(16));
        assert_eq!(v["status"], "failed");
        assert_eq!(v["created"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["pin"]["cid"], CID);
        assert!(v["pin"].get("name").is_none(), "no name: absent");
        assert_eq!(v["pin"]["meta"]["app"], "x");
        assert_eq!(v["delegates"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["info"]["status_details"], "no node could pin it");
        let r = pin_results(7, &[e], &[]);
        assert_eq!(r["count"], 7);
        assert_eq!(r["results"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Cb+c%zz%"), "a,b c%zz%");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
