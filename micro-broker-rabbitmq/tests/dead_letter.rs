//! Nothing is dropped silently: an unroutable publish is an error, a message that keeps
//! failing reaches the dead-letter exchange after its delivery limit (or, under block, keeps
//! coming back), the exchange is durable, and queues Go Micro declared without dead-letter
//! arguments are used as they are. Each test has a vhost of its own.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use micro_broker_rabbitmq::{PoisonPolicy, QueueNaming, RabbitBroker, RabbitOptions};
use micro_conformance::broker::{failing_on_bad, next_within};
use micro_core::broker::dead_letter as dl;
use micro_core::broker::{Message, SubscribeOptions};
use micro_core::{Broker, Error};

mod common;

use common::{collector, next, unique, Vhost, PATIENCE};

fn body(b: &[u8], headers: &[(&str, &str)]) -> Message {
    Message {
        header: headers.iter().copied().collect(),
        body: b.to_vec().into(),
    }
}

fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.into()),
        auto_ack: true,
    }
}

fn options(vhost: &Vhost) -> RabbitOptions {
    RabbitOptions {
        url: vhost.url(),
        requeue_delay: Duration::from_millis(10),
        ..RabbitOptions::default()
    }
}

async fn raw(vhost: &Vhost) -> lapin::Channel {
    let conn = lapin::Connection::connect(&vhost.url(), lapin::ConnectionProperties::default())
        .await
        .expect("a raw lapin connection");
    conn.create_channel().await.expect("a raw channel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_is_an_error() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("unroutable").await;
    let b = RabbitBroker::new(options(&vhost)).expect("broker");
    let topic = unique("nobody");
    let e = b
        .publish(&topic, body(b"x", &[]))
        .await
        .expect_err("no queue takes it");
    assert_eq!(e.code, 404, "{e}");
    assert!(
        e.detail.contains(&topic) && e.detail.contains("unroutable"),
        "{e}"
    );

    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish(&topic, body(b"y", &[]))
        .await
        .expect("a queue takes it now");
    assert_eq!(&next(&mut rx, "the message").await.message.body[..], b"y");
    sub.unsubscribe().await.expect("unsubscribe");

    let lenient = RabbitBroker::new(RabbitOptions {
        mandatory: false,
        ..options(&vhost)
    })
    .expect("broker");
    lenient
        .publish(&unique("nobody"), body(b"z", &[]))
        .await
        .expect("without mandatory, confirmed and dropped");
    b.disconnect().await.expect("disconnect");
    lenient.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_reaches_the_dead_letter_exchange_after_the_limit() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("poison").await;
    let b = RabbitBroker::new(RabbitOptions {
        max_deliveries: 3,
        ..options(&vhost)
    })
    .expect("broker");
    let topic = unique("orders");
    let workers = unique("workers");
    let (h, mut handled, mut failed) = failing_on_bad(Error::internal("test", "always failing"));
    let sub = b
        .subscribe(&topic, h, group(&workers))
        .await
        .expect("subscribe");
    b.publish(&topic, body(b"bad", &[("Trace", "t-1")]))
        .await
        .expect("bad");
    b.publish(&topic, body(b"good", &[])).await.expect("good");
    assert_eq!(
        &next(&mut handled, "the message after the poisoned one")
            .await
            .message
            .body[..],
        b"good"
    );
    for _ in 0..3 {
        assert_eq!(
            next_within(&mut failed, "the poisoned message").await,
            b"bad"
        );
    }

    // The dead letter waits in micro.dlq, bound to micro.dlx.
    let channel = raw(&vhost).await;
    let mut dead = channel
        .basic_consume(
            "micro.dlq".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume the dead-letter queue");
    let letter = tokio::time::timeout(PATIENCE, dead.next())
        .await
        .expect("a dead letter in time")
        .expect("a dead letter")
        .expect("a dead letter");
    assert_eq!(&letter.data[..], b"bad");
    assert_eq!(letter.routing_key.as_str(), topic, "routed by its topic");
    let headers = letter.properties.headers().clone().expect("headers");
    let get = |name: &str| match headers.inner().get(name) {
        Some(lapin::types::AMQPValue::LongString(s)) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => panic!("dead letter header {name}: {other:?}"),
    };
    assert_eq!(get("Trace"), "t-1", "the original headers travel");
    assert!(get(dl::ERROR_HEADER).contains("always failing"));
    assert_eq!(get(dl::ATTEMPTS_HEADER), "3");
    assert_eq!(get(dl::TOPIC_HEADER), topic);
    assert_eq!(get(dl::QUEUE_HEADER), workers);
    letter.ack(BasicAckOptions::default()).await.expect("ack");
    assert!(
        failed.try_recv().is_err(),
        "three deliveries, then the dead-letter exchange"
    );

    // The group's queue names the dead-letter exchange for RabbitMQ's own rejects.
    let queues = common::ctl(&["list_queues", "-p", &vhost.name, "name", "arguments"]).await;
    let line = queues
        .lines()
        .find(|l| l.contains(&workers))
        .unwrap_or_else(|| panic!("the group's queue in {queues}"));
    assert!(
        line.contains("x-dead-letter-exchange") && line.contains("micro.dlx"),
        "{line}"
    );
    let exchanges = common::ctl(&["list_exchanges", "-p", &vhost.name, "name", "durable"]).await;
    assert!(
        exchanges
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["micro", "true"]),
        "the exchange is durable: {exchanges}"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_block_a_failing_message_keeps_coming_back() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("block").await;
    let b = RabbitBroker::new(RabbitOptions {
        max_deliveries: 2,
        dead_letter: PoisonPolicy::Block,
        ..options(&vhost)
    })
    .expect("broker");
    let topic = unique("orders");
    let (h, _handled, mut failed) = failing_on_bad(Error::internal("test", "always failing"));
    let sub = b
        .subscribe(&topic, h, group(&unique("workers")))
        .await
        .expect("subscribe");
    b.publish(&topic, body(b"bad", &[])).await.expect("bad");
    for _ in 0..5 {
        assert_eq!(
            next_within(&mut failed, "the blocking message").await,
            b"bad"
        );
    }
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
    let exchanges = common::ctl(&["list_exchanges", "-p", &vhost.name, "name"]).await;
    assert!(
        !exchanges.contains("micro.dlx"),
        "no dead-letter exchange: {exchanges}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_exchanges_and_queues_are_used_as_they_are() {
    if !common::rabbitmq_up() {
        return;
    }
    let vhost = Vhost::create("gomicro").await;
    // What Go Micro's plugin declares by default: a non-durable exchange, and for a group with
    // DurableQueue() a durable queue named after the group, without arguments.
    let channel = raw(&vhost).await;
    channel
        .exchange_declare(
            "micro".into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("Go Micro's exchange");
    let workers = unique("workers");
    channel
        .queue_declare(
            workers.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("Go Micro's queue");
    let b = RabbitBroker::new(RabbitOptions {
        queue_naming: QueueNaming::Bare,
        ..options(&vhost)
    })
    .expect("broker");
    let topic = unique("orders");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe(&topic, h, group(&workers))
        .await
        .expect("subscribing to Go Micro's queue works");
    b.publish(&topic, body(b"hello", &[]))
        .await
        .expect("publish");
    assert_eq!(
        &next(&mut rx, "the message").await.message.body[..],
        b"hello"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}
