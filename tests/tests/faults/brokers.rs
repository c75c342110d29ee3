//! What the broker faults share: a publisher of a numbered sequence that goes on through a
//! fault, retrying each failed publish as a user would, and a subscriber that records what it
//! received, so that a test can say which acknowledged messages, if any, were lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro::core::Broker;
use micro::Metadata;
use micro_conformance::fault::{Fault, FaultProxy};
use tokio::sync::{mpsc, watch};

use crate::{within, PATIENCE};

/// Message `i` of the sequence on `topic`: its number in the body, and the same `Micro-Id` on
/// every attempt, so that a retried publish the backend had stored is stored once where the
/// backend deduplicates (JetStream).
fn numbered(topic: &str, i: u32) -> Message {
    let mut header = Metadata::new();
    header.insert("Micro-Id", format!("{topic}-{i}"));
    Message {
        header,
        body: i.to_be_bytes().to_vec().into(),
    }
}

/// A subscriber recording message numbers.
pub(crate) struct Recorder {
    pub(crate) subscription: Box<dyn Subscription>,
    pub(crate) numbers: mpsc::UnboundedReceiver<u32>,
    /// Deliveries handled so far.
    pub(crate) handled: Arc<AtomicUsize>,
}

/// Subscribes a recorder of message numbers to `topic`, whose handler takes `work` per message:
/// a consumer slower than the publisher, so that acknowledged messages are still waiting in
/// the backend when a fault strikes.
pub(crate) async fn record(
    broker: &dyn Broker,
    topic: &str,
    opts: SubscribeOptions,
    work: Duration,
) -> Recorder {
    let (tx, numbers) = mpsc::unbounded_channel();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let (tx, counter) = (tx.clone(), counter.clone());
        Box::pin(async move {
            tokio::time::sleep(work).await;
            if let Ok(n) = <[u8; 4]>::try_from(&d.message.body[..]) {
                let _ = tx.send(u32::from_be_bytes(n));
            }
            counter.fetch_add(1, Ordering::AcqRel);
            Ok(())
        })
    });
    let subscription = within(
        "subscribing",
        PATIENCE,
        broker.subscribe(topic, handler, opts),
    )
    .await
    .unwrap_or_else(|e| panic!("subscribing to {topic}: {e}"));
    Recorder {
        subscription,
        numbers,
        handled,
    }
}

/// What a publisher did.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Messages whose publish returned `Ok` (on some attempt).
    pub(crate) acked: BTreeSet<u32>,
    /// Messages given up on: every attempt failed within `PATIENCE`.
    pub(crate) unacked: BTreeSet<u32>,
    /// Publish calls, retries included.
    pub(crate) attempts: usize,
    /// Publish calls that returned an error.
    pub(crate) failed: usize,
    /// Publish calls that had not returned within their bound (the broker's own timeout plus
    /// a margin): a hang, which the user guarantee rules out.
    pub(crate) hung: usize,
    /// The first error, for the report.
    pub(crate) first_error: Option<String>,
}

/// A task publishing messages `0, 1, 2, ...` to a topic in order until told to finish, each
/// retried until it is acknowledged (a pause of 50 ms between attempts, as a user's retry
/// loop would have). It runs for as long as the test's fault takes, however slow the machine.
pub(crate) struct Publisher {
    acked: watch::Receiver<usize>,
    failed: Arc<AtomicUsize>,
    finish: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Published>,
}

