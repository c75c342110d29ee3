//! [`RedisBroker`]: the connection, publish, and subscribers in pub/sub mode.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
pub(crate) use micro_core::broker::support::Backoff;
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::options::{redacted, Mode, RedisOptions};
use crate::streams::{self, StreamSub};
use crate::{wire, ERROR_ID};

/// Received pub/sub messages waiting for the handler, per subscriber. A subscriber whose
/// handler falls this far behind loses messages (logged), rather than the process growing
/// without bound: pub/sub delivers at most once anyway.
const QUEUE: usize = 256;

/// The Redis broker (`MICRO_BROKER=redis`): Go Micro's pub/sub layout, or streams with
/// [`RedisOptions::with_streams`]. Clones share one connection and its subscriptions.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &redacted(&self.inner.opts.url))
            .field("mode", &self.inner.opts.mode)
            .field("connected", &self.inner.current().is_some())
            .finish_non_exhaustive()
    }
}

struct Inner {
    opts: RedisOptions,
    client: redis::Client,
    /// `redis at host:port`: how errors and logs name the backend (never with a password).
    label: String,
    /// Commands (publish, acks, claims); reconnects by itself.
    conn: RwLock<Option<ConnectionManager>>,
    /// Serialises connect and disconnect.
    lifecycle: tokio::sync::Mutex<()>,
    subs: Mutex<HashMap<u64, Arc<SubControl>>>,
    next_id: AtomicU64,
}

impl Inner {
    fn current(&self) -> Option<ConnectionManager> {
        self.conn
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, conn: Option<ConnectionManager>) {
        *self
            .conn
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = conn;
    }

