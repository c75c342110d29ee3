//! [`EtcdRegistry`]: the [`Registry`] trait on etcd's KV, lease and watch APIs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions, WatchResponse, WatchStream,
};
use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Error, GrpcCode, Registry, Result, Service};

use crate::layout;
use crate::options::{EtcdOptions, PASSWORD_ENV, USERNAME_ENV};

/// The `id` of every error this registry returns.
const ID: &str = "micro.registry.etcd";

/// What to check when etcd does not answer.
const HINT: &str = "is etcd running and reachable there?";

/// What to check when the TLS handshake fails.
const TLS_HINT: &str = "check the TLS settings, MICRO_ETCD_TLS_*";

/// Words of etcd's and rustls's errors that mean the TLS handshake failed.
const TLS_FAILURES: &[&str] = &["certificate", "handshake", "tls", "alert"];

/// etcd's answers (lower case) when credentials are missing or wrong.
const AUTH_FAILURES: &[&str] = &[
    "authentication failed",
    "user name is empty",
    "invalid auth token",
    "user name not found",
];

/// How many corrupt entries are remembered so that each is warned about once.
const WARNED_CAP: usize = 1024;

/// A [`Registry`] in etcd, readable and writable by Go Micro's etcd registry.
///
/// Each node is the key `/micro/registry/<service>/<node id>` holding the service's JSON with
/// only that node, attached to a lease of the register TTL. Registering again renews the lease
/// and writes the value only when it changed; a lease that etcd lost (expired, or etcd was
/// wiped) is granted anew.
///
/// Making one does not contact etcd: the connection is made by the first operation and made
/// again after a failure, so a service can start before etcd does. Every request is bounded by
/// [`EtcdOptions::request_timeout`]; a failure names the backend and its endpoints
/// (`etcd at 127.0.0.1:2379: ...`) and is a 503 when etcd cannot be reached.
///
/// Cloning is cheap and clones share the connection and the leases.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    opts: EtcdOptions,
    /// The key prefix, ending in exactly one `/`.
    prefix: String,
    /// `etcd at 127.0.0.1:2379`, the start of every error.
    label: String,
    connect: ConnectOptions,
    /// The current client, made on demand and dropped after a failure.
    current: Mutex<Option<Connection>>,
    /// Lets one task connect while the others wait for its client.
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// The lease of each node key this registry wrote.
    leases: Mutex<HashMap<String, Lease>>,
    /// Corrupt entries already warned about: (key, modification revision).
    warned: Mutex<HashSet<(Vec<u8>, i64)>>,
}

#[derive(Clone)]
struct Connection {
    generation: u64,
    client: Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    id: i64,
    ttl: i64,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.opts.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A registry on the etcd that `opts` describes. It does not connect yet; a bad option (no
    /// endpoint, an unreadable TLS file) is reported here.
    pub fn new(opts: EtcdOptions) -> Result<Self> {
        if opts.endpoints.is_empty() {
            return Err(Error::bad_request(
                ID,
                "no etcd endpoint given: set MICRO_REGISTRY_ADDRESS, e.g. 127.0.0.1:2379",
            ));
        }
        let label = format!("etcd at {}", opts.endpoints_label());
        let connect = opts
            .connect_options()
            .map_err(|e| Error::bad_request(ID, format!("{label}: {e}")))?;
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                prefix: opts.normalized_prefix(),
                label,
                connect,
                opts,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                leases: Mutex::new(HashMap::new()),
                warned: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// A registry on the etcd the environment names (see [`EtcdOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(EtcdOptions::from_env())
    }

    /// The options this registry was made with.
    pub fn options(&self) -> &EtcdOptions {
        &self.inner.opts
    }

    fn current(&self) -> MutexGuard<'_, Option<Connection>> {
        lock(&self.inner.current)
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        lock(&self.inner.leases)
    }

    /// The current client, or a new one. Connecting is lazy in the etcd client (only
    /// authentication talks to etcd here), so this is quick unless a user is configured.
    async fn connection(&self) -> Result<Connection> {
        if let Some(c) = self.current().clone() {
            return Ok(c);
        }
        let inner = &self.inner;
        let connect = async {
            let _one_at_a_time = inner.connecting.lock().await;
            if let Some(c) = self.current().clone() {
                return Ok(c);
            }
            let client = Client::connect(&inner.opts.endpoints, Some(inner.connect.clone()))
                .await
                .map_err(|e| self.failure("connecting", &e))?;
            let c = Connection {
                generation: inner.generation.fetch_add(1, Ordering::Relaxed) + 1,
                client,
            };
            *self.current() = Some(c.clone());
            Ok(c)
        };
        let wait = inner.opts.dial_timeout;
        tokio::time::timeout(wait, connect)
            .await
            .unwrap_or_else(|_| Err(self.no_answer("connecting", wait)))
    }

