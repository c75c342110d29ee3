//! [`KubernetesRegistry`]: the [`Registry`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use micro_core::registry::{RegisterOptions, Watcher};
use micro_core::{Error, Node, Registry, Result, Service};
use tokio::sync::{Mutex, OnceCell};

use crate::conn::{chain, Conn};
use crate::format::{
    annotation_key, encode, key_problem, read_pod, selector_label, unix_now, version_key,
    NodeEntry, PodPatch, SERVICE_VALUE, TYPE_LABEL,
};
use crate::options::{KubernetesOptions, POD_NAME_ENV};
use crate::{watch, ID};

/// A registry in the pods of a Kubernetes namespace, in Go Micro's layout: each process
/// annotates its own pod with the services it serves, and lookups read the Running pods.
///
/// Cloning is cheap and clones share everything, including the record of what this process
/// registered.
#[derive(Clone)]
pub struct KubernetesRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    opts: KubernetesOptions,
    source: Source,
    conn: OnceCell<Conn>,
    /// What this registry registered, per service name. One lock serialises the writes, so
    /// that concurrent registrations never overwrite each other's patch.
    local: Mutex<BTreeMap<String, Registered>>,
}

/// Where the client comes from.
enum Source {
    /// `kube::Config::infer()` on first use: `KUBECONFIG`, `~/.kube/config`, or in-cluster.
    Infer,
    /// A ready configuration; the client is built on first use.
    Config(Box<kube::Config>),
    /// A ready client, and the URL it talks to (for messages).
    Client(kube::Client, String),
}

