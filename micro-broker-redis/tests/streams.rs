//! Streams mode beyond the conformance suite: a delivery left unacknowledged is claimed by
//! another member after the visibility timeout, and a message that always fails is given up
//! after `max_deliver` deliveries.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{collector, next, nothing, raw, unique};
use micro_broker_redis::{RedisBroker, RedisOptions};
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro_core::{Broker, Error};
use redis::AsyncCommands;

fn group(name: &str, auto_ack: bool) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.into()),
        auto_ack,
    }
}

fn body(b: &[u8]) -> Message {
    Message {
        body: b.to_vec().into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_delivery_moves_to_another_member() {
    if !common::redis_up() {
        return;
    }
    let mut opts = common::streams_options();
    opts.streams.visibility_timeout = Duration::from_millis(500);
    let a = RedisBroker::new(opts.clone()).expect("broker a");
    let b = RedisBroker::new(opts).expect("broker b");
    let topic = unique("visibility");
    // A takes the message and never settles it, as a process that hangs would.
    let (held, mut held_rx) = collector();
    let sub_a = a
        .subscribe(&topic, held, group("workers", false))
        .await
        .expect("subscribe a");
    a.publish(&topic, body(b"job")).await.expect("publish");
    let first = next(&mut held_rx, "the first delivery, to a").await;
    assert_eq!(&first.message.body[..], b"job");
    let (handler, mut rx) = collector();
    let sub_b = b
        .subscribe(&topic, handler, group("workers", true))
        .await
        .expect("subscribe b");
    let again = next(&mut rx, "the same message, claimed by b").await;
    assert_eq!(&again.message.body[..], b"job");
    // Acked by b: a's late ack is harmless, and nobody gets it a third time.
    first.ack().await.expect("a late ack");
    assert!(nothing(&mut rx, Duration::from_millis(1200)).await);
    sub_a.unsubscribe().await.expect("unsubscribe a");
    sub_b.unsubscribe().await.expect("unsubscribe b");
    a.disconnect().await.expect("disconnect a");
    b.disconnect().await.expect("disconnect b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_is_given_up() {
    if !common::redis_up() {
        return;
    }
    let mut opts: RedisOptions = common::streams_options();
    opts.streams.max_deliver = 3;
    let broker = RedisBroker::new(opts).expect("broker");
    let topic = unique("poison");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let seen = seen.clone();
        Box::pin(async move {
            if &d.message.body[..] == b"poison" {
                seen.fetch_add(1, Ordering::SeqCst);
                return Err(Error::internal("test", "failing on purpose"));
            }
            Ok(())
        })
    });
    let sub = broker
        .subscribe(&topic, handler, group("workers", true))
        .await
        .expect("subscribe");
    broker
        .publish(&topic, body(b"poison"))
        .await
        .expect("publish");
    let key = format!("{}stream:{topic}", common::TEST_PREFIX);
    let mut conn = raw().await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg("workers")
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        let settled =
            matches!(&summary, redis::Value::Array(p) if p.first() == Some(&redis::Value::Int(0)));
        if settled && calls.load(Ordering::SeqCst) >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending after {} calls: {summary:?}",
            calls.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "delivered max_deliver times"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    let _: i64 = conn.del(&key).await.expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_trimmed_and_own_groups_removed() {
    if !common::redis_up() {
        return;
    }
    let mut opts = common::streams_options();
    opts.streams.max_len = 10;
    let broker = RedisBroker::new(opts).expect("broker");
    let topic = unique("trimmed");
    let key = format!("{}stream:{topic}", common::TEST_PREFIX);
    let (handler, _rx) = collector();
    let sub = broker
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let mut conn = raw().await;
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("XINFO GROUPS");
    assert!(
        matches!(&groups, redis::Value::Array(g) if g.len() == 1),
        "{groups:?}"
    );
    for i in 0..500u32 {
        broker
            .publish(&topic, body(&i.to_be_bytes()))
            .await
            .expect("publish");
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    // `MAXLEN ~` trims whole macro nodes (100 entries by default), so about, not exactly.
    assert!(len < 200, "the stream holds {len} entries");
    sub.unsubscribe().await.expect("unsubscribe");
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("XINFO GROUPS");
    assert!(
        matches!(&groups, redis::Value::Array(g) if g.is_empty()),
        "{groups:?}"
    );
    broker.disconnect().await.expect("disconnect");
    let _: i64 = conn.del(&key).await.expect("DEL");
}