    /// Drops the client of `generation` (if still current) so the next call makes a new one.
    fn forget(&self, generation: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            *current = None;
        }
    }

    /// Runs one request with the request timeout, turning failures into errors that name etcd
    /// and what was being done.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let conn = self.connection().await?;
        let wait = self.inner.opts.request_timeout;
        match tokio::time::timeout(wait, op(conn.client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if !is_answer(&e) {
                    self.forget(conn.generation);
                }
                Err(self.failure(what, &e))
            }
            Err(_) => {
                self.forget(conn.generation);
                Err(self.no_answer(what, wait))
            }
        }
    }

    fn no_answer(&self, what: &str, wait: Duration) -> Error {
        Error::new(
            ID,
            503,
            format!(
                "{}: {what}: no answer within {wait:?} ({HINT})",
                self.inner.label
            ),
        )
    }

    fn failure(&self, what: &str, e: &etcd_client::Error) -> Error {
        let cause = describe(e);
        // Only the cause is searched: a service may well be called `tls-gateway`.
        let lower = cause.to_ascii_lowercase();
        let detail = format!("{}: {what}: {cause}", self.inner.label);
        if AUTH_FAILURES.iter().any(|m| lower.contains(m)) {
            return Error::unauthorized(
                ID,
                format!("{detail} (check {USERNAME_ENV} and {PASSWORD_ENV})"),
            );
        }
        let unreachable = || {
            let hint = if TLS_FAILURES.iter().any(|m| lower.contains(m)) {
                TLS_HINT
            } else {
                HINT
            };
            Error::new(ID, 503, format!("{detail} ({hint})"))
        };
        match e {
            etcd_client::Error::GRpcStatus(status) if is_answer(e) => {
                Error::from_grpc(ID, grpc_code(status.code() as i32), detail)
            }
            etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
                Error::bad_request(ID, detail)
            }
            _ => unreachable(),
        }
    }

    /// Keeps a lease alive once; `false` when etcd no longer has it.
    async fn keep_alive(&self, what: &str, id: i64) -> Result<bool> {
        self.call(what, |mut c| async move {
            match c.lease_keep_alive(id).await {
                Ok(_) => Ok(true),
                Err(e) if lease_gone(&e) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn register_node(
        &self,
        service: &Service,
        node: &micro_core::Node,
        ttl: i64,
    ) -> Result<()> {
        let prefix = &self.inner.prefix;
        let key = layout::node_key(prefix, &service.name, &node.id);
        let value = serde_json::to_vec(&layout::node_value(service, node))
            .map_err(|e| Error::internal(ID, format!("encoding {key}: {e}")))?;
        let what = format!("registering node {} of {}", node.id, service.name);

        let known = self.leases().get(&key).copied().filter(|l| l.ttl == ttl);
        let lease = if ttl == 0 {
            0
        } else {
            match known {
                Some(l) if self.keep_alive(&what, l.id).await? => l.id,
                _ => {
                    self.call(&what, |mut c| async move {
                        Ok(c.lease_grant(ttl, None).await?.id())
                    })
                    .await?
                }
            }
        };

        // Write only what changed: an entry that already holds this value on this lease is left
        // alone, so watchers do not see an update every register interval. Go Micro keeps a
        // hash per node for the same end; comparing in etcd also restores an entry that someone
        // deleted while its lease lived. (A lease replaced because the TTL changed holds nothing
        // after this and expires by itself.)
        let put = TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, value),
                Compare::lease(key.clone(), CompareOp::Equal, lease),
            ])
            .or_else([put]);
        self.call(&what, |mut c| async move { c.txn(txn).await })
            .await?;

        let mut leases = self.leases();
        if ttl == 0 {
            leases.remove(&key);
        } else {
            leases.insert(key, Lease { id: lease, ttl });
        }
        Ok(())
    }

    /// Every entry under `prefix`: page after page of at most `read_page` keys, all at the
    /// revision of the first page (one consistent view, however many pages), and at most
    /// `max_read_bytes` of keys and values in all (the rest is left out, with a warning). A page
    /// larger than the client accepts is asked for again in halves; a single entry that large
    /// is skipped with a warning.
    async fn read(&self, what: &str, prefix: String) -> Result<Vec<KeyValue>> {
        let opts = &self.inner.opts;
        let end = prefix_end(prefix.as_bytes());
        let mut page = i64::from(opts.read_page.max(1));
        let mut from = prefix.into_bytes();
        let mut revision = 0;
        let mut kvs = Vec::new();
        let mut bytes = 0usize;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page)
                .with_revision(revision);
            let key = from.clone();
            let answer = self
                .call(what, |mut c| async move {
                    match c.get(key, Some(options)).await {
                        Ok(response) => Ok(Some(response)),
                        Err(e) if too_large(&e) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            let Some(mut response) = answer else {
                if page > 1 {
                    page /= 2;
                } else {
                    from = self.skip_huge_entry(what, from, &end, revision).await?;
                }
                continue;
            };
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let found = response.take_kvs();
            let Some(last) = found.last() else { break };
            from = key_after(last.key());
            for kv in found {
                let size = kv.key().len().saturating_add(kv.value().len());
                bytes = bytes.saturating_add(size);
                if bytes > opts.max_read_bytes {
                    tracing::warn!(
                        registry = "etcd",
                        "{}: {what}: more than {} bytes of entries; the rest is left out \
                         (EtcdOptions::max_read_bytes)",
                        self.inner.label,
                        opts.max_read_bytes
                    );
                    return Ok(kvs);
                }
                kvs.push(kv);
            }
            if !more {
                break;
            }
        }
        Ok(kvs)
    }

    /// Skips the entry at `from` (or the first one after it), which alone is larger than the
    /// client accepts: where the next page starts.
    async fn skip_huge_entry(
        &self,
        what: &str,
        from: Vec<u8>,
        end: &[u8],
        revision: i64,
    ) -> Result<Vec<u8>> {
        let options = GetOptions::new()
            .with_range(end.to_vec())
            .with_limit(1)
            .with_revision(revision)
            .with_keys_only();
        let mut response = self
            .call(
                what,
                |mut c| async move { c.get(from, Some(options)).await },
            )
            .await?;
        let Some(huge) = response.take_kvs().into_iter().next() else {
            return Err(Error::internal(
                ID,
                format!(
                    "{}: {what}: etcd's answer was too large, but it holds no entry",
                    self.inner.label
                ),
            ));
        };
        tracing::warn!(
            registry = "etcd",
            "{}: {what}: skipping {}, larger than the client accepts",
            self.inner.label,
            String::from_utf8_lossy(huge.key())
        );
        Ok(key_after(huge.key()))
    }

    /// The services of valid entries; the others are skipped with a warning.
    fn decode_all(&self, kvs: &[KeyValue]) -> Vec<Service> {
        kvs.iter()
            .filter_map(
                |kv| match layout::decode(&self.inner.prefix, kv.key(), kv.value()) {
                    Ok(s) => Some(s),
                    Err(why) => {
                        self.warn_once(kv, &why);
                        None
                    }
                },
            )
            .collect()
    }

    fn warn_once(&self, kv: &KeyValue, why: &str) {
        let mut warned = lock(&self.inner.warned);
        if warned.len() >= WARNED_CAP {
            warned.clear();
        }
        if warned.insert((kv.key().to_vec(), kv.mod_revision())) {
            tracing::warn!(
                registry = "etcd",
                "skipping an entry that is not a service node: {why}"
            );
        }
    }
}

#[async_trait::async_trait]
impl Registry for EtcdRegistry {
    fn name(&self) -> &str {
        "etcd"
    }

    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
        if service.name.is_empty() {
            return Err(Error::bad_request(
                ID,
                "a service needs a name to be registered",
            ));
        }
        if service.nodes.is_empty() {
            return Err(Error::bad_request(
                ID,
                format!("service {} has no node to register", service.name),
            ));
        }
        if service.nodes.iter().any(|n| n.id.is_empty()) {
            return Err(Error::bad_request(
                ID,
                format!("a node of service {} has no id", service.name),
            ));
        }
        let ttl = lease_seconds(opts.ttl);
        for node in &service.nodes {
            self.register_node(service, node, ttl).await?;
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        for node in service.nodes.iter().filter(|n| !n.id.is_empty()) {
            let key = layout::node_key(&self.inner.prefix, &service.name, &node.id);
            let what = format!("deregistering node {} of {}", node.id, service.name);
            let delete = key.clone();
            self.call(&what, |mut c| async move { c.delete(delete, None).await })
                .await?;
            let lease = self.leases().remove(&key);
            if let Some(lease) = lease {
                // The key is gone already; revoking frees the lease now instead of at its end.
                let revoked = self
                    .call(&what, |mut c| async move { c.lease_revoke(lease.id).await })
                    .await;
                if let Err(e) = revoked {
                    tracing::debug!(registry = "etcd", "revoking lease {:x}: {e}", lease.id);
                }
            }
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let not_found = || {
            Error::not_found(
                ID,
                format!("service {name} not found in {}", self.inner.label),
            )
        };
        if name.is_empty() {
            return Err(not_found());
        }
        let prefix = layout::service_prefix(&self.inner.prefix, name);
        let kvs = self
            .read(&format!("looking up service {name}"), prefix)
            .await?;
        let services = self.decode_all(&kvs);
        if services.is_empty() {
            return Err(not_found());
        }
        Ok(Service::merge(services))
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let kvs = self
            .read("listing services", self.inner.prefix.clone())
            .await?;
        Ok(Service::merge(self.decode_all(&kvs)))
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let (key, what) = match service {
            Some(name) => (
                layout::service_prefix(&self.inner.prefix, name),
                format!("watching service {name}"),
            ),
            None => (
                self.inner.prefix.clone(),
                "watching all services".to_string(),
            ),
        };
        let (stream, first) = self.open_watch(&what, key.clone(), 0).await?;
        if first.canceled() {
            return Err(self.failure(
                &what,
                &etcd_client::Error::WatchError(format!(
                    "etcd refused the watch: {}",
                    first.cancel_reason()
                )),
            ));
        }
        let mut state = WatchState {
            registry: self.clone(),
            key,
            stream: Some(stream),
            pending: VecDeque::new(),
            next_revision: 0,
            failures: 0,
            what,
        };
        state.take(&first);
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            WatchState::next,
        )))
    }
}

