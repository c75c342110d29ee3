//! The broker conformance suite.
//!
//! Subscriptions may take a moment to become live (a consumer group joining, a subscriber
//! registering): every check first publishes probe messages until each subscriber has seen one,
//! and ignores probes from then on. Nothing sleeps in place of a condition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, Metadata, Result};
use tokio::sync::mpsc;

use crate::registry::{unique, PATIENCE};

/// What a broker promises beyond the common ground, so the suite knows what to hold it to.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// A nacked message (or a handler error under auto-ack) comes back.
    pub redelivery: bool,
    /// One subscriber sees one publisher's messages in publish order.
    pub ordered: bool,
}

const PROBE: &str = "Conformance-Probe";

/// A subscriber that forwards every non-probe delivery to a channel, and reports probes apart.
struct Collector {
    rx: mpsc::UnboundedReceiver<Delivery>,
    probes: mpsc::UnboundedReceiver<()>,
}

fn collector(fail_first: usize) -> (Handler, Collector) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ptx, probes) = mpsc::unbounded_channel();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(fail_first));
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        let ptx = ptx.clone();
        let failures = failures.clone();
        Box::pin(async move {
            if d.message.header.get(PROBE).is_some() {
                // Settle probes even under manual ack, so they never hold up a prefetch window.
                d.ack().await?;
                let _ = ptx.send(());
                return Ok(());
            }
            let left = failures.load(std::sync::atomic::Ordering::SeqCst);
            if left > 0 {
                failures.store(left - 1, std::sync::atomic::Ordering::SeqCst);
                return Err(Error::internal("conformance", "failing on purpose"));
            }
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, Collector { rx, probes })
}

impl Collector {
    async fn next(&mut self, what: &str) -> Delivery {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no delivery within {PATIENCE:?}"))
            .unwrap_or_else(|| panic!("{what}: the subscriber went away"))
    }

    /// Nothing (but probes) arrives while `quiet` passes.
    async fn nothing_more(&mut self, quiet: Duration) -> Option<Delivery> {
        tokio::time::timeout(quiet, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

fn message(body: &[u8], pairs: &[(&str, &str)]) -> Message {
    let mut header = Metadata::new();
    for (k, v) in pairs {
        header.insert(k.to_string(), *v);
    }
    Message {
        header,
        body: body.to_vec().into(),
    }
}

/// Publishes probes until every collector has seen one.
async fn until_live(b: &dyn Broker, topic: &str, collectors: &mut [&mut Collector]) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    let mut live = vec![false; collectors.len()];
    while live.iter().any(|l| !l) {
        assert!(
            Instant::now() < deadline,
            "subscriptions to {topic} did not become live within {PATIENCE:?}"
        );
        b.publish(topic, message(b"probe", &[(PROBE, "1")])).await?;
        let wait = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(wait);
        loop {
            let mut progressed = false;
            for (i, c) in collectors.iter_mut().enumerate() {
                while c.probes.try_recv().is_ok() {
                    live[i] = true;
                    progressed = true;
                }
            }
            if live.iter().all(|l| *l) {
                break;
            }
            tokio::select! {
                _ = &mut wait => break,
                _ = tokio::time::sleep(Duration::from_millis(10)), if !progressed => {}
            }
        }
    }
    Ok(())
}

async fn subscribe(
    b: &dyn Broker,
    topic: &str,
    queue: Option<&str>,
    auto_ack: bool,
    fail_first: usize,
) -> Result<(Box<dyn Subscription>, Collector)> {
    let (handler, c) = collector(fail_first);
    let opts = SubscribeOptions {
        queue: queue.map(str::to_string),
        auto_ack,
    };
    Ok((b.subscribe(topic, handler, opts).await?, c))
}

/// A message with headers and a binary body arrives intact.
pub async fn round_trip_with_headers_and_binary_body(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    let topic = unique("conf-roundtrip");
    let (sub, mut c) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut c]).await?;
    let body: Vec<u8> = (0u8..=255).chain([0, 0xff, 0x80]).collect();
    b.publish(
        &topic,
        message(
            &body,
            &[
                ("Micro-Id", "id-1"),
                ("Trace-Id", "t-9"),
                ("Content-Type", "application/octet-stream"),
            ],
        ),
    )
    .await?;
    let d = c.next("the published message").await;
    assert_eq!(
        &d.message.body[..],
        &body[..],
        "the body arrives byte for byte"
    );
    assert_eq!(d.message.header.get("micro-id"), Some("id-1"));
    assert_eq!(d.message.header.get("Trace-Id"), Some("t-9"));
    assert_eq!(d.topic, topic);
    sub.unsubscribe().await?;
    Ok(())
}

