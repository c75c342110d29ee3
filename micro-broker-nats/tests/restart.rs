//! JetStream across a NATS server restart, on a private nats-server (so other tests are not
//! disturbed): every message whose publish was acknowledged is consumed in the end, by a queue
//! group and by a lone subscriber, and both resume on their own. Duplicates are allowed (at
//! least once); losses are not.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_broker_nats::testing::NatsServer;
use micro_broker_nats::{JetStreamOptions, NatsBroker};
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro_core::{Broker, Metadata};
use tokio::sync::{mpsc, watch};

/// Messages published in all.
const N: u32 = 200;
/// The server goes away once this many are stored.
const BEFORE_RESTART: u32 = 100;
/// The bound on every wait of this test.
const PATIENCE: Duration = Duration::from_secs(60);

/// A subscriber that records what it handled, taking `work` per message, so that messages
/// are still waiting for it when the server goes away.
fn recorder(work: Duration) -> (Handler, mpsc::UnboundedReceiver<u32>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            tokio::time::sleep(work).await;
            let n = <[u8; 4]>::try_from(&d.message.body[..]).map(u32::from_be_bytes);
            if let Ok(n) = n {
                let _ = tx.send(n);
            }
            Ok(())
        })
    });
    (handler, rx)
}

fn numbered(i: u32) -> Message {
    let mut header = Metadata::new();
    // The same id on every attempt: a retry of a publish that was stored is stored once.
    header.insert("Micro-Id", format!("restart-{i}"));
    Message {
        header,
        body: i.to_be_bytes().to_vec().into(),
    }
}

/// Reads `rx` until everything in `wanted` was seen; returns what was seen and how many
/// deliveries that took (duplicates included).
async fn consume_all(
    who: &str,
    rx: &mut mpsc::UnboundedReceiver<u32>,
    wanted: &BTreeSet<u32>,
) -> (BTreeSet<u32>, usize) {
    let mut seen = BTreeSet::new();
    let mut deliveries = 0;
    let deadline = Instant::now() + PATIENCE;
    while !wanted.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(n)) => {
                seen.insert(n);
                deliveries += 1;
            }
            Ok(None) => panic!("{who}: the subscriber went away"),
            Err(_) => {
                let missing: Vec<&u32> = wanted.difference(&seen).collect();
                panic!(
                    "{who}: {} acknowledged messages never arrived within {PATIENCE:?}: {missing:?}",
                    missing.len()
                );
            }
        }
    }
    (seen, deliveries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_server_restart() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let server = Arc::new(server);
    // A short ack wait: acks lost with the connection come back quickly as redeliveries.
    let js = JetStreamOptions {
        ack_wait: Duration::from_secs(2),
        ..common::test_jetstream()
    };
    let broker =
        NatsBroker::new(server.jetstream_options(js)).expect("a broker for the private server");
    broker.connect().await.expect("connect");
    let topic = "restart-orders";

    let (group_handler, mut group_rx) = recorder(Duration::from_millis(5));
    let queue = SubscribeOptions {
        queue: Some("workers".into()),
        auto_ack: true,
    };
    let group = broker
        .subscribe(topic, group_handler, queue)
        .await
        .expect("subscribe the queue group");
    let (own_handler, mut own_rx) = recorder(Duration::from_millis(2));
    let own = broker
        .subscribe(topic, own_handler, SubscribeOptions::default())
        .await
        .expect("subscribe alone");

    // The publisher stores the first half, then goes on while the server is away, retrying
    // each message until it is stored.
    let (stored_tx, mut stored_rx) = watch::channel(0u32);
    let (down_tx, mut down_rx) = watch::channel(false);
    let failures = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn({
        let broker = broker.clone();
        let failures = failures.clone();
        async move {
            let mut acked = BTreeSet::new();
            for i in 0..N {
                if i == BEFORE_RESTART {
                    // The second half starts once the server is down.
                    tokio::time::timeout(PATIENCE, down_rx.wait_for(|down| *down))
                        .await
                        .expect("the server went down in time")
                        .expect("the test is running");
                }
                let deadline = Instant::now() + PATIENCE;
                loop {
                    match broker.publish(topic, numbered(i)).await {
                        Ok(()) => break,
                        Err(e) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            assert!(
                                Instant::now() < deadline,
                                "message {i} was not stored within {PATIENCE:?}: {e}"
                            );
                            // A retry pause, not a wait for a condition.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                acked.insert(i);
                let _ = stored_tx.send(i + 1);
            }
            acked
        }
    });

    tokio::time::timeout(PATIENCE, stored_rx.wait_for(|n| *n >= BEFORE_RESTART))
        .await
        .expect("the first half stored in time")
        .expect("the publisher is running");
    let stopping = server.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("stop task")
        .expect("nats-server stops");
    down_tx.send(true).expect("the publisher is running");
    // Keep it down until a publish has failed for it: the outage is real.
    let deadline = Instant::now() + PATIENCE;
    while failures.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no publish failed while the server was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let starting = server.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start task")
        .unwrap_or_else(|e| panic!("nats-server starts again: {e}"));

    let acked = tokio::time::timeout(PATIENCE * 2, publisher)
        .await
        .expect("the publisher finished in time")
        .expect("the publisher did not panic");
    assert_eq!(
        acked.len(),
        N as usize,
        "every message was stored in the end"
    );

    let (by_group, group_deliveries) = consume_all("the queue group", &mut group_rx, &acked).await;
    let (by_own, own_deliveries) = consume_all("the lone subscriber", &mut own_rx, &acked).await;
    assert!(
        by_group.range(BEFORE_RESTART..).next().is_some()
            && by_own.range(BEFORE_RESTART..).next().is_some(),
        "both subscribers resumed after the restart"
    );

    group.unsubscribe().await.expect("unsubscribe");
    own.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    eprintln!(
        "restart: {} publishes failed while nats-server was away; all {N} stored messages were \
         consumed, in {group_deliveries} deliveries by the queue group and {own_deliveries} by \
         the lone subscriber",
        failures.load(Ordering::SeqCst)
    );
}
