//! [`KafkaBroker`]: the connection (producer and admin client), topics, publishing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use micro_core::broker::{Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::log::LogContext;
use crate::options::{KafkaOptions, RecordKey, TopicCreation};
use crate::subscriber::{self, SubscriptionCore};
use crate::ERROR_ID;

/// librdkafka's default `message.max.bytes`, for error messages when the options leave it.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// How often a freshly created topic is looked up until it shows in the metadata.
const TOPIC_POLL: Duration = Duration::from_millis(100);

/// Micro's broker on Kafka: topics are Kafka topics, queue groups are consumer groups, and
/// delivery is at least once (offsets are committed after the handler acks).
///
/// Cheap to clone; clones share the connection. See the crate docs for the semantics.
#[derive(Clone)]
pub struct KafkaBroker {
    inner: Arc<Inner>,
}

struct Inner {
    options: Arc<KafkaOptions>,
    brokers: String,
    // Serialises connect and disconnect; publish and subscribe clone the Arc and go.
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("brokers", &self.inner.brokers)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl KafkaBroker {
    /// A broker for the cluster in `options`. Nothing is contacted until
    /// [`connect`](Broker::connect) (or the first publish or subscribe).
    pub fn new(options: KafkaOptions) -> Result<Self> {
        validate(&options)?;
        Ok(KafkaBroker {
            inner: Arc::new(Inner {
                brokers: options.bootstrap_servers(),
                options: Arc::new(options),
                conn: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// A broker configured from the environment ([`KafkaOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(KafkaOptions::from_env()?)
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let options = self.inner.options.clone();
        let conn = blocking(move || Connection::open(options)).await?;
        let conn = Arc::new(conn);
        *guard = Some(conn.clone());
        Ok(conn)
    }
}

fn validate(o: &KafkaOptions) -> Result<()> {
    let bad = |what: String| Err(Error::bad_request(ERROR_ID, what));
    if o.brokers.is_empty() {
        return bad("no Kafka brokers given: set brokers (MICRO_BROKER_ADDRESS=host:9092)".into());
    }
    if o.partitions < 1 || o.replication_factor < 1 {
        return bad(format!(
            "topics need at least one partition and one replica (partitions {}, replication factor {})",
            o.partitions, o.replication_factor
        ));
    }
    if o.idempotence && !o.acks.eq_ignore_ascii_case("all") && o.acks != "-1" {
        return bad(format!(
            "the idempotent producer needs acks=all (acks is {:?}): set acks to all or turn idempotence off",
            o.acks
        ));
    }
    if let Some(sample) = o.dead_letter.destination("topic") {
        check_topic(&sample).map_err(|e| {
            Error::bad_request(
                ERROR_ID,
                format!(
                    "the dead-letter topic pattern makes no valid topic name ({}): {}",
                    sample, e.detail
                ),
            )
        })?;
    }
    if let RecordKey::Header(h) = &o.key {
        if h.is_empty() {
            return bad("the record key header name is empty".into());
        }
    }
    Ok(())
}

/// Runs blocking librdkafka calls off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(ERROR_ID, format!("a kafka worker failed: {e}")))?
}

/// Checks a topic name against Kafka's rules before the cluster sees it.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    let ok_chars = topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if topic.is_empty() || topic.len() > 249 || !ok_chars || topic == "." || topic == ".." {
        return Err(Error::bad_request(
            ERROR_ID,
            format!(
                "{topic:?} is not a valid Kafka topic name: use 1 to 249 of the characters a-z A-Z 0-9 . _ -"
            ),
        ));
    }
    Ok(())
}

/// A Micro error for a librdkafka error while doing `what`, naming the cluster.
pub(crate) fn kafka_error(brokers: &str, what: &str, e: &KafkaError) -> Error {
    use RDKafkaErrorCode as C;
    let detail = format!("kafka at {brokers}: {what}: {e}");
    if let KafkaError::ClientConfig(..) = e {
        return Error::bad_request(
            ERROR_ID,
            format!("{detail} (check the librdkafka properties in the options)"),
        );
    }
    let code = match e {
        KafkaError::AdminOp(c) => Some(*c),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(C::MessageSizeTooLarge) => Error::payload_too_large(ERROR_ID, detail),
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => Error::not_found(ERROR_ID, detail),
        Some(C::InvalidTopic) => Error::bad_request(ERROR_ID, detail),
        Some(
            C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication,
        ) => Error::forbidden(
            ERROR_ID,
            format!("{detail} (check the SASL/TLS settings and ACLs)"),
        ),
        Some(
            C::MessageTimedOut
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::BrokerNotAvailable,
        ) => unavailable(brokers, &format!("{what}: {e}")),
        _ => Error::internal(ERROR_ID, detail),
    }
}

/// A retryable 503 naming the cluster: it is down, unreachable or too slow.
pub(crate) fn unavailable(brokers: &str, what: &str) -> Error {
    Error::new(
        ERROR_ID,
        503,
        format!("kafka at {brokers}: {what} (is Kafka running and reachable there?)"),
    )
}

/// What every client shares: where the cluster is, who we are, the user's properties.
pub(crate) fn base_config(o: &KafkaOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", o.bootstrap_servers())
        .set("client.id", &o.client_id)
        .set(
            "socket.connection.setup.timeout.ms",
            millis(o.operation_timeout).to_string(),
        );
    for (k, v) in &o.config {
        c.set(k, v);
    }
    c
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The producer, the admin client and what they know, for one connect..disconnect span.
pub(crate) struct Connection {
    pub(crate) options: Arc<KafkaOptions>,
    pub(crate) brokers: String,
    producer: FutureProducer<LogContext>,
    admin: AdminClient<LogContext>,
    // topic -> partition count, for topics known to exist
    topics: Mutex<HashMap<String, usize>>,
    subs: Mutex<Vec<Arc<SubscriptionCore>>>,
}

impl Connection {
    /// Makes the clients and checks that the cluster answers (blocking).
    fn open(options: Arc<KafkaOptions>) -> Result<Self> {
        let brokers = options.bootstrap_servers();
        let mut pc = base_config(&options);
        pc.set("acks", &options.acks)
            .set("enable.idempotence", options.idempotence.to_string())
            .set(
                "message.timeout.ms",
                millis(options.publish_timeout).to_string(),
            );
        for (k, v) in options.config.iter().chain(&options.producer_config) {
            pc.set(k, v);
        }
        // Topics are made on purpose (below), never as a side effect of a lookup or a send.
        pc.set("allow.auto.create.topics", "false");
        let producer: FutureProducer<LogContext> = pc
            .create_with_context(LogContext::new("producer", &brokers))
            .map_err(|e| kafka_error(&brokers, "creating the producer", &e))?;

        let mut ac = base_config(&options);
        // Only used when the cluster lacks CreateTopics: then a metadata request asks the
        // cluster to auto-create the topic, if it allows that.
        ac.set("allow.auto.create.topics", "true");
        let admin: AdminClient<LogContext> = ac
            .create_with_context(LogContext::new("admin", &brokers))
            .map_err(|e| kafka_error(&brokers, "creating the admin client", &e))?;

        producer
            .client()
            .fetch_metadata(None, options.operation_timeout)
            .map_err(|e| {
                unavailable(
                    &brokers,
                    &format!(
                        "no answer to a metadata request within {:?}: {e}",
                        options.operation_timeout
                    ),
                )
            })?;
        Ok(Connection {
            options,
            brokers,
            producer,
            admin,
            topics: Mutex::new(HashMap::new()),
            subs: Mutex::new(Vec::new()),
        })
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subs(&self) -> MutexGuard<'_, Vec<Arc<SubscriptionCore>>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition count of `topic`, or `None` when the cluster does not have it (blocking).
    fn lookup(&self, topic: &str) -> Result<Option<usize>> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.options.operation_timeout)
            .map_err(|e| kafka_error(&self.brokers, &format!("looking up topic {topic:?}"), &e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error() {
            None if !t.partitions().is_empty() => Ok(Some(t.partitions().len())),
            None => Ok(None),
            Some(code) => {
                let code = RDKafkaErrorCode::from(code);
                match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        Ok(None)
                    }
                    // Being created, or its leader moving: not there yet.
                    RDKafkaErrorCode::LeaderNotAvailable => Ok(None),
                    _ => Err(kafka_error(
                        &self.brokers,
                        &format!("looking up topic {topic:?}"),
                        &KafkaError::MetadataFetch(code),
                    )),
                }
            }
        }
    }

    /// Makes sure `topic` exists, creating it when the options allow; returns its partition
    /// count.
    pub(crate) async fn ensure_topic(self: &Arc<Self>, topic: &str) -> Result<usize> {
        if let Some(n) = self.topics().get(topic) {
            return Ok(*n);
        }
        let this = self.clone();
        let name = topic.to_string();
        if let Some(n) = blocking(move || this.lookup(&name)).await? {
            self.topics().insert(topic.to_string(), n);
            return Ok(n);
        }
        if !self.options.create_topics {
            return Err(Error::not_found(
                ERROR_ID,
                format!(
                    "kafka at {}: topic {topic:?} does not exist and create_topics is off: create the topic (kafka-topics.sh --create --topic {topic}) or turn create_topics on (MICRO_KAFKA_CREATE_TOPICS=true)",
                    self.brokers
                ),
            ));
        }
        self.create_topic(topic).await?;
        let deadline = Instant::now() + self.options.operation_timeout;
        loop {
            let this = self.clone();
            let name = topic.to_string();
            if let Some(n) = blocking(move || this.lookup(&name)).await? {
                self.topics().insert(topic.to_string(), n);
                return Ok(n);
            }
            if Instant::now() >= deadline {
                return Err(unavailable(
                    &self.brokers,
                    &format!(
                        "topic {topic:?} was created but did not show in the cluster's metadata within {:?}",
                        self.options.operation_timeout
                    ),
                ));
            }
            tokio::time::sleep(TOPIC_POLL).await;
        }
    }

    async fn create_topic(self: &Arc<Self>, topic: &str) -> Result<()> {
        if self.options.topic_creation == TopicCreation::AutoCreate {
            return self.auto_create(topic).await;
        }
        let o = &self.options;
        let new = NewTopic::new(
            topic,
            o.partitions,
            TopicReplication::Fixed(o.replication_factor),
        );
        let admin_opts = AdminOptions::new()
            .operation_timeout(Some(o.operation_timeout))
            .request_timeout(Some(o.operation_timeout));
        let what = format!("creating topic {topic:?} through the admin API");
        let hint = "(a cluster without the CreateTopics API, such as librdkafka's mock cluster, needs topic_creation AutoCreate: MICRO_KAFKA_TOPIC_CREATION=auto)";
        let result = tokio::time::timeout(
            o.operation_timeout + Duration::from_secs(1),
            self.admin.create_topics([&new], &admin_opts),
        )
        .await
        .map_err(|_| {
            unavailable(
                &self.brokers,
                &format!("{what}: no answer within {:?} {hint}", o.operation_timeout),
            )
        })?;
        let code = match result {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) | None => None,
                Some(Err((_, code))) => Some(code),
            },
            Err(KafkaError::AdminOp(code)) => Some(code),
            Err(other) => return Err(kafka_error(&self.brokers, &what, &other)),
        };
        match code {
            None => {
                tracing::info!(topic, partitions = o.partitions, replication = o.replication_factor, brokers = %self.brokers, "created kafka topic");
                Ok(())
            }
            Some(RDKafkaErrorCode::TopicAlreadyExists) => Ok(()),
            Some(
                code @ (RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            ) => {
                tracing::warn!(topic, brokers = %self.brokers, error = %code, "the cluster does not let us create topics through the admin API; asking it to auto-create the topic (partitions and replication are then the cluster's defaults)");
                self.auto_create(topic).await
            }
            Some(RDKafkaErrorCode::OperationTimedOut) => Err(unavailable(
                &self.brokers,
                &format!("{what}: no answer within {:?} {hint}", o.operation_timeout),
            )),
            Some(code) => Err(kafka_error(
                &self.brokers,
                &what,
                &KafkaError::AdminOp(code),
            )),
        }
    }

    /// Asks the cluster to auto-create `topic` with a metadata request (blocking librdkafka
    /// call, run off the async workers).
    async fn auto_create(self: &Arc<Self>, topic: &str) -> Result<()> {
        let this = self.clone();
        let name = topic.to_string();
        blocking(move || {
            this.admin
                .inner()
                .fetch_metadata(Some(&name), this.options.operation_timeout)
                .map(|_| ())
                .map_err(|e| {
                    kafka_error(
                        &this.brokers,
                        &format!("asking the cluster to auto-create topic {name:?}"),
                        &e,
                    )
                })
        })
        .await
    }

    fn message_max_bytes(&self) -> usize {
        self.options
            .producer_config
            .get("message.max.bytes")
            .or_else(|| self.options.config.get("message.max.bytes"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }

    pub(crate) async fn publish(self: &Arc<Self>, topic: &str, msg: &Message) -> Result<()> {
        self.ensure_topic(topic).await?;
        let o = &self.options;
        let headers = record_headers(msg)?;
        let key: Option<&[u8]> = match &o.key {
            RecordKey::None => None,
            RecordKey::Header(h) => msg.header.get(h).map(str::as_bytes),
            RecordKey::Fixed(k) => Some(k.as_slice()),
        };
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .payload(&msg.body[..])
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        let sent = tokio::time::timeout(
            o.publish_timeout + o.operation_timeout,
            self.producer
                .send(record, Timeout::After(o.publish_timeout)),
        )
        .await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => {
                let code = e.rdkafka_error_code();
                if matches!(
                    code,
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    )
                ) {
                    // Deleted behind our back: look it up (and maybe create it) next time.
                    self.topics().remove(topic);
                }
                if code == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
                    let size = msg.body.len()
                        + msg
                            .header
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>();
                    return Err(Error::payload_too_large(
                        ERROR_ID,
                        format!(
                            "kafka at {}: the message to topic {topic:?} ({size} bytes of body and headers) is larger than Kafka accepts: the producer's message.max.bytes is {} and the topic's max.message.bytes may be lower; send less or raise both",
                            self.brokers,
                            self.message_max_bytes()
                        ),
                    ));
                }
                Err(kafka_error(
                    &self.brokers,
                    &format!("publishing to topic {topic:?}"),
                    &e,
                ))
            }
            Err(_) => Err(unavailable(
                &self.brokers,
                &format!(
                    "publishing to topic {topic:?}: not delivered within {:?}",
                    o.publish_timeout
                ),
            )),
        }
    }

