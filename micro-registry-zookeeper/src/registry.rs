//! [`ZookeeperRegistry`]: the [`Registry`] trait on ZooKeeper's ephemeral nodes and persistent
//! recursive watches.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Error, Registry, Result, Service};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zookeeper_client::{
    Acls, AddWatchMode, Client, CreateMode, EventType, PersistentWatcher, WatchedEvent,
};

use crate::options::ZookeeperOptions;
use crate::{layout, ERROR_ID};

/// What to check when ZooKeeper does not answer.
const HINT: &str = "is ZooKeeper running and reachable there?";

/// How many nodes a watch remembers, to say what a deleted node was.
const WATCH_CACHE_CAP: usize = 10_000;

/// A [`Registry`] in ZooKeeper, readable and writable by Go Micro's ZooKeeper registry.
///
/// Each node is the znode `<prefix>/<service>/<node id>` holding the service's JSON with only
/// that node. It is ephemeral: ZooKeeper removes it when this registry's session ends (the
/// process died or was cut off longer than the session timeout). ZooKeeper has no TTL for
/// ephemeral nodes, so the registry itself deletes a node whose register TTL passes without a
/// new registration.
///
/// Making one does not contact ZooKeeper: the session is made by the first operation and made
/// again after it expired (nodes lost with an expired session come back with the next
/// registration). Every request is bounded by [`ZookeeperOptions::request_timeout`]; a failure
/// names the backend (`zookeeper at 127.0.0.1:2181: ...`) and is a 503 when ZooKeeper cannot
/// be reached. Cloning is cheap; clones share the session.
#[derive(Clone)]
pub struct ZookeeperRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ZookeeperOptions,
    /// The prefix without a trailing `/`.
    prefix: String,
    /// `127.0.0.1:2181,127.0.0.1:2182`.
    servers: String,
    /// `zookeeper at 127.0.0.1:2181`, the start of every error.
    label: String,
    current: tokio::sync::Mutex<Option<Client>>,
    /// The path of every node this registry wrote, with its deadline (`None`: no TTL).
    owned: Mutex<HashMap<String, Option<Instant>>>,
    /// Wakes the expiry task when a deadline changed.
    changed: Arc<Notify>,
    expiry: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.expiry).take() {
            task.abort();
        }
    }
}

