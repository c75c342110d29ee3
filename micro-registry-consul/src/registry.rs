//! [`ConsulRegistry`]: the `Registry` trait over the agent, health and catalog endpoints.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use micro_core::registry::{RegisterOptions, Watcher};
use micro_core::{Error, Node, Registry, Result, Service};

use crate::client::{ConsulHttp, HealthEntry, Pass, Registration, TtlCheck, ERROR_ID};
use crate::options::ConsulOptions;
use crate::tags;
use crate::watch;

/// Consul removes a critical service no sooner than this after it went critical.
const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);

/// A registry kept in Consul, readable and writable by Go Micro services.
///
/// Each node is one Consul service instance, registered with the local agent and kept alive
/// by a TTL check; lookups read the health endpoint and see passing instances only; watches
/// are blocking queries. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct ConsulRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: ConsulHttp,
    watch_wait: Duration,
    /// Node id -> hash of its last registration, so that an unchanged node only has its check
    /// passed (Go Micro does the same).
    registered: Mutex<HashMap<String, u64>>,
}

impl ConsulRegistry {
    /// A registry talking to the agent `opts` names. Consul need not be running yet: nothing
    /// is sent until the first call. Fails on an unusable address or TLS file.
    pub fn new(opts: ConsulOptions) -> Result<Self> {
        Ok(ConsulRegistry {
            inner: Arc::new(Inner {
                http: ConsulHttp::new(&opts)?,
                watch_wait: opts.watch_wait,
                registered: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `consul at <address>`, as errors name the agent.
    fn agent(&self) -> &str {
        self.inner.http.label()
    }

    fn registered(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.inner
            .registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn register_node(&self, service: &Service, node: &Node, ttl: Duration) -> Result<()> {
        let registration = registration(service, node, ttl, self.agent())?;
        let hash = hash_of(&registration, ttl);
        let check_id = check_id(&node.id);
        let unchanged = self.registered().get(&node.id) == Some(&hash);
        if unchanged && !ttl.is_zero() {
            match self.inner.http.pass(&check_id).await? {
                Pass::Passed => return Ok(()),
                Pass::Unknown(e) => {
                    tracing::info!("{}: registering {} again: {e}", self.agent(), node.id);
                }
            }
        }
        self.inner.http.register(&registration).await?;
        if !ttl.is_zero() {
            if let Pass::Unknown(e) = self.inner.http.pass(&check_id).await? {
                return Err(e);
            }
        }
        self.registered().insert(node.id.clone(), hash);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Registry for ConsulRegistry {
    fn name(&self) -> &str {
        "consul"
    }

    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
        if service.name.is_empty() {
            return Err(Error::bad_request(ERROR_ID, "a service needs a name"));
        }
        for node in &service.nodes {
            self.register_node(service, node, opts.ttl).await?;
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        for node in &service.nodes {
            self.registered().remove(&node.id);
            if node.id.is_empty() {
                continue;
            }
            self.inner.http.deregister(&node.id).await?;
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let (entries, _) = self.inner.http.health(name, None).await?;
        let found = services_of(entries, name, self.agent());
        if found.is_empty() {
            return Err(Error::not_found(
                ERROR_ID,
                format!("service {name} not found in {}", self.agent()),
            ));
        }
        Ok(found)
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let (catalog, _) = self.inner.http.catalog(None).await?;
        let mut out = Vec::with_capacity(catalog.len());
        for (name, service_tags) in catalog {
            let versions: BTreeSet<String> = service_tags
                .iter()
                .filter(|t| t.starts_with("v-") || t.starts_with("v="))
                .map(|t| tags::decode(std::slice::from_ref(t), &name).version)
                .filter(|v| !v.is_empty())
                .collect();
            if versions.is_empty() {
                out.push(Service::new(name, ""));
            } else {
                out.extend(versions.into_iter().map(|v| Service::new(name.clone(), v)));
            }
        }
        Ok(out)
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let http = self.inner.http.clone();
        watch::start(http, self.inner.watch_wait, service.map(str::to_string)).await
    }
}

/// The check Go Micro keeps passing for a node.
pub(crate) fn check_id(node_id: &str) -> String {
    format!("service:{node_id}")
}

fn registration(
    service: &Service,
    node: &Node,
    ttl: Duration,
    agent: &str,
) -> Result<Registration> {
    if node.id.is_empty() {
        return Err(Error::bad_request(
            ERROR_ID,
            format!("{agent}: a node of service {} has no id", service.name),
        ));
    }
    let (host, port) = split_address(&node.address).ok_or_else(|| {
        Error::bad_request(
            ERROR_ID,
            format!(
                "{agent}: node {} has the address {:?}, whose port is not a number",
                node.id, node.address
            ),
        )
    })?;
    let check = (!ttl.is_zero()).then(|| TtlCheck {
        check_id: check_id(&node.id),
        name: format!("Service '{}' check", service.name),
        ttl: go_duration(ttl),
        deregister_critical_service_after: go_duration(
            ttl.max(MIN_DEREGISTER_AFTER) + Duration::from_secs(5),
        ),
        status: "passing".to_string(),
    });
    Ok(Registration {
        id: node.id.clone(),
        name: service.name.clone(),
        tags: tags::encode(service, node),
        address: host,
        port,
        meta: consul_meta(&service.metadata, &service.name),
        check,
    })
}

/// `host:port` split as Go's `net.SplitHostPort`; an address without a port is all host, with
/// port 0, as Go Micro registers it. `None` when the port is not a number.
pub(crate) fn split_address(address: &str) -> Option<(String, u16)> {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            return port.parse().ok().map(|p| (host.to_string(), p));
        }
        return Some((rest.trim_end_matches(']').to_string(), 0));
    }
    match address.split_once(':') {
        Some((host, port)) if !port.contains(':') => {
            port.parse().ok().map(|p| (host.to_string(), p))
        }
        _ => Some((address.to_string(), 0)),
    }
}

/// `host:port`, bracketing IPv6 hosts, as Go's `net.JoinHostPort`.
pub(crate) fn join_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A duration the way Go writes it, which is what Consul parses.
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn hash_of(registration: &Registration, ttl: Duration) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(registration)
        .unwrap_or_default()
        .hash(&mut h);
    ttl.hash(&mut h);
    h.finish()
}

/// Service metadata as Consul's `Meta` accepts it (keys of `[A-Za-z0-9_-]`, at most 128
/// characters and not starting `consul-`; values at most 512; 64 pairs): anything else
/// would make the agent refuse the whole registration, so it is left out with a warning.
fn consul_meta(metadata: &BTreeMap<String, String>, service: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in metadata {
        let key_ok = !k.is_empty()
            && k.len() <= 128
            && !k.starts_with("consul-")
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok || v.len() > 512 || out.len() == 64 {
            tracing::warn!(
                "consul: metadata {k:?} of service {service} does not fit Consul's Meta; left out"
            );
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The service (holding this one node) an entry describes, or `None` for an entry that is
/// not usable: another service's, failing a check, or without an id or address.
pub(crate) fn service_of(entry: HealthEntry, name: &str, agent: &str) -> Option<Service> {
    let s = entry.service;
    if s.service != name {
        return None;
    }
    let critical = entry
        .checks
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.status.as_deref() == Some("critical"));
    if critical {
        return None;
    }
    if s.id.is_empty() {
        tracing::warn!("{agent}: skipping an instance of {name} without an ID");
        return None;
    }
    let host = s
        .address
        .filter(|a| !a.is_empty())
        .or_else(|| entry.node.and_then(|n| n.address))
        .filter(|a| !a.is_empty());
    let Some(host) = host else {
        tracing::warn!("{agent}: skipping {} of {name}: it has no address", s.id);
        return None;
    };
    let decoded = tags::decode(s.tags.as_deref().unwrap_or_default(), &s.id);
    Some(Service {
        name: s.service,
        version: decoded.version,
        metadata: s.meta.unwrap_or_default(),
        endpoints: decoded.endpoints,
        nodes: vec![Node {
            id: s.id,
            address: join_address(&host, s.port.unwrap_or(0)),
            metadata: decoded.metadata,
        }],
    })
}

/// The usable entries of `name`, merged into one service per version.
pub(crate) fn services_of(entries: Vec<HealthEntry>, name: &str, agent: &str) -> Vec<Service> {
    Service::merge(
        entries
            .into_iter()
            .filter_map(|e| service_of(e, name, agent)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &str) -> Vec<HealthEntry> {
        let items: Vec<serde_json::Value> = serde_json::from_str(json).expect("test JSON");
        items
            .into_iter()
            .filter_map(|i| serde_json::from_value(i).ok())
            .collect()
    }

    #[test]
    fn addresses_split_and_join_like_go() {
        assert_eq!(
            split_address("10.0.0.5:41234"),
            Some(("10.0.0.5".into(), 41234))
        );
        assert_eq!(split_address("[::1]:8080"), Some(("::1".into(), 8080)));
        assert_eq!(split_address("::1"), Some(("::1".into(), 0)));
        assert_eq!(split_address("host"), Some(("host".into(), 0)));
        assert_eq!(split_address("host:http"), None);
        assert_eq!(split_address("host:70000"), None);
        assert_eq!(join_address("::1", 8080), "[::1]:8080");
        assert_eq!(join_address("10.0.0.5", 1), "10.0.0.5:1");
    }

    #[test]
    fn registrations_follow_go_micro() {
        let mut s = Service::new("greeter", "latest");
        s.metadata.insert("team".into(), "payments".into());
        s.metadata.insert("bad key".into(), "x".into());
        s.metadata.insert("consul-x".into(), "x".into());
        let node = Node {
            id: "greeter-1".into(),
            address: "10.0.0.5:41234".into(),
            metadata: BTreeMap::new(),
        };
        let r = registration(&s, &node, Duration::from_secs(90), "a").expect("valid");
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["ID"], "greeter-1");
        assert_eq!(json["Name"], "greeter");
        assert_eq!(json["Address"], "10.0.0.5");
        assert_eq!(json["Port"], 41234);
        assert_eq!(json["Meta"], serde_json::json!({"team": "payments"}));
        assert_eq!(json["Check"]["CheckID"], "service:greeter-1");
        assert_eq!(json["Check"]["TTL"], "90s");
        assert_eq!(json["Check"]["DeregisterCriticalServiceAfter"], "95s");
        let r = registration(&s, &node, Duration::from_secs(2), "a").expect("valid");
        let check = r.check.expect("a check");
        assert_eq!(
            (
                check.ttl.as_str(),
                check.deregister_critical_service_after.as_str()
            ),
            ("2s", "65s")
        );
        assert!(registration(&s, &node, Duration::ZERO, "a")
            .expect("valid")
            .check
            .is_none());
        let r = registration(&s, &node, Duration::from_millis(1500), "a").expect("valid");
        assert_eq!(r.check.expect("a check").ttl, "1500ms");
    }

    #[test]
    fn entries_become_services_and_critical_ones_are_dropped() {
        let s = Service::new("greeter", "v1");
        let node = Node {
            id: "greeter-1".into(),
            address: "10.0.0.5:1".into(),
            metadata: [("protocol".to_string(), "mucp".to_string())].into(),
        };
        let tags = serde_json::to_string(&tags::encode(&s, &node)).expect("tags");
        let json = format!(
            r#"[
            {{"Node":{{"Address":"192.168.1.1"}},"Service":{{"ID":"greeter-1","Service":"greeter","Tags":{tags},"Address":"","Port":1,"Meta":null}},
              "Checks":[{{"CheckID":"serfHealth","Status":"passing"}},{{"CheckID":"service:greeter-1","Status":"passing"}}]}},
            {{"Node":{{"Address":"192.168.1.2"}},"Service":{{"ID":"greeter-2","Service":"greeter","Tags":{tags},"Address":"10.0.0.6","Port":2}},
              "Checks":[{{"CheckID":"service:greeter-2","Status":"critical"}}]}},
            {{"Service":{{"ID":"other-1","Service":"other","Tags":null,"Address":"10.0.0.7","Port":3}}}},
            {{"Service":{{"ID":"","Service":"greeter","Address":"10.0.0.8","Port":4}}}},
            {{"Service":{{"ID":"greeter-5","Service":"greeter","Tags":["v-zz"],"Address":"10.0.0.9","Port":5,"Meta":{{"team":"x"}}}},"Checks":null}},
            {{"Service":"corrupt"}}
        ]"#
        );
        let found = services_of(entries(&json), "greeter", "a");
        assert_eq!(found.len(), 2, "{found:?}");
        let v1 = found.iter().find(|s| s.version == "v1").expect("v1");
        assert_eq!(v1.nodes.len(), 1);
        assert_eq!(
            v1.nodes[0].address, "192.168.1.1:1",
            "the node address fills in"
        );
        assert_eq!(v1.nodes[0].metadata["protocol"], "mucp");
        let unversioned = found
            .iter()
            .find(|s| s.version.is_empty())
            .expect("no version");
        assert_eq!(unversioned.nodes[0].id, "greeter-5");
        assert_eq!(unversioned.metadata["team"], "x");
    }
}