impl fmt::Debug for KubernetesRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.inner.source {
            Source::Infer => "inferred".to_string(),
            Source::Config(c) => c.cluster_url.to_string(),
            Source::Client(_, server) => server.clone(),
        };
        f.debug_struct("KubernetesRegistry")
            .field("server", &source)
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl KubernetesRegistry {
    /// A registry that finds its cluster as kubectl does (`KUBECONFIG`, `~/.kube/config`, else
    /// the in-cluster service account), unless [`KubernetesOptions::address`] names the API
    /// server. Nothing is read or dialled until the first call, so this never fails and needs
    /// no running API server (nor an async runtime).
    pub fn new(opts: KubernetesOptions) -> Self {
        Self::with_source(opts, Source::Infer)
    }

    /// A registry on a ready client configuration ([`KubernetesOptions::address`], when set,
    /// replaces its server URL). The client is built on first use.
    pub fn from_config(config: kube::Config, opts: KubernetesOptions) -> Self {
        Self::with_source(opts, Source::Config(Box::new(config)))
    }

    /// A registry on a ready client; `server` is the API server URL the client talks to, named
    /// in errors ([`KubernetesOptions::address`] is not used).
    pub fn from_client(client: kube::Client, server: &str, opts: KubernetesOptions) -> Self {
        let server = server.trim_end_matches('/').to_string();
        Self::with_source(opts, Source::Client(client, server))
    }

    fn with_source(opts: KubernetesOptions, source: Source) -> Self {
        KubernetesRegistry {
            inner: Arc::new(Inner {
                opts,
                source,
                conn: OnceCell::new(),
                local: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The options this registry was made with.
    pub fn options(&self) -> &KubernetesOptions {
        &self.inner.opts
    }

    /// The connection, made on first use (a failure is retried on the next call).
    async fn conn(&self) -> Result<&Conn> {
        self.inner.conn.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Conn> {
        let opts = &self.inner.opts;
        let address = opts.address.as_deref().map(parse_url).transpose()?;
        let (client, server) = match &self.inner.source {
            Source::Client(client, server) => (client.clone(), server.clone()),
            Source::Config(config) => {
                let mut config = (**config).clone();
                if let Some(url) = address {
                    config.cluster_url = url;
                }
                build_client(config)?
            }
            Source::Infer => {
                let inferred = tokio::time::timeout(opts.timeout, kube::Config::infer()).await;
                let config = match (inferred, address) {
                    (Ok(Ok(mut config)), address) => {
                        if let Some(url) = address {
                            config.cluster_url = url;
                        }
                        config
                    }
                    // No kubeconfig and not in a pod, but told where the server is: kubectl
                    // proxy and friends need no credentials.
                    (_, Some(url)) => kube::Config::new(url),
                    (Ok(Err(e)), None) => {
                        return Err(Error::internal(
                            ID,
                            format!(
                                "kubernetes: no cluster configuration found (neither KUBECONFIG, \
                                 ~/.kube/config nor an in-cluster service account; or set \
                                 MICRO_REGISTRY_ADDRESS to the API server URL): {}",
                                chain(&e)
                            ),
                        ))
                    }
                    (Err(_), None) => {
                        return Err(Error::timeout(
                            ID,
                            format!(
                                "kubernetes: reading the cluster configuration took more than {:?}",
                                opts.timeout
                            ),
                        ))
                    }
                };
                build_client(config)?
            }
        };
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Ok(Conn {
            pods: Api::namespaced(client, &namespace),
            server,
            namespace,
            timeout: opts.timeout,
        })
    }

    fn pod_name(&self) -> Result<&str> {
        self.inner.opts.pod_name.as_deref().ok_or_else(|| {
            Error::bad_request(
                ID,
                format!(
                    "kubernetes: registering needs the name of this process's pod: set \
                     {POD_NAME_ENV} (or HOSTNAME), e.g. from the downward API \
                     (fieldRef: metadata.name)"
                ),
            )
        })
    }

    /// Lists the pods matching `selector`.
    async fn pods(&self, conn: &Conn, selector: &str, doing: &str) -> Result<Vec<Pod>> {
        let params = ListParams::default().labels(selector);
        Ok(conn.call(doing, conn.pods.list(&params)).await?.items)
    }

    /// Writes `patch` to this process's pod.
    async fn patch(&self, conn: &Conn, pod: &str, patch: &PodPatch, doing: &str) -> Result<()> {
        let doing = format!(
            "{doing} (patching pod {pod} in namespace {})",
            conn.namespace
        );
        let patch = Patch::Merge(patch.to_json());
        let params = PatchParams::default();
        let call = conn.pods.patch(pod, &params, &patch);
        match tokio::time::timeout(conn.timeout, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Err(Error::internal(
                ID,
                format!(
                    "{}: {doing}: pod {pod} not found in namespace {}; set {POD_NAME_ENV} (or \
                     HOSTNAME) to this pod's name and MICRO_KUBERNETES_NAMESPACE to its \
                     namespace",
                    conn.at(),
                    conn.namespace
                ),
            )),
            Ok(Err(e)) => Err(conn.error(&doing, &e)),
            Err(_) => Err(Error::timeout(
                ID,
                format!(
                    "{}: {doing}: no answer within {:?}",
                    conn.at(),
                    conn.timeout
                ),
            )),
        }
    }

    /// Writes the entry of service `name` to the pod after `change`; the change is kept only
    /// when the entry it gives can be written.
    async fn update(
        &self,
        name: &str,
        doing: &str,
        change: impl FnOnce(&mut Registered),
    ) -> Result<()> {
        let pod = self.pod_name()?;
        let conn = self.conn().await?;
        let mut local = self.inner.local.lock().await;
        let mut entry = local.get(name).cloned().unwrap_or_default();
        change(&mut entry);
        entry.prune(unix_now());
        let (patch, keys) = plan(&local, name, &entry)?;
        let result = self.patch(conn, pod, &patch, doing).await;
        match &result {
            Ok(()) => entry.written = keys,
            // The server may or may not have applied it: remove both sets next time.
            Err(_) => entry.written.extend(keys),
        }
        if entry.nodes.is_empty() && entry.written.is_empty() {
            local.remove(name);
        } else {
            local.insert(name.to_string(), entry);
        }
        result
    }
}

fn parse_url(address: &str) -> Result<http::Uri> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    };
    url.parse().map_err(|e| {
        Error::bad_request(
            ID,
            format!("kubernetes: {address:?} is not an API server URL: {e}"),
        )
    })
}

fn build_client(config: kube::Config) -> Result<(kube::Client, String)> {
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let client = kube::Client::try_from(config).map_err(|e| {
        Error::internal(
            ID,
            format!(
                "kubernetes at {server}: cannot set up the client: {}",
                chain(&e)
            ),
        )
    })?;
    Ok((client, server))
}

/// The nodes this registry registered for one service name.
#[derive(Debug, Clone, Default)]
struct Registered {
    /// Each version's service fields (no nodes), in the order versions were first registered:
    /// the first one goes in Go Micro's annotation.
    versions: Vec<Service>,
    /// (version, node, expiry in unix seconds).
    nodes: Vec<(String, Node, Option<u64>)>,
    /// The annotation keys last written to the pod.
    written: BTreeSet<String>,
}

impl Registered {
    fn upsert(&mut self, service: &Service, expires: Option<u64>) {
        let mut template = service.clone();
        template.nodes.clear();
        match self
            .versions
            .iter_mut()
            .find(|v| v.version == service.version)
        {
            Some(v) => *v = template,
            None => self.versions.push(template),
        }
        for node in &service.nodes {
            self.nodes.retain(|(_, n, _)| n.id != node.id);
            self.nodes
                .push((service.version.clone(), node.clone(), expires));
        }
    }

    fn remove(&mut self, service: &Service) {
        if service.nodes.is_empty() {
            self.nodes.retain(|(v, _, _)| *v != service.version);
        } else {
            self.nodes
                .retain(|(_, n, _)| !service.nodes.iter().any(|gone| gone.id == n.id));
        }
    }

    /// Drops expired nodes and versions left without nodes.
    fn prune(&mut self, now: f64) {
        self.nodes
            .retain(|(_, _, e)| e.is_none_or(|e| e as f64 > now));
        let nodes = &self.nodes;
        self.versions
            .retain(|t| nodes.iter().any(|(v, _, _)| *v == t.version));
    }

    /// Annotation key -> Service JSON, one per version.
    fn annotations(&self, name: &str) -> BTreeMap<String, String> {
        self.versions
            .iter()
            .enumerate()
            .map(|(i, template)| {
                let key = if i == 0 {
                    annotation_key(name)
                } else {
                    version_key(name, &template.version)
                };
                let nodes: Vec<(Node, Option<u64>)> = self
                    .nodes
                    .iter()
                    .filter(|(v, _, _)| *v == template.version)
                    .map(|(_, n, e)| (n.clone(), *e))
                    .collect();
                (key, encode(template, &nodes))
            })
            .collect()
    }
}

/// The patch that makes the pod show `entry` for service `name`, and the annotation keys it
/// writes. Keys another service of this registry uses are never removed, and two services that
/// would share a key are refused.
fn plan(
    local: &BTreeMap<String, Registered>,
    name: &str,
    entry: &Registered,
) -> Result<(PodPatch, BTreeSet<String>)> {
    let annotations = entry.annotations(name);
    let selector = selector_label(name);
    let mut others: BTreeMap<String, &str> = BTreeMap::new();
    for (other, registered) in local.iter().filter(|(n, _)| n.as_str() != name) {
        if !registered.nodes.is_empty() {
            others.insert(selector_label(other), other);
        }
        for key in registered.annotations(other).into_keys() {
            others.insert(key, other);
        }
    }
    let mut patch = PodPatch::default();
    if annotations.is_empty() {
        if !others.contains_key(&selector) {
            patch.labels.insert(selector, None);
        }
        let mut stale = entry.written.clone();
        stale.insert(annotation_key(name));
        for key in stale.into_iter().filter(|k| !others.contains_key(k)) {
            patch.annotations.insert(key, None);
        }
        return Ok((patch, BTreeSet::new()));
    }
    for key in std::iter::once(&selector).chain(annotations.keys()) {
        if let Some(problem) = key_problem(key) {
            return Err(Error::bad_request(
                ID,
                format!("kubernetes: cannot register {name}: {problem}"),
            ));
        }
        if let Some(other) = others.get(key) {
            return Err(Error::conflict(
                ID,
                format!(
                    "kubernetes: cannot register {name:?} from this pod: service {other:?}, \
                     registered here too, uses the same key `{key}` (Kubernetes keys allow only \
                     [-A-Za-z0-9_.], other characters become `_`)"
                ),
            ));
        }
    }
    patch
        .labels
        .insert(TYPE_LABEL.to_string(), Some(SERVICE_VALUE.to_string()));
    patch
        .labels
        .insert(selector, Some(SERVICE_VALUE.to_string()));
    for key in &entry.written {
        if !annotations.contains_key(key) && !others.contains_key(key) {
            patch.annotations.insert(key.clone(), None);
        }
    }
    let keys = annotations.keys().cloned().collect();
    for (key, json) in annotations {
        patch.annotations.insert(key, Some(json));
    }
    Ok((patch, keys))
}

/// The live nodes among `entries`, merged into one service per version.
fn live_services(entries: Vec<NodeEntry>) -> Vec<Service> {
    let now = unix_now();
    Service::merge(
        entries
            .into_iter()
            .filter(|e| e.alive(now))
            .map(|e| e.service),
    )
}

#[async_trait::async_trait]
impl Registry for KubernetesRegistry {
    fn name(&self) -> &str {
        "kubernetes"
    }

    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
        if service.name.is_empty() {
            return Err(Error::bad_request(ID, "kubernetes: a service needs a name"));
        }
        if service.nodes.is_empty() {
            return Err(Error::bad_request(
                ID,
                format!("kubernetes: register at least one node of {}", service.name),
            ));
        }
        let expires =
            (!opts.ttl.is_zero()).then(|| (unix_now() + opts.ttl.as_secs_f64()).ceil() as u64);
        let doing = format!("registering {}", service.name);
        self.update(&service.name, &doing, |entry| {
            entry.upsert(service, expires)
        })
        .await
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        if self.inner.opts.pod_name.is_none() {
            // Nothing can have been registered from here.
            return Ok(());
        }
        let doing = format!("deregistering {}", service.name);
        self.update(&service.name, &doing, |entry| entry.remove(service))
            .await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let not_found = |ns: &str| {
            Error::not_found(
                ID,
                format!("service {name} not found in kubernetes namespace {ns}"),
            )
        };
        let conn = self.conn().await?;
        let selector = selector_label(name);
        // A name Kubernetes cannot carry as a label was never registered.
        if key_problem(&selector).is_some() {
            return Err(not_found(&conn.namespace));
        }
        let doing = format!(
            "looking up {name} (listing pods in namespace {})",
            conn.namespace
        );
        let pods = self
            .pods(conn, &format!("{selector}={SERVICE_VALUE}"), &doing)
            .await?;
        let entries = pods.iter().flat_map(|p| read_pod(p, Some(name))).collect();
        let services = live_services(entries);
        if services.is_empty() {
            return Err(not_found(&conn.namespace));
        }
        Ok(services)
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let conn = self.conn().await?;
        let doing = format!(
            "listing services (listing pods in namespace {})",
            conn.namespace
        );
        let pods = self
            .pods(conn, &format!("{TYPE_LABEL}={SERVICE_VALUE}"), &doing)
            .await?;
        let entries = pods.iter().flat_map(|p| read_pod(p, None)).collect();
        Ok(live_services(entries))
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let conn = self.conn().await?.clone();
        watch::start(conn, service, self.inner.opts.watch_timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, version: &str, ids: &[&str]) -> Service {
        let mut s = Service::new(name, version);
        for id in ids {
            s.nodes.push(Node {
                id: id.to_string(),
                address: "10.0.0.1:1".into(),
                ..Default::default()
            });
        }
        s
    }

    #[test]
    fn keeps_the_union_of_nodes_and_one_annotation_per_version() {
        let mut e = Registered::default();
        e.upsert(&svc("g", "v1", &["a"]), Some(100));
        e.upsert(&svc("g", "v1", &["b"]), None);
        e.upsert(&svc("g", "v2", &["c"]), None);
        e.upsert(&svc("g", "v1", &["a"]), Some(200));
        let annotations = e.annotations("g");
        let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
        assert_eq!(keys, ["micro.mu/service-g", "micro.mu/service-g..v2"]);
        let v1: Service = serde_json::from_str(&annotations["micro.mu/service-g"]).expect("json");
        assert_eq!(v1.nodes.len(), 2);
        e.prune(150.0);
        assert_eq!(e.nodes.len(), 3, "a was renewed to 200");
        e.remove(&svc("g", "v1", &["a", "b"]));
        e.prune(150.0);
        let keys: Vec<String> = e.annotations("g").into_keys().collect();
        assert_eq!(keys, ["micro.mu/service-g"], "v2 moves to the Go Micro key");
    }

    #[test]
    fn plans_removal_and_refuses_shared_keys() {
        let mut local = BTreeMap::new();
        let mut a = Registered::default();
        a.upsert(&svc("a/b", "v1", &["x"]), None);
        local.insert("a/b".to_string(), a);
        let mut clash = Registered::default();
        clash.upsert(&svc("a_b", "v1", &["y"]), None);
        let err = plan(&local, "a_b", &clash).expect_err("same key");
        assert_eq!(err.code, 409, "{err}");
        // Removing the unknown a_b must not remove a/b's label or annotation.
        let (patch, keys) = plan(&local, "a_b", &Registered::default()).expect("plan");
        assert!(keys.is_empty());
        assert!(
            patch.labels.is_empty() && patch.annotations.is_empty(),
            "{patch:?}"
        );
        let (patch, _) = plan(&local, "other", &Registered::default()).expect("plan");
        assert_eq!(patch.labels.get("micro.mu/selector-other"), Some(&None));
        assert_eq!(patch.annotations.get("micro.mu/service-other"), Some(&None));
    }

    #[test]
    fn new_needs_no_server_and_no_runtime() {
        let r = KubernetesRegistry::new(KubernetesOptions::default());
        assert_eq!(r.name(), "kubernetes");
        assert!(format!("{r:?}").contains("KubernetesRegistry"));
    }
}
