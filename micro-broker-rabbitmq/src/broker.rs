//! [`RabbitBroker`]: the connection supervisor, the publisher and the subscription runners.
//!
//! One AMQP connection per broker value. A supervisor task owns it: it notices when the
//! connection is gone (the connection's state, its error events, or a nudge from a publisher or
//! consumer that failed), reconnects with a doubling, capped pause, and publishes each new
//! connection on a `watch` channel. Publishers use one confirm-mode channel of the current
//! connection; every subscription has a task of its own that waits for a live connection, opens
//! a channel, declares and binds its queue, consumes until the channel ends, and starts over.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use micro_core::broker::dead_letter::{self, PoisonPolicy, Reason};
use micro_core::broker::{
    Acknowledger, Delivery, Handler, Message, SubscribeOptions, Subscription,
};
use micro_core::{BoxFuture, Broker, Error, Result};
use tokio::sync::{oneshot, watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::headers;
use crate::options::{QueueNaming, RabbitOptions, UrlParts};
use crate::ERROR_ID;

/// How often the supervisor looks at the connection's state when nothing else woke it.
const POLL: Duration = Duration::from_millis(250);
/// How long disconnect and unsubscribe wait for tasks to finish and channels to close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// The heartbeat interval asked for unless the URL names one, in seconds.
const HEARTBEAT_SECS: u16 = 10;
/// The name RabbitMQ shows for our connections (`rabbitmqctl list_connections client_properties`).
const CONNECTION_NAME: &str = "micro-rabbitmq";
/// The header in which the broker counts the deliveries of a message it republished.
const DELIVERIES_HEADER: &str = "Micro-Deliveries";
/// The header that carries a republished message's topic (Micro's publisher sets it too).
const TOPIC_HEADER: &str = "Micro-Topic";
/// What to tell a person when RabbitMQ cannot be reached.
const START_HINT: &str =
    "is RabbitMQ running and reachable there? (start a local one with `rabbitmq-server -detached`)";

tokio::task_local! {
    /// The subscription whose handler is running on this task, so that a handler that
    /// unsubscribes its own subscription does not wait for itself.
    static RUNNING_SUBSCRIPTION: u64;
}

/// A [`Broker`] on RabbitMQ (name `rabbitmq`), Go Micro's layout: a topic exchange (`micro`),
/// routing key = topic, one shared durable queue per queue group and one exclusive server-named
/// queue per other subscriber. See the [crate docs](crate) for the semantics.
///
/// Clones share one connection. When the last clone is dropped the connection and every
/// subscription end, as after [`disconnect`](Broker::disconnect).
#[derive(Clone)]
pub struct RabbitBroker {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

/// Ends the session when the last [`RabbitBroker`] clone goes: the background tasks hold the
/// shared state, so without this they would keep the connection open forever.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Ok(session) = self.0.session.try_lock() {
            if let Some(s) = session.as_ref() {
                s.token.cancel();
            }
        }
    }
}

struct Inner {
    opts: RabbitOptions,
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    exchange: ShortString,
    /// `host:port`.
    address: String,
    /// `rabbitmq at host:port` (and the vhost unless `/`): how every error starts.
    label: String,
    session: Mutex<Option<Session>>,
    link: watch::Sender<Link>,
    /// Wakes the supervisor to look at the connection now (someone saw it fail).
    nudge: Notify,
    connections: AtomicU64,
    next_subscription: AtomicU64,
}

/// What exists between `connect` and `disconnect`.
struct Session {
    token: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Clone)]
enum Link {
    /// The connection was lost and the supervisor is reconnecting.
    Down,
    Up(Arc<Live>),
    /// Not connected (never, or disconnected).
    Closed,
}

/// One AMQP connection and its publishing channel.
struct Live {
    conn: Connection,
    /// 1 for the first connection, 2 after the first reconnect, ...
    number: u64,
    publisher: Mutex<Option<Channel>>,
}

