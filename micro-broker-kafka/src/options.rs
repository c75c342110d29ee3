//! [`KafkaOptions`]: where the cluster is, how topics are made, how records are produced and
//! consumed, and how they are read from the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use micro_core::broker::dead_letter::PoisonPolicy;
use micro_core::{env, Error, MetadataLimits, Result};

use crate::ERROR_ID;

/// The brokers used when none are given.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Comma-separated bootstrap brokers (`host:port,host:port`), shared with every broker plugin.
pub const ADDRESS_ENV: &str = "MICRO_BROKER_ADDRESS";
/// The `client.id` librdkafka reports to the cluster.
pub const CLIENT_ID_ENV: &str = "MICRO_KAFKA_CLIENT_ID";
/// `true`/`false`: create missing topics through the admin API.
pub const CREATE_TOPICS_ENV: &str = "MICRO_KAFKA_CREATE_TOPICS";
/// `admin` or `auto`: how a missing topic is created ([`TopicCreation`]).
pub const TOPIC_CREATION_ENV: &str = "MICRO_KAFKA_TOPIC_CREATION";
/// Partitions of a topic this broker creates.
pub const PARTITIONS_ENV: &str = "MICRO_KAFKA_PARTITIONS";
/// Replication factor of a topic this broker creates.
pub const REPLICATION_FACTOR_ENV: &str = "MICRO_KAFKA_REPLICATION_FACTOR";
/// The producer's `acks`: `all`, `1` or `0`.
pub const ACKS_ENV: &str = "MICRO_KAFKA_ACKS";
/// `true`/`false`: the idempotent producer.
pub const IDEMPOTENCE_ENV: &str = "MICRO_KAFKA_IDEMPOTENCE";
/// A Micro header whose value becomes the record key.
pub const KEY_HEADER_ENV: &str = "MICRO_KAFKA_KEY_HEADER";
/// A fixed record key for every message.
pub const KEY_ENV: &str = "MICRO_KAFKA_KEY";
/// `latest` or `earliest`: where a queue group with no committed offset starts.
pub const INITIAL_OFFSET_ENV: &str = "MICRO_KAFKA_INITIAL_OFFSET";
/// How often a failed message is retried before it is dead-lettered (or, under `block`, kept).
pub const MAX_REDELIVERIES_ENV: &str = "MICRO_KAFKA_MAX_REDELIVERIES";
/// Where a message goes once its retries are used up: a topic pattern (`{topic}.dlq`, the
/// default; `{topic}` is the message's topic) or `block` ([`PoisonPolicy`]).
pub const DEAD_LETTER_ENV: &str = "MICRO_KAFKA_DEAD_LETTER";
/// Milliseconds for metadata, admin, offset and connect requests.
pub const OPERATION_TIMEOUT_ENV: &str = "MICRO_KAFKA_OPERATION_TIMEOUT_MS";
/// Milliseconds a publish may take until the cluster has the message.
pub const PUBLISH_TIMEOUT_ENV: &str = "MICRO_KAFKA_PUBLISH_TIMEOUT_MS";
/// Milliseconds a queue-group subscribe waits for its first partition assignment.
pub const SUBSCRIBE_TIMEOUT_ENV: &str = "MICRO_KAFKA_SUBSCRIBE_TIMEOUT_MS";
/// `key=value,key=value`: librdkafka properties for every client (producer, consumers, admin).
pub const CONFIG_ENV: &str = "MICRO_KAFKA_CONFIG";
/// `key=value,key=value`: librdkafka properties for the producer only.
pub const PRODUCER_CONFIG_ENV: &str = "MICRO_KAFKA_PRODUCER_CONFIG";
/// `key=value,key=value`: librdkafka properties for consumers only.
pub const CONSUMER_CONFIG_ENV: &str = "MICRO_KAFKA_CONSUMER_CONFIG";
/// The librdkafka `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
pub const SECURITY_PROTOCOL_ENV: &str = "MICRO_KAFKA_SECURITY_PROTOCOL";
/// Prefix of variables that become `sasl.*` properties (`MICRO_KAFKA_SASL_USERNAME` is
/// `sasl.username`).
pub const SASL_ENV_PREFIX: &str = "MICRO_KAFKA_SASL_";
/// Prefix of variables that become `ssl.*` properties (`MICRO_KAFKA_SSL_CA_LOCATION` is
/// `ssl.ca.location`).
pub const SSL_ENV_PREFIX: &str = "MICRO_KAFKA_SSL_";

