//! Go Micro's layout: `<prefix>/<service>/<node id>` holding the service's JSON with only that
//! node.
//!
//! Reading is defensive: ZooKeeper is shared, and whatever else sits under the prefix (a
//! typo in `zkCli.sh`, another tool) is skipped with a reason, never a panic, and never hides
//! the valid nodes next to it.

use micro_core::{Node, Service};

/// A `/` inside a service name or node id would add a level; Go Micro writes `-`.
pub(crate) fn part(s: &str) -> String {
    s.replace('/', "-")
}

/// `<prefix>/<service>`: the parent of every node of one service.
pub(crate) fn service_path(prefix: &str, service: &str) -> String {
    format!("{prefix}/{}", part(service))
}

/// `<prefix>/<service>/<node id>`: one node.
pub(crate) fn node_path(prefix: &str, service: &str, node: &str) -> String {
    format!("{prefix}/{}/{}", part(service), part(node))
}

/// The data stored for `node`: `service` holding only that node.
pub(crate) fn node_value(service: &Service, node: &Node) -> Service {
    Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone(),
        endpoints: service.endpoints.clone(),
        nodes: vec![node.clone()],
    }
}

/// The service and node parts of a path under `prefix`, if it has Go Micro's shape.
pub(crate) fn split<'p>(prefix: &str, path: &'p str) -> Option<(&'p str, &'p str)> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    match rest.split_once('/') {
        Some((service, node)) if !service.is_empty() && !node.is_empty() && !node.contains('/') => {
            Some((service, node))
        }
        _ => None,
    }
}

/// The service stored at `path`, or why the node is not one of Go Micro's (or ours).
pub(crate) fn decode(prefix: &str, path: &str, data: &[u8], max: usize) -> Result<Service, String> {
    let (service_part, node_part) = split(prefix, path)
        .ok_or_else(|| format!("{path:?} is not {prefix}/<service>/<node id>"))?;
    if data.len() > max {
        return Err(format!(
            "{path:?}: {} bytes, more than the {max} allowed",
            data.len()
        ));
    }
    let mut service: Service = serde_json::from_slice(data)
        .map_err(|e| format!("{path:?}: the data is not a service's JSON: {e}"))?;
    if part(&service.name) != service_part {
        return Err(format!(
            "{path:?}: the data names service {:?}",
            service.name
        ));
    }
    service.nodes.retain(|n| part(&n.id) == node_part);
    if service.nodes.is_empty() {
        return Err(format!(
            "{path:?}: the data holds no node with id {node_part:?}"
        ));
    }
    Ok(service)
}

/// What a deleted node's path still tells: the service name and node id (with `-` for `/`).
pub(crate) fn from_path(prefix: &str, path: &str) -> Option<Service> {
    let (service, node) = split(prefix, path)?;
    let mut s = Service::new(service, "");
    s.nodes.push(Node {
        id: node.to_string(),
        ..Node::default()
    });
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/micro-registry";
    const MAX: usize = 1 << 20;

    fn json(name: &str, id: &str) -> Vec<u8> {
        format!(r#"{{"name":"{name}","version":"1","nodes":[{{"id":"{id}","address":"h:1"}}]}}"#)
            .into_bytes()
    }

    #[test]
    fn paths_follow_go_micro() {
        assert_eq!(
            node_path(P, "greeter", "greeter-1"),
            "/micro-registry/greeter/greeter-1"
        );
        assert_eq!(node_path(P, "a/b", "x/y"), "/micro-registry/a-b/x-y");
        assert_eq!(service_path(P, "a/b"), "/micro-registry/a-b");
    }

    #[test]
    fn decodes_valid_nodes() {
        let s = decode(P, "/micro-registry/g/g-1", &json("g", "g-1"), MAX).expect("valid");
        assert_eq!(s.nodes.len(), 1);
        let s = decode(P, "/micro-registry/a-b/x-y", &json("a/b", "x/y"), MAX).expect("slashes");
        assert_eq!(s.nodes[0].id, "x/y");
    }

    #[test]
    fn rejects_what_is_not_a_node() {
        let bad: &[(&str, Vec<u8>)] = &[
            ("/micro-registry/g/g-1", b"not json".to_vec()),
            ("/micro-registry/g/g-1", b"".to_vec()),
            ("/micro-registry/g/g-1", b"[1,2]".to_vec()),
            ("/micro-registry/g", json("g", "g-1")),
            ("/micro-registry/g/a/b", json("g", "a/b")),
            ("/micro-registry/g/g-1", json("other", "g-1")),
            ("/micro-registry/g/g-1", json("g", "g-2")),
            (
                "/micro-registry/g/g-1",
                br#"{"name":"g","nodes":null}"#.to_vec(),
            ),
            ("/elsewhere/g/g-1", json("g", "g-1")),
        ];
        for (path, data) in bad {
            assert!(decode(P, path, data, MAX).is_err(), "{path}");
        }
        assert!(decode(P, "/micro-registry/g/g-1", &json("g", "g-1"), 10).is_err());
    }

    #[test]
    fn a_deleted_path_still_names_its_node() {
        let s = from_path(P, "/micro-registry/g/g-1").expect("shape");
        assert_eq!((s.name.as_str(), s.nodes[0].id.as_str()), ("g", "g-1"));
        assert!(from_path(P, "/micro-registry/g").is_none());
    }
}
