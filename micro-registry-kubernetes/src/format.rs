//! Go Micro's layout on a pod: the labels and annotations a service writes, and how they are
//! read back.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use micro_core::{Node, Service};

/// The label every pod that hosts a service carries (value [`SERVICE_VALUE`]).
pub const TYPE_LABEL: &str = "micro.mu/type";
/// The value of [`TYPE_LABEL`] and of the per-service selector labels.
pub const SERVICE_VALUE: &str = "service";
/// The prefix of the per-service selector label, `micro.mu/selector-<name>: service`.
pub const SELECTOR_PREFIX: &str = "micro.mu/selector-";
/// The prefix of the per-service annotation, `micro.mu/service-<name>: <Service JSON>`.
pub const ANNOTATION_PREFIX: &str = "micro.mu/service-";
/// The node metadata key that holds a node's expiry, in unix seconds.
///
/// Kubernetes has no TTL; a node registered with a TTL carries this key in the annotation and
/// readers drop it once the time has passed. It never appears in the nodes a lookup returns.
pub const EXPIRES_KEY: &str = "micro.mu/expires";

/// Kubernetes allows at most 63 characters in the name part of a label or annotation key.
const MAX_NAME_PART: usize = 63;

/// `name` with every byte outside `[-A-Za-z0-9_.]` replaced by `_`, as Go Micro does (byte by
/// byte, so a two-byte UTF-8 character becomes `__`).
pub fn sanitize(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// The selector label of a service: `micro.mu/selector-<sanitised name>`.
pub fn selector_label(name: &str) -> String {
    format!("{SELECTOR_PREFIX}{}", sanitize(name))
}

/// The annotation that holds a service: `micro.mu/service-<sanitised name>`.
pub fn annotation_key(name: &str) -> String {
    format!("{ANNOTATION_PREFIX}{}", sanitize(name))
}

/// The annotation of a further version of a service registered from the same pod:
/// `micro.mu/service-<name>..<version>` (Go Micro keeps one version per pod and service).
pub(crate) fn version_key(name: &str, version: &str) -> String {
    format!("{}..{}", annotation_key(name), sanitize(version))
}

/// Why `key` (a label or annotation key written by this crate) would be refused by the API
/// server, if it would.
pub(crate) fn key_problem(key: &str) -> Option<String> {
    let part = key.rsplit('/').next().unwrap_or(key);
    if part.len() > MAX_NAME_PART {
        return Some(format!(
            "`{key}` is too long for Kubernetes: the part after `/` has {} characters, at most \
             {MAX_NAME_PART} are allowed (use a shorter service name or version)",
            part.len()
        ));
    }
    if !part.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some(format!(
            "`{key}` is not a valid Kubernetes key: it must end with a letter or digit"
        ));
    }
    None
}

/// Seconds since the unix epoch, with a fraction.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One node found on a pod: the service holding only that node (without [`EXPIRES_KEY`]), and
/// when it expires (unix seconds; `None` for nodes without a TTL, such as Go Micro's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeEntry {
    pub(crate) service: Service,
    pub(crate) expires: Option<f64>,
}

impl NodeEntry {
    /// Whether the node is still alive at `now` (unix seconds).
    pub(crate) fn alive(&self, now: f64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// Whether the pod is Running and not being deleted: only such pods serve.
pub(crate) fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The pod's name, for messages.
pub(crate) fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("<unnamed>")
}

/// The nodes a Running pod announces, of the service `only` or of every service. Annotations
/// that do not hold a service (someone else's, or corrupt) are skipped with a warning.
pub(crate) fn read_pod(pod: &Pod, only: Option<&str>) -> Vec<NodeEntry> {
    if !is_running(pod) {
        return Vec::new();
    }
    let Some(annotations) = &pod.metadata.annotations else {
        return Vec::new();
    };
    let wanted = only.map(|n| (annotation_key(n), format!("{}..", annotation_key(n))));
    let mut out = Vec::new();
    for (key, value) in annotations {
        let relevant = match &wanted {
            Some((exact, versions)) => key == exact || key.starts_with(versions.as_str()),
            None => key.starts_with(ANNOTATION_PREFIX),
        };
        if !relevant {
            continue;
        }
        let service: Service = match serde_json::from_str(value) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    pod = pod_name(pod),
                    annotation = %key,
                    error = %e,
                    "skipping an annotation that does not hold a service"
                );
                continue;
            }
        };
        // Sanitising can map two names to one key: the JSON says whose entry it is.
        if only.is_some_and(|n| n != service.name) {
            continue;
        }
        out.extend(split_nodes(service, pod, key));
    }
    out
}