/// What becomes the Kafka record key of a published message. Kafka keeps order per partition
/// and puts equal keys on the same partition, so the key decides what stays in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecordKey {
    /// No key: librdkafka's partitioner spreads records over the partitions, so order holds
    /// only on a one-partition topic (the default for topics this broker creates).
    #[default]
    None,
    /// The value of this Micro header (say `Micro-Key`), where the message has it; no key where
    /// it does not. On delivery a record key fills this header when the record lacks it, so
    /// keys from foreign producers are visible to handlers.
    Header(String),
    /// The same key on every record: each topic's messages share one partition (total order,
    /// no parallelism).
    Fixed(Vec<u8>),
}

/// How a missing topic is created when [`KafkaOptions::create_topics`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicCreation {
    /// The admin API's CreateTopics, with [`KafkaOptions::partitions`] and
    /// [`KafkaOptions::replication_factor`]. Where the cluster lacks the API or denies it, the
    /// broker falls back to [`TopicCreation::AutoCreate`] (with a warning).
    #[default]
    Admin,
    /// A metadata request that lets the cluster auto-create the topic: needs
    /// `auto.create.topics.enable` on the brokers, and partitions and replication are the
    /// cluster's defaults. For clusters that deny CreateTopics but auto-create, and for
    /// librdkafka's mock cluster, which has no CreateTopics (admin requests time out there).
    AutoCreate,
}

/// Where a queue group that has no committed offset on a partition starts reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialOffset {
    /// At the end: only messages published from the group's first assignment on.
    #[default]
    Latest,
    /// At the beginning: everything the topic still retains.
    Earliest,
}

