//! What the Kafka broker promises beyond the conformance suite: topics made or refused,
//! offsets committed only after acks, headers and keys, records from foreign producers,
//! oversized messages, a cluster that is down or goes away, handlers that fail.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collector, message, next, options, topic_partitions, unique, PATIENCE};
use micro_broker_kafka::{KafkaBroker, KafkaOptions, RecordKey, TopicCreation};
use micro_core::broker::{Delivery, Handler, SubscribeOptions};
use micro_core::{Broker, Error};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

fn queue(group: &str, auto_ack: bool) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(group.to_string()),
        auto_ack,
    }
}

/// A raw rdkafka consumer reading every partition of `topic` from the beginning.
fn raw_consumer(topic: &str, partitions: usize) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("group.id", unique("raw"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a raw consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    c
}

fn raw_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .create()
        .expect("a raw producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_without_create_topics_is_an_error_naming_it() {
    let b = common::broker_with(KafkaOptions {
        create_topics: false,
        ..options()
    })
    .await
    .expect("broker");
    let topic = unique("missing");
    let e = b
        .publish(&topic, message(b"x", &[]))
        .await
        .expect_err("publishing to a missing topic");
    assert_eq!(e.code, 404, "{e}");
    assert!(e.detail.contains(&topic), "names the topic: {e}");
    assert!(e.detail.contains("create_topics"), "says what to do: {e}");
    assert!(e.detail.contains("kafka at "), "names the cluster: {e}");
    let (h, _rx) = collector();
    let e = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect_err("subscribing to a missing topic");
    assert_eq!(e.code, 404, "{e}");
    assert!(e.detail.contains(&topic), "{e}");
    assert_eq!(
        topic_partitions(&topic),
        None,
        "looking it up did not create it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_makes_missing_topics() {
    let topic = unique("created");
    if common::real_brokers().is_some() {
        // A real cluster: the admin API, with our partition count.
        let b = common::broker_with(KafkaOptions {
            topic_creation: TopicCreation::Admin,
            partitions: 2,
            ..options()
        })
        .await
        .expect("broker");
        b.publish(&topic, message(b"x", &[]))
            .await
            .expect("publish");
        assert_eq!(topic_partitions(&topic), Some(2));
    } else {
        // The mock cluster has no CreateTopics: the admin path answers with a clear error
        // that points at AutoCreate...
        let b = common::broker_with(KafkaOptions {
            topic_creation: TopicCreation::Admin,
            operation_timeout: Duration::from_secs(1),
            ..options()
        })
        .await
        .expect("broker");
        let started = Instant::now();
        let e = b
            .publish(&topic, message(b"x", &[]))
            .await
            .expect_err("the mock cannot create topics through the admin API");
        assert!(started.elapsed() < Duration::from_secs(10), "bounded");
        assert!(e.detail.contains("admin API"), "{e}");
        assert!(e.detail.contains("MICRO_KAFKA_TOPIC_CREATION=auto"), "{e}");
        assert!(e.detail.contains(&topic), "{e}");
        // ...and AutoCreate makes the topic.
        let b = common::broker().await.expect("broker");
        b.publish(&topic, message(b"x", &[]))
            .await
            .expect("publish");
        assert!(topic_partitions(&topic).is_some(), "the topic exists now");
    }
    // Either way the message is there.
    let n = topic_partitions(&topic).expect("partitions");
    let raw = raw_consumer(&topic, n);
    let m = tokio::time::timeout(PATIENCE, raw.recv())
        .await
        .expect("in time")
        .expect("a record");
    assert_eq!(m.payload(), Some(&b"x"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_acks() {
    offsets_follow_acks(options()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_acks_with_the_consumer_group_protocol() {
    offsets_follow_acks(common::options_with_consumer_group_protocol()).await;
}

async fn offsets_follow_acks(o: KafkaOptions) {
    // One key: one partition, so "what comes first" is meaningful.
    let b = common::broker_with(KafkaOptions {
        key: RecordKey::Fixed(b"k".to_vec()),
        ..o
    })
    .await
    .expect("broker");
    let topic = unique("offsets");
    let group = unique("group");

    let (h, mut rx) = collector();
    let s1 = b
        .subscribe(&topic, h, queue(&group, false))
        .await
        .expect("first member");
    b.publish(&topic, message(b"m1", &[])).await.expect("m1");
    b.publish(&topic, message(b"m2", &[])).await.expect("m2");
    let d1 = next(&mut rx, "m1").await;
    let d2 = next(&mut rx, "m2").await;
    assert_eq!(
        (&d1.message.body[..], &d2.message.body[..]),
        (&b"m1"[..], &b"m2"[..])
    );
    // m2 acked, m1 not: the committed position cannot pass m1.
    d2.ack().await.expect("ack m2");
    s1.unsubscribe().await.expect("unsubscribe");
    d1.ack()
        .await
        .expect("a late ack after unsubscribe is harmless");

    let (h, mut rx) = collector();
    let s2 = b
        .subscribe(&topic, h, queue(&group, false))
        .await
        .expect("second member");
    let again1 = next(&mut rx, "m1 again").await;
    let again2 = next(&mut rx, "m2 again").await;
    assert_eq!(
        &again1.message.body[..],
        b"m1",
        "the unacked message came back"
    );
    assert_eq!(&again2.message.body[..], b"m2");
    again1.ack().await.expect("ack");
    again2.ack().await.expect("ack");
    s2.unsubscribe().await.expect("unsubscribe");

    let (h, mut rx) = collector();
    let s3 = b
        .subscribe(&topic, h, queue(&group, false))
        .await
        .expect("third member");
    b.publish(&topic, message(b"m3", &[])).await.expect("m3");
    let d = next(&mut rx, "m3").await;
    assert_eq!(
        &d.message.body[..],
        b"m3",
        "acked messages do not come back"
    );
    d.ack().await.expect("ack");
    s3.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_the_key_header_round_trip() {
    let b = common::broker_with(KafkaOptions {
        key: RecordKey::Header("Micro-Key".into()),
        ..options()
    })
    .await
    .expect("broker");
    let topic = unique("keys");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish(
        &topic,
        message(
            b"body",
            &[
                ("Micro-Key", "order-7"),
                ("Content-Type", "application/json"),
                ("Empty", ""),
            ],
        ),
    )
    .await
    .expect("publish");
    let d = next(&mut rx, "the keyed message").await;
    assert_eq!(d.message.header.get("micro-key"), Some("order-7"));
    assert_eq!(
        d.message.header.get("content-type"),
        Some("application/json")
    );
    assert_eq!(d.message.header.get("Empty"), Some(""));
    sub.unsubscribe().await.expect("unsubscribe");

    let n = topic_partitions(&topic).expect("partitions");
    let raw = raw_consumer(&topic, n);
    let m = tokio::time::timeout(PATIENCE, raw.recv())
        .await
        .expect("in time")
        .expect("record");
    assert_eq!(
        m.key(),
        Some(&b"order-7"[..]),
        "the header became the record key"
    );
    let headers = m.headers().expect("headers");
    let ct = headers
        .iter()
        .find(|h| h.key == "Content-Type")
        .and_then(|h| h.value);
    assert_eq!(
        ct,
        Some(&b"application/json"[..]),
        "Micro headers are record headers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_key_is_on_every_record() {
    let b = common::broker_with(KafkaOptions {
        key: RecordKey::Fixed(b"tenant-1".to_vec()),
        ..options()
    })
    .await
    .expect("broker");
    let topic = unique("fixed");
    b.publish(&topic, message(b"a", &[]))
        .await
        .expect("publish");
    let n = topic_partitions(&topic).expect("partitions");
    let raw = raw_consumer(&topic, n);
    let m = tokio::time::timeout(PATIENCE, raw.recv())
        .await
        .expect("in time")
        .expect("record");
    assert_eq!(m.key(), Some(&b"tenant-1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_foreign_producers_are_delivered() {
    let b = common::broker_with(KafkaOptions {
        key: RecordKey::Header("Micro-Key".into()),
        ..options()
    })
    .await
    .expect("broker");
    let topic = unique("foreign");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe (creates the topic)");
    let raw = raw_producer();
    // No headers, a key, a body that is not UTF-8.
    raw.send(
        FutureRecord::to(&topic)
            .key("k-1")
            .payload(&[0xff, 0x00, 0xfe][..]),
        Duration::from_secs(5),
    )
    .await
    .expect("a record without headers");
    // Header values that are not UTF-8, and one without a value; no key, no payload.
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "Binary",
            value: Some(&[0xc3, 0x28, b'x'][..]),
        })
        .insert(Header::<&[u8]> {
            key: "Null",
            value: None,
        });
    raw.send(
        FutureRecord::<str, [u8]>::to(&topic).headers(headers),
        Duration::from_secs(5),
    )
    .await
    .expect("a record with odd headers");

    // Two partitions perhaps (the mock makes four): either may come first.
    let first = next(&mut rx, "a foreign record").await;
    let second = next(&mut rx, "another foreign record").await;
    let (plain, odd) = if first.message.body.is_empty() {
        (second, first)
    } else {
        (first, second)
    };
    assert_eq!(&plain.message.body[..], &[0xff, 0x00, 0xfe]);
    assert_eq!(
        plain.message.header.get("Micro-Key"),
        Some("k-1"),
        "the key is visible"
    );
    assert_eq!(plain.message.header.len(), 1);
    assert!(odd.message.body.is_empty());
    assert_eq!(odd.message.header.get("Binary"), Some("\u{fffd}(x"));
    assert_eq!(odd.message.header.get("Null"), Some(""));
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_hundred_thousand_headers_is_skipped_and_the_next_delivered() {
    let b = common::broker_with(options()).await.expect("broker");
    let topic = unique("header-flood");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe (creates the topic)");
    let raw = raw_producer();
    let names: Vec<String> = (0..100_000).map(|i| format!("h{i:x}")).collect();
    let mut flood = OwnedHeaders::new_with_capacity(names.len());
    for name in &names {
        flood = flood.insert(Header::<&[u8]> {
            key: name,
            value: None,
        });
    }
    // One key, so both records land on one partition and arrive in order.
    raw.send(
        FutureRecord::to(&topic)
            .key("same")
            .payload("flood")
            .headers(flood),
        Duration::from_secs(10),
    )
    .await
    .expect("the cluster takes the flood");
    raw.send(
        FutureRecord::to(&topic).key("same").payload("normal"),
        Duration::from_secs(5),
    )
    .await
    .expect("a normal record");
    let d = next(&mut rx, "the record after the flood").await;
    assert_eq!(&d.message.body[..], b"normal");
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_clearly() {
    let b = common::broker_with(options().with_producer_config("message.max.bytes", "10000"))
        .await
        .expect("broker");
    let topic = unique("big");
    let e = b
        .publish(&topic, message(&vec![7u8; 20_000], &[]))
        .await
        .expect_err("too large");
    assert_eq!(e.code, 413, "{e}");
    assert!(e.detail.contains(&topic), "{e}");
    assert!(e.detail.contains("message.max.bytes is 10000"), "{e}");
    b.publish(&topic, message(&[7u8; 100], &[]))
        .await
        .expect("a small message still goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_is_down_gives_bounded_clear_errors() {
    // A loopback port with nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let address = format!("127.0.0.1:{port}");
    let b = KafkaBroker::new(KafkaOptions {
        operation_timeout: Duration::from_secs(1),
        publish_timeout: Duration::from_secs(1),
        ..KafkaOptions::from_brokers(&address)
    })
    .expect("broker");
    let started = Instant::now();
    let e = b.connect().await.expect_err("nothing there");
    assert_eq!(e.code, 503, "{e}");
    assert!(e.is_retryable());
    assert!(e.detail.contains(&format!("kafka at {address}")), "{e}");
    let e = b
        .publish("t", message(b"x", &[]))
        .await
        .expect_err("publish");
    assert!(e.detail.contains(&format!("kafka at {address}")), "{e}");
    let (h, _rx) = collector();
    let e = b
        .subscribe("t", h, SubscribeOptions::default())
        .await
        .expect_err("subscribe");
    assert!(e.detail.contains(&format!("kafka at {address}")), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "every error is bounded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_goes_away_and_comes_back() {
    if common::real_brokers().is_some() {
        eprintln!("skipped against a real cluster: it needs a mock broker to take down");
        return;
    }
    let mock = MockCluster::new(1).expect("a private mock cluster");
    let b = KafkaBroker::new(
        KafkaOptions {
            publish_timeout: Duration::from_secs(2),
            topic_creation: TopicCreation::AutoCreate,
            ..KafkaOptions::from_brokers(&mock.bootstrap_servers())
        }
        // Reconnect soon after the broker is back.
        .with_config("reconnect.backoff.ms", "20")
        .with_config("reconnect.backoff.max.ms", "200"),
    )
    .expect("broker");
    let topic = unique("flaky");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish(&topic, message(b"before", &[]))
        .await
        .expect("up");
    assert_eq!(&next(&mut rx, "before").await.message.body[..], b"before");
    mock.broker_down(1).expect("take the broker down");
    let started = Instant::now();
    let e = b
        .publish(&topic, message(b"during", &[]))
        .await
        .expect_err("the broker is down");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by publish_timeout"
    );
    assert_eq!(e.code, 503, "{e}");
    assert!(
        e.detail
            .contains(&format!("kafka at {}", mock.bootstrap_servers())),
        "{e}"
    );
    mock.broker_up(1).expect("bring it back");
    let deadline = Instant::now() + PATIENCE;
    loop {
        match b.publish(&topic, message(b"after", &[])).await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "not back within {PATIENCE:?}: {e}"
            ),
        }
    }
    // The subscriber rode out the outage.
    loop {
        if &next(&mut rx, "after").await.message.body[..] == b"after" {
            break;
        }
    }
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}

/// A handler that fails (or panics) on bodies starting with `bad`, and forwards the rest.
fn picky(attempts: Arc<AtomicUsize>) -> (Handler, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        let attempts = attempts.clone();
        Box::pin(async move {
            if d.message.body.starts_with(b"bad-panic") {
                attempts.fetch_add(1, Ordering::SeqCst);
                panic!("a handler that panics");
            }
            if d.message.body.starts_with(b"bad") {
                attempts.fetch_add(1, Ordering::SeqCst);
                return Err(Error::internal("test", "always failing"));
            }
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handlers_are_retried_then_dead_lettered_and_never_stop_the_consumer() {
    let b = common::broker_with(KafkaOptions {
        max_redeliveries: 2,
        ..options()
    })
    .await
    .expect("broker");
    let topic = unique("poison");
    let attempts = Arc::new(AtomicUsize::new(0));
    let (h, mut rx) = picky(attempts.clone());
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish(&topic, message(b"bad", &[])).await.expect("bad");
    b.publish(&topic, message(b"bad-panic", &[]))
        .await
        .expect("bad-panic");
    b.publish(&topic, message(b"good", &[]))
        .await
        .expect("good");
    let d = next(&mut rx, "the message after two poisoned ones").await;
    assert_eq!(&d.message.body[..], b"good");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        6,
        "each poisoned message was tried once and redelivered twice"
    );
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_nacks_redeliver_or_drop() {
    let b = common::broker().await.expect("broker");
    let topic = unique("nack");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(
            &topic,
            h,
            SubscribeOptions {
                queue: None,
                auto_ack: false,
            },
        )
        .await
        .expect("subscribe");
    b.publish(&topic, message(b"again", &[]))
        .await
        .expect("publish");
    let d = next(&mut rx, "the first delivery").await;
    d.nack(true).await.expect("nack with requeue");
    d.ack().await.expect("a second settle is harmless");
    let d = next(&mut rx, "the redelivery").await;
    assert_eq!(&d.message.body[..], b"again");
    d.nack(false).await.expect("nack without requeue");
    b.publish(&topic, message(b"next", &[]))
        .await
        .expect("publish");
    let d = next(&mut rx, "the next message").await;
    assert_eq!(
        &d.message.body[..],
        b"next",
        "a dropped message does not come back"
    );
    d.ack().await.expect("ack");
    sub.unsubscribe().await.expect("unsubscribe");
}

/// More members than partitions: the extra member gets nothing, yet its subscribe returns,
/// and the group still gets every message once.
async fn an_idle_member_does_not_block(consumer_protocol: bool) {
    if common::real_brokers().is_some() {
        eprintln!(
            "skipped against a real cluster: it needs a one-partition topic made on the mock"
        );
        return;
    }
    let mock = MockCluster::new(1).expect("a private mock cluster");
    let topic = unique("idle");
    mock.create_topic(&topic, 1, 1)
        .expect("a one-partition topic");
    let mut o = KafkaOptions {
        topic_creation: TopicCreation::AutoCreate,
        ..if consumer_protocol {
            common::options_with_consumer_group_protocol()
        } else {
            options()
        }
    };
    o.brokers = vec![mock.bootstrap_servers()];
    let b = KafkaBroker::new(o).expect("broker");
    let group = unique("group");
    let (h1, mut rx1) = collector();
    let (h2, mut rx2) = collector();
    let started = Instant::now();
    let s1 = b
        .subscribe(&topic, h1, queue(&group, true))
        .await
        .expect("first member");
    let s2 = b
        .subscribe(&topic, h2, queue(&group, true))
        .await
        .expect("second member");
    assert!(started.elapsed() < PATIENCE, "both joined in time");
    for i in 0..10u8 {
        b.publish(&topic, message(&[i], &[]))
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < 10 {
        assert!(Instant::now() < deadline, "the group got {got:?}");
        tokio::select! {
            Some(d) = rx1.recv() => got.push(d.message.body[0]),
            Some(d) = rx2.recv() => got.push(d.message.body[0]),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    s1.unsubscribe().await.expect("unsubscribe");
    s2.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_does_not_block_subscribe() {
    an_idle_member_does_not_block(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_does_not_block_subscribe_with_the_consumer_group_protocol() {
    an_idle_member_does_not_block(true).await;
}

/// Handlers run on the subscriber's runtime, even a single-threaded one.
#[tokio::test]
async fn a_current_thread_runtime_works() {
    let b = common::broker().await.expect("broker");
    let topic = unique("single");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish(&topic, message(b"one", &[("A", "1")]))
        .await
        .expect("publish");
    let d = next(&mut rx, "the message").await;
    assert_eq!(&d.message.body[..], b"one");
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}