/// One entry per node of `service`, each node's expiry taken out of its metadata.
fn split_nodes(mut service: Service, pod: &Pod, key: &str) -> Vec<NodeEntry> {
    let nodes = std::mem::take(&mut service.nodes);
    nodes
        .into_iter()
        .map(|mut node| {
            let expires = node.metadata.remove(EXPIRES_KEY).and_then(|v| {
                let parsed = v.trim().parse::<f64>().ok().filter(|e| e.is_finite());
                if parsed.is_none() {
                    tracing::warn!(
                        pod = pod_name(pod),
                        annotation = %key,
                        node = %node.id,
                        value = %v,
                        "ignoring an unreadable {EXPIRES_KEY}"
                    );
                }
                parsed
            });
            let mut one = service.clone();
            one.nodes = vec![node];
            NodeEntry {
                service: one,
                expires,
            }
        })
        .collect()
}

/// The Service JSON for an annotation: `template`'s fields with `nodes`, each node carrying its
/// expiry in [`EXPIRES_KEY`] when it has one.
pub(crate) fn encode(template: &Service, nodes: &[(Node, Option<u64>)]) -> String {
    let mut service = template.clone();
    service.nodes = nodes
        .iter()
        .map(|(node, expires)| {
            let mut node = node.clone();
            node.metadata.remove(EXPIRES_KEY);
            if let Some(e) = expires {
                node.metadata.insert(EXPIRES_KEY.to_string(), e.to_string());
            }
            node
        })
        .collect();
    // A service of strings, maps and lists always serialises.
    serde_json::to_string(&service).unwrap_or_default()
}

/// Labels and annotations to set (`Some`) or remove (`None`) on a pod, as one merge patch.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct PodPatch {
    pub(crate) labels: BTreeMap<String, Option<String>>,
    pub(crate) annotations: BTreeMap<String, Option<String>>,
}

impl PodPatch {
    /// The JSON merge patch (RFC 7386): `null` removes a key.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let map = |m: &BTreeMap<String, Option<String>>| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Some(s) => serde_json::Value::String(s.clone()),
                        None => serde_json::Value::Null,
                    };
                    (k.clone(), v)
                })
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "metadata": {
                "labels": map(&self.labels),
                "annotations": map(&self.annotations),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(phase: &str, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sanitises_like_go_micro() {
        assert_eq!(sanitize("go.micro.srv.greeter"), "go.micro.srv.greeter");
        assert_eq!(sanitize("a/b c:d"), "a_b_c_d");
        assert_eq!(sanitize("Hello-World_1"), "Hello-World_1");
        assert_eq!(sanitize("é"), "__");
        assert_eq!(selector_label("a/b"), "micro.mu/selector-a_b");
        assert_eq!(annotation_key("a/b"), "micro.mu/service-a_b");
        assert_eq!(version_key("a", "1.0/x"), "micro.mu/service-a..1.0_x");
    }

    #[test]
    fn finds_keys_kubernetes_refuses() {
        assert_eq!(key_problem(&selector_label("greeter")), None);
        assert!(key_problem(&selector_label(&"x".repeat(60))).is_some());
        assert!(key_problem(&selector_label("greeter_")).is_some());
    }

    #[test]
    fn reads_nodes_and_expiry_and_skips_corrupt_entries() {
        let mut svc = Service::new("greeter", "latest");
        let node = Node {
            id: "greeter-1".into(),
            address: "10.0.0.1:8080".into(),
            metadata: [("protocol".to_string(), "mucp".to_string())].into(),
        };
        let json = encode(&svc, &[(node.clone(), Some(1234))]);
        let p = pod(
            "Running",
            &[
                ("micro.mu/service-greeter", json.as_str()),
                ("micro.mu/service-broken", "{not json"),
                ("other/annotation", "x"),
            ],
        );
        let all = read_pod(&p, None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].expires, Some(1234.0));
        svc.nodes.push(node);
        assert_eq!(all[0].service, svc, "expiry is not part of the metadata");
        assert!(all[0].alive(1233.5));
        assert!(!all[0].alive(1234.0));
        assert_eq!(read_pod(&p, Some("greeter")).len(), 1);
        assert!(read_pod(&p, Some("broken")).is_empty());
        assert!(read_pod(
            &pod("Pending", &[("micro.mu/service-greeter", &json)]),
            None
        )
        .is_empty());
    }

    #[test]
    fn reads_go_micro_entries_without_expiry() {
        let go = r#"{"name":"helloworld","version":"latest","metadata":null,"endpoints":[],"nodes":[{"metadata":{"protocol":"mucp"},"id":"helloworld-1","address":"10.1.2.3:9090"}]}"#;
        let entries = read_pod(
            &pod("Running", &[("micro.mu/service-helloworld", go)]),
            Some("helloworld"),
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].expires, None);
        assert!(entries[0].alive(f64::MAX));
    }

    #[test]
    fn patch_removes_with_null() {
        let mut patch = PodPatch::default();
        patch
            .labels
            .insert(TYPE_LABEL.into(), Some(SERVICE_VALUE.into()));
        patch.annotations.insert("micro.mu/service-x".into(), None);
        assert_eq!(
            patch.to_json(),
            serde_json::json!({"metadata": {
                "labels": {"micro.mu/type": "service"},
                "annotations": {"micro.mu/service-x": null}
            }})
        );
    }
}
