//! Go Micro's wire format spoken with a raw Redis client, both ways, and peers that write
//! something else: their messages are logged and skipped, and the subscriber goes on.

mod common;

use std::time::Duration;

use common::{collector, next, nothing, raw, unique};
use micro_broker_redis::{RedisBroker, RedisOptions};
use micro_core::broker::{Message, SubscribeOptions};
use micro_core::Broker;
use redis::AsyncCommands;

/// What Go Micro's redis broker publishes for `client.Publish(ctx, client.NewMessage(topic,
/// &Req{Name: "John"}, client.WithMessageContentType("application/json")))`: go-micro
/// marshals the broker.Message with encoding/json (sorted header keys, base64 body).
fn go_micro_payload(topic: &str) -> String {
    format!(
        r#"{{"Header":{{"Content-Type":"application/json","Micro-Id":"9f0a7c9e-3b1c-4f5e-9d1a-2b3c4d5e6f70","Micro-Topic":"{topic}"}},"Body":"eyJuYW1lIjoiSm9obiJ9"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_micro_message_arrives_through_the_broker() {
    if !common::redis_up() {
        return;
    }
    let broker = RedisBroker::new(common::pubsub_options()).expect("broker");
    let topic = unique("go.micro.topic");
    let (handler, mut rx) = collector();
    let sub = broker
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let mut conn = raw().await;
    let receivers: i64 = conn
        .publish(&topic, go_micro_payload(&topic))
        .await
        .expect("PUBLISH");
    assert_eq!(
        receivers, 1,
        "our subscriber is a plain SUBSCRIBE on the topic"
    );
    let d = next(&mut rx, "the Go Micro message").await;
    assert_eq!(d.topic, topic);
    assert_eq!(&d.message.body[..], br#"{"name":"John"}"#);
    let h = &d.message.header;
    assert_eq!(h.get("Content-Type"), Some("application/json"));
    assert_eq!(
        h.get("micro-id"),
        Some("9f0a7c9e-3b1c-4f5e-9d1a-2b3c4d5e6f70")
    );
    assert_eq!(h.get("Micro-Topic"), Some(topic.as_str()));
    assert_eq!(h.len(), 3, "{h:?}");
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_broker_publishes_is_what_go_micro_reads() {
    if !common::redis_up() {
        return;
    }
    let broker = RedisBroker::new(common::pubsub_options()).expect("broker");
    broker.connect().await.expect("connect");
    let topic = unique("go.micro.topic");
    let mut pubsub = redis::Client::open(format!("redis://{}", common::ADDRESS))
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("raw pubsub");
    pubsub.subscribe(&topic).await.expect("SUBSCRIBE");
    let mut msg = Message {
        body: vec![0u8, 1, 2, 255].into(),
        ..Default::default()
    };
    msg.header
        .insert("Content-Type", "application/octet-stream");
    msg.header.insert("Trace-Id", "t-1");
    broker.publish(&topic, msg).await.expect("publish");
    let got = {
        use futures_util::StreamExt;
        tokio::time::timeout(common::PATIENCE, pubsub.on_message().next())
            .await
            .expect("a message in time")
            .expect("the raw subscription")
    };
    assert_eq!(got.get_channel_name(), topic);
    let json: serde_json::Value =
        serde_json::from_slice(got.get_payload_bytes()).expect("the payload is JSON");
    let object = json.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["Body", "Header"], "exactly broker.Message's fields");
    assert_eq!(json["Body"], "AAEC/w==", "standard base64 with padding");
    let header = json["Header"].as_object().expect("a header map");
    assert_eq!(header["Content-Type"], "application/octet-stream");
    assert_eq!(header["Trace-Id"], "t-1");
    let id = header["Micro-Id"].as_str().expect("a Micro-Id was added");
    assert_eq!(id.len(), 36, "a UUID, as Go Micro's publisher writes: {id}");
    assert!(header.values().all(serde_json::Value::is_string));
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_payloads_are_skipped() {
    if !common::redis_up() {
        return;
    }
    let opts = RedisOptions {
        max_message_size: 1024,
        ..common::pubsub_options()
    };
    let broker = RedisBroker::new(opts).expect("broker");
    let topic = unique("bad-peer");
    let (handler, mut rx) = collector();
    let sub = broker
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let mut conn = raw().await;
    let big = format!(r#"{{"Header":{{}},"Body":"{}"}}"#, "A".repeat(4096));
    let many: String = (0..600)
        .map(|i| format!(r#""h{i}":"v""#))
        .collect::<Vec<_>>()
        .join(",");
    let bad: Vec<Vec<u8>> = vec![
        vec![0xff, 0x00, 0xfe, b'{'],
        b"".to_vec(),
        b"{\"Header\":".to_vec(),
        br#"{"Header":{"a":1},"Body":""}"#.to_vec(),
        br#"{"Header":{},"Body":"not base64!"}"#.to_vec(),
        br#"["Header","Body"]"#.to_vec(),
        big.into_bytes(),
        format!(r#"{{"Header":{{{many}}},"Body":""}}"#).into_bytes(),
    ];
    for payload in &bad {
        let _: i64 = conn.publish(&topic, payload).await.expect("PUBLISH");
    }
    let _: i64 = conn
        .publish(&topic, go_micro_payload(&topic))
        .await
        .expect("PUBLISH");
    let d = next(&mut rx, "the good message after the bad ones").await;
    assert_eq!(&d.message.body[..], br#"{"name":"John"}"#);
    assert!(
        nothing(&mut rx, Duration::from_millis(200)).await,
        "none of the bad payloads was delivered"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_entries_are_acked_and_skipped() {
    if !common::redis_up() {
        return;
    }
    let opts = RedisOptions {
        max_message_size: 1024,
        ..common::streams_options()
    };
    let broker = RedisBroker::new(opts).expect("broker");
    let topic = unique("bad-entries");
    let key = format!("{}stream:{topic}", common::TEST_PREFIX);
    let (handler, mut rx) = collector();
    let group = SubscribeOptions {
        queue: Some("workers".into()),
        auto_ack: true,
    };
    let sub = broker
        .subscribe(&topic, handler, group)
        .await
        .expect("subscribe");
    let mut conn = raw().await;
    let big = format!(r#"{{"Header":{{}},"Body":"{}"}}"#, "A".repeat(4096));
    let entries: Vec<(&str, Vec<u8>)> = vec![
        ("event", b"{\"id\":\"go-micro events format\"}".to_vec()),
        ("message", b"garbage".to_vec()),
        ("message", big.into_bytes()),
        ("message", go_micro_payload(&topic).into_bytes()),
    ];
    for (field, value) in &entries {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(*field)
            .arg(value.as_slice())
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    let d = next(&mut rx, "the good entry after the bad ones").await;
    assert_eq!(&d.message.body[..], br#"{"name":"John"}"#);
    assert_eq!(d.topic, topic);
    // Everything was settled: the bad entries acked when dropped, the good one by auto-ack.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg("workers")
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        let redis::Value::Array(parts) = summary else {
            panic!("XPENDING summary: {summary:?}")
        };
        if parts.first() == Some(&redis::Value::Int(0)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries still pending: {parts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    let _: i64 = conn.del(&key).await.expect("DEL");
}
