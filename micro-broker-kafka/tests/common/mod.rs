//! The Kafka the tests run against: librdkafka's in-process mock cluster, or a real cluster
//! when `KAFKA_BROKERS` is set.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use micro_broker_kafka::{KafkaBroker, KafkaOptions, TopicCreation};
use micro_core::{Broker, Result};
use rdkafka::mocking::MockCluster;

/// The bootstrap servers of a real cluster given in `KAFKA_BROKERS`, if any.
pub(crate) fn real_brokers() -> Option<String> {
    std::env::var("KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty())
}

/// The cluster of this test binary: `KAFKA_BROKERS`, else one mock cluster started on first
/// use (loopback only) that lives until the binary exits.
pub(crate) fn bootstrap() -> String {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| {
            real_brokers().unwrap_or_else(|| {
                let mock = MockCluster::new(1).expect("start librdkafka's mock cluster");
                let servers = mock.bootstrap_servers();
                // The mock runs on librdkafka's own threads; keep it for the whole binary.
                std::mem::forget(mock);
                servers
            })
        })
        .clone()
}

/// The partitions of `topic` on the test cluster, or `None` when it does not have it; asked
/// without letting the question create it.
pub(crate) fn topic_partitions(topic: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("a metadata client");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
}

/// Options tuned for tests: short timeouts, fast group joins and heartbeats.
pub(crate) fn options() -> KafkaOptions {
    // Warnings of the broker and librdkafka show with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    KafkaOptions {
        operation_timeout: Duration::from_secs(5),
        publish_timeout: Duration::from_secs(10),
        subscribe_timeout: Duration::from_secs(20),
        redelivery_backoff: Duration::from_millis(50),
        // The mock has no CreateTopics API (admin requests time out there); a real cluster
        // gets its topics through the admin API.
        topic_creation: if real_brokers().is_some() {
            TopicCreation::Admin
        } else {
            TopicCreation::AutoCreate
        },
        ..KafkaOptions::from_brokers(&bootstrap())
    }
    .with_producer_config("linger.ms", "1")
    // The mock cannot create topics through the admin API and auto-creates them with four
    // partitions; keeping keyless records on one partition keeps the order checks meaningful.
    .with_producer_config("sticky.partitioning.linger.ms", "900000")
    // The mock waits up to the session timeout less a second for members to rejoin.
    .with_consumer_config("session.timeout.ms", "3000")
    .with_consumer_config("heartbeat.interval.ms", "100")
    .with_consumer_config("fetch.wait.max.ms", "20")
    .with_consumer_config("topic.metadata.refresh.interval.ms", "1000")
}

/// The test options with Kafka's newer consumer group protocol (KIP-848: incremental
/// assignment, no initial rebalance delay), on the mock cluster; against a real cluster only
/// when `KAFKA_GROUP_PROTOCOL=consumer` says its brokers have it (Kafka 4.0 and later).
pub(crate) fn options_with_consumer_group_protocol() -> KafkaOptions {
    let wanted = real_brokers().is_none()
        || std::env::var("KAFKA_GROUP_PROTOCOL").is_ok_and(|p| p == "consumer");
    let mut o = options();
    if wanted {
        // The classic protocol's session and heartbeat settings are the broker's business here.
        o.consumer_config.remove("session.timeout.ms");
        o.consumer_config.remove("heartbeat.interval.ms");
        o.consumer_config
            .insert("group.protocol".into(), "consumer".into());
    }
    o
}

/// A broker on the test cluster.
pub(crate) async fn broker_with(options: KafkaOptions) -> Result<Arc<dyn Broker>> {
    Ok(Arc::new(KafkaBroker::new(options)?))
}

/// A broker on the test cluster with the test options.
pub(crate) async fn broker() -> Result<Arc<dyn Broker>> {
    broker_with(options()).await
}

/// How long any single wait in these tests may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A topic (or group) name no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A handler that forwards every delivery to a channel.
pub(crate) fn collector() -> (
    micro_core::broker::Handler,
    tokio::sync::mpsc::UnboundedReceiver<micro_core::broker::Delivery>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let handler: micro_core::broker::Handler = Arc::new(move |d| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, rx)
}

/// The next delivery, failing the test after [`PATIENCE`].
pub(crate) async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<micro_core::broker::Delivery>,
    what: &str,
) -> micro_core::broker::Delivery {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the subscriber went away"))
}

/// A message with these headers and body.
pub(crate) fn message(body: &[u8], headers: &[(&str, &str)]) -> micro_core::broker::Message {
    micro_core::broker::Message {
        header: headers.iter().copied().collect(),
        body: body.to_vec().into(),
    }
}
