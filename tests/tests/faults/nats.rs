//! NATS on a bad day: a private nats-server with a JetStream file store killed with SIGKILL
//! while a publisher streams into it, then started again on the same store; and JetStream
//! behind the fault proxy's delay and reset. No acknowledged message is lost, and no publish hangs
//! past its timeout.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::core::broker::SubscribeOptions;
use micro::core::Broker;
use micro_broker_nats::testing::NatsServer;
use micro_broker_nats::{JetStreamOptions, NatsBroker, NatsOptions};
use micro_conformance::fault::FaultProxy;

use crate::brokers::{
    assert_nothing_lost, figures, receive, record, through_delay_then_reset, Publisher,
};
use crate::report;

/// Messages acknowledged before the fault, and after it is lifted, at least.
const PHASE: usize = 200;
/// The broker's bound on a publish (the server's acknowledgement): short, so that the outage
/// costs little wall time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A publish call that has not returned by then hangs: its own timeout plus a margin for a
/// loaded machine.
const ATTEMPT_BOUND: Duration = Duration::from_secs(10);

/// The subscriber's work per message: slower than the publisher, so that a backlog of stored,
/// acknowledged messages is waiting when the server dies.
const WORK: Duration = Duration::from_millis(3);

fn jetstream() -> JetStreamOptions {
    JetStreamOptions {
        stream_prefix: "FAULT".into(),
        // Acks lost with the server come back quickly as redeliveries.
        ack_wait: Duration::from_secs(2),
        nack_delay: Duration::from_millis(100),
        request_timeout: REQUEST_TIMEOUT,
        ..Default::default()
    }
}

fn queue_group() -> SubscribeOptions {
    SubscribeOptions {
        queue: Some("workers".into()),
        auto_ack: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_with_sigkill_mid_stream_loses_no_acknowledged_message() {
    crate::capture_logs();
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let server = Arc::new(server);
    let broker: Arc<dyn Broker> = Arc::new(
        NatsBroker::new(server.jetstream_options(jetstream())).expect("a JetStream broker"),
    );
    broker.connect().await.expect("connect");
    let topic = "fault-kill9";
    let mut recorder = record(&*broker, topic, queue_group(), WORK).await;

    let mut publisher = Publisher::start(broker.clone(), topic, ATTEMPT_BOUND);
    publisher.acked_at_least(PHASE).await;
    // Mid-stream: the publisher is still publishing, the subscriber still consuming.
    let waiting = publisher
        .acked()
        .saturating_sub(recorder.handled.load(Ordering::Acquire));
    let killing = server.clone();
    tokio::task::spawn_blocking(move || killing.kill())
        .await
        .expect("kill task")
        .expect("nats-server killed with SIGKILL");
    let down = Instant::now();
    // Down until a publish has failed for it: the outage is real.
    publisher.failed_at_least(1).await;
    let starting = server.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start task")
        .unwrap_or_else(|e| panic!("nats-server starts again on its store: {e}"));
    let outage = down.elapsed();
    let acked_before = publisher.acked();
    publisher.acked_at_least(acked_before + PHASE).await;
    let published = publisher.finish().await;
    let received = receive(&mut recorder.numbers, &published.acked).await;

    let mut line = figures(&published, &received);
    line.push(("unconsumed_at_kill", waiting.to_string()));
    line.push(("outage_ms", outage.as_millis().to_string()));
    report("nats-jetstream-kill-9", &line);
    assert_nothing_lost("nats kill -9", &published, &received);
    assert!(
        published.unacked.is_empty(),
        "every message was acknowledged in the end once the server was back: {:?} were not \
         (first error {:?})",
        published.unacked,
        published.first_error
    );
    let _ = recorder.subscription.unsubscribe().await;
    let _ = broker.disconnect().await;
}

/// How long the delay fault holds each chunk between the broker and nats-server: many times a
/// publish's round trip on loopback, far below its timeout.
const NATS_DELAY: Duration = Duration::from_millis(20);

/// JetStream through the fault proxy: mid-stream every chunk is delayed, then every
/// connection (open or new) is reset until the fault is lifted. Publishes either succeed or
/// fail within their timeout, and every acknowledged message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_behind_delay_and_reset_loses_no_acknowledged_message() {
    crate::capture_logs();
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let proxy = FaultProxy::start(&server.address())
        .await
        .expect("fault proxy");
    let opts = NatsOptions {
        connect_timeout: Duration::from_secs(2),
        ..NatsOptions::from_address(&format!("nats://{}", proxy.address()))
    }
    .with_jetstream(jetstream());
    let broker: Arc<dyn Broker> = Arc::new(NatsBroker::new(opts).expect("a JetStream broker"));
    broker.connect().await.expect("connect through the proxy");
    let topic = "fault-proxy";
    let mut recorder = record(&*broker, topic, queue_group(), Duration::ZERO).await;

    let publisher = Publisher::start(broker.clone(), topic, ATTEMPT_BOUND);
    through_delay_then_reset(
        "nats-jetstream-delay-reset",
        "nats behind delay and reset",
        &proxy,
        publisher,
        &mut recorder,
        NATS_DELAY,
    )
    .await;
    let _ = recorder.subscription.unsubscribe().await;
    let _ = broker.disconnect().await;
}
