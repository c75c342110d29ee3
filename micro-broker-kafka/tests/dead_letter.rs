//! A message whose handler keeps failing is never skipped: it goes to its dead-letter topic
//! (the default) and only then is its offset settled, or, under `block`, it holds its
//! partition back.

mod common;

use common::{collector, message, next, options, unique};
use micro_broker_kafka::{KafkaOptions, PoisonPolicy, RecordKey};
use micro_conformance::broker::{failing_on_bad, next_within};
use micro_core::broker::dead_letter as dl;
use micro_core::broker::SubscribeOptions;
use micro_core::Error;

fn queue(group: &str, auto_ack: bool) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(group.to_string()),
        auto_ack,
    }
}

/// One key: one partition, so "what comes after" is meaningful.
fn one_partition(o: KafkaOptions) -> KafkaOptions {
    KafkaOptions {
        key: RecordKey::Fixed(b"k".to_vec()),
        ..o
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_goes_to_the_dead_letter_topic_and_the_next_is_delivered() {
    let b = common::broker_with(one_partition(KafkaOptions {
        max_redeliveries: 2,
        ..options()
    }))
    .await
    .expect("broker");
    let topic = unique("poison");
    let group = unique("group");
    let (dh, mut dead) = collector();
    let dsub = b
        .subscribe(&format!("{topic}.dlq"), dh, SubscribeOptions::default())
        .await
        .expect("subscribe to the dead-letter topic");
    let (h, mut handled, mut failed) =
        failing_on_bad(Error::internal("test", "always failing\nsecond line"));
    let sub = b
        .subscribe(&topic, h, queue(&group, true))
        .await
        .expect("subscribe");

    b.publish(&topic, message(b"bad", &[("Trace", "t-1")]))
        .await
        .expect("bad");
    b.publish(&topic, message(b"good", &[]))
        .await
        .expect("good");
    let d = next(&mut handled, "the message after the poisoned one").await;
    assert_eq!(&d.message.body[..], b"good");
    for _ in 0..3 {
        assert_eq!(
            next_within(&mut failed, "the poisoned message").await,
            b"bad"
        );
    }
    assert!(
        failed.try_recv().is_err(),
        "tried once and redelivered twice, no more"
    );

    let letter = next(&mut dead, "the dead letter").await;
    let h = &letter.message.header;
    assert_eq!(&letter.message.body[..], b"bad");
    assert_eq!(h.get("Trace"), Some("t-1"), "the original headers travel");
    let error = h.get(dl::ERROR_HEADER).expect("the error header");
    assert!(
        error.contains("always failing second line") && error.contains("3 times"),
        "{error}"
    );
    assert_eq!(h.get(dl::ATTEMPTS_HEADER), Some("3"));
    assert_eq!(h.get(dl::TOPIC_HEADER), Some(topic.as_str()));
    assert_eq!(h.get(dl::QUEUE_HEADER), Some(group.as_str()));
    assert!(h
        .get(dl::PARTITION_HEADER)
        .is_some_and(|p| p.parse::<i32>().is_ok()));
    assert!(h
        .get(dl::OFFSET_HEADER)
        .is_some_and(|o| o.parse::<i64>().is_ok()));
    sub.unsubscribe().await.expect("unsubscribe");

    // Both were settled: the group's next member starts after them, and loses nothing new.
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, queue(&group, true))
        .await
        .expect("the group again");
    b.publish(&topic, message(b"after", &[]))
        .await
        .expect("after");
    let d = next(&mut rx, "the next message").await;
    assert_eq!(
        &d.message.body[..],
        b"after",
        "the dead-lettered and the handled message are committed"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    dsub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_block_a_failing_message_holds_its_partition_and_nothing_is_committed() {
    let b = common::broker_with(one_partition(KafkaOptions {
        max_redeliveries: 1,
        dead_letter: PoisonPolicy::Block,
        ..options()
    }))
    .await
    .expect("broker");
    let topic = unique("block");
    let group = unique("group");
    let (h, mut handled, mut failed) =
        failing_on_bad(Error::internal("test", "always failing\nsecond line"));
    let sub = b
        .subscribe(&topic, h, queue(&group, true))
        .await
        .expect("subscribe");
    b.publish(&topic, message(b"bad", &[])).await.expect("bad");
    b.publish(&topic, message(b"good", &[]))
        .await
        .expect("good");
    // Twice the budget, and still it comes back; in-place retries mean nothing after it
    // was handed out meanwhile.
    for _ in 0..4 {
        assert_eq!(
            next_within(&mut failed, "the blocking message").await,
            b"bad"
        );
    }
    assert!(
        handled.try_recv().is_err(),
        "nothing after the blocking message is delivered"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    assert!(
        common::topic_partitions(&format!("{topic}.dlq")).is_none(),
        "no dead-letter topic under block"
    );

    // Nothing was committed past it: the next member of the group gets both, in order.
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, queue(&group, true))
        .await
        .expect("the group again");
    let first = next(&mut rx, "the blocking message again").await;
    let second = next(&mut rx, "the one after it").await;
    assert_eq!(
        (&first.message.body[..], &second.message.body[..]),
        (&b"bad"[..], &b"good"[..])
    );
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_without_requeue_dead_letters_before_it_returns() {
    let b = common::broker_with(one_partition(options()))
        .await
        .expect("broker");
    let topic = unique("reject");
    let (dh, mut dead) = collector();
    let dsub = b
        .subscribe(&format!("{topic}.dlq"), dh, SubscribeOptions::default())
        .await
        .expect("subscribe to the dead-letter topic");
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
    b.publish(&topic, message(b"unwanted", &[]))
        .await
        .expect("publish");
    let d = next(&mut rx, "the delivery").await;
    d.nack(false).await.expect("nack without requeue");
    let letter = next(&mut dead, "the dead letter").await;
    assert_eq!(&letter.message.body[..], b"unwanted");
    assert_eq!(letter.message.header.get(dl::ATTEMPTS_HEADER), Some("1"));
    assert_eq!(letter.message.header.get(dl::QUEUE_HEADER), None);
    assert!(letter
        .message
        .header
        .get(dl::ERROR_HEADER)
        .is_some_and(|e| e.contains("without requeue")));
    sub.unsubscribe().await.expect("unsubscribe");
    dsub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_cannot_take_the_message_holds_it_until_it_can() {
    // The main topic exists; its dead-letter topic does not, and this broker may not make it.
    // Its groups start at the beginning, so the dead letter is read wherever it lands.
    let maker = common::broker_with(one_partition(KafkaOptions {
        initial_offset: micro_broker_kafka::InitialOffset::Earliest,
        ..options()
    }))
    .await
    .expect("broker");
    let topic = unique("nodlq");
    let group = unique("group");
    let (h, _rx) = collector();
    maker
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("makes the topic")
        .unsubscribe()
        .await
        .expect("unsubscribe");
    let b = common::broker_with(one_partition(KafkaOptions {
        max_redeliveries: 0,
        create_topics: false,
        ..options()
    }))
    .await
    .expect("broker");
    let (h, mut handled, mut failed) =
        failing_on_bad(Error::internal("test", "always failing\nsecond line"));
    let sub = b
        .subscribe(&topic, h, queue(&group, true))
        .await
        .expect("subscribe");
    b.publish(&topic, message(b"bad", &[])).await.expect("bad");
    b.publish(&topic, message(b"good", &[]))
        .await
        .expect("good");
    assert_eq!(
        next_within(&mut failed, "the poisoned message").await,
        b"bad"
    );
    assert!(
        handled.try_recv().is_err(),
        "the partition waits while the dead letter cannot be produced"
    );

    // Once the dead-letter topic exists, the retried produce lands there and the partition
    // moves on.
    let (dh, mut dead) = collector();
    let dsub = maker
        .subscribe(&format!("{topic}.dlq"), dh, queue(&unique("readers"), true))
        .await
        .expect("makes the dead-letter topic");
    let letter = next(&mut dead, "the dead letter").await;
    assert_eq!(&letter.message.body[..], b"bad");
    let d = next(&mut handled, "the message after it").await;
    assert_eq!(&d.message.body[..], b"good");
    sub.unsubscribe().await.expect("unsubscribe");
    dsub.unsubscribe().await.expect("unsubscribe");
}
