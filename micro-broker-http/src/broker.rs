//! [`HttpBroker`]: the [`Broker`] implementation tying the server, the registry entries of its
//! subscribers and the publisher together.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use micro_core::broker::{Handler, Message, SubscribeOptions, Subscription};
use micro_core::registry::RegisterOptions;
use micro_core::{Broker, Error, Node, Registry, Result, Service};
use tokio::task::JoinHandle;

use crate::publish::{Lookup, Sender};
use crate::server::{Server, Subscriber, Subscribers};
use crate::{wire, HttpBrokerOptions, BROADCAST_VERSION, ID, SERVICE_NAME};

/// Go Micro's http broker: subscribers are registered in the service registry as
/// `micro.http.broker` nodes, and publishers POST each message to them over HTTP.
///
/// Cloning gives another handle to the same broker. See the [crate docs](crate) for the wire
/// format and the delivery guarantees.
#[derive(Debug, Clone)]
pub struct HttpBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A UUID per broker value, for logs.
    id: String,
    opts: HttpBrokerOptions,
    registry: Arc<dyn Registry>,
    subscribers: Subscribers,
    /// The registry side of each live subscription, by node id.
    records: Mutex<BTreeMap<String, Record>>,
    lookup: Lookup,
    sender: Sender,
    /// The server while connected. Held across connect, disconnect and subscribe so that a
    /// subscription never registers the address of a server going away.
    server: tokio::sync::Mutex<Option<Connected>>,
    /// What [`Broker::address`] reports.
    address: Mutex<String>,
}

#[derive(Debug)]
struct Connected {
    server: Server,
    advertise: String,
}

/// One subscription's registry entry and the task renewing it.
#[derive(Debug)]
struct Record {
    service: Service,
    renew: JoinHandle<()>,
}

impl HttpBroker {
    /// A broker that finds subscribers through `registry` and registers its own there. It
    /// listens once connected (or at its first subscription).
    pub fn new(registry: Arc<dyn Registry>, opts: HttpBrokerOptions) -> Result<Self> {
        opts.validate()?;
        Ok(HttpBroker {
            inner: Arc::new(Inner {
                id: uuid::Uuid::new_v4().to_string(),
                lookup: Lookup::new(registry.clone(), opts.cache_ttl),
                sender: Sender::new(opts.request_timeout),
                address: Mutex::new(opts.address.clone()),
                subscribers: Subscribers::default(),
                records: Mutex::new(BTreeMap::new()),
                server: tokio::sync::Mutex::new(None),
                registry,
                opts,
            }),
        })
    }

    /// A broker with options from the environment ([`HttpBrokerOptions::from_env`]).
    pub fn from_env(registry: Arc<dyn Registry>) -> Result<Self> {
        Self::new(registry, HttpBrokerOptions::from_env()?)
    }