    fn subs(&self) -> MutexGuard<'_, HashMap<u64, Arc<SubControl>>> {
        self.subs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RedisBroker {
    /// A broker for `opts`. Nothing is contacted until [`Broker::connect`] (or the first
    /// publish or subscribe); a URL that does not read is refused here.
    pub fn new(opts: RedisOptions) -> Result<Self> {
        let shown = redacted(&opts.url);
        if !(opts.url.starts_with("redis://") || opts.url.starts_with("unix://")) {
            return Err(Error::bad_request(
                ERROR_ID,
                format!(
                    "{shown:?} is not a Redis URL this build reads: use redis://[user:password@]host:port[/db] \
                     (TLS, rediss://, is not supported)"
                ),
            ));
        }
        let client = redis::Client::open(opts.url.as_str()).map_err(|e| {
            Error::bad_request(ERROR_ID, format!("{shown:?} is not a Redis URL: {e}"))
        })?;
        let label = match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("redis at {host}:{port}"),
            _ => format!("redis at {shown}"),
        };
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                opts,
                client,
                label,
                conn: RwLock::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                subs: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The broker for the environment: [`RedisOptions::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(RedisOptions::from_env()?)
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        if let Some(conn) = self.inner.current() {
            return Ok(conn);
        }
        self.connect().await?;
        self.inner
            .current()
            .ok_or_else(|| unavailable(&self.inner.label, "disconnected meanwhile".to_string()))
    }

    /// `<prefix>stream:<topic>`.
    fn stream_key(&self, topic: &str) -> String {
        format!("{}stream:{topic}", self.inner.opts.key_prefix)
    }

    async fn subscribe_pubsub(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
        cmd: ConnectionManager,
        token: CancellationToken,
    ) -> Result<()> {
        let inner = &self.inner;
        let pubsub = open_pubsub(&inner.client, topic, inner.opts.connect_timeout)
            .await
            .map_err(|e| unavailable(&inner.label, format!("subscribing to {topic:?}: {e}")))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(read_pubsub(
            pubsub,
            inner.client.clone(),
            inner.label.clone(),
            topic.to_string(),
            inner.opts.connect_timeout,
            tx,
            token.clone(),
        ));
        tokio::spawn(
            PubSubWorker {
                cmd,
                label: inner.label.clone(),
                topic: topic.to_string(),
                claim_prefix: format!("{}claim:{topic}:", inner.opts.key_prefix),
                queue: opts.queue,
                claim_ttl: inner.opts.claim_ttl,
                max_message_size: inner.opts.max_message_size,
                limits: inner.opts.header_limits,
                handler,
                token,
            }
            .run(rx),
        );
        Ok(())
    }
}

/// A 503 that names the server.
pub(crate) fn unavailable(label: &str, detail: String) -> Error {
    Error::new(ERROR_ID, 503, format!("{label}: {detail}"))
}

#[async_trait::async_trait]
impl Broker for RedisBroker {
    fn name(&self) -> &str {
        "redis"
    }

    fn address(&self) -> String {
        redacted(&self.inner.opts.url)
    }

    async fn connect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.inner.current().is_some() {
            return Ok(());
        }
        let label = &self.inner.label;
        let timeout = self.inner.opts.connect_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            ConnectionManager::new_with_config(self.inner.client.clone(), config),
        )
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
        let mut conn = made.map_err(|e| {
            unavailable(
                label,
                format!(
                    "cannot connect: {e} (is redis-server running there? e.g. \
                     `redis-server --bind 127.0.0.1 --daemonize yes`)"
                ),
            )
        })?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| unavailable(label, format!("PING failed: {e}")))?;
        self.inner.set(Some(conn));
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let subs: Vec<Arc<SubControl>> = self.inner.subs().drain().map(|(_, s)| s).collect();
        futures_util::future::join_all(subs.iter().map(|s| s.end())).await;
        self.inner.set(None);
        Ok(())
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                "cannot publish to an empty topic",
            ));
        }
        let mut msg = msg;
        if msg.header.get(micro_core::headers::ID).is_none() {
            // Queue-group members of pub/sub mode share messages by their id (Go Micro's
            // publisher always sets one too).
            msg.header.insert(
                micro_core::headers::ID,
                uuid::Uuid::new_v4().hyphenated().to_string(),
            );
        }
        let payload = wire::encode(&msg);
        // The payload, not the body: what subscribers measure against the same limit.
        let max = self.inner.opts.max_message_size;
        if payload.len() > max {
            return Err(Error::payload_too_large(
                ERROR_ID,
                format!(
                    "the message to {topic} is {} bytes as Go Micro's envelope ({} bytes of \
                     body), more than the {max} allowed (MICRO_REDIS_MAX_MESSAGE_SIZE)",
                    payload.len(),
                    msg.body.len()
                ),
            ));
        }
        let mut conn = self.conn().await?;
        let sent = match self.inner.opts.mode {
            Mode::PubSub => redis::cmd("PUBLISH")
                .arg(topic)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map(|_| ()),
            Mode::Streams => redis::cmd("XADD")
                .arg(self.stream_key(topic))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.inner.opts.streams.max_len)
                .arg("*")
                .arg(streams::FIELD)
                .arg(payload)
                .query_async::<redis::Value>(&mut conn)
                .await
                .map(|_| ()),
        };
        sent.map_err(|e| unavailable(&self.inner.label, format!("publishing to {topic}: {e}")))
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
        let cmd = self.conn().await?;
        let token = CancellationToken::new();
        let own_group = match self.inner.opts.mode {
            Mode::PubSub => {
                self.subscribe_pubsub(topic, handler, opts, cmd, token.clone())
                    .await?;
                None
            }
            Mode::Streams => {
                let inner = &self.inner;
                let key = self.stream_key(topic);
                let consumer = uuid::Uuid::new_v4().simple().to_string();
                let (group, own) = match opts.queue {
                    Some(q) => (q, false),
                    None => (format!("sub-{consumer}"), true),
                };
                let sub = StreamSub {
                    client: inner.client.clone(),
                    cmd: cmd.clone(),
                    label: inner.label.clone(),
                    topic: topic.to_string(),
                    key: key.clone(),
                    group: group.clone(),
                    consumer,
                    own_group: own,
                    handler,
                    auto_ack: opts.auto_ack,
                    opts: inner.opts.streams.clone(),
                    connect_timeout: inner.opts.connect_timeout,
                    max_message_size: inner.opts.max_message_size,
                    limits: inner.opts.header_limits,
                    token: token.clone(),
                };
                let reader = sub.start().await?;
                tokio::spawn(sub.run(reader));
                own.then_some((cmd, key, group))
            }
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(SubControl {
            token,
            own_group,
            label: self.inner.label.clone(),
        });
        self.inner.subs().insert(id, control.clone());
        Ok(Box::new(RedisSubscription {
            topic: topic.to_string(),
            id,
            broker: Arc::downgrade(&self.inner),
            control,
        }))
    }
}

/// A pub/sub connection subscribed to `topic` (the server confirmed it).
async fn open_pubsub(
    client: &redis::Client,
    topic: &str,
    timeout: Duration,
) -> std::result::Result<PubSub, String> {
    let opened = tokio::time::timeout(timeout, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(topic).await?;
        Ok::<_, redis::RedisError>(pubsub)
    })
    .await;
    match opened {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// Moves received messages to the worker until cancelled; subscribes again (with backoff)
/// whenever the connection is lost.
async fn read_pubsub(
    mut pubsub: PubSub,
    client: redis::Client,
    label: String,
    topic: String,
    timeout: Duration,
    tx: mpsc::Sender<redis::Msg>,
    token: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                let next = tokio::select! {
                    biased;
                    _ = token.cancelled() => return,
                    next = messages.next() => next,
                };
                let Some(msg) = next else { break };
                backoff.reset();
                if tx.try_send(msg).is_err() {
                    tracing::warn!(topic = %topic, "{label}: the subscriber is {QUEUE} messages behind; dropped a message");
                }
            }
        }
        tracing::warn!(topic = %topic, "{label}: the subscription's connection was lost; subscribing again");
        loop {
            if !pause(&token, backoff.next_delay()).await {
                return;
            }
            match open_pubsub(&client, &topic, timeout).await {
                Ok(p) => {
                    tracing::info!(topic = %topic, "{label}: subscribed again");
                    pubsub = p;
                    break;
                }
                Err(e) => tracing::warn!(topic = %topic, error = %e, "{label}: subscribing again"),
            }
        }
    }
}

/// Decodes and hands pub/sub messages to the handler, one at a time.
struct PubSubWorker {
    cmd: ConnectionManager,
    label: String,
    topic: String,
    /// `<prefix>claim:<topic>:`; the group and message id follow.
    claim_prefix: String,
    queue: Option<String>,
    claim_ttl: Duration,
    max_message_size: usize,
    limits: micro_core::MetadataLimits,
    handler: Handler,
    token: CancellationToken,
}

impl PubSubWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<redis::Msg>) {
        while let Some(msg) = rx.recv().await {
            if self.token.is_cancelled() {
                break;
            }
            let payload = msg.get_payload_bytes();
            if payload.len() > self.max_message_size {
                tracing::warn!(topic = %self.topic, size = payload.len(), "{}: dropped a message larger than {} bytes (MICRO_REDIS_MAX_MESSAGE_SIZE)", self.label, self.max_message_size);
                continue;
            }
            let message = match wire::decode(payload, self.limits) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "{}: dropped a message", self.label);
                    continue;
                }
            };
            if !self.claimed(&message).await {
                continue;
            }
            let delivery = Delivery::new(msg.get_channel_name(), message, None);
            if let Err(e) = call_handler(&self.handler, delivery).await {
                tracing::warn!(topic = %self.topic, error = %e, "subscriber failed; Redis pub/sub does not redeliver");
            }
        }
    }

    /// Whether this member of its queue group handles `message`: the first member to set the
    /// claim key of the message's id does. Without a group, or without an id to share it by
    /// (Go Micro's behaviour for every queue group), every subscriber handles it.
    async fn claimed(&mut self, message: &Message) -> bool {
        let (Some(group), Some(id)) = (&self.queue, message.header.get(micro_core::headers::ID))
        else {
            return true;
        };
        let key = format!("{}{group}:{id}", self.claim_prefix);
        let ttl_ms = u64::try_from(self.claim_ttl.as_millis()).unwrap_or(u64::MAX);
        let set = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<redis::Value>(&mut self.cmd)
            .await;
        match set {
            Ok(redis::Value::Nil) => false,
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "{}: cannot claim a message for queue group {group}; left to the other members", self.label);
                false
            }
        }
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

/// Ends one subscription, from its handle or from disconnect.
struct SubControl {
    token: CancellationToken,
    /// Streams mode, a subscriber without a queue group: its own consumer group, destroyed
    /// when it ends.
    own_group: Option<(ConnectionManager, String, String)>,
    label: String,
}

impl fmt::Debug for SubControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubControl")
            .field("cancelled", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl SubControl {
    async fn end(&self) {
        // The loops check the token before each handler call, so no delivery starts after this.
        self.token.cancel();
        if let Some((cmd, key, group)) = &self.own_group {
            let mut cmd = cmd.clone();
            let destroyed = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(key)
                .arg(group)
                .query_async::<i64>(&mut cmd)
                .await;
            if let Err(e) = destroyed {
                tracing::warn!(stream = %key, group = %group, error = %e, "{}: removing the subscriber's consumer group", self.label);
            }
        }
    }
}

#[derive(Debug)]
struct RedisSubscription {
    topic: String,
    id: u64,
    broker: std::sync::Weak<Inner>,
    control: Arc<SubControl>,
}

#[async_trait::async_trait]
impl Subscription for RedisSubscription {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn unsubscribe(&self) -> Result<()> {
        if let Some(inner) = self.broker.upgrade() {
            inner.subs().remove(&self.id);
        }
        self.control.end().await;
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
    fn urls_are_checked_up_front() {
        for bad in [
            "rediss://127.0.0.1:6379",
            "http://127.0.0.1/",
            "redis://[::1",
        ] {
            let err = RedisBroker::new(RedisOptions {
                url: bad.into(),
                ..Default::default()
            })
            .expect_err(bad);
            assert_eq!(err.code, 400, "{err}");
        }
    }

    #[tokio::test]
    async fn nothing_is_contacted_before_connect() {
        // Port 1 on loopback: nobody listens there.
        let broker = RedisBroker::new(RedisOptions {
            connect_timeout: Duration::from_millis(500),
            ..RedisOptions::from_address("redis://app:hunter2@127.0.0.1:1")
        })
        .expect("made without a server");
        assert_eq!(broker.name(), "redis");
        assert_eq!(broker.address(), "redis://app:***@127.0.0.1:1");
        assert!(!format!("{broker:?}").contains("hunter2"));
        let err = broker.connect().await.expect_err("nobody there");
        assert_eq!(err.code, 503, "{err}");
        assert!(err.detail.starts_with("redis at 127.0.0.1:1: "), "{err}");
        assert!(!err.detail.contains("hunter2"), "{err}");
        let err = broker
            .publish("t", Message::default())
            .await
            .expect_err("publish connects first");
        assert_eq!(err.code, 503, "{err}");
    }

    #[tokio::test]
    async fn bad_publishes_are_refused_before_anything_is_sent() {
        let broker = RedisBroker::new(RedisOptions {
            max_message_size: 10,
            ..RedisOptions::from_address("127.0.0.1:1")
        })
        .expect("broker");
        let big = Message {
            body: vec![0u8; 11].into(),
            ..Default::default()
        };
        let err = broker.publish("t", big).await.expect_err("too large");
        assert_eq!(err.code, 413, "{err}");
        let err = broker
            .publish("", Message::default())
            .await
            .expect_err("no topic");
        assert_eq!(err.code, 400, "{err}");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_an_error() {
        let handler: Handler = Arc::new(|_d| Box::pin(async { panic!("boom") }));
        let err = call_handler(&handler, Delivery::new("t", Message::default(), None))
            .await
            .expect_err("panicked");
        assert!(err.detail.contains("boom"), "{}", err.detail);
    }
}
