//! [`MqttBroker`]: a publishing connection that waits for PUBACKs, and one connection per
//! subscription.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use micro_core::broker::support::Backoff;
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, MetadataLimits, Result};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::options::MqttOptions;
use crate::{wire, ERROR_ID};

/// Received messages waiting for a subscriber's handler. A subscriber whose handler falls
/// this far behind loses messages (logged) rather than the process growing without bound.
const QUEUE: usize = 256;

/// MQTT's fixed header, packet id and topic length, on top of the payload and topic.
const PACKET_OVERHEAD: usize = 16;

/// The MQTT broker (`MICRO_BROKER=mqtt`). Clones share one publishing connection and the
/// subscriptions.
#[derive(Clone)]
pub struct MqttBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttBroker")
            .field(
                "server",
                &format!("{}:{}", self.inner.host, self.inner.port),
            )
            .field("connected", &self.inner.current().is_some())
            .finish_non_exhaustive()
    }
}

struct Inner {
    opts: MqttOptions,
    host: String,
    port: u16,
    qos: QoS,
    /// `mqtt at host:port`: how errors and logs name the server.
    label: String,
    publisher: RwLock<Option<Arc<Publisher>>>,
    /// Serialises connect and disconnect.
    lifecycle: tokio::sync::Mutex<()>,
    subs: Mutex<HashMap<u64, CancellationToken>>,
    next_id: AtomicU64,
}

impl Inner {
    fn current(&self) -> Option<Arc<Publisher>> {
        self.publisher
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, publisher: Option<Arc<Publisher>>) -> Option<Arc<Publisher>> {
        let mut slot = self
            .publisher
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *slot, publisher)
    }

    fn subs(&self) -> MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.subs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unavailable(&self, detail: impl fmt::Display) -> Error {
        Error::new(ERROR_ID, 503, format!("{}: {detail}", self.label))
    }

    /// rumqttc's options for a new connection: a fresh client id, a clean session.
    fn mqtt_options(&self, max_incoming: usize) -> rumqttc::MqttOptions {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let client_id = format!("{}-{}", self.opts.client_id_prefix, &id[..12]);
        let mut o = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(self.opts.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_max_packet_size(max_incoming, self.opts.max_message_size + 65_536);
        if let Some(user) = &self.opts.username {
            o.set_credentials(user.clone(), self.opts.password.clone().unwrap_or_default());
        }
        o
    }

    fn event_loop(&self, max_incoming: usize) -> (AsyncClient, EventLoop) {
        let (client, mut events) = AsyncClient::new(self.mqtt_options(max_incoming), 64);
        let secs = self.opts.connect_timeout.as_secs().max(1);
        events.network_options.set_connection_timeout(secs);
        (client, events)
    }
}

/// Who waits for which PUBACK. Publishes enter rumqttc's request channel in the order their
/// waiters enter `queued`, and rumqttc announces each one's packet id in that order
/// (`Outgoing::Publish`), so the oldest queued waiter owns the next new packet id. A
/// retransmission after a reconnect announces an id already owned, and is ignored.
#[derive(Default)]
struct Waiters {
    queued: VecDeque<oneshot::Sender<()>>,
    by_pkid: HashMap<u16, VecDeque<oneshot::Sender<()>>>,
}

impl Waiters {
    fn sent(&mut self, pkid: u16) {
        if self.by_pkid.get(&pkid).is_some_and(|w| !w.is_empty()) {
            return;
        }
        self.take(pkid);
    }

    /// rumqttc holds a publish back while its packet id is still in flight (a wrap-around):
    /// its waiter queues behind the owner of that id.
    fn collided(&mut self, pkid: u16) {
        self.take(pkid);
    }

    fn take(&mut self, pkid: u16) {
        if let Some(w) = self.queued.pop_front() {
            self.by_pkid.entry(pkid).or_default().push_back(w);
        }
    }

