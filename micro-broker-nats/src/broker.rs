//! [`NatsBroker`]: the connection, publish and subscribe in both modes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, ServerAddr, Subject, Subscriber};
use futures_util::StreamExt;
pub(crate) use micro_core::broker::support::Backoff;
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, MetadataLimits, Result};
use tokio_util::sync::CancellationToken;

use crate::jetstream::{consumer_name, JetStream, JsLoop};
use crate::options::NatsOptions;
use crate::wire::{incoming, outgoing};
use crate::ERROR_ID;

/// How long disconnect waits for pending publishes to reach the server.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The NATS broker (`MICRO_BROKER=nats`): core NATS, or JetStream with
/// [`NatsOptions::jetstream`]. Clones share one connection and its subscriptions.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

struct Inner {
    opts: NatsOptions,
    servers: Vec<ServerAddr>,
    /// `nats at <servers>`: how errors name the backend.
    label: String,
    // Behind an `Arc`: every publish takes the current connection, and cloning the client
    // itself (its channel sender and handles) cost a noticeable share of a core NATS publish.
    conn: RwLock<Option<Arc<Conn>>>,
    /// Serialises connect and disconnect.
    lifecycle: tokio::sync::Mutex<()>,
    subs: Mutex<HashMap<u64, Arc<SubControl>>>,
    next_id: AtomicU64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("servers", &self.opts.servers)
            .field("jetstream", &self.opts.jetstream.is_some())
            .field("connected", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

/// One connection: the client, and its JetStream side in JetStream mode.
#[derive(Debug, Clone)]
struct Conn {
    client: Client,
    js: Option<Arc<JetStream>>,
}

impl NatsBroker {
    /// A broker for `opts`. Nothing is contacted until [`Broker::connect`] (or the first
    /// publish or subscribe); malformed server URLs and half-given TLS or login settings are
    /// reported here.
    pub fn new(opts: NatsOptions) -> Result<Self> {
        if opts.servers.is_empty() {
            return Err(Error::bad_request(ERROR_ID, "no NATS server given"));
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
        if opts.tls_cert.is_some() != opts.tls_key.is_some() {
            return Err(Error::bad_request(
                ERROR_ID,
                "a TLS client certificate needs its key, and a key its certificate \
                 (MICRO_NATS_TLS_CERT and MICRO_NATS_TLS_KEY)",
            ));
        }
        if opts.user.is_some() != opts.password.is_some() {
            return Err(Error::bad_request(
                ERROR_ID,
                "a NATS user needs a password, and a password a user \
                 (MICRO_NATS_USER and MICRO_NATS_PASSWORD)",
            ));
        }
        let label = format!("nats at {}", opts.servers.join(","));
        Ok(NatsBroker {
            inner: Arc::new(Inner {
                opts,
                servers,
                label,
                conn: RwLock::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                subs: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The broker for the environment: [`NatsOptions::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(NatsOptions::from_env()?)
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.opts
    }

    /// The underlying async-nats client while connected, for what Micro's interface does not
    /// cover (request/reply, raw subscriptions, ...).
    pub fn client(&self) -> Option<Client> {
        self.inner.current().map(|c| c.client.clone())
    }

    async fn conn(&self) -> Result<Arc<Conn>> {
        if let Some(conn) = self.inner.current() {
            return Ok(conn);
        }
        self.connect().await?;
        self.inner.current().ok_or_else(|| {
            Error::new(
                ERROR_ID,
                503,
                format!("{}: disconnected meanwhile", self.inner.label),
            )
        })
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        let opts = &self.inner.opts;
        let label = self.inner.label.clone();
        let mut co = ConnectOptions::new()
            .name(&opts.name)
            .connection_timeout(opts.connect_timeout)
            // async-nats reconnects for ever, re-subscribing on the way; say so in the logs.
            .max_reconnects(None)
            .event_callback(move |event| {
                let label = label.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!("{label}: connected"),
                        async_nats::Event::Disconnected => {
                            tracing::warn!("{label}: disconnected, reconnecting")
                        }
                        other => tracing::debug!("{label}: {other}"),
                    }
                }
            });
        if let Some(path) = &opts.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::bad_request(
                    ERROR_ID,
                    format!("reading the NATS credentials file {}: {e}", path.display()),
                )
            })?;
            co = co.credentials(&text).map_err(|e| {
                Error::bad_request(
                    ERROR_ID,
                    format!(
                        "the NATS credentials file {} is not valid: {e}",
                        path.display()
                    ),
                )
            })?;
        }
        if let Some(token) = &opts.token {
            co = co.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&opts.user, &opts.password) {
            co = co.user_and_password(user.clone(), password.clone());
        }
        let mut tls = opts.tls_required;
        if let Some(ca) = &opts.tls_ca {
            co = co.add_root_certificates(ca.clone());
            tls = true;
        }
        if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
            co = co.add_client_certificate(cert.clone(), key.clone());
            tls = true;
        }
        if tls {
            co = co.require_tls(true);
        }
        Ok(co)
    }

    async fn subscribe_core(
        &self,
        conn: &Conn,
        topic: &str,
        handler: Handler,
        opts: &SubscribeOptions,
        token: CancellationToken,
    ) -> Result<()> {
        let subscribed = match &opts.queue {
            Some(q) => {
                conn.client
                    .queue_subscribe(topic.to_string(), q.clone())
                    .await
            }
            None => conn.client.subscribe(topic.to_string()).await,
        };
        let subscriber = subscribed.map_err(|e| {
            use async_nats::SubscribeErrorKind as K;
            let detail = format!("{}: subscribing to {topic:?}: {e}", self.inner.label);
            match e.kind() {
                K::InvalidSubject | K::InvalidQueueName => Error::bad_request(ERROR_ID, detail),
                K::Other => Error::new(ERROR_ID, 503, detail),
            }
        })?;
        // The server has the subscription before this returns, so whatever anyone publishes
        // from now on reaches it.
        if let Err(e) = round_trip(&conn.client, self.inner.opts.connect_timeout).await {
            tracing::warn!(topic, error = %e, "{}: subscription not confirmed yet; it will be when the connection is back", self.inner.label);
        }
        tokio::spawn(core_loop(
            subscriber,
            topic.to_string(),
            self.inner.opts.header_limits,
            handler,
            token,
        ));
        Ok(())
    }
}

impl Inner {
    fn current(&self) -> Option<Arc<Conn>> {
        self.conn
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, conn: Option<Conn>) -> Option<Arc<Conn>> {
        let mut slot = self
            .conn
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *slot, conn.map(Arc::new))
    }

    fn subs(&self) -> MutexGuard<'_, HashMap<u64, Arc<SubControl>>> {
        self.subs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl Broker for NatsBroker {
    fn name(&self) -> &str {
        "nats"
    }

    fn address(&self) -> String {
        self.inner.opts.servers.join(",")
    }

    async fn connect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.inner.current().is_some() {
            return Ok(());
        }
        let label = &self.inner.label;
        let co = self.connect_options()?;
        // async-nats bounds each attempt by the connection timeout; the outer bound covers DNS
        // and the TLS handshake too.
        let limit = self.inner.opts.connect_timeout + Duration::from_secs(1);
        let client = tokio::time::timeout(
            limit,
            async_nats::connect_with_options(self.inner.servers.clone(), co),
        )
        .await
        .map_err(|_| {
            Error::new(
                ERROR_ID,
                503,
                format!("{label}: no connection within {limit:?} (is nats-server running there?)"),
            )
        })?
        .map_err(|e| {
            Error::new(
                ERROR_ID,
                503,
                format!(
                    "{label}: {e} (is nats-server running there? e.g. `nats-server -a 127.0.0.1 \
                     -p 4222 -js -sd /var/lib/nats-server`)"
                ),
            )
        })?;
        let js = match &self.inner.opts.jetstream {
            Some(js_opts) => {
                let js = JetStream::new(
                    client.clone(),
                    js_opts.clone(),
                    self.inner.opts.envelope,
                    self.inner.opts.header_limits,
                    label.clone(),
                );
                if let Err(e) = js.check_enabled().await {
                    let _ = client.drain().await;
                    return Err(e);
                }
                Some(Arc::new(js))
            }
            None => None,
        };
        self.inner.set(Some(Conn { client, js }));
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let subs: Vec<Arc<SubControl>> = self.inner.subs().drain().map(|(_, s)| s).collect();
        // Concurrently: each may wait for the server to delete a consumer.
        let ended = futures_util::future::join_all(subs.iter().map(|s| s.end())).await;
        for e in ended.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %e, "ending a subscription on disconnect");
        }
        if let Some(conn) = self.inner.set(None) {
            // Wait until the server has what was published, then close.
            if let Err(e) = round_trip(&conn.client, DRAIN_TIMEOUT).await {
                tracing::warn!(
                    "{}: pending messages may not have reached the server: {e}",
                    self.inner.label
                );
            }
            if let Err(e) = conn.client.drain().await {
                tracing::debug!(error = %e, "closing the NATS connection");
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        let conn = self.conn().await?;
        if let Some(js) = &conn.js {
            // Boxed: inline, the JetStream publish would make every core NATS publish's own
            // (boxed) future several KiB large, well past glibc's 1 KiB small-allocation
            // limit, whose slower path (and arena lock) showed in profiles.
            return Box::pin(js.publish(topic, msg)).await;
        }
        let (headers, payload) = outgoing(self.inner.opts.envelope, &msg)?;
        // Made from the `&str` directly: through a `String` the topic would be copied twice.
        let subject = Subject::from(topic);
        let sent = if headers.is_empty() {
            // A plain PUB: what every NATS client understands.
            conn.client.publish(subject, payload).await
        } else {
            conn.client
                .publish_with_headers(subject, headers, payload)
                .await
        };
        sent.map_err(|e| {
            use async_nats::client::PublishErrorKind as K;
            match e.kind() {
                K::MaxPayloadExceeded => Error::payload_too_large(
                    ERROR_ID,
                    format!(
                        "{}: the message to {topic} ({} bytes of body) is larger than the \
                         server's max_payload: {e}",
                        self.inner.label,
                        msg.body.len()
                    ),
                ),
                K::InvalidSubject => {
                    Error::bad_request(ERROR_ID, format!("{topic:?} is not a valid NATS subject"))
                }
                K::Send => Error::new(
                    ERROR_ID,
                    503,
                    format!("{}: publishing to {topic}: {e}", self.inner.label),
                ),
            }
        })
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if topic.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                "cannot subscribe to an empty topic",
            ));
        }
        let conn = self.conn().await?;
        let token = CancellationToken::new();
        let own_consumer = match &conn.js {
            None => {
                self.subscribe_core(&conn, topic, handler, &opts, token.clone())
                    .await?;
                None
            }
            Some(js) => {
                let shared = opts.queue.is_some();
                let name =
                    consumer_name(&js.options().consumer_prefix, topic, opts.queue.as_deref());
                let (stream, consumer) = js.bind(topic, &name, shared).await?;
                let own = (!shared).then(|| OwnConsumer {
                    js: js.clone(),
                    stream: stream.clone(),
                    name: name.clone(),
                });
                tokio::spawn(
                    JsLoop {
                        js: js.clone(),
                        topic: topic.to_string(),
                        consumer_name: name,
                        shared,
                        queue: opts.queue.clone(),
                        stream,
                        consumer,
                        handler,
                        auto_ack: opts.auto_ack,
                        token: token.clone(),
                    }
                    .run(),
                );
                own
            }
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(SubControl {
            token,
            own_consumer,
            ended: AtomicBool::new(false),
        });
        self.inner.subs().insert(id, control.clone());
        Ok(Box::new(NatsSubscription {
            topic: topic.to_string(),
            id,
            broker: Arc::downgrade(&self.inner),
            control,
        }))
    }
}

/// Core NATS: hands each message to the handler, one at a time, until cancelled.
async fn core_loop(
    mut subscriber: Subscriber,
    topic: String,
    limits: MetadataLimits,
    handler: Handler,
    token: CancellationToken,
) {
    // One wait for the whole loop: a new `cancelled()` per message would add itself to the
    // token's waiters and take itself off again, a lock each time.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            next = subscriber.next() => next,
        };
        // None: the connection was closed for good (disconnect).
        let Some(msg) = next else { break };
        if token.is_cancelled() {
            break;
        }
        let message = match incoming(msg.headers.as_ref(), msg.payload, limits) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "dropped a message");
                continue;
            }
        };
        let delivery = Delivery::new(msg.subject.as_str(), message, None);
        if let Err(e) = call_handler(&handler, delivery).await {
            tracing::warn!(topic = %topic, error = %e, "subscriber failed; core NATS does not redeliver");
        }
    }
    if let Err(e) = subscriber.unsubscribe().await {
        tracing::debug!(topic = %topic, error = %e, "unsubscribing from NATS");
    }
}

/// Waits until the server has processed everything this client sent before. (async-nats's
/// `flush` only empties the local write buffer.) A request to a subject nobody serves is
/// answered by the server itself with "no responders", after the commands before it.
pub(crate) async fn round_trip(
    client: &Client,
    limit: Duration,
) -> std::result::Result<(), String> {
    let subject = format!("_MICRO.SYNC.{}", uuid::Uuid::new_v4().simple());
    match tokio::time::timeout(limit, client.request(subject, bytes::Bytes::new())).await {
        Err(_) => Err(format!("no answer within {limit:?}")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// Runs the handler; a panic becomes an error, so one bad message cannot end a subscription.
pub(crate) async fn call_handler(handler: &Handler, delivery: Delivery) -> Result<()> {
    micro_core::broker::support::call_handler(handler, delivery, ERROR_ID).await
}

/// Waits `delay` unless cancelled first; false when cancelled.
pub(crate) async fn pause(token: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// A subscriber's own JetStream consumer, deleted when it unsubscribes.
#[derive(Debug)]
struct OwnConsumer {
    js: Arc<JetStream>,
    stream: String,
    name: String,
}

/// Ends one subscription, from its handle or from disconnect.
#[derive(Debug)]
struct SubControl {
    token: CancellationToken,
    own_consumer: Option<OwnConsumer>,
    ended: AtomicBool,
}

impl SubControl {
    async fn end(&self) -> Result<()> {
        // The loop checks the token before each handler call, so no delivery starts after this.
        self.token.cancel();
        if self.ended.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        match &self.own_consumer {
            Some(c) => c.js.delete_consumer(&c.stream, &c.name).await,
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct NatsSubscription {
    topic: String,
    id: u64,
    broker: std::sync::Weak<Inner>,
    control: Arc<SubControl>,
}

#[async_trait::async_trait]
impl Subscription for NatsSubscription {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn unsubscribe(&self) -> Result<()> {
        if let Some(inner) = self.broker.upgrade() {
            inner.subs().remove(&self.id);
        }
        if let Err(e) = self.control.end().await {
            // Delivery has stopped, which is what unsubscribing promises; the consumer left
            // behind is removed by the server after its inactive threshold (2.10 and later).
            tracing::warn!(topic = %self.topic, error = %e, "removing the subscriber's JetStream consumer");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn bad_settings_are_refused_up_front() {
        let err = NatsBroker::new(NatsOptions {
            servers: vec![],
            ..Default::default()
        })
        .expect_err("no servers");
        assert_eq!(err.code, 400);
        let err = NatsBroker::new(NatsOptions {
            tls_cert: Some("/c.pem".into()),
            ..Default::default()
        })
        .expect_err("cert without key");
        assert!(err.detail.contains("MICRO_NATS_TLS_KEY"), "{}", err.detail);
        let err = NatsBroker::new(NatsOptions {
            user: Some("bob".into()),
            ..Default::default()
        })
        .expect_err("user without password");
        assert!(err.detail.contains("password"), "{}", err.detail);
    }

    #[tokio::test]
    async fn nothing_is_contacted_before_connect() {
        // Port 1 on loopback: nobody listens there.
        let broker = NatsBroker::new(NatsOptions {
            connect_timeout: Duration::from_millis(500),
            ..NatsOptions::from_address("nats://127.0.0.1:1")
        })
        .expect("made without a server");
        assert_eq!(broker.name(), "nats");
        assert_eq!(broker.address(), "nats://127.0.0.1:1");
        assert!(broker.client().is_none());
        let err = broker.connect().await.expect_err("nobody there");
        assert_eq!(err.code, 503);
        assert!(
            err.detail.contains("nats at nats://127.0.0.1:1"),
            "{}",
            err.detail
        );
        let err = broker
            .publish("t", Message::default())
            .await
            .expect_err("publish connects first");
        assert_eq!(err.code, 503);
    }

    #[tokio::test]
    async fn a_panicking_handler_is_an_error() {
        let handler: Handler = Arc::new(|_d| Box::pin(async { panic!("boom") }));
        let err = call_handler(&handler, Delivery::new("t", Message::default(), None))
            .await
            .expect_err("panicked");
        assert!(err.detail.contains("boom"), "{}", err.detail);
        let eager: Handler = Arc::new(|_d| -> micro_core::BoxFuture<'static, Result<()>> {
            panic!("before the future")
        });
        let err = call_handler(&eager, Delivery::new("t", Message::default(), None))
            .await
            .expect_err("panicked");
        assert!(err.detail.contains("before the future"), "{}", err.detail);
    }
}