/// How [`KafkaBroker`](crate::KafkaBroker) reaches and uses a Kafka cluster.
///
/// Build it with struct update syntax over [`Default`], or read it from the environment with
/// [`KafkaOptions::from_env`].
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The `client.id` reported to the cluster (`micro` by default).
    pub client_id: String,
    /// Create a missing topic (through the admin API) when publishing or subscribing to it.
    /// When false, using a missing topic is an error that names it.
    pub create_topics: bool,
    /// How missing topics are created.
    pub topic_creation: TopicCreation,
    /// Partitions of a topic this broker creates (1: one total order per topic).
    pub partitions: i32,
    /// Replication factor of a topic this broker creates (1; raise it on real clusters).
    pub replication_factor: i32,
    /// The producer's `acks` (`all`: a message is published once every in-sync replica has it).
    pub acks: String,
    /// The idempotent producer (`enable.idempotence`): no duplicates from producer retries.
    /// Needs `acks` = `all`.
    pub idempotence: bool,
    /// What becomes the record key.
    pub key: RecordKey,
    /// Where a new queue group starts.
    pub initial_offset: InitialOffset,
    /// How often a message whose handler failed (or that was nacked with requeue) is handed to
    /// the handler again before [`KafkaOptions::dead_letter`] decides its fate.
    pub max_redeliveries: u32,
    /// What happens to a message once its redeliveries are used up: produced to a dead-letter
    /// topic (by default `<topic>.dlq`, made like any other topic) with the reason headers of
    /// [`micro_core::broker::dead_letter`], and its offset settled only once the cluster has
    /// the dead letter; or, with [`PoisonPolicy::Block`], redelivered until a handler takes it,
    /// holding its partition back. Never skipped.
    pub dead_letter: PoisonPolicy,
    /// How many headers, and bytes of them, one received record may carry; a record past them
    /// is logged and skipped (its offset committed). `MICRO_MAX_HEADERS` (default 512),
    /// `MICRO_MAX_HEADER_BYTES` (default 64 KiB).
    pub header_limits: MetadataLimits,
    /// The wait before the first redelivery; it doubles with each further attempt, up to 10 s.
    pub redelivery_backoff: Duration,
    /// How many manually acked deliveries of one subscription may be unsettled before it stops
    /// fetching (and waits for acks).
    pub max_unacked: usize,
    /// Bound on connect checks, metadata, admin and offset requests.
    pub operation_timeout: Duration,
    /// Bound on one publish, until the cluster has the message (`message.timeout.ms`).
    pub publish_timeout: Duration,
    /// Bound on a queue-group subscribe waiting for its first partition assignment.
    pub subscribe_timeout: Duration,
    /// librdkafka properties for every client: `security.protocol`, `sasl.*`, `ssl.*`,
    /// `message.max.bytes`, ... They override the settings above, except the few the broker's
    /// semantics rest on (see the crate docs).
    pub config: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (`linger.ms`, `compression.type`,
    /// `sticky.partitioning.linger.ms`, ...).
    pub producer_config: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (`session.timeout.ms`,
    /// `heartbeat.interval.ms`, `fetch.max.bytes`, ...).
    pub consumer_config: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            brokers: vec![DEFAULT_BROKERS.to_string()],
            client_id: "micro".into(),
            create_topics: true,
            topic_creation: TopicCreation::Admin,
            partitions: 1,
            replication_factor: 1,
            acks: "all".into(),
            idempotence: true,
            key: RecordKey::None,
            initial_offset: InitialOffset::Latest,
            max_redeliveries: 5,
            dead_letter: PoisonPolicy::default(),
            header_limits: MetadataLimits::default(),
            redelivery_backoff: Duration::from_millis(100),
            max_unacked: 1000,
            operation_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(30),
            subscribe_timeout: Duration::from_secs(30),
            config: BTreeMap::new(),
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords and keys ride in `config`: show the keys only.
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("create_topics", &self.create_topics)
            .field("topic_creation", &self.topic_creation)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("acks", &self.acks)
            .field("idempotence", &self.idempotence)
            .field("key", &self.key)
            .field("initial_offset", &self.initial_offset)
            .field("max_redeliveries", &self.max_redeliveries)
            .field("dead_letter", &self.dead_letter)
            .field("redelivery_backoff", &self.redelivery_backoff)
            .field("max_unacked", &self.max_unacked)
            .field("operation_timeout", &self.operation_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("subscribe_timeout", &self.subscribe_timeout)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field(
                "producer_config",
                &self.producer_config.keys().collect::<Vec<_>>(),
            )
            .field(
                "consumer_config",
                &self.consumer_config.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KafkaOptions {
    /// The defaults, with these bootstrap brokers (`host:port`, comma-separated).
    pub fn from_brokers(brokers: &str) -> Self {
        KafkaOptions {
            brokers: split_brokers(brokers),
            ..Default::default()
        }
    }

    /// Replaces the bootstrap brokers (`host:port`, comma-separated); an empty string keeps
    /// them. For `MICRO_BROKER_ADDRESS` or a `--broker_address` flag.
    pub fn with_brokers(mut self, brokers: &str) -> Self {
        let list = split_brokers(brokers);
        if !list.is_empty() {
            self.brokers = list;
        }
        self
    }

    /// Sets one librdkafka property for every client.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Sets one librdkafka property for the producer only.
    pub fn with_producer_config(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.producer_config.insert(key.into(), value.into());
        self
    }

    /// Sets one librdkafka property for consumers only.
    pub fn with_consumer_config(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.consumer_config.insert(key.into(), value.into());
        self
    }

    /// The options from the process environment (see the crate docs for every variable);
    /// unset variables keep the defaults. A value that does not parse is an error naming the
    /// variable.
    pub fn from_env() -> Result<Self> {
        // Variables that are not Unicode cannot be ours; skip them rather than panic.
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The options from these `(name, value)` pairs, as [`KafkaOptions::from_env`] reads the
    /// environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let switch = |name: &str, v: &str| {
            env::parse_bool(v).ok_or_else(|| env::invalid_from(ERROR_ID, name, v, "true or false"))
        };
        let mut o = KafkaOptions::default();
        if let Some(v) = get(ADDRESS_ENV) {
            o = o.with_brokers(&v);
        }
        if let Some(v) = get(CLIENT_ID_ENV) {
            o.client_id = v;
        }
        if let Some(v) = get(CREATE_TOPICS_ENV) {
            o.create_topics = switch(CREATE_TOPICS_ENV, &v)?;
        }
        if let Some(v) = get(TOPIC_CREATION_ENV) {
            o.topic_creation = match v.to_ascii_lowercase().as_str() {
                "admin" => TopicCreation::Admin,
                "auto" | "autocreate" | "auto-create" | "metadata" => TopicCreation::AutoCreate,
                _ => {
                    return Err(env::invalid_from(
                        ERROR_ID,
                        TOPIC_CREATION_ENV,
                        &v,
                        "`admin` or `auto`",
                    ))
                }
            };
        }
        if let Some(v) = get(PARTITIONS_ENV) {
            o.partitions = parse_positive(PARTITIONS_ENV, &v)?;
        }
        if let Some(v) = get(REPLICATION_FACTOR_ENV) {
            o.replication_factor = parse_positive(REPLICATION_FACTOR_ENV, &v)?;
        }
        if let Some(v) = get(ACKS_ENV) {
            o.acks = v;
        }
        if let Some(v) = get(IDEMPOTENCE_ENV) {
            o.idempotence = switch(IDEMPOTENCE_ENV, &v)?;
        }
        match (get(KEY_HEADER_ENV), get(KEY_ENV)) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request(
                    ERROR_ID,
                    format!("set either {KEY_HEADER_ENV} or {KEY_ENV}, not both"),
                ))
            }
            (Some(h), None) => o.key = RecordKey::Header(h),
            (None, Some(k)) => o.key = RecordKey::Fixed(k.into_bytes()),
            (None, None) => {}
        }
        if let Some(v) = get(INITIAL_OFFSET_ENV) {
            o.initial_offset = match v.to_ascii_lowercase().as_str() {
                "latest" | "newest" | "end" => InitialOffset::Latest,
                "earliest" | "oldest" | "beginning" => InitialOffset::Earliest,
                _ => {
                    return Err(env::invalid_from(
                        ERROR_ID,
                        INITIAL_OFFSET_ENV,
                        &v,
                        "`latest` or `earliest`",
                    ))
                }
            };
        }
        if let Some(v) = get(MAX_REDELIVERIES_ENV) {
            o.max_redeliveries = v.parse().map_err(|_| {
                env::invalid_from(ERROR_ID, MAX_REDELIVERIES_ENV, &v, "a whole number")
            })?;
        }
        if let Some(v) = get(DEAD_LETTER_ENV) {
            o.dead_letter = PoisonPolicy::from_setting(ERROR_ID, DEAD_LETTER_ENV, &v)?;
        }
        if let Some(v) = get(OPERATION_TIMEOUT_ENV) {
            o.operation_timeout = parse_millis(OPERATION_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(PUBLISH_TIMEOUT_ENV) {
            o.publish_timeout = parse_millis(PUBLISH_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(SUBSCRIBE_TIMEOUT_ENV) {
            o.subscribe_timeout = parse_millis(SUBSCRIBE_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(SECURITY_PROTOCOL_ENV) {
            o.config.insert("security.protocol".into(), v);
        }
        for (name, value) in &vars {
            for prefix in [SASL_ENV_PREFIX, SSL_ENV_PREFIX] {
                if let Some(rest) = name.strip_prefix(prefix) {
                    if rest.is_empty() || value.is_empty() {
                        continue;
                    }
                    // MICRO_KAFKA_SASL_USERNAME -> sasl.username
                    let head = prefix
                        .trim_start_matches("MICRO_KAFKA_")
                        .trim_end_matches('_')
                        .to_ascii_lowercase();
                    let key = format!("{head}.{}", rest.to_ascii_lowercase().replace('_', "."));
                    o.config.insert(key, value.clone());
                }
            }
        }
        if let Some(v) = get(CONFIG_ENV) {
            o.config.extend(parse_pairs(CONFIG_ENV, &v)?);
        }
        if let Some(v) = get(PRODUCER_CONFIG_ENV) {
            o.producer_config
                .extend(parse_pairs(PRODUCER_CONFIG_ENV, &v)?);
        }
        if let Some(v) = get(CONSUMER_CONFIG_ENV) {
            o.consumer_config
                .extend(parse_pairs(CONSUMER_CONFIG_ENV, &v)?);
        }
        o.header_limits = MetadataLimits::from_vars(|name| vars.get(name).cloned())?;
        Ok(o)
    }

    /// The brokers as librdkafka's `bootstrap.servers`, and as errors name them.
    pub fn bootstrap_servers(&self) -> String {
        self.brokers.join(",")
    }
}

fn split_brokers(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        // Go Micro users write kafka://host:port now and then; librdkafka wants host:port.
        .map(|b| b.trim_start_matches("kafka://").to_string())
        .collect()
}

fn parse_positive(name: &str, v: &str) -> Result<i32> {
    match v.parse::<i32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(env::invalid_from(ERROR_ID, name, v, "a positive number")),
    }
}

/// The `_MS` variables: a bare, positive number of milliseconds, as librdkafka's own `*.ms`
/// properties are written (so not [`env::parse_duration`], which reads `1500` as seconds).
fn parse_millis(name: &str, v: &str) -> Result<Duration> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
        _ => Err(env::invalid_from(
            ERROR_ID,
            name,
            v,
            "a positive number of milliseconds",
        )),
    }
}

fn parse_pairs(name: &str, v: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), val.trim().to_string());
            }
            _ => {
                return Err(Error::bad_request(
                    ERROR_ID,
                    format!("{name}: {pair:?} is not key=value (write key=value,key=value)"),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = KafkaOptions::default();
        assert_eq!(o.bootstrap_servers(), "127.0.0.1:9092");
        assert!(o.create_topics && o.idempotence);
        assert_eq!((o.partitions, o.replication_factor), (1, 1));
        assert_eq!(o.acks, "all");
        assert_eq!(o.key, RecordKey::None);
        assert_eq!(
            o.dead_letter.destination("orders").as_deref(),
            Some("orders.dlq")
        );
    }

    #[test]
    fn environment() {
        let o = KafkaOptions::from_vars([
            ("MICRO_BROKER_ADDRESS", "a:9092, kafka://b:9093"),
            ("MICRO_KAFKA_CREATE_TOPICS", "false"),
            ("MICRO_KAFKA_PARTITIONS", "3"),
            ("MICRO_KAFKA_TOPIC_CREATION", "auto"),
            ("MICRO_KAFKA_REPLICATION_FACTOR", "2"),
            ("MICRO_KAFKA_ACKS", "1"),
            ("MICRO_KAFKA_IDEMPOTENCE", "off"),
            ("MICRO_KAFKA_KEY_HEADER", "Micro-Key"),
            ("MICRO_KAFKA_INITIAL_OFFSET", "earliest"),
            ("MICRO_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("MICRO_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("MICRO_KAFKA_SASL_USERNAME", "svc"),
            ("MICRO_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            (
                "MICRO_KAFKA_CONFIG",
                "message.max.bytes=2000000, linger.ms=5",
            ),
            ("MICRO_KAFKA_CONSUMER_CONFIG", "session.timeout.ms=6000"),
            ("MICRO_KAFKA_PUBLISH_TIMEOUT_MS", "1500"),
            ("MICRO_KAFKA_DEAD_LETTER", "block"),
        ])
        .expect("valid environment");
        assert_eq!(o.brokers, ["a:9092", "b:9093"]);
        assert!(!o.create_topics && !o.idempotence);
        assert_eq!((o.partitions, o.replication_factor), (3, 2));
        assert_eq!(o.topic_creation, TopicCreation::AutoCreate);
        assert_eq!(o.acks, "1");
        assert_eq!(o.key, RecordKey::Header("Micro-Key".into()));
        assert_eq!(o.initial_offset, InitialOffset::Earliest);
        assert_eq!(o.config["security.protocol"], "sasl_ssl");
        assert_eq!(o.config["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(o.config["sasl.username"], "svc");
        assert_eq!(o.config["ssl.ca.location"], "/etc/ca.pem");
        assert_eq!(o.config["message.max.bytes"], "2000000");
        assert_eq!(o.config["linger.ms"], "5");
        assert_eq!(o.consumer_config["session.timeout.ms"], "6000");
        assert_eq!(o.publish_timeout, Duration::from_millis(1500));
        assert_eq!(o.dead_letter, PoisonPolicy::Block);
        let o = KafkaOptions::from_vars([("MICRO_KAFKA_DEAD_LETTER", "dead-letters")])
            .expect("a fixed topic");
        assert_eq!(
            o.dead_letter.destination("orders").as_deref(),
            Some("dead-letters")
        );
        assert!(
            !format!("{o:?}").contains("svc"),
            "Debug hides config values"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = KafkaOptions::from_vars([("MICRO_KAFKA_PARTITIONS", "zero")]).expect_err("bad");
        assert!(e.detail.contains("MICRO_KAFKA_PARTITIONS"), "{e}");
        let e = KafkaOptions::from_vars([("MICRO_KAFKA_CONFIG", "novalue")]).expect_err("bad");
        assert!(e.detail.contains("MICRO_KAFKA_CONFIG"), "{e}");
        let e =
            KafkaOptions::from_vars([("MICRO_KAFKA_KEY", "k"), ("MICRO_KAFKA_KEY_HEADER", "h")])
                .expect_err("both");
        assert!(e.detail.contains("not both"), "{e}");
        let fixed = KafkaOptions::from_vars([("MICRO_KAFKA_KEY", "orders")]).expect("fixed key");
        assert_eq!(fixed.key, RecordKey::Fixed(b"orders".to_vec()));
    }
}