    fn acked(&mut self, pkid: u16) {
        if let Some(queue) = self.by_pkid.get_mut(&pkid) {
            if let Some(w) = queue.pop_front() {
                let _ = w.send(());
            }
            if queue.is_empty() {
                self.by_pkid.remove(&pkid);
            }
        }
    }
}

/// The publishing connection.
struct Publisher {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
    /// Keeps a waiter's place in `queued` and its request's place in the channel the same.
    send: tokio::sync::Mutex<()>,
    token: CancellationToken,
}

impl Publisher {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        lock(&self.waiters)
    }
}

fn lock(waiters: &Mutex<Waiters>) -> MutexGuard<'_, Waiters> {
    waiters
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MqttBroker {
    /// A broker for `opts`. Nothing is contacted until [`Broker::connect`] (or the first
    /// publish or subscribe); an address that does not read is refused here.
    pub fn new(opts: MqttOptions) -> Result<Self> {
        let (host, port) = opts.host_port()?;
        let qos = match opts.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            n => {
                return Err(Error::bad_request(
                    ERROR_ID,
                    format!("MQTT QoS {n} is not supported: use 1 (Go Micro's) or 0"),
                ))
            }
        };
        let label = format!("mqtt at {host}:{port}");
        Ok(MqttBroker {
            inner: Arc::new(Inner {
                opts,
                host,
                port,
                qos,
                label,
                publisher: RwLock::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                subs: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The broker for the environment: [`MqttOptions::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(MqttOptions::from_env()?)
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &MqttOptions {
        &self.inner.opts
    }

    async fn publisher(&self) -> Result<Arc<Publisher>> {
        if let Some(p) = self.inner.current() {
            return Ok(p);
        }
        self.connect().await?;
        self.inner
            .current()
            .ok_or_else(|| self.inner.unavailable("disconnected meanwhile"))
    }
}

#[async_trait::async_trait]
impl Broker for MqttBroker {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn address(&self) -> String {
        format!("{}:{}", self.inner.host, self.inner.port)
    }

    async fn connect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.inner.current().is_some() {
            return Ok(());
        }
        // The publishing connection receives only acknowledgements.
        let (client, events) = self.inner.event_loop(64 * 1024);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let token = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(publisher_loop(
            events,
            client.clone(),
            waiters.clone(),
            self.inner.label.clone(),
            ready_tx,
            token.clone(),
        ));
        let limit = self.inner.opts.connect_timeout + Duration::from_secs(1);
        let ready = match tokio::time::timeout(limit, ready_rx).await {
            Err(_) => Err(format!("no CONNACK within {limit:?}")),
            Ok(Err(_)) => Err("the connection task ended".to_string()),
            Ok(Ok(r)) => r,
        };
        if let Err(e) = ready {
            token.cancel();
            return Err(self.inner.unavailable(format!(
                "cannot connect: {e} (is an MQTT server such as mosquitto running there?)"
            )));
        }
        self.inner.set(Some(Arc::new(Publisher {
            client,
            waiters,
            send: tokio::sync::Mutex::new(()),
            token,
        })));
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        for (_, token) in self.inner.subs().drain() {
            token.cancel();
        }
        if let Some(p) = self.inner.set(None) {
            p.token.cancel();
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        check_topic(topic)?;
        let payload = wire::encode(&msg);
        let max = self.inner.opts.max_message_size;
        if payload.len() > max {
            return Err(Error::payload_too_large(
                ERROR_ID,
                format!(
                    "the message to {topic} is {} bytes as Go Micro's envelope ({} bytes of \
                     body), more than the {max} allowed (MICRO_MQTT_MAX_MESSAGE_SIZE)",
                    payload.len(),
                    msg.body.len()
                ),
            ));
        }
        let p = self.publisher().await?;
        let wait = self.inner.opts.publish_timeout;
        let qos = self.inner.qos;
        let acked = {
            let _order = p.send.lock().await;
            let (tx, rx) = oneshot::channel();
            if qos != QoS::AtMostOnce {
                p.waiters().queued.push_back(tx);
            }
            // Go Micro publishes with retain false.
            let sent = tokio::time::timeout(wait, p.client.publish(topic, qos, false, payload));
            match sent.await {
                Ok(Ok(())) => rx,
                failed => {
                    if qos != QoS::AtMostOnce {
                        p.waiters().queued.pop_back();
                    }
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("the client did not take it within {wait:?}"),
                    };
                    return Err(self
                        .inner
                        .unavailable(format!("publishing to {topic}: {why}")));
                }
            }
        };
        if qos == QoS::AtMostOnce {
            return Ok(());
        }
        match tokio::time::timeout(wait, acked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.inner.unavailable(format!(
                "publishing to {topic}: disconnected before the PUBACK"
            ))),
            Err(_) => Err(self.inner.unavailable(format!(
                "publishing to {topic}: no PUBACK within {wait:?} (it may still arrive)"
            ))),
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        check_filter(topic)?;
        let filter = match &opts.queue {
            Some(q) if self.inner.opts.shared_subscriptions => {
                if q.is_empty() || q.contains(['/', '+', '#']) {
                    return Err(Error::bad_request(
                        ERROR_ID,
                        format!("queue group {q:?} cannot name a shared subscription: no '/', '+' or '#'"),
                    ));
                }
                format!("$share/{q}/{topic}")
            }
            _ => topic.to_string(),
        };
        let inner = &self.inner;
        let (client, events) =
            inner.event_loop(inner.opts.max_message_size + topic.len() + PACKET_OVERHEAD);
        let token = CancellationToken::new();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(
            SubscriberLoop {
                client,
                filter: filter.clone(),
                qos: inner.qos,
                label: inner.label.clone(),
                tx,
                token: token.clone(),
            }
            .run(events, ready_tx),
        );
        let limit = inner.opts.connect_timeout * 2 + Duration::from_secs(1);
        let ready = match tokio::time::timeout(limit, ready_rx).await {
            Err(_) => Err(format!("no SUBACK within {limit:?}")),
            Ok(Err(_)) => Err("the connection task ended".to_string()),
            Ok(Ok(r)) => r,
        };
        if let Err(e) = ready {
            token.cancel();
            return Err(inner.unavailable(format!("subscribing to {filter:?}: {e}")));
        }
        tokio::spawn(
            Worker {
                label: inner.label.clone(),
                topic: topic.to_string(),
                max_message_size: inner.opts.max_message_size,
                limits: inner.opts.header_limits,
                handler,
                token: token.clone(),
            }
            .run(rx),
        );
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        inner.subs().insert(id, token.clone());
        Ok(Box::new(MqttSubscription {
            topic: topic.to_string(),
            id,
            broker: Arc::downgrade(&self.inner),
            token,
        }))
    }
}

/// A topic one may publish to: not empty, no wildcards, no NUL, at most 65535 bytes.
fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > 65_535 || topic.contains(['+', '#', '\0']) {
        return Err(Error::bad_request(
            ERROR_ID,
            format!("{topic:?} is not an MQTT topic one can publish to (empty, too long, or with + # NUL)"),
        ));
    }
    Ok(())
}

/// A topic filter: wildcards only as whole levels (`a/+/c`, `a/#`).
fn check_filter(filter: &str) -> Result<()> {
    let levels: Vec<&str> = filter.split('/').collect();
    let bad = filter.is_empty()
        || filter.len() > 65_000
        || filter.contains('\0')
        || levels.iter().enumerate().any(|(i, l)| {
            (l.contains('+') && *l != "+")
                || (l.contains('#') && (*l != "#" || i + 1 != levels.len()))
        });
    if bad {
        return Err(Error::bad_request(
            ERROR_ID,
            format!("{filter:?} is not an MQTT topic filter (wildcards + and # stand alone in a level, # last)"),
        ));
    }
    Ok(())
}

/// Drives the publishing connection: matches PUBACKs to waiting publishes, reconnects with
/// backoff (rumqttc retransmits what was not acknowledged).
async fn publisher_loop(
    mut events: EventLoop,
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
    label: String,
    ready: oneshot::Sender<std::result::Result<(), String>>,
    token: CancellationToken,
) {
    let mut ready = Some(ready);
    let mut backoff = Backoff::default();
    loop {
        let event = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                match ready.take() {
                    Some(r) => {
                        let _ = r.send(Ok(()));
                    }
                    None => tracing::info!("{label}: connected again"),
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => lock(&waiters).sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => lock(&waiters).collided(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => lock(&waiters).acked(ack.pkid),
            Ok(_) => {}
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e.to_string()));
                    return;
                }
                tracing::warn!(error = %e, "{label}: the publishing connection was lost; connecting again");
                if !pause(&token, backoff.next_delay()).await {
                    break;
                }
            }
        }
    }
    close(client, events).await;
}

/// Says goodbye to the server, briefly: DISCONNECT, then whatever is left in flight.
async fn close(client: AsyncClient, mut events: EventLoop) {
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    }
}

/// One subscription's connection: subscribes on every (re)connect, as sessions are clean,
/// and passes received messages to the worker.
struct SubscriberLoop {
    client: AsyncClient,
    filter: String,
    qos: QoS,
    label: String,
    tx: mpsc::Sender<(String, bytes::Bytes)>,
    token: CancellationToken,
}

impl SubscriberLoop {
    async fn run(
        self,
        mut events: EventLoop,
        ready: oneshot::Sender<std::result::Result<(), String>>,
    ) {
        let mut ready = Some(ready);
        let mut backoff = Backoff::default();
        let label = &self.label;
        loop {
            let event = tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
                event = events.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Err(e) = self.client.try_subscribe(self.filter.clone(), self.qos) {
                        tracing::warn!(filter = %self.filter, error = %e, "{label}: subscribing");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = !matches!(
                        ack.return_codes.first(),
                        Some(SubscribeReasonCode::Success(_))
                    );
                    match (ready.take(), refused) {
                        (Some(r), true) => {
                            let _ = r.send(Err("the server refused the subscription".into()));
                            break;
                        }
                        (Some(r), false) => {
                            let _ = r.send(Ok(()));
                        }
                        (None, true) => {
                            tracing::error!(filter = %self.filter, "{label}: the server refused the subscription after a reconnect");
                        }
                        (None, false) => {
                            backoff.reset();
                            tracing::info!(filter = %self.filter, "{label}: subscribed again");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if self.tx.try_send((p.topic, p.payload)).is_err() {
                        tracing::warn!(filter = %self.filter, "{label}: the subscriber is {QUEUE} messages behind; dropped a message");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e.to_string()));
                        return;
                    }
                    // Also where an oversized packet lands: the connection is dropped (the
                    // packet unread past its header) and made again.
                    tracing::warn!(filter = %self.filter, error = %e, "{label}: the subscription's connection was lost; connecting again");
                    if !pause(&self.token, backoff.next_delay()).await {
                        break;
                    }
                }
            }
        }
        close(self.client, events).await;
    }
}

/// Decodes and hands messages to the handler, one at a time.
struct Worker {
    label: String,
    topic: String,
    max_message_size: usize,
    limits: MetadataLimits,
    handler: Handler,
    token: CancellationToken,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<(String, bytes::Bytes)>) {
        while let Some((topic, payload)) = rx.recv().await {
            if self.token.is_cancelled() {
                break;
            }
            if payload.len() > self.max_message_size {
                tracing::warn!(topic = %topic, size = payload.len(), "{}: dropped a message larger than {} bytes (MICRO_MQTT_MAX_MESSAGE_SIZE)", self.label, self.max_message_size);
                continue;
            }
            let message = match wire::decode(&payload, self.limits) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "{}: dropped a message", self.label);
                    continue;
                }
            };
            let delivery = Delivery::new(topic, message, None);
            if let Err(e) = call_handler(&self.handler, delivery).await {
                tracing::warn!(topic = %self.topic, error = %e, "subscriber failed; MQTT does not redeliver it");
            }
        }
    }
}