    pub(crate) fn forget_subscription(&self, core: &Arc<SubscriptionCore>) {
        self.subs().retain(|s| !Arc::ptr_eq(s, core));
    }

    async fn close(self: Arc<Self>) {
        let subs: Vec<_> = std::mem::take(&mut *self.subs());
        for s in subs {
            s.stop().await;
        }
        let this = self.clone();
        let flushed = blocking(move || {
            this.producer
                .flush(this.options.operation_timeout)
                .map_err(|e| kafka_error(&this.brokers, "flushing the producer", &e))
        })
        .await;
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "messages may be lost on disconnect");
        }
    }
}

#[async_trait::async_trait]
impl Broker for KafkaBroker {
    fn name(&self) -> &str {
        "kafka"
    }

    fn address(&self) -> String {
        self.inner.brokers.clone()
    }

    async fn connect(&self) -> Result<()> {
        self.connection().await.map(|_| ())
    }

    async fn disconnect(&self) -> Result<()> {
        let conn = self.inner.conn.lock().await.take();
        if let Some(conn) = conn {
            conn.close().await;
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        check_topic(topic)?;
        self.connection().await?.publish(topic, &msg).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        check_topic(topic)?;
        if let Some(q) = &opts.queue {
            if q.is_empty() {
                return Err(Error::bad_request(
                    ERROR_ID,
                    "the queue group name is empty",
                ));
            }
        }
        let conn = self.connection().await?;
        conn.ensure_topic(topic).await?;
        let core = subscriber::start(&conn, topic, handler, opts).await?;
        conn.subs().push(core.clone());
        Ok(Box::new(KafkaSubscription {
            core,
            conn: Arc::downgrade(&conn),
        }))
    }
}

/// The handle [`KafkaBroker::subscribe`](Broker::subscribe) returns.
struct KafkaSubscription {
    core: Arc<SubscriptionCore>,
    conn: Weak<Connection>,
}

impl fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.core.topic())
            .field("group", &self.core.group())
            .finish()
    }
}