impl EtcdRegistry {
    /// Opens a prefix watch of `key` from revision `start` (0: from now on), and waits for
    /// etcd's first answer, which confirms it (a change made after this returns is then sure
    /// to be reported) or refuses it.
    async fn open_watch(
        &self,
        what: &str,
        key: String,
        start: i64,
    ) -> Result<(WatchStream, WatchResponse)> {
        self.call(what, |mut c| async move {
            let mut options = WatchOptions::new().with_prefix().with_prev_key();
            if start > 0 {
                options = options.with_start_revision(start);
            }
            let mut stream = c.watch(key, Some(options)).await?;
            match stream.message().await? {
                Some(first) => Ok((stream, first)),
                None => Err(etcd_client::Error::WatchError(
                    "etcd closed the watch before confirming it".to_string(),
                )),
            }
        })
        .await
    }
}

/// A watch in progress: the etcd stream, the events of its last response not yet handed out,
/// and the revision to resume from when etcd ends the stream.
struct WatchState {
    registry: EtcdRegistry,
    /// The prefix watched.
    key: String,
    /// `None` once etcd ended it, until it is opened again.
    stream: Option<WatchStream>,
    pending: VecDeque<Event>,
    /// The first revision not reported yet; 0 when unknown (then a new watch starts from now).
    next_revision: i64,
    /// Failed attempts to open the watch again, in a row.
    failures: u32,
    what: String,
}

