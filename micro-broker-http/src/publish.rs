//! The publishing side: finding the subscribers of a topic in the registry (cached briefly,
//! refreshed by registry watch) and POSTing the message to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use micro_core::registry::Watcher;
use micro_core::{Error, Node, Registry, Result, Service};
use rand::RngExt;
use tokio_util::sync::CancellationToken;

use crate::{wire, BROADCAST_VERSION, ID, SERVICE_NAME};

/// How much of an error reply the publisher reads, for its log.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How long the client keeps an idle connection to a subscriber; below the server's idle
/// timeout, so a pooled connection is not closed under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish waits for the registry to start a watch before looking up anyway.
const WATCH_START_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between attempts to watch the registry again.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(30);

/// The subscribers of one topic that share one version: a queue group, or the broadcast
/// subscribers (`ff.http.broadcast`).
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// The service version: the queue name, or [`BROADCAST_VERSION`].
    pub(crate) version: String,
    /// The members.
    pub(crate) nodes: Vec<Target>,
}

/// A subscriber node and where its messages go, worked out once per lookup rather than once
/// per message.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The registry entry.
    pub(crate) node: Node,
    /// `http://<address>/?id=<node id>`, or why this node cannot be posted to.
    uri: std::result::Result<Uri, String>,
}

impl Target {
    pub(crate) fn new(node: Node) -> Self {
        let uri = if node.metadata.get("secure").map(String::as_str) == Some("true") {
            Err("it asks for https (secure=true), which this broker does not speak".to_string())
        } else {
            let uri = format!(
                "http://{}/?id={}",
                node.address,
                wire::query_escape(&node.id)
            );
            uri.parse::<Uri>()
                .map_err(|e| format!("{uri} is not a valid address: {e}"))
        };
        Target { node, uri }
    }
}

/// topic -> its groups. Shared: a publish takes its topic's groups without copying them.
type Index = HashMap<String, Arc<[Group]>>;

#[derive(Debug)]
struct Cached {
    at: Instant,
    generation: u64,
    index: Arc<Index>,
}

/// How usable the cached lookup is.
enum Freshness {
    /// Younger than the TTL and no change seen since.
    Fresh(Arc<Index>),
    /// Older than the TTL, but no change seen since.
    Aged(Arc<Index>),
    /// A change was seen since, or nothing is cached.
    Stale,
}

/// The registry entries of `micro.http.broker`, indexed by topic, looked up at most once per
/// `ttl` and again as soon as a watch event (or this broker's own subscribe) says they changed.
///
/// While the registry watch runs, an entry older than the TTL is still served and refreshed
/// in the background, so publishing does not wait for the registry (an mDNS lookup takes
/// 100 ms); the TTL is then only a safety net for missed events. Without a working watch, a
/// publish that finds the entry older than the TTL looks up before delivering.
#[derive(Debug)]
pub(crate) struct Lookup {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: Arc<dyn Registry>,
    ttl: Duration,
    /// Bumped on every change seen; a cached entry of another generation is stale.
    generation: Arc<AtomicU64>,
    /// Whether a registry watch is running right now.
    watching: Arc<AtomicBool>,
    /// Whether a background refresh is under way.
    refreshing: AtomicBool,
    cached: Mutex<Option<Cached>>,
    /// Held while looking up, so that publishers finding the cache stale together share one.
    refresh: tokio::sync::Mutex<()>,
    watch: Mutex<Option<CancellationToken>>,
}

impl Lookup {
    pub(crate) fn new(registry: Arc<dyn Registry>, ttl: Duration) -> Self {
        Lookup {
            shared: Arc::new(Shared {
                registry,
                ttl,
                generation: Arc::new(AtomicU64::new(0)),
                watching: Arc::new(AtomicBool::new(false)),
                refreshing: AtomicBool::new(false),
                cached: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(()),
                watch: Mutex::new(None),
            }),
        }
    }