    /// This broker value's id (a UUID).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &HttpBrokerOptions {
        &self.inner.opts
    }

    /// Starts the server unless it runs; returns the address subscribers are registered at.
    async fn ensure_connected(&self, server: &mut Option<Connected>) -> Result<String> {
        if let Some(c) = server.as_ref() {
            return Ok(c.advertise.clone());
        }
        let inner = &self.inner;
        let started = Server::bind(inner.subscribers.clone(), &inner.opts).await?;
        let advertise = match &inner.opts.advertise {
            Some(a) => a.clone(),
            None => advertise_for(started.local_addr),
        };
        tracing::debug!(broker = %inner.id, listen = %started.local_addr, %advertise, "http broker: listening");
        *lock(&inner.address) = advertise.clone();
        *server = Some(Connected {
            server: started,
            advertise: advertise.clone(),
        });
        Ok(advertise)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The address to register for a listener: itself, or for a wildcard listener the first
/// private IPv4 address of this host (127.0.0.1 when there is none).
fn advertise_for(local: SocketAddr) -> String {
    if !local.ip().is_unspecified() {
        return local.to_string();
    }
    let ip = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| matches!(ip, IpAddr::V4(v4) if v4.is_private()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    SocketAddr::new(ip, local.port()).to_string()
}

/// The longest DNS label: the mDNS registry makes the node id part of a DNS name.
const MAX_LABEL: usize = 63;

/// The node id of a new subscription: `<topic>-<uuid>`.
///
/// Go Micro names the node `<topic>-<broker id>`; the UUID here is per subscription, so that
/// several subscriptions of one broker to one topic (a queue member and a broadcast
/// subscriber, say) are told apart. Publishers only echo the id back, and the topic travels
/// in the node metadata, so where the topic would make the id a bad DNS name (a label over 63
/// bytes, characters other than `[A-Za-z0-9._-]`) the id carries a shortened, cleaned prefix
/// of it instead.
fn node_id(topic: &str, uuid: &str) -> String {
    let full = format!("{topic}-{uuid}");
    let friendly = full.len() <= 4 * MAX_LABEL
        && full
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= MAX_LABEL)
        && full
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if friendly {
        return full;
    }
    let room = MAX_LABEL.saturating_sub(uuid.len() + 1);
    let prefix: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    format!("{prefix}-{uuid}")
}

/// Registers `service` again every `interval`, sooner after a failure, until aborted.
async fn renew_loop(
    registry: Arc<dyn Registry>,
    service: Service,
    opts: RegisterOptions,
    interval: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        let wait = if failures == 0 {
            interval
        } else {
            interval.min(Duration::from_millis(250) * failures.min(40))
        };
        tokio::time::sleep(wait).await;
        match registry.register(&service, opts).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(topic = service.nodes.first().and_then(|n| n.metadata.get("topic")).map(String::as_str).unwrap_or(""), error = %e, "http broker: renewing a subscriber's registration failed; retrying");
            }
        }
    }
}

impl Inner {
    /// Ends the subscription `id` here and in the registry; `Ok` when it had ended already.
    async fn end_subscription(&self, id: &str) -> Result<()> {
        lock_write(&self.subscribers).remove(id);
        let Some(record) = lock(&self.records).remove(id) else {
            return Ok(());
        };
        // Stop renewing before deregistering, so a renewal cannot bring the entry back.
        record.renew.abort();
        let _ = record.renew.await;
        self.lookup.invalidate();
        self.registry
            .deregister(&record.service)
            .await
            .map_err(|e| Error {
                detail: format!(
                    "unsubscribed, but removing subscriber {id} from the {} registry failed (it expires after {:?}): {}",
                    self.registry.name(),
                    self.opts.register_ttl,
                    e.detail
                ),
                ..e
            })
    }
}

