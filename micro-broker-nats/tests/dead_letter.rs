//! JetStream never gives a message up silently: one that keeps failing is published to its
//! dead-letter subject (stored) before it is terminated, or redelivered for ever under
//! `block`; and a handler that runs longer than the ack wait is not redelivered under it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures_util::StreamExt;
use micro_broker_nats::{JetStreamOptions, NatsBroker, NatsOptions, PoisonPolicy};
use micro_conformance::broker::{failing_on_bad, next_within};
use micro_core::broker::dead_letter as dl;
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro_core::{Broker, Error};
use tokio::sync::{mpsc, Notify};

const PATIENCE: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn body(b: &[u8], headers: &[(&str, &str)]) -> Message {
    Message {
        header: headers.iter().copied().collect(),
        body: b.to_vec().into(),
    }
}

fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.to_string()),
        auto_ack: true,
    }
}

async fn with_jetstream(
    js: impl FnOnce(JetStreamOptions) -> JetStreamOptions,
) -> Option<NatsOptions> {
    let mut o = common::jetstream_options().await?;
    o.jetstream = o.jetstream.map(js);
    Some(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_stored_on_its_dead_letter_subject() {
    let Some(opts) = with_jetstream(|js| JetStreamOptions {
        max_deliver: 3,
        ..js
    })
    .await
    else {
        return;
    };
    let servers = opts.servers.clone();
    let broker = NatsBroker::new(opts).expect("broker");
    let topic = unique("poison");
    let queue = unique("workers");
    let (h, mut handled, mut failed) = failing_on_bad(Error::internal("test", "always failing"));
    let sub = broker
        .subscribe(&topic, h, group(&queue))
        .await
        .expect("subscribe");
    broker
        .publish(&topic, body(b"bad", &[("Trace", "t-1")]))
        .await
        .expect("bad");
    broker
        .publish(&topic, body(b"good", &[]))
        .await
        .expect("good");
    let d = next_within(&mut handled, "the message after the poisoned one").await;
    assert_eq!(&d.message.body[..], b"good");
    for _ in 0..3 {
        assert_eq!(
            next_within(&mut failed, "the poisoned message").await,
            b"bad"
        );
    }

    // The dead letter is stored (terminated only after that), with the reasons, whether or not
    // anyone consumes the dead-letter subject yet. Read it with a plain client, once the
    // group's consumer has nothing left to acknowledge.
    let client = async_nats::connect(servers).await.expect("plain client");
    let js = async_nats::jetstream::new(client);
    let consumer_name = format!("micro_{topic}_{queue}");
    let stream_name = js.stream_by_subject(topic.clone()).await.expect("stream");
    let mut stream = js.get_stream(&stream_name).await.expect("stream");
    let subject = format!("dlq.{topic}");
    let dead = tokio::time::timeout(PATIENCE, async {
        loop {
            let pending = stream
                .consumer_info(&consumer_name)
                .await
                .map(|i| i.num_ack_pending + i.num_pending as usize)
                .unwrap_or(usize::MAX);
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let name = js
            .stream_by_subject(subject.clone())
            .await
            .expect("a dead-letter stream");
        let dead = js.get_stream(&name).await.expect("dead-letter stream");
        dead.get_last_raw_message_by_subject(&subject)
            .await
            .expect("the dead letter")
    })
    .await
    .expect("the message settled and its dead letter stored in time");
    assert_eq!(&dead.payload[..], b"bad");
    let h = &dead.headers;
    let get = |name: &str| {
        h.get(name)
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| panic!("dead letter header {name} in {h:?}"))
    };
    assert_eq!(get("Trace"), "t-1", "the original headers travel");
    assert!(get(dl::ERROR_HEADER).contains("always failing"));
    assert_eq!(get(dl::ATTEMPTS_HEADER), "3");
    assert_eq!(get(dl::TOPIC_HEADER), topic);
    assert_eq!(get(dl::QUEUE_HEADER), queue);
    assert_eq!(get(dl::STREAM_HEADER), stream_name);
    assert!(get(dl::SEQUENCE_HEADER).parse::<u64>().is_ok());
    let info = stream.info().await.expect("stream info");
    assert_eq!(
        info.state.messages, 0,
        "both messages were settled on the topic's stream"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_block_a_failing_message_keeps_coming_back() {
    let Some(opts) = with_jetstream(|js| JetStreamOptions {
        max_deliver: 2,
        dead_letter: PoisonPolicy::Block,
        ..js
    })
    .await
    else {
        return;
    };
    let servers = opts.servers.clone();
    let broker = NatsBroker::new(opts).expect("broker");
    let topic = unique("block");
    let (h, _handled, mut failed) = failing_on_bad(Error::internal("test", "always failing"));
    let sub = broker
        .subscribe(&topic, h, group(&unique("workers")))
        .await
        .expect("subscribe");
    broker
        .publish(&topic, body(b"bad", &[]))
        .await
        .expect("bad");
    for _ in 0..5 {
        assert_eq!(
            next_within(&mut failed, "the blocking message").await,
            b"bad"
        );
    }
    let js = async_nats::jetstream::new(async_nats::connect(servers).await.expect("client"));
    assert!(
        js.stream_by_subject(format!("dlq.{topic}")).await.is_err(),
        "no dead letter under block"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_longer_than_the_ack_wait_gets_one_delivery() {
    let ack_wait = Duration::from_secs(2);
    let Some(opts) = with_jetstream(|js| JetStreamOptions { ack_wait, ..js }).await else {
        return;
    };
    let servers = opts.servers.clone();
    let broker = NatsBroker::new(opts).expect("broker");
    let topic = unique("long");
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let (c, r) = (calls.clone(), release.clone());
    let handler: Handler = Arc::new(move |d: Delivery| {
        let (c, r, started_tx, done_tx) =
            (c.clone(), r.clone(), started_tx.clone(), done_tx.clone());
        Box::pin(async move {
            c.fetch_add(1, Ordering::SeqCst);
            if &d.message.body[..] == b"long" {
                let _ = started_tx.send(());
                r.notified().await;
            }
            let _ = done_tx.send(d.message.body.to_vec());
            Ok(())
        })
    });
    let sub = broker
        .subscribe(&topic, handler, group(&unique("workers")))
        .await
        .expect("subscribe");
    broker
        .publish(&topic, body(b"long", &[]))
        .await
        .expect("publish");
    next_within(&mut started, "the long handler starts").await;

    // The clock: a plain consumer with the same ack wait that never acks. Its message coming
    // back twice means more than two ack waits have passed while the handler ran.
    let js = async_nats::jetstream::new(async_nats::connect(servers).await.expect("client"));
    let clock_subject = unique("clock");
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: format!("{}_{clock_subject}", common::TEST_STREAM_PREFIX),
            subjects: vec![clock_subject.clone()],
            ..Default::default()
        })
        .await
        .expect("clock stream");
    let clock = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("clock consumer");
    js.publish(clock_subject.clone(), "tick".into())
        .await
        .expect("tick")
        .await
        .expect("stored");
    let mut ticks = clock.messages().await.expect("clock messages");
    let mut deliveries = 0;
    while deliveries < 3 {
        let tick = tokio::time::timeout(PATIENCE, ticks.next())
            .await
            .expect("the clock ticks")
            .expect("a tick")
            .expect("a tick");
        deliveries = tick.info().expect("info").delivered;
    }
    release.notify_one();
    assert_eq!(
        next_within(&mut done, "the long handler ends").await,
        b"long"
    );

    // A redelivery made during the run would come before this.
    broker
        .publish(&topic, body(b"next", &[]))
        .await
        .expect("publish");
    assert_eq!(next_within(&mut done, "the next message").await, b"next");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the long message was delivered once, then the next one"
    );
    let _ = js
        .delete_stream(stream.cached_info().config.name.clone())
        .await;
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}