impl fmt::Debug for RabbitBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitBroker")
            .field("address", &self.inner.address)
            .field("vhost", &self.inner.uri.vhost)
            .field("exchange", &self.inner.opts.exchange)
            .field(
                "connections",
                &self.inner.connections.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl RabbitBroker {
    /// A broker with these options. It checks them (URL, exchange name, TLS CA file) but does
    /// not contact RabbitMQ: [`connect`](Broker::connect) does, and so does the first publish or
    /// subscribe.
    pub fn new(opts: RabbitOptions) -> Result<Self> {
        let parts = UrlParts::split(&opts.url).ok_or_else(|| {
            Error::bad_request(
                ERROR_ID,
                format!(
                    "rabbitmq: {:?} is not an AMQP URL: expected amqp://user:password@host:port/vhost or host:port",
                    crate::options::redacted(&opts.url)
                ),
            )
        })?;
        let host = parts.host().to_string();
        let mut uri: AMQPUri = opts.url.parse().map_err(|e| {
            Error::bad_request(
                ERROR_ID,
                format!(
                    "rabbitmq: {:?} is not an AMQP URL: {e}",
                    crate::options::redacted(&opts.url)
                ),
            )
        })?;
        // The AMQP URI parser turns IP hosts into `localhost`; keep the host as written.
        if !host.is_empty() {
            uri.authority.host = host.clone();
        }
        // `amqp://host/` names the vhost "" by the AMQP URI rules; nobody means that.
        if uri.vhost.is_empty() {
            uri.vhost = "/".to_string();
        }
        // Go Micro's heartbeat: a silently dead peer is noticed within about 20 s rather than
        // the server's default of 60 s (a `?heartbeat=` in the URL wins).
        uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
        let address = if host.contains(':') {
            format!("[{host}]:{}", uri.authority.port)
        } else {
            format!("{}:{}", uri.authority.host, uri.authority.port)
        };
        let label = if uri.vhost == "/" {
            format!("rabbitmq at {address}")
        } else {
            format!("rabbitmq at {address}, vhost {:?}", uri.vhost)
        };
        let exchange = ShortString::try_new(opts.exchange.as_str()).map_err(|_| {
            Error::bad_request(
                ERROR_ID,
                format!("{label}: the exchange name is longer than 255 bytes"),
            )
        })?;
        if opts.exchange.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                format!("{label}: the exchange name is empty; the default (nameless) exchange cannot route by topic"),
            ));
        }
        if let PoisonPolicy::DeadLetter(dlx) = &opts.dead_letter {
            if dlx.is_empty()
                || dlx.contains("{topic}")
                || ShortString::try_new(dlx.as_str()).is_err()
            {
                return Err(Error::bad_request(
                    ERROR_ID,
                    format!("{label}: the dead-letter exchange {dlx:?} must be one name of 1 to 255 bytes (no {{topic}})"),
                ));
            }
        }
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: match &opts.tls_ca_file {
                Some(path) => Some(read_pem(&label, path)?),
                None => None,
            },
        };
        let inner = Arc::new(Inner {
            opts,
            uri,
            tls,
            exchange,
            address,
            label,
            session: Mutex::new(None),
            link: watch::channel(Link::Closed).0,
            nudge: Notify::new(),
            connections: AtomicU64::new(0),
            next_subscription: AtomicU64::new(1),
        });
        Ok(RabbitBroker {
            _owner: Arc::new(Owner(inner.clone())),
            inner,
        })
    }

    /// A broker configured by the environment (see [`RabbitOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(RabbitOptions::from_env()?)
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &RabbitOptions {
        &self.inner.opts
    }

    /// How many times this broker has opened a connection: 1 after connecting, one more per
    /// reconnect. For health checks and metrics.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Whether the broker has a working connection right now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.link.borrow(), Link::Up(l) if l.conn.status().connected())
    }
}

fn read_pem(label: &str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::bad_request(
            ERROR_ID,
            format!(
                "{label}: cannot read the TLS CA file {}: {e}",
                path.display()
            ),
        )
    })
}

#[async_trait::async_trait]
impl Broker for RabbitBroker {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn address(&self) -> String {
        self.inner.address.clone()
    }

    async fn connect(&self) -> Result<()> {
        self.inner.session().await.map(|_| ())
    }

    async fn disconnect(&self) -> Result<()> {
        let Some(session) = self.inner.session.lock().await.take() else {
            return Ok(());
        };
        session.token.cancel();
        session.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, session.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(broker = %self.inner.label, "subscriptions did not stop within {SHUTDOWN_WAIT:?}; closing the connection under them");
        }
        if let Link::Up(live) = self.inner.link.send_replace(Link::Closed) {
            let closing = live.conn.close(200, "micro broker disconnect".into());
            match tokio::time::timeout(SHUTDOWN_WAIT, closing).await {
                Ok(Ok(())) => {}
                // Already closed by the server, or slow: dropping it closes it either way.
                Ok(Err(e)) => {
                    tracing::debug!(broker = %self.inner.label, error = %e, "closing the connection")
                }
                Err(_) => {
                    tracing::debug!(broker = %self.inner.label, "closing the connection timed out")
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        self.inner.publish(topic, msg).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        Inner::subscribe(&self.inner, topic, handler, opts).await
    }
}

impl Inner {
    fn unavailable(&self, detail: impl fmt::Display) -> Error {
        Error::new(ERROR_ID, 503, format!("{}: {detail}", self.label))
    }

    fn bad_request(&self, detail: impl fmt::Display) -> Error {
        Error::bad_request(ERROR_ID, format!("{}: {detail}", self.label))
    }

    /// The routing key for `topic`; AMQP limits it to 255 bytes.
    fn routing_key(&self, topic: &str) -> Result<ShortString> {
        if topic.is_empty() {
            return Err(self.bad_request("the topic is empty"));
        }
        ShortString::try_new(topic).map_err(|_| {
            self.bad_request(format!(
                "topic {:?}... is {} bytes; AMQP routing keys hold 255 at most",
                headers::truncate(topic, 40),
                topic.len()
            ))
        })
    }

    /// The shared queue of queue group `group` on `topic`.
    fn group_queue(&self, topic: &str, group: &str) -> Result<ShortString> {
        let name = match self.opts.queue_naming {
            QueueNaming::Scoped => format!("{}.{topic}.{group}", self.opts.exchange),
            QueueNaming::Bare => group.to_string(),
        };
        ShortString::try_new(name.as_str()).map_err(|_| {
            self.bad_request(format!(
                "the queue of group {group:?} on topic {topic:?} would be named with {} bytes; AMQP allows 255 (shorten the topic or group, or use bare queue names)",
                name.len()
            ))
        })
    }

    /// The current session, connecting first when there is none.
    async fn session(self: &Arc<Self>) -> Result<(CancellationToken, TaskTracker)> {
        let mut guard = self.session.lock().await;
        if let Some(s) = &*guard {
            return Ok((s.token.clone(), s.tasks.clone()));
        }
        let live = self.open().await?;
        tracing::info!(broker = %self.label, exchange = %self.opts.exchange, "connected");
        let session = Session {
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        self.link.send_replace(Link::Up(live.clone()));
        session
            .tasks
            .spawn(Arc::clone(self).supervise(session.token.clone(), live));
        let out = (session.token.clone(), session.tasks.clone());
        *guard = Some(session);
        Ok(out)
    }

    /// Opens a connection, declares the exchange and readies the publishing channel.
    async fn open(&self) -> Result<Arc<Live>> {
        let props = ConnectionProperties::default().with_connection_name(CONNECTION_NAME.into());
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| self.unavailable(format!("no async runtime for lapin: {e}")))?;
        let connecting =
            Connection::connect_uri_with_config(self.uri.clone(), props, self.tls.clone(), runtime);
        let conn = match tokio::time::timeout(self.opts.connect_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(self.unavailable(format!("cannot connect: {e}; {START_HINT}")));
            }
            Err(_) => {
                return Err(self.unavailable(format!(
                    "cannot connect within {:?}; {START_HINT}",
                    self.opts.connect_timeout
                )));
            }
        };
        tokio::time::timeout(self.opts.connect_timeout, self.declare_layout(&conn))
            .await
            .map_err(|_| self.unavailable("declaring the exchanges timed out"))??;
        let channel =
            tokio::time::timeout(self.opts.connect_timeout, self.publishing_channel(&conn))
                .await
                .map_err(|_| self.unavailable("opening the publishing channel timed out"))??;
        let number = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(Live {
            conn,
            number,
            publisher: Mutex::new(Some(channel)),
        }))
    }