/// Subscribers without a queue group each get every message.
pub async fn every_subscriber_gets_every_message(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    let topic = unique("conf-fanout");
    let (s1, mut c1) = subscribe(&*b, &topic, None, true, 0).await?;
    let (s2, mut c2) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut c1, &mut c2]).await?;
    for i in 0..5u8 {
        b.publish(&topic, message(&[i], &[])).await?;
    }
    for c in [&mut c1, &mut c2] {
        let mut got: Vec<u8> = Vec::new();
        for _ in 0..5 {
            got.push(c.next("fan-out").await.message.body[0]);
        }
        got.sort();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }
    s1.unsubscribe().await?;
    s2.unsubscribe().await?;
    Ok(())
}

/// Members of one queue group share the messages: each reaches the group once.
pub async fn a_queue_group_shares_messages(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    let topic = unique("conf-queue");
    let (s1, mut c1) = subscribe(&*b, &topic, Some("workers"), true, 0).await?;
    let (s2, mut c2) = subscribe(&*b, &topic, Some("workers"), true, 0).await?;
    // A probe reaches one member only, so liveness is per group here.
    let (probe_sub, mut probe) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut probe]).await?;
    let n = 20u8;
    for i in 0..n {
        b.publish(&topic, message(&[i], &[])).await?;
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < n as usize {
        assert!(
            Instant::now() < deadline,
            "the group got {} of {n} messages",
            got.len()
        );
        tokio::select! {
            Some(d) = c1.rx.recv() => got.push(d.message.body[0]),
            Some(d) = c2.rx.recv() => got.push(d.message.body[0]),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    got.sort();
    assert_eq!(
        got,
        (0..n).collect::<Vec<u8>>(),
        "each message reached the group once"
    );
    assert!(
        c1.nothing_more(Duration::from_millis(300)).await.is_none(),
        "no duplicates"
    );
    assert!(
        c2.nothing_more(Duration::from_millis(10)).await.is_none(),
        "no duplicates"
    );
    for s in [s1, s2, probe_sub] {
        s.unsubscribe().await?;
    }
    Ok(())
}

/// With auto-ack off, the handler acks; an acked message is not delivered again.
pub async fn manual_ack(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    let topic = unique("conf-manual");
    let (sub, mut c) = subscribe(&*b, &topic, Some("manual"), false, 0).await?;
    let (probe_sub, mut probe) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut probe]).await?;
    b.publish(&topic, message(b"m", &[])).await?;
    let d = c.next("a manually acked message").await;
    d.ack().await?;
    assert!(
        c.nothing_more(Duration::from_millis(500)).await.is_none(),
        "an acked message is not delivered again"
    );
    sub.unsubscribe().await?;
    probe_sub.unsubscribe().await?;
    Ok(())
}

/// A handler error (auto-ack) or a nack with requeue brings the message back, where the
/// broker supports redelivery; otherwise the subscriber simply goes on.
pub async fn handler_errors_and_redelivery(b: Arc<dyn Broker>, caps: Capabilities) -> Result<()> {
    b.connect().await?;
    let topic = unique("conf-redeliver");
    let (sub, mut c) = subscribe(&*b, &topic, Some("redeliver"), true, 1).await?;
    let (probe_sub, mut probe) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut probe]).await?;
    b.publish(&topic, message(b"first", &[])).await?;
    if caps.redelivery {
        let d = c.next("the message after a handler error").await;
        assert_eq!(
            &d.message.body[..],
            b"first",
            "the failed message came back"
        );
    } else {
        b.publish(&topic, message(b"second", &[])).await?;
        let d = c.next("the next message after a handler error").await;
        assert_eq!(&d.message.body[..], b"second", "the subscriber goes on");
    }
    sub.unsubscribe().await?;
    probe_sub.unsubscribe().await?;
    Ok(())
}

