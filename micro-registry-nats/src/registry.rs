//! [`NatsRegistry`]: the [`Registry`] trait as Go Micro's NATS registry speaks it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, ServerAddr, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Error, Node, Registry, Result, Service};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::options::NatsRegistryOptions;
use crate::{wire, ERROR_ID};

/// What to check when NATS does not answer.
const HINT: &str = "is nats-server running there?";

/// A [`Registry`] on NATS, speaking Go Micro's NATS registry protocol.
///
/// There is no store: each registry answers lookups for the services it registered itself.
/// A lookup is broadcast on the query subject with a reply inbox, and every answer that
/// arrives within [`NatsRegistryOptions::query_timeout`] is merged. Registrations and
/// deregistrations are announced on the watch subject, which is what a watch follows.
///
/// A registration lives while this registry lives and is registered again within its TTL:
/// a node whose TTL passes without a new registration stops being answered for (and its
/// removal is announced). Dropping the registry ends its answers at once.
///
/// Making one does not contact NATS: the connection is made by the first operation and
/// re-established by async-nats after a failure. Cloning is cheap; clones share everything.
#[derive(Clone)]
pub struct NatsRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    opts: NatsRegistryOptions,
    servers: Vec<ServerAddr>,
    /// `nats at 127.0.0.1:4222`, the start of every error.
    label: String,
    client: OnceCell<Client>,
    /// Set once the query subscription and the expiry task run.
    answering: OnceCell<()>,
    local: Mutex<Local>,
    /// Wakes the expiry task when a deadline changed.
    changed: Arc<Notify>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// The services this registry answers for, by name and version.
#[derive(Default)]
struct Local {
    services: BTreeMap<(String, String), Held>,
}

/// One registered version of a service: its description and its nodes with their deadlines.
struct Held {
    service: Service,
    nodes: BTreeMap<String, (Node, Option<Instant>)>,
}

impl Local {
    /// The answer for `(name, version)`: the service with its live nodes.
    fn answer(&self, key: &(String, String), now: Instant) -> Option<Service> {
        let held = self.services.get(key)?;
        let mut service = held.service.clone();
        service.nodes = held
            .nodes
            .values()
            .filter(|(_, deadline)| deadline.is_none_or(|d| d > now))
            .map(|(node, _)| node.clone())
            .collect();
        (!service.nodes.is_empty()).then_some(service)
    }

    fn answers(&self, name: Option<&str>, now: Instant) -> Vec<Service> {
        self.services
            .keys()
            .filter(|(n, _)| name.is_none_or(|name| name == n))
            .filter_map(|key| self.answer(key, now))
            .collect()
    }

    /// Removes the nodes whose deadline passed; returns them as services, for announcing.
    fn expire(&mut self, now: Instant) -> Vec<Service> {
        let mut gone = Vec::new();
        for held in self.services.values_mut() {
            let mut expired = held.service.clone();
            held.nodes.retain(|_, (node, deadline)| {
                let live = deadline.is_none_or(|d| d > now);
                if !live {
                    expired.nodes.push(node.clone());
                }
                live
            });
            if !expired.nodes.is_empty() {
                gone.push(expired);
            }
        }
        self.services.retain(|_, held| !held.nodes.is_empty());
        gone
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.services
            .values()
            .flat_map(|h| h.nodes.values().filter_map(|(_, d)| *d))
            .min()
    }
}

impl fmt::Debug for NatsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsRegistry")
            .field("servers", &self.inner.opts.servers)
            .field("query_subject", &self.inner.opts.query_subject)
            .field("watch_subject", &self.inner.opts.watch_subject)
            .finish_non_exhaustive()
    }
}