    /// A channel in confirm mode (unless confirms are off).
    async fn publishing_channel(&self, conn: &Connection) -> Result<Channel> {
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| self.unavailable(format!("cannot open a channel: {e}")))?;
        if self.opts.confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| self.unavailable(format!("cannot turn on publisher confirms: {e}")))?;
        }
        Ok(channel)
    }

    /// The dead-letter exchange, unless the policy is block.
    fn dead_letter_exchange(&self) -> Option<ShortString> {
        match &self.opts.dead_letter {
            // Checked in `new` to fit.
            PoisonPolicy::DeadLetter(name) => ShortString::try_new(name.as_str()).ok(),
            PoisonPolicy::Block => None,
        }
    }

    /// Declares the topic exchange, and the dead-letter exchange and queue, each on a channel
    /// of its own: RabbitMQ closes the channel of a declaration it refuses.
    async fn declare_layout(&self, conn: &Connection) -> Result<()> {
        self.declare_exchange(conn, &self.exchange, self.opts.durable_exchange)
            .await?;
        let Some(dlx) = self.dead_letter_exchange() else {
            return Ok(());
        };
        self.declare_exchange(conn, &dlx, true).await?;
        let Some(queue) = &self.opts.dead_letter_queue else {
            return Ok(());
        };
        let queue = ShortString::try_new(queue.as_str())
            .map_err(|_| self.bad_request("the dead-letter queue name is longer than 255 bytes"))?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let (channel, _) = self
            .declare_queue(conn, &queue, durable, FieldTable::default())
            .await?;
        let bound = channel
            .queue_bind(
                queue.clone(),
                dlx.clone(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "declared".into()).await;
        bound.map_err(|e| {
            Error::internal(
                ERROR_ID,
                format!(
                    "{}: cannot bind the dead-letter queue {queue} to the exchange {dlx}: {e}",
                    self.label
                ),
            )
        })
    }

    /// Declares topic exchange `name`; one that exists with another durability (declared by
    /// Go Micro, say) is used as it is.
    async fn declare_exchange(
        &self,
        conn: &Connection,
        name: &ShortString,
        durable: bool,
    ) -> Result<()> {
        let open = || async {
            conn.create_channel()
                .await
                .map_err(|e| self.unavailable(format!("cannot open a channel: {e}")))
        };
        let declare = |channel: Channel, passive: bool| async move {
            let options = ExchangeDeclareOptions {
                durable,
                passive,
                ..ExchangeDeclareOptions::default()
            };
            let done = channel
                .exchange_declare(
                    name.clone(),
                    ExchangeKind::Topic,
                    options,
                    FieldTable::default(),
                )
                .await;
            if done.is_ok() {
                let _ = channel.close(200, "declared".into()).await;
            }
            done
        };
        let refused = |e: lapin::Error| {
            Error::internal(
                ERROR_ID,
                format!(
                    "{}: cannot declare the topic exchange {name} (durable: {durable}): {e}; pick another exchange, or check the user's permissions",
                    self.label
                ),
            )
        };
        match declare(open().await?, false).await {
            Ok(()) => Ok(()),
            Err(e) if precondition_failed(&e) => {
                declare(open().await?, true).await.map_err(refused)?;
                tracing::warn!(broker = %self.label, exchange = %name, durable, "the exchange exists with other settings (a Go Micro service may have declared it; MICRO_RABBITMQ_DURABLE_EXCHANGE): using it as it is");
                Ok(())
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// Declares queue `name` with `arguments` on a new channel, returned for what comes next.
    /// A queue that exists with other arguments (one Go Micro declared, or one from before
    /// dead-lettering) is used as it is, with a warning.
    async fn declare_queue(
        &self,
        conn: &Connection,
        name: &ShortString,
        options: QueueDeclareOptions,
        arguments: FieldTable,
    ) -> Result<(Channel, ShortString)> {
        let open = || async {
            conn.create_channel()
                .await
                .map_err(|e| self.unavailable(format!("cannot open a channel: {e}")))
        };
        let refused = |e: lapin::Error| {
            let detail = format!("{}: cannot declare the queue {name}: {e}", self.label);
            if e.is_amqp_soft_error() {
                Error::internal(ERROR_ID, detail)
            } else {
                Error::new(ERROR_ID, 503, detail)
            }
        };
        let channel = open().await?;
        match channel
            .queue_declare(name.clone(), options, arguments)
            .await
        {
            Ok(queue) => Ok((channel, queue.name().clone())),
            Err(e) if precondition_failed(&e) && !name.as_str().is_empty() => {
                let channel = open().await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..options
                };
                channel
                    .queue_declare(name.clone(), passive, FieldTable::default())
                    .await
                    .map_err(refused)?;
                tracing::warn!(broker = %self.label, queue = %name, error = %e, "the queue exists with other arguments (a Go Micro group's queue, or one declared before dead-lettering): using it as it is; RabbitMQ's own rejects from it are not dead-lettered, the broker's are");
                Ok((channel, name.clone()))
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// Keeps a connection up until the session ends.
    async fn supervise(self: Arc<Self>, token: CancellationToken, mut live: Arc<Live>) {
        loop {
            let reason = tokio::select! {
                _ = token.cancelled() => return,
                reason = self.until_lost(&live) => reason,
            };
            let lost = live.number;
            self.link.send_if_modified(|link| match link {
                Link::Up(l) if l.number == lost => {
                    *link = Link::Down;
                    true
                }
                _ => false,
            });
            tracing::warn!(broker = %self.label, %reason, "connection lost; reconnecting");
            let since = Instant::now();
            let mut pause = self.opts.reconnect_min;
            let mut attempt = 0u32;
            live = loop {
                attempt += 1;
                let opened = tokio::select! {
                    _ = token.cancelled() => return,
                    opened = self.open() => opened,
                };
                match opened {
                    Ok(new) => break new,
                    Err(e) => {
                        tracing::warn!(broker = %self.label, attempt, retry_in = ?pause, error = %e.detail, "reconnect failed");
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause =
                            (pause * 2).min(self.opts.reconnect_max.max(self.opts.reconnect_min));
                    }
                }
            };
            if token.is_cancelled() {
                return;
            }
            tracing::info!(broker = %self.label, attempts = attempt, down_for = ?since.elapsed(), "reconnected; subscriptions resume");
            self.link.send_replace(Link::Up(live.clone()));
        }
    }

    /// Returns why the connection is no longer usable, once it is not.
    async fn until_lost(&self, live: &Live) -> String {
        let mut events = live.conn.events_listener();
        loop {
            let status = live.conn.status();
            if !status.connected() {
                return if status.errored() {
                    "the connection failed".to_string()
                } else {
                    "the connection was closed".to_string()
                };
            }
            tokio::select! {
                event = events.next() => match event {
                    // Channel errors arrive here too; the state above tells whether the
                    // connection itself went.
                    Some(lapin::Event::Error(e)) => tracing::debug!(broker = %self.label, error = %e, "connection event"),
                    Some(_) => {}
                    None => return "the connection's event stream ended".to_string(),
                },
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// The live connection, waiting for one until `deadline` (None: until the session ends).
    async fn live(&self, deadline: Option<tokio::time::Instant>) -> Result<Arc<Live>> {
        let mut link = self.link.subscribe();
        loop {
            let current = link.borrow_and_update().clone();
            match current {
                Link::Up(l) if l.conn.status().connected() => return Ok(l),
                // Up but dead: the supervisor has not noticed yet.
                Link::Up(_) => self.nudge.notify_one(),
                Link::Down => {}
                Link::Closed => return Err(self.unavailable("not connected (disconnected)")),
            }
            let changed = link.changed();
            match deadline {
                None => {
                    if changed.await.is_err() {
                        return Err(self.unavailable("the broker is gone"));
                    }
                }
                Some(at) => match tokio::time::timeout_at(at, changed).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(self.unavailable("the broker is gone")),
                    Err(_) => {
                        return Err(self.unavailable(format!(
                            "not connected: the connection was lost and reconnecting has not succeeded within {:?}",
                            self.opts.publish_timeout
                        )))
                    }
                },
            }
        }
    }

    async fn publish(self: &Arc<Self>, topic: &str, msg: Message) -> Result<()> {
        let routing_key = self.routing_key(topic)?;
        if msg.body.len() > self.opts.max_message_size {
            return Err(Error::payload_too_large(
                ERROR_ID,
                format!(
                    "{}: the message to topic {topic:?} is {} bytes; the limit is {} (MICRO_RABBITMQ_MAX_MESSAGE_SIZE; RabbitMQ's own max_message_size applies too)",
                    self.label,
                    msg.body.len(),
                    self.opts.max_message_size
                ),
            ));
        }
        let props = headers::to_properties(&msg.header, self.opts.persistent)
            .map_err(|e| self.bad_request(format!("cannot publish to topic {topic:?}: {e}")))?;
        self.send(
            self.exchange.clone(),
            routing_key,
            &msg.body,
            props,
            self.opts.mandatory,
        )
        .await
    }

    async fn subscribe(
        self: &Arc<Self>,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let routing_key = self.routing_key(topic)?;
        let queue = match opts.queue.as_deref().filter(|q| !q.is_empty()) {
            Some(group) => Some(self.group_queue(topic, group)?),
            None => None,
        };
        let (token, tasks) = self.session().await?;
        let spec = Arc::new(SubscriptionSpec {
            id: self.next_subscription.fetch_add(1, Ordering::Relaxed),
            topic: topic.to_string(),
            routing_key,
            group: opts.queue.clone().filter(|q| !q.is_empty()),
            queue,
            auto_ack: opts.auto_ack,
            handler,
        });
        let stop = token.child_token();
        let (ready_tx, ready_rx) = oneshot::channel();
        let runner = tasks.spawn(Arc::clone(self).run(spec.clone(), stop.clone(), ready_tx));
        let patience = self.opts.connect_timeout + self.opts.publish_timeout;
        let started = match tokio::time::timeout(patience, ready_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.unavailable(format!(
                "the subscription to {topic:?} ended before it started (disconnected?)"
            ))),
            Err(_) => Err(self.unavailable(format!(
                "the subscription to {topic:?} did not start within {patience:?}"
            ))),
        };
        if let Err(e) = started {
            stop.cancel();
            return Err(e);
        }
        Ok(Box::new(RabbitSubscription {
            id: spec.id,
            topic: spec.topic.clone(),
            stop,
            runner: std::sync::Mutex::new(Some(runner)),
        }))
    }

    /// One subscription, across reconnects, until unsubscribed or disconnected.
    async fn run(
        self: Arc<Self>,
        spec: Arc<SubscriptionSpec>,
        stop: CancellationToken,
        ready: oneshot::Sender<Result<()>>,
    ) {
        let mut ready = Some(ready);
        let mut pause = self.opts.reconnect_min;
        loop {
            let live = tokio::select! {
                _ = stop.cancelled() => return,
                live = self.live(None) => live,
            };
            let live = match live {
                Ok(live) => live,
                Err(e) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(e));
                    }
                    return;
                }
            };
            let opened = tokio::select! {
                _ = stop.cancelled() => return,
                opened = tokio::time::timeout(self.opts.connect_timeout, self.open_consumer(&live, &spec)) => opened,
            };
            let opened = opened.unwrap_or_else(|_| {
                Err(self.unavailable(format!("subscribing to {:?} timed out", spec.topic)))
            });
            match opened {
                Ok((channel, consumer, queue)) => {
                    match ready.take() {
                        Some(tx) => {
                            let _ = tx.send(Ok(()));
                        }
                        None => {
                            tracing::info!(broker = %self.label, topic = %spec.topic, queue = ?spec.group, "subscription resumed")
                        }
                    }
                    pause = self.opts.reconnect_min;
                    let ended = self
                        .consume(&spec, &queue, consumer, (&live, &channel), &stop)
                        .await;
                    match ended {
                        Ended::Stopped => {
                            // Unacknowledged deliveries go back to the queue with the channel.
                            let closing = channel.close(200, "micro unsubscribe".into());
                            let _ = tokio::time::timeout(SHUTDOWN_WAIT, closing).await;
                            return;
                        }
                        Ended::Lost(reason) => {
                            tracing::warn!(broker = %self.label, topic = %spec.topic, queue = ?spec.group, %reason, "subscription interrupted; resubscribing");
                            self.nudge.notify_one();
                        }
                    }
                }
                Err(e) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    tracing::warn!(broker = %self.label, topic = %spec.topic, queue = ?spec.group, retry_in = ?pause, error = %e.detail, "resubscribing failed");
                    self.nudge.notify_one();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(self.opts.reconnect_max.max(self.opts.reconnect_min));
                }
            }
        }
    }

    /// A channel with QoS, the subscription's queue declared and bound, and a consumer on it;
    /// and the queue's name (the server names a subscriber's own queue).
    async fn open_consumer(
        &self,
        live: &Live,
        spec: &SubscriptionSpec,
    ) -> Result<(Channel, Consumer, ShortString)> {
        let topic = &spec.topic;
        let fail = |what: &str, e: lapin::Error| {
            let detail = format!("subscribing to {topic:?}: {what}: {e}");
            if e.is_amqp_soft_error() {
                // The server refused (a queue of that name with other settings, permissions):
                // retrying will not help.
                Error::internal(ERROR_ID, format!("{}: {detail}", self.label))
            } else {
                self.unavailable(detail)
            }
        };
        let (name, options, arguments) = match &spec.queue {
            Some(name) => {
                let mut args = FieldTable::default();
                if let Some(expiry) = self.opts.queue_expiry {
                    let ms = u32::try_from(expiry.as_millis()).unwrap_or(u32::MAX).max(1);
                    args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
                }
                if let (true, Some(dlx)) =
                    (self.opts.dead_letter_arguments, self.dead_letter_exchange())
                {
                    args.insert(
                        "x-dead-letter-exchange".into(),
                        AMQPValue::LongString(dlx.as_str().into()),
                    );
                }
                let options = QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                };
                (name.clone(), options, args)
            }
            None => {
                let options = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                };
                (ShortString::default(), options, FieldTable::default())
            }
        };
        let (channel, queue) = self
            .declare_queue(&live.conn, &name, options, arguments)
            .await
            .map_err(|e| {
                Error::new(
                    ERROR_ID,
                    e.code,
                    format!("{} (subscribing to {topic:?})", e.detail),
                )
            })?;
        if self.opts.prefetch > 0 {
            channel
                .basic_qos(self.opts.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| fail("cannot set the prefetch", e))?;
        }
        channel
            .queue_bind(
                queue.clone(),
                self.exchange.clone(),
                spec.routing_key.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail("cannot bind the queue to the exchange", e))?;
        let consumer = channel
            .basic_consume(
                queue.clone(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail("cannot start consuming", e))?;
        Ok((channel, consumer, queue))
    }

    /// Hands deliveries to the handler one at a time, in queue order, until stopped or the
    /// channel ends. The channel and its connection are watched too: lapin does not always end
    /// a consumer's stream when the server closes the connection mid-delivery (seen with
    /// `rabbitmqctl stop_app`), and a consumer waiting on such a stream would never resume.
    async fn consume(
        self: &Arc<Self>,
        spec: &SubscriptionSpec,
        queue: &ShortString,
        mut consumer: Consumer,
        (live, channel): (&Live, &Channel),
        stop: &CancellationToken,
    ) -> Ended {
        let lost = async {
            while live.conn.status().connected() && channel.status().connected() {
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::pin!(lost);
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ended::Stopped,
                () = &mut lost => return Ended::Lost("the channel or its connection closed".to_string()),
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Ended::Lost(e.to_string()),
                None => return Ended::Lost("the consumer was cancelled".to_string()),
            };
            if stop.is_cancelled() {
                // Not handled and not acknowledged: it goes back to the queue with the channel.
                return Ended::Stopped;
            }
            self.handle(spec, queue, delivery, stop).await;
        }
    }

    async fn handle(
        self: &Arc<Self>,
        spec: &SubscriptionSpec,
        queue: &ShortString,
        delivery: lapin::message::Delivery,
        stop: &CancellationToken,
    ) {
        let header = match headers::from_properties(&delivery.properties, self.opts.header_limits) {
            Ok(h) => h,
            Err(e) => {
                // Requeueing it would only fail again. Rejected: a queue with a dead-letter
                // exchange passes it on there.
                tracing::warn!(broker = %self.label, routing_key = %delivery.routing_key, error = %e, "rejected a message");
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: false,
                };
                if let Err(e) = delivery.acker.nack(options).await {
                    tracing::debug!(broker = %self.label, error = %e, "rejecting a message failed");
                }
                return;
            }
        };
        // A message the broker republished to its queue came through the default exchange,
        // its routing key the queue's name; its topic rides in `Micro-Topic`.
        let republished = delivery.exchange.as_str().is_empty();
        let topic = match header.get(TOPIC_HEADER) {
            Some(t) if republished => t.to_string(),
            _ if delivery.routing_key.as_str().is_empty() => spec.topic.clone(),
            _ => delivery.routing_key.as_str().to_string(),
        };
        let message = Message {
            header,
            body: Bytes::from(delivery.data),
        };
        let acker = Arc::new(RabbitAcker {
            acker: delivery.acker,
            settled: AtomicBool::new(false),
            inner: self.clone(),
            topic: topic.clone(),
            group: spec.group.clone(),
            queue: queue.clone(),
            deliveries: deliveries(&delivery.properties),
            properties: delivery.properties,
            message: message.clone(),
        });
        let d = Delivery::new(
            topic.clone(),
            message,
            Some(acker.clone() as Arc<dyn Acknowledger>),
        );
        // A panicking handler is a failed handler; it must not take the consumer down.
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| (spec.handler)(d))) {
            Ok(future) => RUNNING_SUBSCRIPTION
                .scope(spec.id, AssertUnwindSafe(future).catch_unwind())
                .await
                .unwrap_or_else(|_| Err(Error::internal(ERROR_ID, "the handler panicked"))),
            Err(_) => Err(Error::internal(ERROR_ID, "the handler panicked")),
        };
        match (result, spec.auto_ack) {
            (Ok(()), true) => {
                if let Err(e) = acker.settle(true, false).await {
                    tracing::debug!(broker = %self.label, %topic, error = %e.detail, "ack failed; RabbitMQ will redeliver");
                }
            }
            (Err(e), true) => {
                tracing::warn!(broker = %self.label, %topic, queue = ?spec.group, error = %e, deliveries = acker.deliveries, "handler failed");
                if !acker.settled.load(Ordering::SeqCst) && !self.opts.requeue_delay.is_zero() {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(self.opts.requeue_delay) => {}
                    }
                }
                let why = format!("the handler failed {} times: {e}", acker.deliveries);
                if let Err(e) = acker.fail(true, &why).await {
                    tracing::warn!(broker = %self.label, %topic, error = %e.detail, "giving a failed message back failed; RabbitMQ will redeliver it");
                }
            }
            (Err(e), false) => {
                tracing::warn!(broker = %self.label, %topic, queue = ?spec.group, error = %e, "handler failed (manual ack: settling the message is the handler's job)");
            }
            (Ok(()), false) => {}
        }
    }

    /// Publishes one message and waits for RabbitMQ's confirm (bounded by the publish
    /// timeout). With `mandatory`, a message no queue takes is an error (404).
    async fn send(
        self: &Arc<Self>,
        exchange: ShortString,
        routing_key: ShortString,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        let topic = routing_key.as_str().to_string();
        self.session().await?;
        let deadline = tokio::time::Instant::now() + self.opts.publish_timeout;
        let live = self.live(Some(deadline)).await.map_err(|e| {
            Error::new(
                ERROR_ID,
                503,
                format!(
                    "{}; the message to topic {topic:?} was not published",
                    e.detail
                ),
            )
        })?;
        let failed = |what: &str, e: &dyn fmt::Display| {
            self.nudge.notify_one();
            self.unavailable(format!(
                "{what} to topic {topic:?}: {e}; the message may not have been published"
            ))
        };
        let channel = match tokio::time::timeout_at(deadline, live.channel(self)).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(failed("publishing", &"no channel in time")),
        };
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let sent = channel.basic_publish(exchange.clone(), routing_key, options, body, props);
        let confirm = match tokio::time::timeout_at(deadline, sent).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => return Err(failed("publishing", &e)),
            Err(_) => return Err(failed("publishing", &"timed out")),
        };
        if !self.opts.confirms {
            return Ok(());
        }
        let exchange = if exchange.as_str().is_empty() {
            "the default exchange".to_string()
        } else {
            format!("exchange {exchange}")
        };
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                Err(Error::not_found(
                    ERROR_ID,
                    format!(
                        "{}: no queue on {exchange} takes topic {topic:?}, so RabbitMQ returned the message unroutable ({} {}): nothing received it (subscribe first, or publish with mandatory off: MICRO_RABBITMQ_MANDATORY=false)",
                        self.label, returned.reply_code, returned.reply_text
                    ),
                ))
            }
            Ok(Ok(Confirmation::Nack(None))) => Err(Error::internal(
                ERROR_ID,
                format!(
                    "{}: RabbitMQ refused (nacked) the message to topic {topic:?}",
                    self.label
                ),
            )),
            Ok(Err(e)) => Err(failed("no confirm for the message", &e)),
            Err(_) => Err(failed(
                "no confirm for the message",
                &format!("none within {:?}", self.opts.publish_timeout),
            )),
        }
    }
}

