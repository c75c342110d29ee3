//! The Kafka broker of Micro for Rust, on [`rdkafka`] (librdkafka, built from source).
//!
//! [`KafkaBroker`] implements [`micro_core::Broker`] (its name is `kafka`): Micro topics are
//! Kafka topics, queue groups are consumer groups, Micro headers are record headers, and
//! delivery is at least once: a message's offset is committed only after its handler acked it.
//!
//! # A Kafka to talk to
//!
//! Any Kafka (or Kafka-protocol) cluster: point [`KafkaOptions::brokers`] (or
//! `MICRO_BROKER_ADDRESS=host:9092,host2:9092`) at it; `127.0.0.1:9092` by default.
//!
//! Without one, librdkafka's built-in mock cluster ([`rdkafka::mocking::MockCluster`]) is a
//! real Kafka-protocol broker inside the process, on loopback, which is how this crate's own
//! tests run (`KAFKA_BROKERS=host:9092 cargo test -p micro-broker-kafka` runs them against a
//! real cluster instead). The mock has no CreateTopics API, so use
//! [`TopicCreation::AutoCreate`] with it:
//!
//! ```
//! use std::sync::Arc;
//! use micro_broker_kafka::{KafkaBroker, KafkaOptions, TopicCreation};
//! use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
//! use micro_core::Broker;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> micro_core::Result<()> {
//! let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
//! let broker = KafkaBroker::new(KafkaOptions {
//!     topic_creation: TopicCreation::AutoCreate,
//!     ..KafkaOptions::from_brokers(&mock.bootstrap_servers())
//! })?;
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let handler: Handler = Arc::new(move |d: Delivery| {
//!     let tx = tx.clone();
//!     Box::pin(async move {
//!         let _ = tx.send(d.message.body.clone());
//!         Ok(())
//!     })
//! });
//! let sub = broker.subscribe("orders", handler, SubscribeOptions::default()).await?;
//!
//! let mut msg = Message { body: "order 1".into(), ..Default::default() };
//! msg.header.insert("Content-Type", "text/plain");
//! broker.publish("orders", msg).await?;
//! assert_eq!(rx.recv().await.as_deref(), Some(&b"order 1"[..]));
//!
//! sub.unsubscribe().await?;
//! broker.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Semantics
//!
//! - **Topics.** Publishing or subscribing to a topic the cluster lacks creates it when
//!   [`KafkaOptions::create_topics`] is on (the default): through the admin API with
//!   [`KafkaOptions::partitions`] (1) and [`KafkaOptions::replication_factor`] (1), or as
//!   [`KafkaOptions::topic_creation`] says. When it is off, it is a 404 that names the topic.
//!   The clients never auto-create topics as a side effect (`allow.auto.create.topics=false`).
//! - **Subscribers without a queue** each see every message published after `subscribe`
//!   returns: the subscriber takes every partition of the topic, starting at its current end.
//!   It has a unique `group.id` but never joins that group or commits, so it leaves nothing
//!   behind on the cluster. Partitions added to the topic later reach it after it subscribes
//!   again.
//! - **Queue groups are consumer groups**: each message reaches one member. `subscribe` returns
//!   once the member has its first assignment (bounded by
//!   [`KafkaOptions::subscribe_timeout`]); partitions the group never committed start at their
//!   end ([`InitialOffset::Latest`], the default) or beginning, resolved and committed at that
//!   first assignment, so a later rebalance cannot skip messages published in between. The
//!   classic group protocol is the default; `group.protocol=consumer` in
//!   [`KafkaOptions::consumer_config`] selects KIP-848 (Kafka 4.0 and later).
//! - **At least once.** Auto-commit is off. Each partition commits the position after its
//!   longest run of settled messages, so an unacked message holds the position back and
//!   comes again to the next consumer of its partition (after a restart or a rebalance), along
//!   with anything after it. Unsubscribing commits what was settled and leaves the group.
//! - **Auto-ack** (the default): `Ok` acks. An `Err` or a panic retries the message in place,
//!   keeping the partition's order, after [`KafkaOptions::redelivery_backoff`] (doubling, up
//!   to 10 s), at most [`KafkaOptions::max_redeliveries`] times (5). A failing handler never
//!   stops the subscription, and a message is never skipped:
//! - **Dead letters.** Once its redeliveries are used up, a message is produced to its
//!   dead-letter topic, `<topic>.dlq` by default ([`KafkaOptions::dead_letter`], a pattern in
//!   which `{topic}` is the topic), made like any other topic. The dead letter is the record's
//!   headers and body plus `Micro-Dead-Letter-Error` (the last error), `-Attempts`, `-Topic`,
//!   `-Queue` (the group), `-Partition` and `-Offset`
//!   ([`micro_core::broker::dead_letter`]). Only once the cluster acknowledged the dead letter
//!   is the original's offset settled; while producing it fails the partition waits and it is
//!   tried again with the backoff, so a message is on its topic's committed side or in the
//!   dead-letter topic, never lost in between. With [`PoisonPolicy::Block`]
//!   (`MICRO_KAFKA_DEAD_LETTER=block`) the message is instead retried in place for as long as
//!   it fails: its partition delivers nothing after it and commits nothing past it (a consumer
//!   blocked longer than librdkafka's `max.poll.interval.ms`, 5 minutes, loses its partitions
//!   to another member, which then blocks on the same message).
//! - **Manual ack**: the handler acks or nacks each [`Delivery`](micro_core::broker::Delivery)
//!   when it likes; the first settle wins. `nack(true)` redelivers after the backoff (up to
//!   `max_redeliveries`, then dead-letters; under `block`, always), `nack(false)` dead-letters
//!   at once (under `block`, it drops the message, as the handler asked); the nack returns once
//!   the dead letter is produced. At most [`KafkaOptions::max_unacked`] deliveries may be
//!   unsettled before fetching pauses.
//! - **Order** holds per partition: one-partition topics (the default for topics this broker
//!   creates), or a record key ([`KafkaOptions::key`]) that puts related messages together.
//! - **Headers** travel as record headers, values as UTF-8. Records from other producers are
//!   delivered as they are: no headers is fine, a value that is not UTF-8 has its bad bytes
//!   replaced with U+FFFD, a null value is empty, and a header whose *name* is not UTF-8 is
//!   skipped. The body is never interpreted.
//! - **Handlers** run on the runtime that called `subscribe`, one at a time per subscription,
//!   driven by a consumer thread of its own; when that runtime shuts down, the subscription
//!   ends.
//!
//! # Errors
//!
//! Every error names the cluster (`kafka at 127.0.0.1:9092: ...`) and is bounded by a timeout:
//! a cluster that is down or unreachable is a retryable 503 within
//! [`KafkaOptions::operation_timeout`] (connect, metadata, topic creation, offsets) or
//! [`KafkaOptions::publish_timeout`] (a publish, librdkafka's `message.timeout.ms`); a missing
//! topic is a 404, a message larger than `message.max.bytes` (1 MB by default) or the topic's
//! `max.message.bytes` a 413, denied access a 403, an invalid topic name or setting a 400.
//! librdkafka's own logs go to `tracing` under the target `librdkafka`.
//!
//! # Options and environment
//!
//! [`KafkaOptions`] in code, or [`KafkaOptions::from_env`] ([`KafkaBroker::from_env`]):
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_BROKER_ADDRESS` | comma-separated bootstrap brokers, `host:port` (`127.0.0.1:9092`) |
//! | `MICRO_KAFKA_CLIENT_ID` | `client.id` (`micro`) |
//! | `MICRO_KAFKA_CREATE_TOPICS` | `true`/`false`: create missing topics (`true`) |
//! | `MICRO_KAFKA_TOPIC_CREATION` | `admin` (the admin API) or `auto` (the cluster's auto-creation) |
//! | `MICRO_KAFKA_PARTITIONS`, `MICRO_KAFKA_REPLICATION_FACTOR` | for topics this broker creates (1, 1) |
//! | `MICRO_KAFKA_ACKS` | the producer's `acks` (`all`) |
//! | `MICRO_KAFKA_IDEMPOTENCE` | `true`/`false`: the idempotent producer (`true`; needs `acks=all`) |
//! | `MICRO_KAFKA_KEY_HEADER` | a Micro header whose value becomes the record key ([`RecordKey::Header`]) |
//! | `MICRO_KAFKA_KEY` | one fixed record key for every message ([`RecordKey::Fixed`]) |
//! | `MICRO_KAFKA_INITIAL_OFFSET` | `latest` or `earliest`: where a new queue group starts (`latest`) |
//! | `MICRO_KAFKA_MAX_REDELIVERIES` | attempts after the first before a message is dead-lettered (5) |
//! | `MICRO_KAFKA_DEAD_LETTER` | the dead-letter topic, `{topic}` standing for the topic (`{topic}.dlq`), or `block` |
//! | `MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES` | headers and header bytes one received record may carry; a record past them is logged and skipped (512, 64 KiB) |
//! | `MICRO_KAFKA_OPERATION_TIMEOUT_MS` | connect, metadata, admin and offset requests (10000) |
//! | `MICRO_KAFKA_PUBLISH_TIMEOUT_MS` | one publish until the cluster has it (30000) |
//! | `MICRO_KAFKA_SUBSCRIBE_TIMEOUT_MS` | a queue member's wait for its first assignment (30000) |
//! | `MICRO_KAFKA_SECURITY_PROTOCOL` | `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl` |
//! | `MICRO_KAFKA_SASL_*` | `sasl.*`: `MICRO_KAFKA_SASL_MECHANISM=SCRAM-SHA-512`, `..._USERNAME`, `..._PASSWORD` |
//! | `MICRO_KAFKA_SSL_*` | `ssl.*`: `MICRO_KAFKA_SSL_CA_LOCATION=/etc/kafka/ca.pem`, `..._CERTIFICATE_LOCATION`, `..._KEY_LOCATION` |
//! | `MICRO_KAFKA_CONFIG` | any librdkafka properties for every client, `key=value,key=value` |
//! | `MICRO_KAFKA_PRODUCER_CONFIG`, `MICRO_KAFKA_CONSUMER_CONFIG` | the same, for the producer or the consumers only |
//!
//! The librdkafka properties pass through as given (TLS and SASL PLAIN, SCRAM and OAUTHBEARER
//! are built in; Kerberos/GSSAPI is not), except the ones these semantics rest on, which the
//! broker sets itself: `group.id`, `enable.auto.commit=false`, `enable.auto.offset.store=false`
//! and `allow.auto.create.topics=false`.
//!
//! # Building
//!
//! librdkafka is compiled from its source in `rdkafka-sys` and linked statically, with zlib
//! and OpenSSL: the build needs a C compiler, `make`, `pkg-config`, and the Debian packages
//! `libssl-dev` and `zlib1g-dev` (no network, no cmake).

mod broker;
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod options;
mod subscriber;

pub use broker::KafkaBroker;
pub use micro_core::broker::dead_letter::PoisonPolicy;
pub use options::*;

/// The `id` of errors this crate raises.
const ERROR_ID: &str = "micro.broker.kafka";