impl NatsRegistry {
    /// A registry on the NATS that `opts` describes. It does not connect yet; a malformed
    /// server address or subject is reported here.
    pub fn new(opts: NatsRegistryOptions) -> Result<Self> {
        if opts.servers.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                "no NATS server given: set MICRO_REGISTRY_ADDRESS, e.g. 127.0.0.1:4222",
            ));
        }
        let servers = opts
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| {
                    Error::bad_request(
                        ERROR_ID,
                        format!("NATS server {s:?} is not a valid address: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (what, subject) in [
            ("query", &opts.query_subject),
            ("watch", &opts.watch_subject),
        ] {
            let valid = !subject.is_empty()
                && !subject
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>');
            if !valid {
                return Err(Error::bad_request(
                    ERROR_ID,
                    format!("the {what} subject {subject:?} is not a plain NATS subject"),
                ));
            }
        }
        if opts.user.is_some() != opts.password.is_some() {
            return Err(Error::bad_request(
                ERROR_ID,
                "a NATS user needs a password, and a password a user \
                 (MICRO_NATS_USER and MICRO_NATS_PASSWORD)",
            ));
        }
        let label = format!("nats at {}", opts.servers.join(","));
        Ok(NatsRegistry {
            inner: Arc::new(Inner {
                opts,
                servers,
                label,
                client: OnceCell::new(),
                answering: OnceCell::new(),
                local: Mutex::new(Local::default()),
                changed: Arc::new(Notify::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A registry on the NATS the environment names (see [`NatsRegistryOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(NatsRegistryOptions::from_env()?)
    }

    /// The options this registry was made with.
    pub fn options(&self) -> &NatsRegistryOptions {
        &self.inner.opts
    }

    fn unavailable(&self, what: &str, why: impl fmt::Display) -> Error {
        Error::new(
            ERROR_ID,
            503,
            format!("{}: {what}: {why} ({HINT})", self.inner.label),
        )
    }

    /// The connected client; fails (503) while NATS is unreachable, whether the first
    /// connection is not made yet or async-nats is reconnecting.
    async fn client(&self, what: &str) -> Result<Client> {
        let inner = &self.inner;
        let limit = inner.opts.connect_timeout + Duration::from_secs(1);
        let client = inner
            .client
            .get_or_try_init(|| async {
                let mut co = ConnectOptions::new()
                    .name("micro-registry")
                    .connection_timeout(inner.opts.connect_timeout)
                    .max_reconnects(None);
                if let Some(token) = &inner.opts.token {
                    co = co.token(token.clone());
                }
                if let (Some(user), Some(password)) = (&inner.opts.user, &inner.opts.password) {
                    co = co.user_and_password(user.clone(), password.clone());
                }
                match tokio::time::timeout(limit, co.connect(inner.servers.clone())).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(self.unavailable(what, e)),
                    Err(_) => {
                        Err(self.unavailable(what, format!("no connection within {limit:?}")))
                    }
                }
            })
            .await?;
        if client.connection_state() != State::Connected {
            return Err(self.unavailable(what, "not connected, reconnecting"));
        }
        Ok(client.clone())
    }

    /// Waits until the server has processed everything this client sent before (a
    /// subscription, say): a request on a subject nobody serves comes back only then.
    async fn round_trip(&self, client: &Client, what: &str) -> Result<()> {
        let subject = format!("_MICRO.REGISTRY.SYNC.{}", uuid::Uuid::new_v4().simple());
        let limit = self.inner.opts.connect_timeout;
        match tokio::time::timeout(limit, client.request(subject, Bytes::new())).await {
            Err(_) => Err(self.unavailable(what, format!("no answer within {limit:?}"))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(self.unavailable(what, e)),
        }
    }

    /// Starts answering queries (once): the query subscription and the task that expires
    /// nodes whose TTL passed.
    async fn answer_queries(&self, client: &Client) -> Result<()> {
        let inner = &self.inner;
        inner
            .answering
            .get_or_try_init(|| async {
                let what = "answering lookups";
                let queries = client
                    .subscribe(inner.opts.query_subject.clone())
                    .await
                    .map_err(|e| self.unavailable(what, e))?;
                self.round_trip(client, what).await?;
                let weak = Arc::downgrade(inner);
                let answering = tokio::spawn(answer(weak.clone(), client.clone(), queries));
                let expiring = tokio::spawn(expire(weak, client.clone(), inner.changed.clone()));
                lock(&inner.tasks).extend([answering, expiring]);
                Ok(())
            })
            .await
            .map(|_| ())
    }

    async fn announce(&self, client: &Client, what: &str, action: &str, s: &Service) -> Result<()> {
        let payload = wire::encode(action, Some(s))
            .map_err(|e| Error::internal(ERROR_ID, format!("encoding {}: {e}", s.name)))?;
        client
            .publish(self.inner.opts.watch_subject.clone(), payload.into())
            .await
            .map_err(|e| self.unavailable(what, e))
    }

    /// Broadcasts a query and collects the answers that arrive within the query timeout.
    async fn query(&self, name: Option<&str>) -> Result<Vec<Service>> {
        let what = match name {
            Some(name) => format!("looking up service {name}"),
            None => "listing services".to_string(),
        };
        let client = self.client(&what).await?;
        let opts = &self.inner.opts;
        let payload = match name {
            Some(name) => wire::encode(wire::GET, Some(&Service::new(name, ""))),
            None => wire::encode(wire::LIST, None),
        }
        .map_err(|e| Error::internal(ERROR_ID, format!("encoding the query: {e}")))?;
        let inbox = client.new_inbox();
        // Subscribed before the query goes out, on the same connection: the server handles
        // both in order, so no answer can come before the inbox exists.
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| self.unavailable(&what, e))?;
        client
            .publish_with_reply(opts.query_subject.clone(), inbox, payload.into())
            .await
            .map_err(|e| self.unavailable(&what, e))?;
        let deadline = Instant::now() + opts.query_timeout;
        let mut found = Vec::new();
        let mut read = 0usize;
        while read < opts.max_answers {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            read += 1;
            match wire::answer(&msg.payload, opts.max_message_bytes) {
                Ok(s) if name.is_none_or(|name| name == s.name) => found.push(s),
                Ok(s) => tracing::debug!(
                    registry = "nats",
                    "dropping an answer for {:?} to a lookup of {name:?}",
                    s.name
                ),
                Err(why) => tracing::warn!(registry = "nats", "dropping an answer: {why}"),
            }
        }
        if read >= opts.max_answers {
            tracing::warn!(
                registry = "nats",
                "{what}: stopped at {read} answers (MICRO_NATS_MAX_ANSWERS)"
            );
        }
        if let Err(e) = answers.unsubscribe().await {
            tracing::debug!(registry = "nats", "ending the lookup's inbox: {e}");
        }
        Ok(Service::merge(found))
    }
}

/// Answers the queries that arrive on `queries` while the registry lives.
async fn answer(registry: Weak<Inner>, client: Client, mut queries: Subscriber) {
    while let Some(msg) = queries.next().await {
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let Some(reply) = msg.reply else { continue };
        let query = match wire::query(&msg.payload, inner.opts.max_message_bytes) {
            Ok(q) => q,
            Err(why) => {
                tracing::debug!(registry = "nats", "ignoring a query: {why}");
                continue;
            }
        };
        let services = {
            let local = lock(&inner.local);
            match &query {
                wire::Query::Get(name) => local.answers(Some(name), Instant::now()),
                wire::Query::List => local.answers(None, Instant::now()),
            }
        };
        drop(inner);
        for service in services {
            match serde_json::to_vec(&service) {
                Ok(json) => {
                    if let Err(e) = client.publish(reply.clone(), json.into()).await {
                        tracing::debug!(registry = "nats", "answering a query: {e}");
                    }
                }
                Err(e) => tracing::warn!(registry = "nats", "encoding {}: {e}", service.name),
            }
        }
    }
}

/// Removes nodes whose TTL passed without a new registration and announces their removal.
async fn expire(registry: Weak<Inner>, client: Client, changed: Arc<Notify>) {
    loop {
        let (next, subject) = {
            let Some(inner) = registry.upgrade() else {
                return;
            };
            let next = lock(&inner.local).next_deadline();
            (next, inner.opts.watch_subject.clone())
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
        let gone = {
            let Some(inner) = registry.upgrade() else {
                return;
            };
            let mut local = lock(&inner.local);
            local.expire(Instant::now())
        };
        for service in gone {
            tracing::info!(
                registry = "nats",
                "{} node(s) of {} expired without being registered again",
                service.nodes.len(),
                service.name
            );
            if let Ok(payload) = wire::encode(wire::DELETE, Some(&service)) {
                if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                    tracing::debug!(registry = "nats", "announcing an expiry: {e}");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Registry for NatsRegistry {
    fn name(&self) -> &str {
        "nats"
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
        self.answer_queries(&client).await?;

        let deadline = (!opts.ttl.is_zero()).then(|| Instant::now() + opts.ttl);
        let (created, updated) = {
            let mut local = lock(&self.inner.local);
            let key = (service.name.clone(), service.version.clone());
            let held = local.services.entry(key).or_insert_with(|| Held {
                service: Service::default(),
                nodes: BTreeMap::new(),
            });
            let described_anew = held.service.metadata != service.metadata
                || held.service.endpoints != service.endpoints;
            held.service = Service {
                nodes: Vec::new(),
                ..service.clone()
            };
            let mut created = Service {
                nodes: Vec::new(),
                ..service.clone()
            };
            let mut updated = created.clone();
            for node in &service.nodes {
                match held.nodes.insert(node.id.clone(), (node.clone(), deadline)) {
                    None => created.nodes.push(node.clone()),
                    Some((old, _)) if old != *node || described_anew => {
                        updated.nodes.push(node.clone())
                    }
                    Some(_) => {}
                }
            }
            (created, updated)
        };
        self.inner.changed.notify_one();
        // Announced only when something changed: Go Micro announces every registration, but
        // a watcher learns nothing from the repeats.
        if !created.nodes.is_empty() {
            self.announce(&client, &what, wire::CREATE, &created)
                .await?;
        }
        if !updated.nodes.is_empty() {
            self.announce(&client, &what, wire::UPDATE, &updated)
                .await?;
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        {
            let mut local = lock(&self.inner.local);
            let key = (service.name.clone(), service.version.clone());
            if let Some(held) = local.services.get_mut(&key) {
                for node in &service.nodes {
                    held.nodes.remove(&node.id);
                }
                if held.nodes.is_empty() {
                    local.services.remove(&key);
                }
            }
        }
        self.inner.changed.notify_one();
        if service.nodes.is_empty() {
            return Ok(());
        }
        let what = format!("deregistering {}", service.name);
        let client = self.client(&what).await?;
        self.announce(&client, &what, wire::DELETE, service).await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let not_found = || {
            Error::not_found(
                ERROR_ID,
                format!(
                    "service {name} not found: no node answered on {} within {:?}",
                    self.inner.label, self.inner.opts.query_timeout
                ),
            )
        };
        if name.is_empty() {
            return Err(not_found());
        }
        let mut services = self.query(Some(name)).await?;
        services.retain(|s| !s.nodes.is_empty());
        if services.is_empty() {
            return Err(not_found());
        }
        Ok(services)
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        self.query(None).await
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let what = match service {
            Some(name) => format!("watching service {name}"),
            None => "watching all services".to_string(),
        };
        let client = self.client(&what).await?;
        let subscriber = client
            .subscribe(self.inner.opts.watch_subject.clone())
            .await
            .map_err(|e| self.unavailable(&what, e))?;
        // Confirmed: whatever is announced after this returns is seen.
        self.round_trip(&client, &what).await?;
        let only = service.map(str::to_string);
        let max = self.inner.opts.max_message_bytes;
        let events = subscriber.filter_map(move |msg| {
            let event = match wire::announcement(&msg.payload, max) {
                Ok(a) if only.as_ref().is_some_and(|name| *name != a.service.name) => None,
                Ok(a) => {
                    let kind = match a.action.as_str() {
                        wire::CREATE => Some(EventKind::Create),
                        wire::UPDATE => Some(EventKind::Update),
                        wire::DELETE => Some(EventKind::Delete),
                        _ => None,
                    };
                    kind.map(|kind| {
                        Ok(Event {
                            kind,
                            service: a.service,
                        })
                    })
                }
                Err(why) => {
                    tracing::warn!(registry = "nats", "ignoring an announcement: {why}");
                    None
                }
            };
            std::future::ready(event)
        });
        Ok(Box::pin(events))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            ..Node::default()
        }
    }

    #[test]
    fn expired_nodes_are_neither_answered_nor_kept() {
        let now = Instant::now();
        let mut local = Local::default();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "g-1".to_string(),
            (node("g-1"), Some(now + Duration::from_secs(1))),
        );
        nodes.insert(
            "g-2".to_string(),
            (node("g-2"), Some(now + Duration::from_secs(5))),
        );
        nodes.insert("g-3".to_string(), (node("g-3"), None));
        local.services.insert(
            ("g".into(), "1".into()),
            Held {
                service: Service::new("g", "1"),
                nodes,
            },
        );
        assert_eq!(local.answers(Some("g"), now)[0].nodes.len(), 3);
        assert!(local.answers(Some("other"), now).is_empty());
        let later = now + Duration::from_secs(2);
        assert_eq!(local.answers(None, later)[0].nodes.len(), 2);
        assert_eq!(local.next_deadline(), Some(now + Duration::from_secs(1)));
        let gone = local.expire(later);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].nodes[0].id, "g-1");
        assert_eq!(local.next_deadline(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn bad_options_are_refused_when_made() {
        let ok = NatsRegistry::new(NatsRegistryOptions::default()).expect("lazy");
        assert_eq!(ok.name(), "nats");
        for opts in [
            NatsRegistryOptions {
                servers: vec![],
                ..Default::default()
            },
            NatsRegistryOptions::default().with_subjects("a.*", "b"),
            NatsRegistryOptions::default().with_subjects("a", ""),
            NatsRegistryOptions {
                user: Some("u".into()),
                ..Default::default()
            },
        ] {
            let err = NatsRegistry::new(opts).expect_err("invalid");
            assert_eq!(err.code, 400, "{err}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_nats_is_named() {
        // Nothing listens on port 1 of loopback.
        let mut opts = NatsRegistryOptions::from_address("127.0.0.1:1");
        opts.connect_timeout = Duration::from_millis(500);
        let r = NatsRegistry::new(opts).expect("lazy");
        let err = r.get_service("greeter").await.expect_err("unreachable");
        assert_eq!(err.code, 503, "{err}");
        assert!(err.detail.contains("nats at 127.0.0.1:1"), "{err}");
    }
}