/// Whether RabbitMQ refused a declaration because the thing exists with other settings.
fn precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 406)
}

/// Which delivery of its message this is (1 for the first): one more than the count the broker
/// wrote when it republished it, or than a quorum queue's `x-delivery-count`.
fn deliveries(props: &BasicProperties) -> u32 {
    let Some(table) = props.headers() else {
        return 1;
    };
    let count = |name: &str| -> u32 {
        match table.inner().get(name) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes())
                .trim()
                .parse()
                .unwrap_or(0),
            Some(AMQPValue::LongUInt(n)) => *n,
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(0),
            Some(AMQPValue::ShortShortInt(n)) => u32::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    };
    count(DELIVERIES_HEADER)
        .max(count("x-delivery-count"))
        .saturating_add(1)
}

impl Live {
    /// The publishing channel, reopened if it closed (a channel error closes only the channel).
    async fn channel(&self, inner: &Inner) -> Result<Channel> {
        let mut guard = self.publisher.lock().await;
        if let Some(channel) = guard.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let channel = inner.publishing_channel(&self.conn).await?;
        *guard = Some(channel.clone());
        Ok(channel)
    }
}

/// Why a consumer loop ended.
enum Ended {
    /// Unsubscribed or disconnected.
    Stopped,
    /// The channel or connection went: resubscribe.
    Lost(String),
}

