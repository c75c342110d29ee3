//! Go Micro's wire format spoken with a raw MQTT client, both ways, and peers that publish
//! something else: their messages are logged and skipped, and the subscriber goes on.

mod common;

use std::time::Duration;

use common::{collector, next, raw, unique};
use micro_broker_mqtt::{MqttBroker, MqttOptions};
use micro_core::broker::{Message, SubscribeOptions};
use micro_core::Broker;
use rumqttc::QoS;

/// What Go Micro's mqtt broker publishes for `client.Publish(ctx, client.NewMessage(topic,
/// &Req{Name: "John"}, client.WithMessageContentType("application/json")))`: the
/// broker.Message through encoding/json (sorted header keys, base64 body), QoS 1.
fn go_micro_payload(topic: &str) -> String {
    format!(
        r#"{{"Header":{{"Content-Type":"application/json","Micro-Id":"9f0a7c9e-3b1c-4f5e-9d1a-2b3c4d5e6f70","Micro-Topic":"{topic}"}},"Body":"eyJuYW1lIjoiSm9obiJ9"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_micro_message_arrives_through_the_broker() {
    if !common::mqtt_up() {
        return;
    }
    let broker = MqttBroker::new(common::options()).expect("broker");
    let topic = unique("go.micro.topic");
    let (handler, mut rx) = collector();
    // A wildcard subscription: the delivery carries the topic it was published to.
    let filter = format!("{}/+", topic.rsplit_once('/').map_or("", |p| p.0));
    let sub = broker
        .subscribe(&filter, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (client, _rx) = raw(64 * 1024);
    client
        .publish(&topic, QoS::AtLeastOnce, false, go_micro_payload(&topic))
        .await
        .expect("raw publish");
    let d = next(&mut rx, "the Go Micro message").await;
    assert_eq!(d.topic, topic);
    assert_eq!(&d.message.body[..], br#"{"name":"John"}"#);
    let h = &d.message.header;
    assert_eq!(h.get("content-type"), Some("application/json"));
    assert_eq!(
        h.get("Micro-Id"),
        Some("9f0a7c9e-3b1c-4f5e-9d1a-2b3c4d5e6f70")
    );
    assert_eq!(h.get("Micro-Topic"), Some(topic.as_str()));
    assert_eq!(h.len(), 3, "{h:?}");
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_broker_publishes_is_what_go_micro_reads() {
    if !common::mqtt_up() {
        return;
    }
    let broker = MqttBroker::new(common::options()).expect("broker");
    broker.connect().await.expect("connect");
    let topic = unique("go.micro.topic");
    let (client, mut rx) = raw(64 * 1024);
    client
        .subscribe(&topic, QoS::AtLeastOnce)
        .await
        .expect("raw subscribe");
    // The raw subscription is live once a message published by the broker comes back.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let mut msg = Message {
        body: vec![0u8, 1, 2, 255].into(),
        ..Default::default()
    };
    msg.header
        .insert("Content-Type", "application/octet-stream");
    msg.header.insert("Micro-Id", "id-1");
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the raw subscriber got nothing"
        );
        broker.publish(&topic, msg.clone()).await.expect("publish");
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(p)) => break p,
            _ => continue,
        }
    };
    assert_eq!(got.topic, topic);
    assert_eq!(got.qos, QoS::AtLeastOnce, "Go Micro publishes with QoS 1");
    assert!(!got.retain, "and without retain");
    let json: serde_json::Value = serde_json::from_slice(&got.payload).expect("JSON payload");
    let object = json.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["Body", "Header"], "exactly broker.Message's fields");
    assert_eq!(json["Body"], "AAEC/w==", "standard base64 with padding");
    assert_eq!(
        json["Header"],
        serde_json::json!({"Content-Type": "application/octet-stream", "Micro-Id": "id-1"})
    );
    broker.disconnect().await.expect("disconnect");
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_payloads_are_skipped() {
    if !common::mqtt_up() {
        return;
    }
    let opts = MqttOptions {
        max_message_size: 4096,
        ..common::options()
    };
    let broker = MqttBroker::new(opts).expect("broker");
    let topic = unique("bad-peer");
    let (handler, mut rx) = collector();
    let sub = broker
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (client, _raw_rx) = raw(1 << 20);
    let many: String = (0..600)
        .map(|i| format!(r#""h{i}":"v""#))
        .collect::<Vec<_>>()
        .join(",");
    let bad: Vec<Vec<u8>> = vec![
        vec![0xff, 0x00, 0xfe, b'{'],
        Vec::new(),
        b"{\"Header\":".to_vec(),
        br#"{"Header":{"a":1},"Body":""}"#.to_vec(),
        br#"{"Header":{},"Body":"not base64!"}"#.to_vec(),
        format!(r#"{{"Header":{{{many}}},"Body":""}}"#).into_bytes(),
        // Larger than the subscriber takes: its connection is dropped and made again.
        format!(r#"{{"Header":{{}},"Body":"{}"}}"#, "A".repeat(200_000)).into_bytes(),
    ];
    for payload in bad {
        client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("raw publish");
    }
    // The subscriber may be reconnecting after the oversized packet: publish the good
    // message until it arrives.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let d = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriber never came back"
        );
        client
            .publish(&topic, QoS::AtLeastOnce, false, go_micro_payload(&topic))
            .await
            .expect("raw publish");
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            break d;
        }
    };
    assert_eq!(
        &d.message.body[..],
        br#"{"name":"John"}"#,
        "only good messages arrive"
    );
    while let Ok(d) = rx.try_recv() {
        assert_eq!(
            &d.message.body[..],
            br#"{"name":"John"}"#,
            "only good messages arrive"
        );
    }
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_can_be_ignored_like_go_micro() {
    if !common::mqtt_up() {
        return;
    }
    let opts = MqttOptions {
        shared_subscriptions: false,
        ..common::options()
    };
    let broker = MqttBroker::new(opts).expect("broker");
    let topic = unique("no-share");
    let group = SubscribeOptions {
        queue: Some("workers".into()),
        auto_ack: true,
    };
    let (h1, mut rx1) = collector();
    let (h2, mut rx2) = collector();
    let s1 = broker
        .subscribe(&topic, h1, group.clone())
        .await
        .expect("s1");
    let s2 = broker.subscribe(&topic, h2, group).await.expect("s2");
    broker
        .publish(&topic, Message::default())
        .await
        .expect("publish");
    next(&mut rx1, "the first member's copy").await;
    next(&mut rx2, "the second member's copy").await;
    s1.unsubscribe().await.expect("unsubscribe");
    s2.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
}
