//! RabbitMQ on a bad day, on a private node (never the machine's shared RabbitMQ, which other
//! tests use at the same time): `rabbitmqctl stop_app` then `start_app` while a publisher
//! streams into a queue group's durable queue; and the node behind the fault proxy, every
//! chunk delayed, then every connection reset. Every publish that returned `Ok` (RabbitMQ
//! confirmed it) is consumed; no publish hangs past its timeout.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::core::broker::SubscribeOptions;
use micro::core::Broker;
use micro_broker_rabbitmq::testing::RabbitNode;
use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};
use micro_conformance::fault::FaultProxy;

use crate::brokers::{
    assert_nothing_lost, figures, receive, record, through_delay_then_reset, Publisher,
};
use crate::report;

/// Messages acknowledged before the fault, and after it is lifted, at least.
const PHASE: usize = 200;
/// The broker's bound on a publish while the connection is down.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// A publish call that has not returned by then hangs: its own timeout plus a margin.
const ATTEMPT_BOUND: Duration = Duration::from_secs(10);
/// The subscriber's work per message: slower than the publisher, so that confirmed messages
/// wait in the queue when the app stops.
const WORK: Duration = Duration::from_millis(3);
/// What the fault proxy adds to every chunk while it delays.
const DELAY: Duration = Duration::from_millis(20);

/// A broker on `url` that reconnects quickly and bounds its publishes by `PUBLISH_TIMEOUT`.
async fn connected(url: &str) -> Arc<dyn Broker> {
    let broker: Arc<dyn Broker> = Arc::new(
        RabbitBroker::new(
            RabbitOptions::from_address(url)
                .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
                .with_publish_timeout(PUBLISH_TIMEOUT),
        )
        .expect("a RabbitMQ broker"),
    );
    broker.connect().await.expect("connect to the private node");
    broker
}

/// A queue group: its durable queue keeps what was confirmed across a lost connection.
fn workers() -> SubscribeOptions {
    SubscribeOptions {
        queue: Some("workers".into()),
        auto_ack: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_publish_loses_no_confirmed_message() {
    crate::capture_logs();
    let Some(node) = tokio::task::spawn_blocking(RabbitNode::start_or_skip)
        .await
        .expect("start task")
    else {
        return;
    };
    let node = Arc::new(node);
    let broker = connected(&node.url()).await;
    let topic = "fault.restart";
    let mut recorder = record(&*broker, topic, workers(), WORK).await;

    let mut publisher = Publisher::start(broker.clone(), topic, ATTEMPT_BOUND);
    publisher.acked_at_least(PHASE).await;
    let waiting = publisher
        .acked()
        .saturating_sub(recorder.handled.load(Ordering::Acquire));
    let stopping = node.clone();
    tokio::task::spawn_blocking(move || stopping.ctl(&["stop_app"]))
        .await
        .expect("stop_app task")
        .expect("rabbitmqctl stop_app");
    let down = Instant::now();
    // Down until a publish has failed for it: the outage is real.
    publisher.failed_at_least(1).await;
    let starting = node.clone();
    let restarted = Instant::now();
    tokio::task::spawn_blocking(move || starting.ctl(&["start_app"]))
        .await
        .expect("start_app task")
        .expect("rabbitmqctl start_app");
    let start_app = restarted.elapsed();
    let outage = down.elapsed();
    let acked_before = publisher.acked();
    publisher.acked_at_least(acked_before + PHASE).await;
    let published = publisher.finish().await;
    let received = receive(&mut recorder.numbers, &published.acked).await;

    let mut line = figures(&published, &received);
    line.push(("unconsumed_at_stop", waiting.to_string()));
    line.push(("outage_ms", outage.as_millis().to_string()));
    line.push((
        "node_startup_ms",
        node.startup_time().as_millis().to_string(),
    ));
    line.push(("start_app_ms", start_app.as_millis().to_string()));
    report("rabbitmq-restart", &line);
    assert_nothing_lost("rabbitmq stop_app/start_app", &published, &received);
    assert!(
        published.unacked.is_empty(),
        "every message was confirmed in the end once the app was back: {:?} were not (first \
         error {:?})",
        published.unacked,
        published.first_error
    );
    let _ = recorder.subscription.unsubscribe().await;
    let _ = broker.disconnect().await;
}

/// The private node behind the fault proxy: mid-stream every chunk is delayed, then every
/// connection (open or new) is reset until the fault is lifted. The subscription notices its
/// connection died and resumes on the next one; every confirmed message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_behind_delay_and_reset_loses_no_confirmed_message() {
    crate::capture_logs();
    let Some(node) = tokio::task::spawn_blocking(RabbitNode::start_or_skip)
        .await
        .expect("start task")
    else {
        return;
    };
    let proxy = FaultProxy::start(&node.address())
        .await
        .expect("fault proxy");
    let url = format!("amqp://guest:guest@{}/%2f", proxy.address());
    let broker = connected(&url).await;
    let topic = "fault.proxy";
    let mut recorder = record(&*broker, topic, workers(), WORK).await;

    let publisher = Publisher::start(broker.clone(), topic, ATTEMPT_BOUND);
    through_delay_then_reset(
        "rabbitmq-delay-reset",
        "rabbitmq behind delay and reset",
        &proxy,
        publisher,
        &mut recorder,
        DELAY,
    )
    .await;
    let _ = recorder.subscription.unsubscribe().await;
    let _ = broker.disconnect().await;
}