/// What a subscription needs to start (and restart) its consumer.
struct SubscriptionSpec {
    id: u64,
    topic: String,
    routing_key: ShortString,
    /// The queue group as given.
    group: Option<String>,
    /// The group's queue; `None` for a server-named exclusive queue.
    queue: Option<ShortString>,
    auto_ack: bool,
    handler: Handler,
}

/// Settles one delivery; the first ack or nack wins, later ones do nothing.
/// A nack of a delivery that used up its budget (or one without requeue) dead-letters it.
struct RabbitAcker {
    acker: lapin::Acker,
    settled: AtomicBool,
    inner: Arc<Inner>,
    topic: String,
    group: Option<String>,
    /// The queue it came from, to republish it there.
    queue: ShortString,
    /// Which delivery of the message this is (1 for the first).
    deliveries: u32,
    properties: BasicProperties,
    message: Message,
}

impl fmt::Debug for RabbitAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitAcker")
            .field("settled", &self.settled.load(Ordering::Relaxed))
            .finish()
    }
}

impl RabbitAcker {
    async fn settle(&self, ack: bool, requeue: bool) -> Result<()> {
        if self.settled.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.send(ack, requeue).await
    }

    /// The message was not handled (`why`). Under block, or without a delivery limit, it is
    /// nacked (with `requeue`). Otherwise, with deliveries left and `requeue`, it is published
    /// again to its queue with its count raised, and acked once that is confirmed; else its dead
    /// letter is published to the dead-letter exchange, and it is acked once that is
    /// confirmed. When a publish fails the message is requeued: it comes back and is tried
    /// again.
    async fn fail(&self, requeue: bool, why: &str) -> Result<()> {
        if self.settled.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let inner = &self.inner;
        let limit = inner.opts.max_deliveries;
        let dlx = match inner.dead_letter_exchange() {
            Some(dlx) if !(requeue && limit == 0) => dlx,
            _ => return self.send(false, requeue).await,
        };
        let placed = if requeue && self.deliveries < limit {
            let mut props = self.properties.clone();
            let mut table = props.headers().clone().unwrap_or_default();
            table.insert(
                DELIVERIES_HEADER.into(),
                AMQPValue::LongString(self.deliveries.to_string().into()),
            );
            table.insert(
                TOPIC_HEADER.into(),
                AMQPValue::LongString(self.topic.as_str().into()),
            );
            props = props.with_headers(table);
            // Straight to its queue through the default exchange, mandatory: a queue that is
            // gone returns it, and then it is requeued instead.
            inner
                .send(
                    ShortString::default(),
                    self.queue.clone(),
                    &self.message.body,
                    props,
                    true,
                )
                .await
        } else {
            self.dead_letter(&dlx, why).await
        };
        match placed {
            Ok(()) => self.send(true, false).await,
            Err(e) => {
                tracing::warn!(broker = %inner.label, topic = %self.topic, error = %e.detail, "could not place a failed message (republish or dead letter); it goes back to its queue and is tried again");
                self.send(false, true).await?;
                Err(e)
            }
        }
    }