#[async_trait::async_trait]
impl Subscription for KafkaSubscription {
    fn topic(&self) -> &str {
        self.core.topic()
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.core.stop().await;
        if let Some(conn) = self.conn.upgrade() {
            conn.forget_subscription(&self.core);
        }
        Ok(())
    }
}

/// The record headers of a message: each header as one record header, its value as UTF-8.
/// A name holding NUL is refused (a 400 naming it): librdkafka hands names to readers as C
/// strings, so it would arrive cut at the NUL, possibly as another header's name.
pub(crate) fn record_headers(msg: &Message) -> Result<OwnedHeaders> {
    let mut headers = OwnedHeaders::new_with_capacity(msg.header.len());
    for (k, v) in msg.header.iter() {
        if k.contains('\0') {
            return Err(Error::bad_request(
                ERROR_ID,
                format!("header {k:?} cannot travel as a Kafka record header: its name holds NUL"),
            ));
        }
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_with_nul_are_refused() {
        // Found by the kafka_headers fuzz target: `"\u{1}\0\0"` was published and read back
        // as `"\u{1}"`.
        let msg = Message {
            header: [("a\0b", "v")].into_iter().collect(),
            body: Default::default(),
        };
        let e = record_headers(&msg).err().unwrap_or_default();
        assert_eq!(e.code, 400, "{e}");
        assert!(e.detail.contains("NUL"), "{e}");
        let ok = Message {
            header: [("Micro-Id", "1")].into_iter().collect(),
            body: Default::default(),
        };
        assert!(record_headers(&ok).is_ok());
    }

    #[test]
    fn topic_names() {
        for ok in ["go.micro.topic.orders", "a", "A_b-c.9"] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "slash/topic", "..", &"x".repeat(250)] {
            let e = check_topic(bad).expect_err("invalid");
            assert_eq!(e.code, 400);
        }
    }

    #[test]
    fn options_are_checked() {
        let e = KafkaBroker::new(KafkaOptions {
            acks: "1".into(),
            ..Default::default()
        })
        .expect_err("idempotence needs acks=all");
        assert!(e.detail.contains("acks=all"), "{e}");
        let e = KafkaBroker::new(KafkaOptions {
            partitions: 0,
            ..Default::default()
        })
        .expect_err("no partitions");
        assert_eq!(e.code, 400);
        let e = KafkaBroker::new(KafkaOptions {
            dead_letter: micro_core::broker::dead_letter::PoisonPolicy::DeadLetter(
                "{topic}/dead".into(),
            ),
            ..Default::default()
        })
        .expect_err("a dead-letter pattern that makes bad names");
        assert!(e.detail.contains("dead-letter"), "{e}");
        let b = KafkaBroker::new(KafkaOptions::from_brokers("k1:9092,k2:9092")).expect("valid");
        assert_eq!(b.name(), "kafka");
        assert_eq!(b.address(), "k1:9092,k2:9092");
    }

    #[test]
    fn this_build_speaks_tls_and_sasl() {
        // librdkafka refuses these settings at client creation when built without OpenSSL.
        for (protocol, mechanism) in [
            ("ssl", None),
            ("sasl_ssl", Some("SCRAM-SHA-512")),
            ("sasl_plaintext", Some("PLAIN")),
        ] {
            let mut o = KafkaOptions::from_brokers("127.0.0.1:1")
                .with_config("security.protocol", protocol);
            if let Some(m) = mechanism {
                o = o
                    .with_config("sasl.mechanism", m)
                    .with_config("sasl.username", "svc")
                    .with_config("sasl.password", "secret");
            }
            let made: std::result::Result<rdkafka::producer::BaseProducer, _> =
                base_config(&o).create();
            assert!(made.is_ok(), "{protocol}: {:?}", made.err());
        }
    }

    #[test]
    fn errors_name_the_cluster() {
        let e = kafka_error(
            "k:9092",
            "publishing",
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert_eq!(e.code, 503);
        assert!(e.detail.starts_with("kafka at k:9092: publishing"), "{e}");
        let e = kafka_error(
            "k:9092",
            "publishing",
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(e.code, 413);
    }
}