impl Publisher {
    /// Starts publishing; each publish call is bounded by `attempt_bound`.
    pub(crate) fn start(
        broker: Arc<dyn Broker>,
        topic: &str,
        attempt_bound: Duration,
    ) -> Publisher {
        let (acked_tx, acked) = watch::channel(0usize);
        let failed = Arc::new(AtomicUsize::new(0));
        let finish = Arc::new(AtomicBool::new(false));
        let topic = topic.to_string();
        let (failures, finishing) = (failed.clone(), finish.clone());
        let task = tokio::spawn(async move {
            let mut out = Published::default();
            for i in 0.. {
                if finishing.load(Ordering::Acquire) {
                    break;
                }
                let give_up = Instant::now() + PATIENCE;
                loop {
                    out.attempts += 1;
                    let attempt = tokio::time::timeout(
                        attempt_bound,
                        broker.publish(&topic, numbered(&topic, i)),
                    )
                    .await;
                    let error = match attempt {
                        Ok(Ok(())) => {
                            out.acked.insert(i);
                            acked_tx.send_replace(out.acked.len());
                            break;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => {
                            out.hung += 1;
                            format!("publish of {i} still running after {attempt_bound:?}")
                        }
                    };
                    out.failed += 1;
                    failures.fetch_add(1, Ordering::AcqRel);
                    out.first_error.get_or_insert(error);
                    if Instant::now() >= give_up {
                        out.unacked.insert(i);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            out
        });
        Publisher {
            acked,
            failed,
            finish,
            task,
        }
    }

    /// Waits until at least `n` messages were acknowledged.
    pub(crate) async fn acked_at_least(&mut self, n: usize) {
        within(
            &format!("{n} acknowledged publishes"),
            PATIENCE,
            self.acked.wait_for(|acked| *acked >= n),
        )
        .await
        .expect("the publisher is running");
    }

    /// Waits until at least `n` publish calls failed (the outage is real).
    pub(crate) async fn failed_at_least(&self, n: usize) {
        within(&format!("{n} failed publishes"), PATIENCE, async {
            while self.failed.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Messages acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        *self.acked.borrow()
    }

    /// Tells the publisher to stop after the message it is on (published or given up on),
    /// and waits for it.
    pub(crate) async fn finish(self) -> Published {
        self.finish.store(true, Ordering::Release);
        within("the publisher", PATIENCE * 2, self.task)
            .await
            .expect("the publisher did not panic")
    }
}

/// What a subscriber received of a sequence.
#[derive(Debug)]
pub(crate) struct Received {
    /// Distinct messages.
    pub(crate) seen: BTreeSet<u32>,
    /// Deliveries, duplicates included.
    pub(crate) deliveries: usize,
}

impl Received {
    /// The acknowledged messages never received.
    pub(crate) fn lost(&self, published: &Published) -> Vec<u32> {
        published.acked.difference(&self.seen).copied().collect()
    }
}

/// Reads `rx` until every message of `wanted` arrived or `PATIENCE` passed (a redelivery
/// after a crash can take the backend's ack wait).
pub(crate) async fn receive(
    rx: &mut mpsc::UnboundedReceiver<u32>,
    wanted: &BTreeSet<u32>,
) -> Received {
    let mut got = Received {
        seen: BTreeSet::new(),
        deliveries: 0,
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !wanted.is_subset(&got.seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) => {
                got.seen.insert(n);
                got.deliveries += 1;
            }
            Ok(None) | Err(_) => break,
        }
    }
    // What is already queued counts too (duplicates).
    while let Ok(n) = rx.try_recv() {
        got.seen.insert(n);
        got.deliveries += 1;
    }
    got
}

/// The figures every broker fault reports.
pub(crate) fn figures(published: &Published, received: &Received) -> Vec<(&'static str, String)> {
    vec![
        (
            "published",
            (published.acked.len() + published.unacked.len()).to_string(),
        ),
        ("acked", published.acked.len().to_string()),
        ("not_acked", published.unacked.len().to_string()),
        ("attempts", published.attempts.to_string()),
        ("failed_attempts", published.failed.to_string()),
        ("hung_attempts", published.hung.to_string()),
        ("received", received.seen.len().to_string()),
        (
            "duplicates",
            (received.deliveries - received.seen.len()).to_string(),
        ),
        ("lost", received.lost(published).len().to_string()),
    ]
}

/// The user guarantee: no publish hung past its bound, and every acknowledged message arrived.
pub(crate) fn assert_nothing_lost(name: &str, published: &Published, received: &Received) {
    assert_eq!(
        published.hung, 0,
        "{name}: {} publish calls hung past their timeout; first error: {:?}",
        published.hung, published.first_error
    );
    let lost = received.lost(published);
    assert!(
        lost.is_empty(),
        "{name}: {} acknowledged messages were never received: {lost:?}",
        lost.len()
    );
}

/// A stream through `proxy` while it delays every chunk by `delay`, then resets every
/// connection (open or new) until a publish fails, then passes again: `PHASE` messages
/// acknowledged before and after, 50 through the delay. Reports the figures as `name` and
/// asserts what a user relies on: nothing acknowledged lost, no publish hung, every message
/// acknowledged once the fault was lifted, and the reset was real.
pub(crate) async fn through_delay_then_reset(
    name: &str,
    what: &str,
    proxy: &FaultProxy,
    mut publisher: Publisher,
    recorder: &mut Recorder,
    delay: Duration,
) {
    const PHASE: usize = 200;
    publisher.acked_at_least(PHASE).await;
    proxy.set(Fault::Delay(delay));
    let acked_before_delay = publisher.acked();
    // Publishes go on, slowly, through the delay.
    publisher.acked_at_least(acked_before_delay + 50).await;
    proxy.set(Fault::Reset);
    let reset = Instant::now();
    publisher.failed_at_least(1).await;
    let resets = proxy.resets();
    proxy.set(Fault::Pass);
    let outage = reset.elapsed();
    let acked_before = publisher.acked();
    publisher.acked_at_least(acked_before + PHASE).await;
    let published = publisher.finish().await;
    let received = receive(&mut recorder.numbers, &published.acked).await;

    let mut line = figures(&published, &received);
    line.push(("delay_ms", delay.as_millis().to_string()));
    line.push(("connections_reset", resets.to_string()));
    line.push(("reset_for_ms", outage.as_millis().to_string()));
    crate::report(name, &line);
    assert_nothing_lost(what, &published, &received);
    assert!(resets > 0, "{what}: the reset fault reset no connection");
    assert!(
        published.unacked.is_empty(),
        "{what}: every message was acknowledged once the fault was lifted: {:?} were not \
         (first error {:?})",
        published.unacked,
        published.first_error
    );
}