    async fn dead_letter(&self, dlx: &ShortString, why: &str) -> Result<()> {
        let inner = &self.inner;
        let mut letter = dead_letter::letter(
            &self.message,
            Reason {
                topic: &self.topic,
                queue: self.group.as_deref(),
                error: why,
                attempts: u64::from(self.deliveries),
            },
        );
        letter.header.remove(DELIVERIES_HEADER);
        let props = headers::to_properties(&letter.header, inner.opts.persistent)
            .map_err(|e| inner.bad_request(format!("cannot make the dead letter: {e}")))?;
        let routing_key = inner.routing_key(&self.topic)?;
        // Mandatory: a dead-letter exchange no queue takes this from must not swallow it.
        inner
            .send(dlx.clone(), routing_key, &letter.body, props, true)
            .await?;
        tracing::warn!(broker = %inner.label, topic = %self.topic, dead_letter = %dlx, deliveries = self.deliveries, error = %why, "gave a message up to the dead-letter exchange");
        Ok(())
    }

    /// Acks or nacks the delivery, within the publish timeout: an ack on a connection that is
    /// going away must not hold the consumer.
    async fn send(&self, ack: bool, requeue: bool) -> Result<()> {
        let label = &self.inner.label;
        let what = if ack { "ack" } else { "nack" };
        let done = async {
            if ack {
                self.acker.ack(BasicAckOptions::default()).await
            } else {
                let options = BasicNackOptions {
                    multiple: false,
                    requeue,
                };
                self.acker.nack(options).await
            }
        };
        let limit = self.inner.opts.publish_timeout;
        let Ok(done) = tokio::time::timeout(limit, done).await else {
            self.inner.nudge.notify_one();
            return Err(Error::new(
                ERROR_ID,
                503,
                format!("{label}: cannot {what}: no answer within {limit:?}; RabbitMQ redelivers the message"),
            ));
        };
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::new(
                ERROR_ID,
                503,
                format!(
                    "{label}: cannot {what}: the delivery's channel closed, so RabbitMQ redelivers the message"
                ),
            )),
            Err(e) => Err(Error::new(
                ERROR_ID,
                503,
                format!("{label}: cannot {what}: {e}; RabbitMQ redelivers the message"),
            )),
        }
    }
}

impl Acknowledger for RabbitAcker {
    fn ack(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.settle(true, false))
    }

    fn nack(&self, requeue: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let why = if requeue {
                format!("nacked by the handler on delivery {}", self.deliveries)
            } else {
                "nacked by the handler without requeue".to_string()
            };
            self.fail(requeue, &why).await
        })
    }
}

/// A live subscription of a [`RabbitBroker`].
struct RabbitSubscription {
    id: u64,
    topic: String,
    stop: CancellationToken,
    runner: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for RabbitSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSubscription")
            .field("topic", &self.topic)
            .field("stopped", &self.stop.is_cancelled())
            .finish()
    }
}

#[async_trait::async_trait]
impl Subscription for RabbitSubscription {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.stop.cancel();
        let runner = self
            .runner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let inside_own_handler = RUNNING_SUBSCRIPTION
            .try_with(|id| *id == self.id)
            .unwrap_or(false);
        if let (Some(runner), false) = (runner, inside_own_handler) {
            // No handler starts after the cancel; this waits for the one running (if any) and
            // for the channel to close, so the queue stops feeding this subscriber.
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, runner).await;
        }
        Ok(())
    }
}
