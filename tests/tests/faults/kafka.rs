//! Kafka on a bad day, on librdkafka's mock cluster: three Kafka-protocol brokers inside the
//! process. The mock's brokers advertise their own ports in metadata, so the fault proxy
//! cannot stand between them and a client; the faults here are the mock's own controls. While
//! a publisher streams into a queue group, every round trip is slowed, produce requests fail
//! with retriable errors, and the broker leading the topic's partition goes down (its
//! leadership moved to another broker, as Kafka's controller would), then comes back. Every
//! publish that returned `Ok` (acks=all, idempotent) is consumed, and no publish hangs past its
//! timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::core::broker::SubscribeOptions;
use micro::core::Broker;
use micro_broker_kafka::{KafkaBroker, KafkaOptions, TopicCreation};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::brokers::{assert_nothing_lost, figures, receive, record, Publisher};
use crate::report;

/// Messages acknowledged before the first fault, and after the last one is lifted, at least.
const PHASE: usize = 200;
/// Messages acknowledged while a fault is on, at least.
const DURING: usize = 20;
/// The broker's bound on a publish (librdkafka's `message.timeout.ms`).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// A publish call that has not returned by then hangs: its own timeout plus a margin.
const ATTEMPT_BOUND: Duration = Duration::from_secs(20);
/// The subscriber's work per message: slower than the publisher, so that acknowledged
/// messages wait on the partition when its leader goes down.
const WORK: Duration = Duration::from_millis(3);
/// The round trip every broker takes while the cluster is slow.
const SLOW_RTT: Duration = Duration::from_millis(100);

const TOPIC: &str = "fault.kafka";
const GROUP: &str = "workers";
/// The partition's first leader, the broker that goes down.
const LEADER: i32 = 1;
/// The partition's leader while the first is down.
const NEXT_LEADER: i32 = 2;
/// The group's coordinator, up throughout.
const COORDINATOR: i32 = 3;

fn options(bootstrap: &str) -> KafkaOptions {
    KafkaOptions {
        publish_timeout: PUBLISH_TIMEOUT,
        topic_creation: TopicCreation::AutoCreate,
        ..KafkaOptions::from_brokers(bootstrap)
    }
    .with_producer_config("linger.ms", "1")
    .with_consumer_config("session.timeout.ms", "6000")
    .with_consumer_config("heartbeat.interval.ms", "200")
    .with_consumer_config("fetch.wait.max.ms", "20")
    .with_consumer_config("topic.metadata.refresh.interval.ms", "1000")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_slow_failing_and_leader_down_loses_no_acknowledged_message() {
    crate::capture_logs();
    let mock = MockCluster::new(3).expect("librdkafka's mock cluster");
    mock.create_topic(TOPIC, 1, 3).expect("the topic");
    mock.partition_leader(TOPIC, 0, Some(LEADER))
        .expect("the partition's leader");
    mock.coordinator(MockCoordinator::Group(GROUP.into()), COORDINATOR)
        .expect("the group's coordinator");
    let broker: Arc<dyn Broker> =
        Arc::new(KafkaBroker::new(options(&mock.bootstrap_servers())).expect("a Kafka broker"));
    broker.connect().await.expect("connect to the mock cluster");
    let group = SubscribeOptions {
        queue: Some(GROUP.into()),
        auto_ack: true,
    };
    let mut recorder = record(&*broker, TOPIC, group, WORK).await;
    let mut publisher = Publisher::start(broker.clone(), TOPIC, ATTEMPT_BOUND);
    publisher.acked_at_least(PHASE).await;

    // Slow: every broker answers after SLOW_RTT.
    mock.broker_round_trip_time(-1, SLOW_RTT)
        .expect("slow round trips");
    let slow_from = publisher.acked();
    publisher.acked_at_least(slow_from + DURING).await;
    mock.broker_round_trip_time(-1, Duration::ZERO)
        .expect("normal round trips");

    // Failing: produce requests answered with retriable errors, which the producer retries.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ];
    mock.request_errors(RDKafkaApiKey::Produce, &errors);
    let failing_from = publisher.acked();
    publisher.acked_at_least(failing_from + DURING).await;

    // The leader goes down; its partition moves to another broker.
    let down_from = publisher.acked();
    mock.broker_down(LEADER).expect("the leader goes down");
    let down = Instant::now();
    mock.partition_leader(TOPIC, 0, Some(NEXT_LEADER))
        .expect("the partition's new leader");
    publisher.acked_at_least(down_from + DURING).await;
    let failover = down.elapsed();
    mock.broker_up(LEADER).expect("the old leader comes back");
    let back_from = publisher.acked();
    publisher.acked_at_least(back_from + PHASE).await;

    let published = publisher.finish().await;
    let received = receive(&mut recorder.numbers, &published.acked).await;
    let mut line = figures(&published, &received);
    line.push(("brokers", "3".to_string()));
    line.push(("slow_rtt_ms", SLOW_RTT.as_millis().to_string()));
    line.push(("acked_while_slow", (failing_from - slow_from).to_string()));
    line.push(("produce_errors_injected", errors.len().to_string()));
    line.push((
        "acked_through_failover",
        (back_from - down_from).to_string(),
    ));
    line.push(("failover_ms", failover.as_millis().to_string()));
    report("kafka-faults", &line);
    assert_nothing_lost(
        "kafka slow, failing produce requests, leader down",
        &published,
        &received,
    );
    assert!(
        published.unacked.is_empty(),
        "every message was acknowledged in the end: {:?} were not (first error {:?})",
        published.unacked,
        published.first_error
    );
    let _ = recorder.subscription.unsubscribe().await;
    let _ = broker.disconnect().await;
}