/// After unsubscribing, nothing more arrives.
pub async fn unsubscribe_stops_delivery(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    let topic = unique("conf-unsub");
    let (sub, mut c) = subscribe(&*b, &topic, None, true, 0).await?;
    let (other, mut o) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut c, &mut o]).await?;
    sub.unsubscribe().await?;
    b.publish(&topic, message(b"after", &[])).await?;
    // The other subscriber proves the message was delivered; the first must not see it.
    o.next("the message to the remaining subscriber").await;
    assert!(
        c.nothing_more(Duration::from_millis(300)).await.is_none(),
        "delivery stopped"
    );
    other.unsubscribe().await?;
    Ok(())
}

/// Publishing to a topic nobody subscribes to is fine.
pub async fn publishing_without_subscribers_is_fine(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    b.publish(&unique("conf-nobody"), message(b"x", &[])).await
}

/// After disconnect and connect, the same broker value publishes and delivers again.
pub async fn disconnect_then_reconnect(b: Arc<dyn Broker>) -> Result<()> {
    b.connect().await?;
    b.disconnect().await?;
    b.connect().await?;
    let topic = unique("conf-reconnect");
    let (sub, mut c) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut c]).await?;
    b.publish(&topic, message(b"again", &[])).await?;
    assert_eq!(
        &c.next("after reconnecting").await.message.body[..],
        b"again"
    );
    sub.unsubscribe().await?;
    Ok(())
}

/// One subscriber sees one publisher's messages in order, where the broker promises it.
pub async fn order_is_kept(b: Arc<dyn Broker>, caps: Capabilities) -> Result<()> {
    if !caps.ordered {
        return Ok(());
    }
    b.connect().await?;
    let topic = unique("conf-order");
    let (sub, mut c) = subscribe(&*b, &topic, None, true, 0).await?;
    until_live(&*b, &topic, &mut [&mut c]).await?;
    for i in 0..100u8 {
        b.publish(&topic, message(&[i], &[])).await?;
    }
    for i in 0..100u8 {
        assert_eq!(
            c.next("ordered delivery").await.message.body[0],
            i,
            "message {i} in order"
        );
    }
    sub.unsubscribe().await?;
    Ok(())
}

/// Declares one `#[tokio::test]` per check for a broker made by `$make` (an async block
/// returning `micro_core::Result<Arc<dyn Broker>>`), holding it to `$caps`.
#[macro_export]
macro_rules! broker_suite {
    ($make:expr, $caps:expr) => {
        $crate::broker_suite!(@plain $make;
            round_trip_with_headers_and_binary_body, every_subscriber_gets_every_message,
            a_queue_group_shares_messages, manual_ack, unsubscribe_stops_delivery,
            publishing_without_subscribers_is_fine, disconnect_then_reconnect);
        $crate::broker_suite!(@caps $make, $caps; handler_errors_and_redelivery, order_is_kept);
    };
    (@plain $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let broker = $make.await.expect("create the broker");
                $crate::broker::$check(broker).await.expect(stringify!($check));
            }
        )*
    };
    (@caps $make:expr, $caps:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let broker = $make.await.expect("create the broker");
                $crate::broker::$check(broker, $caps).await.expect(stringify!($check));
            }
        )*
    };
}

/// A handler for poison-message tests: a delivery whose body starts with `bad` fails with
/// `error` (its body sent to the second receiver, once per attempt); the rest are forwarded to
/// the first receiver and succeed.
pub fn failing_on_bad(
    error: Error,
) -> (
    Handler,
    mpsc::UnboundedReceiver<Delivery>,
    mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (tx, handled) = mpsc::unbounded_channel();
    let (ftx, failed) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let (tx, ftx, error) = (tx.clone(), ftx.clone(), error.clone());
        Box::pin(async move {
            if d.message.body.starts_with(b"bad") {
                let _ = ftx.send(d.message.body.to_vec());
                return Err(error);
            }
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, handled, failed)
}

/// The next item `rx` receives, within [`PATIENCE`]; panics naming `what` otherwise.
pub async fn next_within<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the sender went away"))
}