impl WatchState {
    /// The next event. When etcd ends the stream (it restarted, the member lost its leader,
    /// the connection broke), that is reported once as an `Err` item and the watch is opened
    /// again from the first revision not reported, so no change is missed; when etcd has
    /// compacted that revision away, that is reported too and the watch goes on from the
    /// present (the caller should read again). It ends only when dropped.
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            let problem = match self.stream.as_mut() {
                Some(stream) => match stream.message().await {
                    Ok(Some(r)) => match self.take(&r) {
                        Some(problem) => problem,
                        None => continue,
                    },
                    Ok(None) => etcd_client::Error::WatchError("etcd closed the watch".into()),
                    Err(e) => e,
                },
                None => match self.reopen().await {
                    Ok(None) => continue,
                    Ok(Some(problem)) => problem,
                    Err(e) => {
                        self.failures = self.failures.saturating_add(1);
                        if self.failures == 1 {
                            tracing::warn!(registry = "etcd", "{e}; retrying");
                        } else {
                            tracing::debug!(registry = "etcd", "{e}; retrying");
                        }
                        tokio::time::sleep(reopen_backoff(self.failures)).await;
                        continue;
                    }
                },
            };
            self.stream = None;
            let mut err = self.registry.failure(&self.what, &problem);
            err.detail.push_str(if self.next_revision > 0 {
                "; watching again from where it stopped"
            } else {
                "; watching again from now on: read the registry again"
            });
            return Some((Err(err), self));
        }
    }

    /// Opens the watch again, from `next_revision`; `Some` when etcd ended it at once.
    async fn reopen(&mut self) -> Result<Option<etcd_client::Error>> {
        let (stream, first) = self
            .registry
            .open_watch(&self.what, self.key.clone(), self.next_revision)
            .await?;
        tracing::debug!(
            registry = "etcd",
            "{}: {} again from revision {}",
            self.registry.inner.label,
            self.what,
            self.next_revision
        );
        self.failures = 0;
        self.stream = Some(stream);
        Ok(self.take(&first))
    }

    /// Takes in one response of etcd: its events, or why etcd ended the watch.
    fn take(&mut self, response: &WatchResponse) -> Option<etcd_client::Error> {
        if response.canceled() {
            let mut why = format!("etcd cancelled the watch: {}", response.cancel_reason());
            if response.compact_revision() > 0 {
                why.push_str(&format!(
                    " (compacted at {}: changes before it are lost)",
                    response.compact_revision()
                ));
                // Nothing left to resume from: go on from the present.
                self.next_revision = 0;
            }
            return Some(etcd_client::Error::WatchError(why));
        }
        if response.created() && self.next_revision == 0 {
            // A watch from now on reports what comes after the revision it was made at.
            if let Some(header) = response.header() {
                self.next_revision = header.revision().saturating_add(1);
            }
        }
        self.absorb(response);
        None
    }

    fn absorb(&mut self, response: &WatchResponse) {
        let prefix = &self.registry.inner.prefix;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            self.next_revision = self.next_revision.max(kv.mod_revision().saturating_add(1));
            let decoded = match event.event_type() {
                EventType::Put => layout::decode(prefix, kv.key(), kv.value()).map(|service| {
                    let kind = if kv.version() == 1 {
                        EventKind::Create
                    } else {
                        EventKind::Update
                    };
                    Event { kind, service }
                }),
                // The value is gone with the key: take the service from the value before the
                // delete, or, when etcd did not send it, from the key (name and node id).
                EventType::Delete => match event.prev_kv() {
                    Some(prev) => layout::decode(prefix, prev.key(), prev.value()),
                    None => layout::from_key(prefix, kv.key()),
                }
                .map(|service| Event {
                    kind: EventKind::Delete,
                    service,
                }),
            };
            match decoded {
                Ok(e) => self.pending.push_back(e),
                Err(why) => self.registry.warn_once(kv, &why),
            }
        }
    }
}

