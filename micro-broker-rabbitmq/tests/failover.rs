//! Connection loss: the broker reconnects and resubscribes by itself, and loses nothing that
//! was confirmed to a publisher. Each test runs in a vhost of its own, so closing its
//! connections (or deleting it) disturbs no other test on the same RabbitMQ.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro_core::Broker;
use tokio::sync::mpsc;

mod common;

use common::{unique, Vhost, PATIENCE};

fn options(vhost: &Vhost) -> RabbitOptions {
    RabbitOptions::from_address(&vhost.url())
        .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .with_publish_timeout(Duration::from_secs(5))
}

fn numbered(i: u32) -> Message {
    Message {
        body: i.to_le_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// A handler that reports the number in each body.
fn numbers() -> (Handler, mpsc::UnboundedReceiver<u32>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            if let Ok(bytes) = <[u8; 4]>::try_from(&d.message.body[..]) {
                let _ = tx.send(u32::from_le_bytes(bytes));
            }
            Ok(())
        })
    });
    (handler, rx)
}

/// Polls `check` until it holds, failing after [`PATIENCE`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many connections `rabbitmqctl close_all_connections` said it closed.
fn closed_count(output: &str) -> usize {
    output
        .lines()
        .find_map(|l| l.strip_prefix("Closed ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_resumes_and_no_confirmed_message_is_lost() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("micro-failover").await;
    let publisher = RabbitBroker::new(options(&vhost)).expect("publisher");
    let consumer = RabbitBroker::new(options(&vhost)).expect("consumer");
    publisher.connect().await.expect("publisher connects");
    consumer.connect().await.expect("consumer connects");
    let topic = unique("failover");
    let (handler, mut rx) = numbers();
    let group = SubscribeOptions {
        queue: Some("survivors".into()),
        auto_ack: true,
    };
    let sub = consumer
        .subscribe(&topic, handler, group)
        .await
        .expect("subscribe");

    const N: u32 = 300;
    let closes_at = [N / 3, 2 * N / 3];
    let mut confirmed = BTreeSet::new();
    let mut failed_attempts = 0u32;
    let mut closing: Option<tokio::task::JoinHandle<String>> = None;
    let deadline = Instant::now() + Duration::from_secs(45);
    for i in 0..N {
        if let Some(round) = closes_at.iter().position(|&at| at == i) {
            // Both brokers are on a fresh connection before each close, so it hits both.
            let round = round as u64 + 1;
            eventually("both brokers connected", || {
                publisher.is_connected()
                    && consumer.is_connected()
                    && publisher.connections() >= round
                    && consumer.connections() >= round
            })
            .await;
            let v = vhost.name.clone();
            // Closed while this loop goes on publishing and the consumer goes on consuming.
            closing = Some(tokio::spawn(async move {
                common::ctl(&[
                    "close_all_connections",
                    "--vhost",
                    &v,
                    "test: connection closed on purpose",
                ])
                .await
            }));
        }
        if closes_at.iter().any(|&at| i == at + 50) {
            let output = closing
                .take()
                .expect("a close under way")
                .await
                .expect("close task");
            assert!(
                closed_count(&output) >= 2,
                "both connections were closed: {output}"
            );
        }
        loop {
            match publisher.publish(&topic, numbered(i)).await {
                Ok(()) => {
                    confirmed.insert(i);
                    break;
                }
                Err(e) => {
                    // Not confirmed: may or may not arrive; retried like a careful caller would.
                    failed_attempts += 1;
                    assert!(
                        e.detail.contains("rabbitmq at"),
                        "errors name the server: {e}"
                    );
                    assert!(!e.detail.contains("guest:guest"), "no credentials: {e}");
                    assert!(e.is_retryable(), "an outage is retryable: {e}");
                    assert!(
                        Instant::now() < deadline,
                        "message {i} still not confirmed; last error: {e}"
                    );
                }
            }
        }
    }
    assert_eq!(confirmed.len(), N as usize);

    let mut received = BTreeSet::new();
    let until = Instant::now() + PATIENCE;
    while !confirmed.iter().all(|i| received.contains(i)) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(i)) => {
                received.insert(i);
            }
            Ok(None) => panic!("the subscriber went away"),
            Err(_) => {
                let missing: Vec<_> = confirmed.difference(&received).take(20).collect();
                panic!(
                    "{} confirmed messages never arrived (first: {missing:?})",
                    confirmed.difference(&received).count()
                );
            }
        }
    }
    assert!(
        publisher.connections() >= 3 && consumer.connections() >= 3,
        "each broker reconnected twice (publisher {}, consumer {})",
        publisher.connections(),
        consumer.connections()
    );
    eprintln!("{failed_attempts} publish attempts failed during the closes and were retried");
    sub.unsubscribe().await.expect("unsubscribe");
    publisher.disconnect().await.expect("disconnect");
    consumer.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_during_an_outage_fails_clearly_then_recovers() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("micro-outage").await;
    let opts = options(&vhost).with_publish_timeout(Duration::from_millis(300));
    let broker = RabbitBroker::new(opts).expect("broker");
    let topic = unique("outage");
    let (handler, mut rx) = numbers();
    let group = SubscribeOptions {
        queue: Some("outlasting".into()),
        auto_ack: true,
    };
    let sub = broker
        .subscribe(&topic, handler, group)
        .await
        .expect("subscribe connects on first use");
    broker.publish(&topic, numbered(1)).await.expect("publish");
    assert_eq!(
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .ok()
            .flatten(),
        Some(1)
    );

    // Deleting the vhost closes the connection, and reconnecting fails until it is back.
    common::ctl(&["delete_vhost", &vhost.name]).await;
    eventually("the broker noticed the outage", || !broker.is_connected()).await;
    let err = broker
        .publish(&topic, numbered(2))
        .await
        .expect_err("no connection, no publish");
    assert_eq!(err.code, 503, "{err}");
    assert!(err.detail.contains("rabbitmq at 127.0.0.1:5672"), "{err}");
    assert!(err.detail.contains("not connected"), "{err}");
    assert!(err.detail.contains(&topic), "{err}");

    common::ctl(&["add_vhost", &vhost.name]).await;
    common::ctl(&[
        "set_permissions",
        "-p",
        &vhost.name,
        "guest",
        ".*",
        ".*",
        ".*",
    ])
    .await;
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = broker.publish(&topic, numbered(3)).await {
        assert!(
            Instant::now() < deadline,
            "still failing after the vhost came back: {e}"
        );
    }
    // The group's queue went with the vhost; the subscription redeclared it. A message published
    // before the resubscribe had no queue to go to, so keep publishing until one arrives.
    let mut n = 4;
    loop {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(i)) if i >= 3 => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the subscriber went away"),
            Err(_) => {
                assert!(Instant::now() < deadline, "the subscription did not resume");
                broker.publish(&topic, numbered(n)).await.expect("publish");
                n += 1;
            }
        }
    }
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_connection() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("micro-drop").await;
    let broker = RabbitBroker::new(options(&vhost)).expect("broker");
    let (handler, _rx) = numbers();
    let _sub = broker
        .subscribe(&unique("dropped"), handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    // `list_connections` lists the whole node (`-p` does not filter it): filter by vhost.
    let connections = || async {
        common::ctl(&["list_connections", "-q", "--no-table-headers", "vhost"])
            .await
            .lines()
            .filter(|l| l.trim() == vhost.name)
            .count()
    };
    assert_eq!(connections().await, 1);
    let clone = broker.clone();
    drop(broker);
    assert!(clone.is_connected(), "a clone keeps the connection");
    drop(clone);
    let deadline = Instant::now() + PATIENCE;
    while connections().await > 0 {
        assert!(Instant::now() < deadline, "the connection stayed open");
    }
}