    /// Forgets the cached entries: the next publish reads the registry.
    pub(crate) fn invalidate(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops watching the registry (until the next lookup) and forgets the cache.
    pub(crate) fn stop(&self) {
        if let Some(token) = lock(&self.shared.watch).take() {
            token.cancel();
        }
        self.shared.watching.store(false, Ordering::SeqCst);
        *lock(&self.shared.cached) = None;
        self.invalidate();
    }

    /// The groups subscribed to `topic`; `None` when nobody is.
    pub(crate) async fn groups(&self, topic: &str) -> Result<Option<Arc<[Group]>>> {
        let index = match Shared::usable(&self.shared) {
            Some(index) => index,
            // Boxed: the lookup's future is large, and most publishes never need it.
            None => Box::pin(Shared::refreshed(&self.shared)).await?,
        };
        Ok(index.get(topic).cloned())
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        if let Some(token) = lock(&self.shared.watch).take() {
            token.cancel();
        }
    }
}

impl Shared {
    fn freshness(&self) -> Freshness {
        let cached = lock(&self.cached);
        match cached.as_ref() {
            Some(c) if c.generation == self.generation.load(Ordering::SeqCst) => {
                if c.at.elapsed() < self.ttl {
                    Freshness::Fresh(c.index.clone())
                } else {
                    Freshness::Aged(c.index.clone())
                }
            }
            _ => Freshness::Stale,
        }
    }

    /// The cached index when it can be used without waiting for the registry.
    fn usable(this: &Arc<Self>) -> Option<Arc<Index>> {
        match this.freshness() {
            Freshness::Fresh(index) => Some(index),
            Freshness::Aged(index) if this.watching.load(Ordering::SeqCst) => {
                Self::refresh_in_background(this);
                Some(index)
            }
            _ => None,
        }
    }

    /// The index after a lookup (or after another publisher's lookup, when it ran meanwhile).
    async fn refreshed(this: &Arc<Self>) -> Result<Arc<Index>> {
        let _refreshing = this.refresh.lock().await;
        if let Freshness::Fresh(index) = this.freshness() {
            return Ok(index);
        }
        this.look_up().await
    }

    fn refresh_in_background(this: &Arc<Self>) {
        if this.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = this.clone();
        tokio::spawn(async move {
            {
                let _refreshing = shared.refresh.lock().await;
                if !matches!(shared.freshness(), Freshness::Fresh(_)) {
                    // A failure is logged and leaves the last entry in place.
                    let _ = shared.look_up().await;
                }
            }
            shared.refreshing.store(false, Ordering::SeqCst);
        });
    }

    /// Asks the registry and caches the answer. Called with `refresh` held.
    async fn look_up(&self) -> Result<Arc<Index>> {
        // Watch before looking up, so that no change after the lookup goes unseen.
        self.start_watch().await;
        // Read before the lookup: a change that lands during it leaves the result stale.
        let generation = self.generation.load(Ordering::SeqCst);
        let services = match self.registry.get_service(SERVICE_NAME).await {
            Ok(s) => s,
            Err(e) if e.code == 404 => Vec::new(),
            Err(e) => {
                let e = Error {
                    detail: format!(
                        "the http broker could not look up its subscribers ({SERVICE_NAME}) in the {} registry: {}",
                        self.registry.name(),
                        e.detail
                    ),
                    ..e
                };
                // A registry hiccup should not stop pub/sub: go on with what was known, and
                // ask again after another TTL.
                let mut cached = lock(&self.cached);
                let Some(known) = cached.as_mut() else {
                    return Err(e);
                };
                tracing::warn!(error = %e, "http broker: publishing to the subscribers known from the last lookup");
                known.at = Instant::now();
                known.generation = generation;
                return Ok(known.index.clone());
            }
        };
        let index = Arc::new(index_by_topic(services));
        tracing::debug!(
            registry = self.registry.name(),
            topics = index.len(),
            generation,
            "http broker: looked up subscribers"
        );
        *lock(&self.cached) = Some(Cached {
            at: Instant::now(),
            generation,
            index: index.clone(),
        });
        Ok(index)
    }