/// How long to wait before opening a broken watch again, after `failures` failed attempts:
/// 100 ms, doubling, at most 5 s (each attempt is bounded by the request timeout too).
fn reopen_backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(5))
}

/// Whether etcd's answer was larger than the client accepts (tonic's decoding limit).
fn too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status)
        if grpc_code(status.code() as i32) == GrpcCode::OutOfRange
            && status.message().contains("message length too large"))
}

/// The end of the range of keys starting with `prefix`: its last byte that can grow, grown,
/// with what follows it dropped; `\0` (every key from the start) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The smallest key after `key`.
fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The lease TTL in whole seconds, rounded up; 0 (no lease, live until deregistered) for a
/// zero TTL.
fn lease_seconds(ttl: Duration) -> i64 {
    if ttl.is_zero() {
        return 0;
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Whether etcd answered (the request was refused for a reason of its own), as opposed to the
/// connection failing.
fn is_answer(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => matches!(
            grpc_code(status.code() as i32),
            GrpcCode::InvalidArgument
                | GrpcCode::NotFound
                | GrpcCode::AlreadyExists
                | GrpcCode::PermissionDenied
                | GrpcCode::ResourceExhausted
                | GrpcCode::FailedPrecondition
                | GrpcCode::Aborted
                | GrpcCode::OutOfRange
                | GrpcCode::Unauthenticated
        ),
        etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// Whether a keep-alive failed because etcd has no such lease.
fn lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(msg) => msg.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => {
            grpc_code(status.code() as i32) == GrpcCode::NotFound
        }
        _ => false,
    }
}

/// An etcd client error with every cause under it: tonic's `transport error` alone says little,
/// the `Connection refused` or `UnknownIssuer` under it says what to fix.
fn describe(e: &etcd_client::Error) -> String {
    let mut text = match e {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    };
    let mut cause: Option<&dyn std::error::Error> = match e {
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        etcd_client::Error::IoError(io) => std::error::Error::source(io),
        _ => None,
    };
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

fn grpc_code(code: i32) -> GrpcCode {
    match code {
        0 => GrpcCode::Ok,
        1 => GrpcCode::Cancelled,
        3 => GrpcCode::InvalidArgument,
        4 => GrpcCode::DeadlineExceeded,
        5 => GrpcCode::NotFound,
        6 => GrpcCode::AlreadyExists,
        7 => GrpcCode::PermissionDenied,
        8 => GrpcCode::ResourceExhausted,
        9 => GrpcCode::FailedPrecondition,
        10 => GrpcCode::Aborted,
        11 => GrpcCode::OutOfRange,
        12 => GrpcCode::Unimplemented,
        13 => GrpcCode::Internal,
        14 => GrpcCode::Unavailable,
        15 => GrpcCode::DataLoss,
        16 => GrpcCode::Unauthenticated,
        _ => GrpcCode::Unknown,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_keys_after() {
        assert_eq!(prefix_end(b"/micro/registry/"), b"/micro/registry0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(key_after(b"/a"), b"/a\0");
    }

    #[test]
    fn reopening_backs_off_up_to_five_seconds() {
        assert_eq!(reopen_backoff(1), Duration::from_millis(100));
        assert_eq!(reopen_backoff(2), Duration::from_millis(200));
        assert_eq!(reopen_backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn ttl_is_rounded_up_to_seconds() {
        assert_eq!(lease_seconds(Duration::ZERO), 0);
        assert_eq!(lease_seconds(Duration::from_millis(1)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(2)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(lease_seconds(Duration::from_secs(90)), 90);
    }

    #[test]
    fn making_a_registry_does_not_connect() {
        // Nothing listens on port 1; making the registry must still succeed.
        let r = EtcdRegistry::new(EtcdOptions::from_address("127.0.0.1:1")).expect("lazy");
        assert_eq!(r.name(), "etcd");
        assert!(format!("{r:?}").contains("127.0.0.1:1"));
        let err = EtcdRegistry::new(EtcdOptions {
            endpoints: vec![],
            ..EtcdOptions::default()
        })
        .expect_err("no endpoint");
        assert!(err.detail.contains("MICRO_REGISTRY_ADDRESS"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_etcd_times_out() {
        // A loopback port that takes connections and never says a word, like a hung etcd.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = silent.local_addr().expect("address").to_string();
        let opts = EtcdOptions::from_address(&address)
            .with_request_timeout(Duration::from_millis(500))
            .with_dial_timeout(Duration::from_millis(500));
        let r = EtcdRegistry::new(opts).expect("lazy");
        let service = Service {
            nodes: vec![micro_core::Node {
                id: "greeter-1".into(),
                ..Default::default()
            }],
            ..Service::new("greeter", "latest")
        };
        let started = std::time::Instant::now();
        let err = r
            .register(&service, RegisterOptions::default())
            .await
            .expect_err("no answer");
        assert!(err.detail.contains("no answer within"), "{err}");
        assert!(
            err.to_string().contains(&format!("etcd at {address}")),
            "{err}"
        );
        let err = r.watch(None).await.map(|_| ()).expect_err("no answer");
        assert_eq!(err.code, 503, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unreachable_etcd_is_named_quickly() {
        // Port 1 on loopback refuses connections.
        let opts = EtcdOptions::from_address("127.0.0.1:1")
            .with_request_timeout(Duration::from_millis(800))
            .with_dial_timeout(Duration::from_millis(800));
        let r = EtcdRegistry::new(opts).expect("lazy");
        let start = std::time::Instant::now();
        let err = r.get_service("greeter").await.expect_err("nothing there");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.code, 503, "{err}");
        assert!(err.to_string().contains("etcd at 127.0.0.1:1"), "{err}");
    }
}