fn lock_write(
    s: &Subscribers,
) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, Arc<Subscriber>>> {
    s.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the entries would expire after their TTL anyway.
        let records = std::mem::take(&mut *lock(&self.records));
        if records.is_empty() {
            return;
        }
        for r in records.values() {
            r.renew.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let registry = self.registry.clone();
            runtime.spawn(async move {
                for r in records.into_values() {
                    let _ = registry.deregister(&r.service).await;
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl Broker for HttpBroker {
    fn name(&self) -> &str {
        "http"
    }

    fn address(&self) -> String {
        lock(&self.inner.address).clone()
    }

    async fn connect(&self) -> Result<()> {
        let mut server = self.inner.server.lock().await;
        self.ensure_connected(&mut server).await.map(|_| ())
    }

    async fn disconnect(&self) -> Result<()> {
        let inner = &self.inner;
        let mut server = inner.server.lock().await;
        let ids: Vec<String> = lock(&inner.records).keys().cloned().collect();
        let mut failures = Vec::new();
        for id in ids {
            if let Err(e) = inner.end_subscription(&id).await {
                tracing::warn!(broker = %inner.id, error = %e, "http broker: disconnecting");
                failures.push(e);
            }
        }
        inner.lookup.stop();
        if let Some(connected) = server.take() {
            connected.server.shutdown(inner.opts.request_timeout).await;
        }
        *lock(&inner.address) = inner.opts.address.clone();
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        let Some(groups) = self.inner.lookup.groups(topic).await? else {
            return Ok(());
        };
        let body = Bytes::from(wire::encode(topic, &msg));
        self.inner.sender.deliver(topic, &groups, body).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if topic.is_empty() {
            return Err(Error::bad_request(ID, "cannot subscribe to an empty topic"));
        }
        let inner = &self.inner;
        let mut server = inner.server.lock().await;
        let advertise = self.ensure_connected(&mut server).await?;

        let id = node_id(topic, &uuid::Uuid::new_v4().to_string());
        let version = match opts.queue.as_deref() {
            Some(q) if !q.is_empty() => q.to_string(),
            _ => BROADCAST_VERSION.to_string(),
        };
        let service = Service {
            nodes: vec![Node {
                id: id.clone(),
                address: advertise,
                metadata: BTreeMap::from([
                    ("broker".to_string(), "http".to_string()),
                    ("topic".to_string(), topic.to_string()),
                    ("secure".to_string(), "false".to_string()),
                ]),
            }],
            ..Service::new(SERVICE_NAME, version)
        };

        // Live here before it is announced, so the first message finds it.
        lock_write(&inner.subscribers).insert(
            id.clone(),
            Arc::new(Subscriber {
                topic: topic.to_string(),
                handler,
            }),
        );
        let register = RegisterOptions {
            ttl: inner.opts.register_ttl,
        };
        if let Err(e) = inner.registry.register(&service, register).await {
            lock_write(&inner.subscribers).remove(&id);
            return Err(Error {
                detail: format!(
                    "subscribing to {topic}: registering in the {} registry failed: {}",
                    inner.registry.name(),
                    e.detail
                ),
                ..e
            });
        }
        inner.lookup.invalidate();
        let renew = tokio::spawn(renew_loop(
            inner.registry.clone(),
            service.clone(),
            register,
            inner.opts.register_interval,
        ));
        lock(&inner.records).insert(id.clone(), Record { service, renew });
        drop(server);
        tracing::debug!(broker = %inner.id, %topic, subscriber = %id, queue = ?opts.queue, "http broker: subscribed");
        Ok(Box::new(HttpSubscription {
            broker: self.clone(),
            topic: topic.to_string(),
            id,
        }))
    }
}

/// A live subscription of an [`HttpBroker`].
#[derive(Debug)]
struct HttpSubscription {
    broker: HttpBroker,
    topic: String,
    id: String,
}

#[async_trait::async_trait]
impl Subscription for HttpSubscription {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.broker.inner.end_subscription(&self.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_topic_and_uuid_and_fit_a_dns_label() {
        let uuid = "2a2c2a96-81ef-42f9-bd8b-8c16fb07503e";
        assert_eq!(node_id("orders", uuid), format!("orders-{uuid}"));
        assert_eq!(
            node_id("go.micro.topic.events", uuid),
            format!("go.micro.topic.events-{uuid}")
        );
        let long = "conf-roundtrip-d812ed2ba70a";
        let id = node_id(long, uuid);
        assert_eq!(id, format!("conf-roundtrip-d812ed2ba70-{uuid}"));
        assert_eq!(id.len(), MAX_LABEL);
        let odd = node_id("my topic/ü.x", uuid);
        assert_eq!(odd, format!("my-topic---x-{uuid}"));
        let empty_label = node_id("a..b", uuid);
        assert_eq!(empty_label, format!("a--b-{uuid}"));
    }

    #[test]
    fn advertises_a_concrete_address() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(advertise_for(local), "127.0.0.1:8080");
        let wildcard: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        let adv: SocketAddr = advertise_for(wildcard)
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!adv.ip().is_unspecified());
        assert_eq!(adv.port(), 8080);
    }
}
