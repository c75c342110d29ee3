//! What travels on the subjects, as Go Micro writes it.
//!
//! Queries and announcements are Go Micro's `registry.Result`, a struct without JSON tags, so
//! its keys are Go's field names: `{"Action":"get","Service":{"name":"greeter",...}}`. Go reads
//! keys without regard to case; so does this, for `Action` and `Service`. Answers to a query are
//! one bare [`Service`] JSON per message.
//!
//! Everything here reads peer input: a message that is too large, not JSON or of another shape
//! is an `Err` with the reason, never a panic.

use micro_core::Service;
use serde::{Deserialize, Serialize};

/// A lookup for one service.
pub(crate) const GET: &str = "get";
/// A lookup for every service.
pub(crate) const LIST: &str = "list";
/// An announced registration (Go Micro writes it on every register).
pub(crate) const CREATE: &str = "create";
/// An announced change (other registries' watchers use it; Go Micro's NATS registry does not).
pub(crate) const UPDATE: &str = "update";
/// An announced deregistration.
pub(crate) const DELETE: &str = "delete";

/// Go Micro's `registry.Result` as it is written.
#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "Action")]
    action: &'a str,
    #[serde(rename = "Service")]
    service: Option<&'a Service>,
}

/// Go Micro's `registry.Result` as it is read.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "Action", alias = "action", default)]
    action: Option<String>,
    #[serde(rename = "Service", alias = "service", default)]
    service: Option<Service>,
}

/// A query as a peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// Every version of one service, by its exact name.
    Get(String),
    /// Every service.
    List,
}

/// An announcement as a peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    /// `create`, `update`, `delete`, or whatever else a peer wrote.
    pub(crate) action: String,
    /// The service with the nodes concerned.
    pub(crate) service: Service,
}

/// `{"Action":<action>,"Service":<service>}`.
pub(crate) fn encode(action: &str, service: Option<&Service>) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Outgoing { action, service })
}

fn within(payload: &[u8], max: usize) -> Result<(), String> {
    if payload.len() > max {
        return Err(format!(
            "{} bytes, more than the {max} allowed",
            payload.len()
        ));
    }
    Ok(())
}

fn incoming(payload: &[u8], max: usize) -> Result<Incoming, String> {
    within(payload, max)?;
    serde_json::from_slice(payload).map_err(|e| format!("not Go Micro's Result JSON: {e}"))
}

/// The query in `payload`.
pub(crate) fn query(payload: &[u8], max: usize) -> Result<Query, String> {
    let msg = incoming(payload, max)?;
    match msg.action.as_deref() {
        Some(GET) => match msg.service {
            Some(s) if !s.name.is_empty() => Ok(Query::Get(s.name)),
            _ => Err("a get query without a service name".to_string()),
        },
        Some(LIST) => Ok(Query::List),
        other => Err(format!("not a query: action {other:?}")),
    }
}

/// The announcement in `payload`.
pub(crate) fn announcement(payload: &[u8], max: usize) -> Result<Announcement, String> {
    let msg = incoming(payload, max)?;
    match (msg.action, msg.service) {
        (Some(action), Some(service)) if !service.name.is_empty() => {
            Ok(Announcement { action, service })
        }
        _ => Err("an announcement needs an action and a named service".to_string()),
    }
}

/// The service in an answer to a query.
pub(crate) fn answer(payload: &[u8], max: usize) -> Result<Service, String> {
    within(payload, max)?;
    let service: Service =
        serde_json::from_slice(payload).map_err(|e| format!("not a service's JSON: {e}"))?;
    if service.name.is_empty() {
        return Err("a service without a name".to_string());
    }
    Ok(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn writes_go_micro_field_names() {
        let get = encode(GET, Some(&Service::new("greeter", ""))).expect("encode");
        let v: serde_json::Value = serde_json::from_slice(&get).expect("json");
        assert_eq!(v["Action"], "get");
        assert_eq!(v["Service"]["name"], "greeter");
        let list = encode(LIST, None).expect("encode");
        assert_eq!(list, br#"{"Action":"list","Service":null}"#);
    }

    #[test]
    fn reads_queries_as_go_writes_them() {
        let go_get = br#"{"Action":"get","Service":{"name":"greeter","version":"","metadata":null,"endpoints":null,"nodes":null}}"#;
        assert_eq!(query(go_get, MAX), Ok(Query::Get("greeter".into())));
        assert_eq!(
            query(br#"{"Action":"list","Service":null}"#, MAX),
            Ok(Query::List)
        );
        assert_eq!(
            query(br#"{"action":"list"}"#, MAX),
            Ok(Query::List),
            "lower-case keys, as Go's decoder also accepts"
        );
    }

    #[test]
    fn refuses_what_is_not_a_query() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{}",
            br#"{"Action":"get","Service":null}"#,
            br#"{"Action":"get","Service":{"name":""}}"#,
            br#"{"Action":"create","Service":{"name":"g"}}"#,
            br#"{"Action":7}"#,
        ] {
            assert!(query(bad, MAX).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let big = format!(
            r#"{{"Action":"list","Service":null,"x":"{}"}}"#,
            "a".repeat(100)
        );
        assert!(query(big.as_bytes(), 50).is_err());
    }

    #[test]
    fn reads_announcements_and_answers() {
        let a = announcement(
            br#"{"Action":"delete","Service":{"name":"g","nodes":[{"id":"g-1","address":"h:1"}]}}"#,
            MAX,
        )
        .expect("valid");
        assert_eq!(a.action, "delete");
        assert_eq!(a.service.nodes[0].id, "g-1");
        assert!(announcement(br#"{"Action":"delete"}"#, MAX).is_err());
        assert!(announcement(b"\xff\xfe", MAX).is_err());

        let s = answer(br#"{"name":"g","version":"1","nodes":null}"#, MAX).expect("valid");
        assert_eq!(s.version, "1");
        assert!(answer(br#"{"name":""}"#, MAX).is_err());
        assert!(answer(br#"{"name":"g","nodes":"many"}"#, MAX).is_err());
        assert!(answer(br#"{"name":"g"}"#, 5).is_err());
    }
}
