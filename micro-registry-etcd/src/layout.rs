//! Go Micro's key layout and values: `<prefix><service>/<node id>` holding the service's JSON
//! with only that node.
//!
//! Reading is defensive: etcd is shared, and whatever someone else wrote under the prefix
//! (another tool, an old version, a typo in `etcdctl put`) is skipped with a warning, never a
//! panic, and never hides the valid entries next to it.

use micro_core::{Node, Service};

/// A `/` inside a service name or node id would add a level to the key; Go Micro writes `-`.
pub(crate) fn key_part(s: &str) -> String {
    s.replace('/', "-")
}

/// `<prefix><service>/`: every node of one service.
pub(crate) fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{prefix}{}/", key_part(service))
}

/// `<prefix><service>/<node id>`: one node.
pub(crate) fn node_key(prefix: &str, service: &str, node: &str) -> String {
    format!("{prefix}{}/{}", key_part(service), key_part(node))
}

/// The value stored for `node`: `service` holding only that node.
pub(crate) fn node_value(service: &Service, node: &Node) -> Service {
    Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone(),
        endpoints: service.endpoints.clone(),
        nodes: vec![node.clone()],
    }
}

/// The service and node parts of a key under `prefix`, if it has Go Micro's shape.
pub(crate) fn split_key<'k>(prefix: &str, key: &'k [u8]) -> Result<(&'k str, &'k str), String> {
    let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())?;
    let rest = key
        .strip_prefix(prefix)
        .ok_or_else(|| format!("{key:?} is not under {prefix:?}"))?;
    match rest.split_once('/') {
        Some((service, node)) if !service.is_empty() && !node.is_empty() && !node.contains('/') => {
            Ok((service, node))
        }
        _ => Err(format!("{key:?} is not {prefix}<service>/<node id>")),
    }
}

/// The service stored under `key`, or why the entry is not one of ours (Go Micro's or this
/// crate's). Only the nodes that match the key are kept.
pub(crate) fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Service, String> {
    let (service_part, node_part) = split_key(prefix, key)?;
    let mut service: Service = serde_json::from_slice(value).map_err(|e| {
        format!(
            "{:?}: the value is not a service's JSON: {e}",
            String::from_utf8_lossy(key)
        )
    })?;
    if key_part(&service.name) != service_part {
        return Err(format!(
            "{:?}: the value names service {:?}",
            String::from_utf8_lossy(key),
            service.name
        ));
    }
    service.nodes.retain(|n| key_part(&n.id) == node_part);
    if service.nodes.is_empty() {
        return Err(format!(
            "{:?}: the value holds no node with id {node_part:?}",
            String::from_utf8_lossy(key)
        ));
    }
    Ok(service)
}

/// What a deleted key still tells: the service name and node id (with `-` for `/`).
pub(crate) fn from_key(prefix: &str, key: &[u8]) -> Result<Service, String> {
    let (service, node) = split_key(prefix, key)?;
    let mut s = Service::new(service, "");
    s.nodes.push(Node {
        id: node.to_string(),
        ..Node::default()
    });
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/micro/registry/";

    #[test]
    fn keys_follow_go_micro() {
        assert_eq!(
            node_key(P, "greeter", "greeter-1"),
            "/micro/registry/greeter/greeter-1"
        );
        assert_eq!(node_key(P, "a/b", "x/y"), "/micro/registry/a-b/x-y");
        assert_eq!(service_prefix(P, "a/b"), "/micro/registry/a-b/");
    }

    fn json(name: &str, id: &str) -> Vec<u8> {
        format!(r#"{{"name":"{name}","version":"1","nodes":[{{"id":"{id}","address":"h:1"}}]}}"#)
            .into_bytes()
    }

    #[test]
    fn decodes_valid_entries() {
        let s = decode(P, b"/micro/registry/g/g-1", &json("g", "g-1")).expect("valid");
        assert_eq!(s.nodes.len(), 1);
        let s = decode(P, b"/micro/registry/a-b/x-y", &json("a/b", "x/y")).expect("slashes");
        assert_eq!(s.name, "a/b");
        assert_eq!(s.nodes[0].id, "x/y");
    }

    #[test]
    fn rejects_what_is_not_an_entry() {
        let bad: &[(&[u8], Vec<u8>)] = &[
            (b"/micro/registry/g/g-1", b"not json".to_vec()),
            (b"/micro/registry/g/g-1", b"[1,2]".to_vec()),
            (b"/micro/registry/g/", json("g", "g-1")),
            (b"/micro/registry/g", json("g", "g-1")),
            (b"/micro/registry/g/a/b", json("g", "a/b")),
            (b"/micro/registry/g/g-1", json("other", "g-1")),
            (b"/micro/registry/g/g-1", json("g", "g-2")),
            (
                b"/micro/registry/g/g-1",
                br#"{"name":"g","nodes":null}"#.to_vec(),
            ),
            (b"/micro/registry/g/\xff", json("g", "g-1")),
            (b"/elsewhere/g/g-1", json("g", "g-1")),
        ];
        for (key, value) in bad {
            let err = decode(P, key, value).expect_err("not an entry");
            assert!(!err.is_empty());
        }
    }

    #[test]
    fn a_deleted_key_still_names_its_node() {
        let s = from_key(P, b"/micro/registry/g/g-1").expect("shape");
        assert_eq!(s.name, "g");
        assert_eq!(s.nodes[0].id, "g-1");
        assert!(from_key(P, b"/micro/registry/g").is_err());
    }
}