    /// Starts watching the registry unless a watch runs. Called with `refresh` held.
    async fn start_watch(&self) {
        if lock(&self.watch).is_some() {
            return;
        }
        let first = match tokio::time::timeout(
            WATCH_START_TIMEOUT,
            self.registry.watch(Some(SERVICE_NAME)),
        )
        .await
        {
            Ok(Ok(events)) => Some(events),
            Ok(Err(e)) => {
                tracing::debug!(registry = self.registry.name(), error = %e, "http broker: cannot watch the registry; relying on the lookup cache TTL");
                None
            }
            Err(_) => None,
        };
        let token = CancellationToken::new();
        self.watching.store(first.is_some(), Ordering::SeqCst);
        tokio::spawn(watch_loop(
            self.registry.clone(),
            self.generation.clone(),
            self.watching.clone(),
            token.clone(),
            first,
        ));
        *lock(&self.watch) = Some(token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks the cache stale on every change to `micro.http.broker`, watching again when the
/// watch ends; without a working watch the cache TTL alone keeps the cache fresh.
async fn watch_loop(
    registry: Arc<dyn Registry>,
    generation: Arc<AtomicU64>,
    watching: Arc<AtomicBool>,
    stop: CancellationToken,
    mut events: Option<Watcher>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if events.is_none() {
            let watched = tokio::select! {
                _ = stop.cancelled() => return,
                watched = registry.watch(Some(SERVICE_NAME)) => watched,
            };
            match watched {
                Ok(w) => {
                    // Changes may have been missed while not watching.
                    generation.fetch_add(1, Ordering::SeqCst);
                    events = Some(w);
                }
                Err(e) => {
                    tracing::debug!(registry = registry.name(), error = %e, "http broker: cannot watch the registry; relying on the lookup cache TTL");
                }
            }
        }
        if let Some(mut stream) = events.take() {
            watching.store(true, Ordering::SeqCst);
            backoff = Duration::from_millis(500);
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = stream.next() => event,
                };
                match event {
                    Some(event) => {
                        tracing::debug!(event = ?event.map(|e| e.kind), "http broker: subscribers changed");
                        generation.fetch_add(1, Ordering::SeqCst);
                    }
                    None => break,
                }
            }
            watching.store(false, Ordering::SeqCst);
            generation.fetch_add(1, Ordering::SeqCst);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
    }
}

/// Groups the http broker nodes by topic and version; a node listed twice counts once.
fn index_by_topic(services: Vec<Service>) -> Index {
    let mut index: HashMap<String, Vec<Group>> = HashMap::new();
    for service in services {
        if service.name != SERVICE_NAME {
            continue;
        }
        for node in service.nodes {
            if node.metadata.get("broker").map(String::as_str) != Some("http") {
                continue;
            }
            let Some(topic) = node.metadata.get("topic").cloned() else {
                continue;
            };
            let groups = index.entry(topic).or_default();
            let group = match groups.iter_mut().position(|g| g.version == service.version) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group {
                        version: service.version.clone(),
                        nodes: Vec::new(),
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            group.nodes.retain(|t| t.node.id != node.id);
            group.nodes.push(Target::new(node));
        }
    }
    index
        .into_iter()
        .map(|(topic, groups)| (topic, Arc::from(groups)))
        .collect()
}

/// Why one POST failed.
#[derive(Debug)]
pub(crate) enum PostError {
    /// No connection could be made: the message surely did not arrive, another node may take it.
    Unreachable(String),
    /// The subscriber answered with an error status (its handler failed, or it refused the
    /// request); the message may have been handled.
    Rejected(Error),
    /// Anything else (a timeout, a connection lost midway): the message may have arrived.
    Failed(String),
}

/// Sends messages to subscriber nodes over pooled HTTP/1.1 connections.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Sender {
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT.min(timeout)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Sender { client, timeout }
    }