impl fmt::Debug for ZookeeperRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZookeeperRegistry")
            .field("servers", &self.inner.servers)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl ZookeeperRegistry {
    /// A registry on the ZooKeeper that `opts` describes. It does not connect yet.
    pub fn new(opts: ZookeeperOptions) -> Result<Self> {
        if opts.servers.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                "no ZooKeeper server given: set MICRO_REGISTRY_ADDRESS, e.g. 127.0.0.1:2181",
            ));
        }
        let prefix = opts.normalized_prefix();
        if prefix.len() < 2 {
            return Err(Error::bad_request(
                ERROR_ID,
                "the ZooKeeper prefix must be a path below the root, like /micro-registry",
            ));
        }
        let servers = opts.servers.join(",");
        Ok(ZookeeperRegistry {
            inner: Arc::new(Inner {
                label: format!("zookeeper at {servers}"),
                prefix,
                servers,
                opts,
                current: tokio::sync::Mutex::new(None),
                owned: Mutex::new(HashMap::new()),
                changed: Arc::new(Notify::new()),
                expiry: Mutex::new(None),
            }),
        })
    }

    /// A registry on the ZooKeeper the environment names (see [`ZookeeperOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(ZookeeperOptions::from_env()?)
    }

    /// The options this registry was made with.
    pub fn options(&self) -> &ZookeeperOptions {
        &self.inner.opts
    }

    /// The live session's client, or a new session.
    async fn client(&self, what: &str) -> Result<Client> {
        let inner = &self.inner;
        let mut current = inner.current.lock().await;
        if let Some(client) = current.as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
        }
        let connect = Client::connector()
            .with_session_timeout(inner.opts.session_timeout)
            .with_fail_eagerly()
            .connect(&inner.servers);
        let wait = inner.opts.request_timeout;
        let client = match tokio::time::timeout(wait, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(self.failure(what, &e)),
            Err(_) => return Err(self.no_answer(what, wait)),
        };
        *current = Some(client.clone());
        Ok(client)
    }

    /// Runs one request with the request timeout, turning failures into errors that name
    /// ZooKeeper and what was being done.
    async fn call<T, Fut>(&self, what: &str, op: Fut) -> Result<T>
    where
        Fut: Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let wait = self.inner.opts.request_timeout;
        match tokio::time::timeout(wait, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failure(what, &e)),
            Err(_) => Err(self.no_answer(what, wait)),
        }
    }

    fn no_answer(&self, what: &str, wait: Duration) -> Error {
        let label = &self.inner.label;
        Error::new(
            ERROR_ID,
            503,
            format!("{label}: {what}: no answer within {wait:?} ({HINT})"),
        )
    }

    fn failure(&self, what: &str, e: &zookeeper_client::Error) -> Error {
        use zookeeper_client::Error as Zk;
        let detail = format!("{}: {what}: {e}", self.inner.label);
        match e {
            Zk::NoAuth | Zk::AuthFailed => Error::new(ERROR_ID, 403, detail),
            Zk::BadArguments(_) | Zk::InvalidAcl => Error::bad_request(ERROR_ID, detail),
            Zk::NoHosts
            | Zk::Timeout
            | Zk::ConnectionLoss
            | Zk::SessionExpired
            | Zk::ClientClosed
            | Zk::SessionMoved => Error::new(ERROR_ID, 503, format!("{detail} ({HINT})")),
            _ => Error::internal(ERROR_ID, detail),
        }
    }

    /// Creates (or takes over, or updates) the ephemeral node at `path` holding `data`.
    async fn write_node(&self, client: &Client, what: &str, path: &str, data: &[u8]) -> Result<()> {
        use zookeeper_client::Error as Zk;
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        let directory = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for _ in 0..3 {
            match client.create(path, data, &ephemeral).await {
                Ok(_) => return Ok(()),
                Err(Zk::NoNode) => {
                    // The service's directory (or the prefix) is missing: make it, persistent
                    // like Go Micro's, and try again.
                    let parent = path.rsplit_once('/').map_or(path, |(parent, _)| parent);
                    self.call(what, client.mkdir(parent, &directory)).await?;
                }
                Err(Zk::NodeExists) => {
                    let (old, stat) = match client.get_data(path).await {
                        Ok(found) => found,
                        Err(Zk::NoNode) => continue,
                        Err(e) => return Err(self.failure(what, &e)),
                    };
                    if stat.ephemeral_owner == client.session_id().0 {
                        // Ours: write only what changed, so watchers see no update for a
                        // repeated registration.
                        if old != data {
                            self.call(what, client.set_data(path, data, None)).await?;
                        }
                        return Ok(());
                    }
                    // Left by another session (a restart of this service within the old
                    // session's timeout, or a Go Micro persistent node with the same id):
                    // replace it by an ephemeral node of this session.
                    match client.delete(path, Some(stat.version)).await {
                        Ok(()) | Err(Zk::NoNode) | Err(Zk::BadVersion) => {}
                        Err(e) => return Err(self.failure(what, &e)),
                    }
                }
                Err(e) => return Err(self.failure(what, &e)),
            }
        }
        Err(Error::new(
            ERROR_ID,
            409,
            format!(
                "{}: {what}: {path} kept changing under us",
                self.inner.label
            ),
        ))
    }

    /// Starts (once) the task that deletes nodes whose TTL passed.
    fn start_expiry(&self) {
        let mut expiry = lock(&self.inner.expiry);
        if expiry.is_none() {
            let weak = Arc::downgrade(&self.inner);
            *expiry = Some(tokio::spawn(expire(weak, self.inner.changed.clone())));
        }
    }

    /// The services stored under `<prefix>/<service_part>`, `None` when there is no such
    /// directory; entries that are not service nodes are skipped with a warning.
    async fn read_service(
        &self,
        client: &Client,
        what: &str,
        service_part: &str,
    ) -> Result<Option<Vec<Service>>> {
        use zookeeper_client::Error as Zk;
        let dir = format!("{}/{service_part}", self.inner.prefix);
        let listed = self
            .call(what, async {
                match client.list_children(&dir).await {
                    Err(Zk::NoNode) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        let Some(children) = listed else {
            return Ok(None);
        };
        let max = self.inner.opts.max_nodes;
        if children.len() > max {
            tracing::warn!(
                registry = "zookeeper",
                "{dir}: reading {max} of {} nodes (MICRO_ZOOKEEPER_MAX_NODES)",
                children.len()
            );
        }
        let mut services = Vec::new();
        for child in children.iter().take(max) {
            let path = format!("{dir}/{child}");
            let (data, stat) = match self
                .call(what, async {
                    match client.get_data(&path).await {
                        Err(Zk::NoNode) => Ok(None),
                        other => other.map(Some),
                    }
                })
                .await?
            {
                Some(found) => found,
                None => continue,
            };
            // Go Micro skips entries that have children of their own.
            if stat.num_children > 0 {
                continue;
            }
            match layout::decode(
                &self.inner.prefix,
                &path,
                &data,
                self.inner.opts.max_node_bytes,
            ) {
                Ok(s) => services.push(s),
                Err(why) => tracing::warn!(
                    registry = "zookeeper",
                    "skipping a node that is not a service node: {why}"
                ),
            }
        }
        Ok(Some(services))
    }
}

/// Deletes the nodes this registry wrote whose TTL passed without a new registration.
async fn expire(registry: Weak<Inner>, changed: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = registry.upgrade() else {
                return;
            };
            let next = lock(&inner.owned).values().flatten().min().copied();
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = changed.notified() => continue,
                }
            }
            None => {
                changed.notified().await;
                continue;
            }
        }
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let registry_now = ZookeeperRegistry { inner };
        let now = Instant::now();
        let expired: Vec<String> = lock(&registry_now.inner.owned)
            .iter()
            .filter(|(_, deadline)| deadline.is_some_and(|d| d <= now))
            .map(|(path, _)| path.clone())
            .collect();
        for path in expired {
            tracing::info!(
                registry = "zookeeper",
                "{path} expired without being registered again"
            );
            if let Err(e) = registry_now.delete_owned(&path, "expiring a node").await {
                tracing::warn!(registry = "zookeeper", "{e}");
                // Tried again at the next wake-up; the session's end removes it in any case.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl ZookeeperRegistry {
    /// Deletes `path` (a node this registry wrote) and forgets it.
    async fn delete_owned(&self, path: &str, what: &str) -> Result<()> {
        use zookeeper_client::Error as Zk;
        let client = self.client(what).await?;
        self.call(what, async {
            match client.delete(path, None).await {
                Ok(()) | Err(Zk::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
        lock(&self.inner.owned).remove(path);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Registry for ZookeeperRegistry {
    fn name(&self) -> &str {
        "zookeeper"
    }

    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
        if service.name.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                "a service needs a name to be registered",
            ));
        }
        if service.nodes.is_empty() || service.nodes.iter().any(|n| n.id.is_empty()) {
            return Err(Error::bad_request(
                ERROR_ID,
                format!(
                    "service {} needs nodes with ids to be registered",
                    service.name
                ),
            ));
        }
        let what = format!("registering {}", service.name);
        let client = self.client(&what).await?;
        self.start_expiry();
        let deadline = (!opts.ttl.is_zero()).then(|| Instant::now() + opts.ttl);
        for node in &service.nodes {
            let path = layout::node_path(&self.inner.prefix, &service.name, &node.id);
            let data = serde_json::to_vec(&layout::node_value(service, node))
                .map_err(|e| Error::internal(ERROR_ID, format!("encoding {path}: {e}")))?;
            self.write_node(&client, &what, &path, &data).await?;
            lock(&self.inner.owned).insert(path, deadline);
        }
        self.inner.changed.notify_one();
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        for node in service.nodes.iter().filter(|n| !n.id.is_empty()) {
            let path = layout::node_path(&self.inner.prefix, &service.name, &node.id);
            let what = format!("deregistering node {} of {}", node.id, service.name);
            self.delete_owned(&path, &what).await?;
        }
        self.inner.changed.notify_one();
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let not_found = || {
            Error::not_found(
                ERROR_ID,
                format!("service {name} not found in {}", self.inner.label),
            )
        };
        if name.is_empty() {
            return Err(not_found());
        }
        let what = format!("looking up service {name}");
        let client = self.client(&what).await?;
        let services: Vec<Service> = self
            .read_service(&client, &what, &layout::part(name))
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        if services.is_empty() {
            return Err(not_found());
        }
        Ok(Service::merge(services))
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let what = "listing services";
        let client = self.client(what).await?;
        let listed = self
            .call(what, async {
                match client.list_children(&self.inner.prefix).await {
                    Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
                    other => other,
                }
            })
            .await?;
        let names = listed;
        let mut all = Vec::new();
        for name in names.iter().take(self.inner.opts.max_nodes) {
            // None: removed since it was listed.
            if let Some(services) = self.read_service(&client, what, name).await? {
                all.extend(services);
            }
        }
        Ok(Service::merge(all))
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let (path, what) = match service {
            Some(name) => (
                layout::service_path(&self.inner.prefix, name),
                format!("watching service {name}"),
            ),
            None => (
                self.inner.prefix.clone(),
                "watching all services".to_string(),
            ),
        };
        let client = self.client(&what).await?;
        let watcher = self
            .call(
                &what,
                client.watch(&path, AddWatchMode::PersistentRecursive),
            )
            .await?;
        let state = WatchState {
            registry: self.clone(),
            client,
            watcher,
            only: service.map(str::to_string),
            known: HashMap::new(),
            pending: VecDeque::new(),
            done: false,
            what,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            WatchState::next,
        )))
    }
}

/// A watch in progress: ZooKeeper's persistent recursive watcher and the services last read.
struct WatchState {
    registry: ZookeeperRegistry,
    client: Client,
    watcher: PersistentWatcher,
    only: Option<String>,
    /// Each node's last service, so that a delete says what went away.
    known: HashMap<String, Service>,
    pending: VecDeque<Event>,
    done: bool,
    what: String,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let event = self.watcher.changed().await;
            if event.event_type == EventType::Session {
                if event.session_state.is_terminated() {
                    self.done = true;
                    let err = Error::new(
                        ERROR_ID,
                        503,
                        format!(
                            "{}: {}: the session ended ({:?}); watch again",
                            self.registry.inner.label, self.what, event.session_state
                        ),
                    );
                    return Some((Err(err), self));
                }
                continue;
            }
            self.absorb(event).await;
        }
    }

    async fn absorb(&mut self, event: WatchedEvent) {
        let prefix = self.registry.inner.prefix.clone();
        if layout::split(&prefix, &event.path).is_none() {
            return; // the prefix or a service's directory
        }
        let kind = match event.event_type {
            EventType::NodeCreated => EventKind::Create,
            EventType::NodeDataChanged => EventKind::Update,
            EventType::NodeDeleted => {
                let service = self
                    .known
                    .remove(&event.path)
                    .or_else(|| layout::from_path(&prefix, &event.path));
                if let Some(service) = service {
                    self.push(EventKind::Delete, service);
                }
                return;
            }
            _ => return,
        };
        let read = tokio::time::timeout(
            self.registry.inner.opts.request_timeout,
            self.client.get_data(&event.path),
        )
        .await;
        // Gone again (its delete event follows), unreadable or slow: nothing to report now.
        let Ok(Ok((data, _))) = read else { return };
        match layout::decode(
            &prefix,
            &event.path,
            &data,
            self.registry.inner.opts.max_node_bytes,
        ) {
            Ok(service) => {
                if self.known.len() >= WATCH_CACHE_CAP {
                    self.known.clear();
                }
                self.known.insert(event.path.clone(), service.clone());
                self.push(kind, service);
            }
            Err(why) => tracing::warn!(
                registry = "zookeeper",
                "skipping a node that is not a service node: {why}"
            ),
        }
    }

    fn push(&mut self, kind: EventKind, service: Service) {
        let wanted = match &self.only {
            Some(name) => layout::part(name) == layout::part(&service.name),
            None => true,
        };
        if wanted {
            self.pending.push_back(Event { kind, service });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