/// Runs the handler; a panic becomes an error, so one bad message cannot end a subscription.
async fn call_handler(handler: &Handler, delivery: Delivery) -> Result<()> {
    micro_core::broker::support::call_handler(handler, delivery, ERROR_ID).await
}

/// Waits `delay` unless cancelled first; false when cancelled.
async fn pause(token: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[derive(Debug)]
struct MqttSubscription {
    topic: String,
    id: u64,
    broker: std::sync::Weak<Inner>,
    token: CancellationToken,
}

#[async_trait::async_trait]
impl Subscription for MqttSubscription {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn unsubscribe(&self) -> Result<()> {
        if let Some(inner) = self.broker.upgrade() {
            inner.subs().remove(&self.id);
        }
        // The worker checks the token before each handler call, so no delivery starts after
        // this; the connection (and with its clean session, the subscription) goes away.
        self.token.cancel();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_find_their_publishes() {
        let mut w = Waiters::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let (c, mut rc) = oneshot::channel();
        w.queued.extend([a, b, c]);
        w.sent(1);
        w.sent(2);
        w.sent(1); // a retransmission of 1
        w.collided(1); // c waits for packet id 1 to be free
        w.acked(2);
        assert!(rb.try_recv().is_ok());
        assert!(ra.try_recv().is_err());
        w.acked(1);
        assert!(ra.try_recv().is_ok());
        assert!(rc.try_recv().is_err());
        w.sent(1); // c goes out under id 1
        w.acked(1);
        assert!(rc.try_recv().is_ok());
        assert!(w.by_pkid.is_empty() && w.queued.is_empty());
        w.acked(9); // unsolicited: ignored
    }

    #[test]
    fn topics_and_filters() {
        for ok in ["a", "a/b", "go.micro.topic.x", "a/+/c", "a/#", "#", "+"] {
            check_filter(ok).expect(ok);
        }
        for bad in ["", "a+/b", "a/#/c", "a/b#", "x\0"] {
            assert_eq!(check_filter(bad).expect_err(bad).code, 400);
        }
        check_topic("a/b").expect("topic");
        for bad in ["", "a/+", "a/#"] {
            assert_eq!(check_topic(bad).expect_err(bad).code, 400);
        }
    }

    #[tokio::test]
    async fn nothing_is_contacted_before_connect() {
        // Port 1 on loopback: nobody listens there.
        let broker = MqttBroker::new(MqttOptions {
            connect_timeout: Duration::from_secs(1),
            password: Some("hunter2".into()),
            username: Some("bob".into()),
            ..MqttOptions::from_address("tcp://127.0.0.1:1")
        })
        .expect("made without a server");
        assert_eq!(broker.name(), "mqtt");
        assert_eq!(broker.address(), "127.0.0.1:1");
        assert!(!format!("{:?}", broker.options()).contains("hunter2"));
        let err = broker.connect().await.expect_err("nobody there");
        assert_eq!(err.code, 503, "{err}");
        assert!(err.detail.starts_with("mqtt at 127.0.0.1:1: "), "{err}");
        let big = Message {
            body: vec![0u8; 2 << 20].into(),
            ..Default::default()
        };
        let err = broker.publish("t", big).await.expect_err("too large");
        assert_eq!(err.code, 413, "{err}");
        let err = broker
            .publish("t", Message::default())
            .await
            .expect_err("publish connects first");
        assert_eq!(err.code, 503, "{err}");
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