    /// Delivers `body` to the groups of one topic: to every node of the broadcast group, to one
    /// random node of each queue group (the next one when a node cannot be reached).
    ///
    /// Ok when there was nobody to deliver to or at least one delivery succeeded; the failed
    /// ones are logged. When every delivery failed, the error lists them.
    pub(crate) async fn deliver(&self, topic: &str, groups: &[Group], body: Bytes) -> Result<()> {
        let attempts: usize = groups
            .iter()
            .map(|g| match (g.nodes.len(), g.version == BROADCAST_VERSION) {
                (0, _) => 0,
                (n, true) => n,
                (_, false) => 1,
            })
            .sum();
        if attempts == 0 {
            return Ok(());
        }
        if attempts == 1 {
            // The common case, one subscriber or one queue group: no list of futures to join.
            let Some(group) = groups.iter().find(|g| !g.nodes.is_empty()) else {
                return Ok(());
            };
            let failure = self
                .to_first_reachable(&group.nodes, start_index(group), body)
                .await;
            return outcome(topic, 1, failure.into_iter().collect());
        }
        let mut pending = Vec::with_capacity(attempts);
        for group in groups {
            if group.nodes.is_empty() {
                continue;
            }
            if group.version == BROADCAST_VERSION {
                for target in &group.nodes {
                    let one = std::slice::from_ref(target);
                    pending.push(self.to_first_reachable(one, 0, body.clone()));
                }
            } else {
                pending.push(self.to_first_reachable(
                    &group.nodes,
                    start_index(group),
                    body.clone(),
                ));
            }
        }
        let failures = futures_util::future::join_all(pending)
            .await
            .into_iter()
            .flatten()
            .collect();
        outcome(topic, attempts, failures)
    }

    /// Posts to the first node that can be reached, trying `targets` in turn from `start`;
    /// `None` on success, else the last node tried and why it failed.
    async fn to_first_reachable<'a>(
        &self,
        targets: &'a [Target],
        start: usize,
        body: Bytes,
    ) -> Option<(&'a Target, PostError)> {
        let mut last = None;
        let (head, tail) = targets.split_at(start.min(targets.len()));
        for target in tail.iter().chain(head) {
            match self.post(target, body.clone()).await {
                Ok(()) => return None,
                Err(PostError::Unreachable(why)) => {
                    tracing::debug!(node = %target.node.id, address = %target.node.address, "http broker: {why}; trying another member of the group");
                    last = Some((target, PostError::Unreachable(why)));
                }
                Err(e) => return Some((target, e)),
            }
        }
        last
    }

    /// One POST of the envelope to `http://<address>/?id=<node id>`.
    pub(crate) async fn post(
        &self,
        target: &Target,
        body: Bytes,
    ) -> std::result::Result<(), PostError> {
        let uri = target
            .uri
            .as_ref()
            .map_err(|why| PostError::Unreachable(why.clone()))?;
        // Boxed: inline, this exchange would make every publish's own (boxed) future larger
        // than glibc's 1 KiB small-allocation limit, whose slower path costs more than a
        // second, small allocation.
        let exchange = Box::pin(async {
            // Made in here, and handed on before the first wait, so that the request is not
            // kept in this future's state besides the client's own copy.
            let mut request = Request::new(Full::new(body));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = uri.clone();
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    PostError::Unreachable(format!("cannot connect: {}", source_chain(&e)))
                } else {
                    PostError::Failed(format!("the request failed: {}", source_chain(&e)))
                }
            })?;
            let status = response.status();
            // Read the reply to the end, so the connection can carry the next message.
            let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            Err(PostError::Rejected(rejection(status, &body)))
        });
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(PostError::Failed(format!(
                "no answer within {:?} (MICRO_BROKER_HTTP_TIMEOUT)",
                self.timeout
            ))),
        }
    }
}

/// Where a publish starts in `group`: the first node for the broadcast group, a random one in
/// a queue group (the others follow in turn when it cannot be reached).
fn start_index(group: &Group) -> usize {
    if group.version == BROADCAST_VERSION || group.nodes.len() < 2 {
        0
    } else {
        rand::rng().random_range(0..group.nodes.len())
    }
}

/// The result of a publish that made `attempts` deliveries, of which `failures` failed: Ok
/// when any succeeded (the failures are logged), else an error listing them.
fn outcome(topic: &str, attempts: usize, failures: Vec<(&Target, PostError)>) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let mut texts = Vec::with_capacity(failures.len());
    let mut all_unreachable = true;
    for (target, error) in &failures {
        let text = match error {
            PostError::Unreachable(why) => why.clone(),
            PostError::Rejected(e) => {
                all_unreachable = false;
                format!("it answered {e}")
            }
            PostError::Failed(why) => {
                all_unreachable = false;
                why.clone()
            }
        };
        texts.push(format!(
            "subscriber {} at {}: {text}",
            target.node.id, target.node.address
        ));
    }
    if texts.len() < attempts {
        for f in &texts {
            tracing::warn!(topic, "http broker: delivery failed, not retried: {f}");
        }
        return Ok(());
    }
    let code = if all_unreachable { 503 } else { 500 };
    Err(Error::new(
        ID,
        code,
        format!(
            "publishing to {topic}: no subscriber took the message: {}",
            texts.join("; ")
        ),
    ))
}

/// The error a subscriber answered: its Micro error JSON, or the status and text.
fn rejection(status: StatusCode, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_slice::<Error>(body) {
        Ok(e) if e.code != 0 => e,
        _ => Error::new(
            ID,
            i32::from(status.as_u16()),
            if text.trim().is_empty() {
                status.to_string()
            } else {
                text.trim().to_string()
            },
        ),
    }
}

/// An error with its causes, `a: b: c`, as hyper's own `Display` stops at the outermost.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(id: &str, topic: &str) -> Node {
        Node {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            metadata: BTreeMap::from([
                ("broker".to_string(), "http".to_string()),
                ("topic".to_string(), topic.to_string()),
                ("secure".to_string(), "false".to_string()),
            ]),
        }
    }

    fn service(version: &str, nodes: Vec<Node>) -> Service {
        Service {
            nodes,
            ..Service::new(SERVICE_NAME, version)
        }
    }

    #[test]
    fn indexes_nodes_by_topic_and_version() {
        let mut foreign = node("x", "a");
        foreign.metadata.insert("broker".into(), "nats".into());
        let index = index_by_topic(vec![
            service(BROADCAST_VERSION, vec![node("a-1", "a"), node("b-1", "b")]),
            service(BROADCAST_VERSION, vec![node("a-1", "a"), foreign]),
            service("workers", vec![node("a-2", "a"), node("a-3", "a")]),
            Service::new("greeter", "latest"),
        ]);
        let a = &index["a"];
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].version, BROADCAST_VERSION);
        assert_eq!(a[0].nodes.len(), 1, "a node listed twice counts once");
        assert_eq!(a[1].version, "workers");
        assert_eq!(a[1].nodes.len(), 2);
        assert_eq!(index["b"].len(), 1);
    }

    #[test]
    fn rejections_keep_the_subscribers_error() {
        let e = rejection(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"id":"orders","code":400,"detail":"bad order","status":"Bad Request"}"#,
        );
        assert_eq!((e.id.as_str(), e.code), ("orders", 400));
        let e = rejection(StatusCode::NOT_FOUND, b"404 page not found\n");
        assert_eq!((e.code, e.detail.as_str()), (404, "404 page not found"));
        let e = rejection(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.code, 502);
    }
}
