//! Messages that did not come from Micro, and messages NATS refuses, against the machine's
//! NATS: bodies and headers from plain NATS clients arrive as they were sent, Micro's messages
//! reach plain NATS clients, bad input never ends a subscription, and oversized messages are
//! refused with a clear error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::StreamExt;
use micro_broker_nats::{Envelope, NatsBroker, NatsOptions};
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, Metadata};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn collector() -> (Handler, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>, what: &str) -> Delivery {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the subscriber went away"))
}

async fn connected(opts: NatsOptions) -> NatsBroker {
    let broker = NatsBroker::new(opts).expect("broker");
    broker.connect().await.expect("connect");
    broker
}

async fn subscribe(
    broker: &NatsBroker,
    topic: &str,
) -> (Box<dyn Subscription>, mpsc::UnboundedReceiver<Delivery>) {
    let (handler, rx) = collector();
    let sub = broker
        .subscribe(topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    (sub, rx)
}

/// A plain async-nats client: the "foreign" publisher and subscriber.
async fn plain_client(opts: &NatsOptions) -> async_nats::Client {
    async_nats::connect(opts.servers.clone())
        .await
        .expect("a plain NATS client connects")
}

/// Returns once the server has processed what `client` sent before (its subscriptions):
/// async-nats's `flush` only empties the local buffer, while the server answers a request to
/// a subject nobody serves itself, in order.
async fn synced(client: &async_nats::Client) {
    let subject = format!("_TEST.SYNC.{}", uuid::Uuid::new_v4().simple());
    match tokio::time::timeout(PATIENCE, client.request(subject, "".into())).await {
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => panic!("expected the server's no-responders answer, got {other:?}"),
    }
}

const GARBAGE: &[u8] = &[0xff, 0xfe, 0x00, b'{', 0x80, b'"', 0xc3];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_without_headers_arrive_as_they_are() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts.clone()).await;
    let topic = unique("foreign-raw");
    // Subscribe returns once the server has the subscription, so no probes are needed.
    let (sub, mut rx) = subscribe(&broker, &topic).await;
    let plain = plain_client(&opts).await;
    plain
        .publish(topic.clone(), GARBAGE.into())
        .await
        .expect("publish");
    plain.flush().await.expect("flush");
    let d = next(&mut rx, "raw bytes").await;
    assert_eq!(&d.message.body[..], GARBAGE, "the body is untouched");
    assert!(d.message.header.is_empty(), "no headers: an empty map");
    assert_eq!(d.topic, topic);
    d.ack().await.expect("ack is a no-op in core NATS");
    d.nack(true).await.expect("nack is a no-op in core NATS");
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_reach_jetstream_subscribers_too() {
    let Some(opts) = common::jetstream_options().await else {
        return;
    };
    let broker = connected(opts.clone()).await;
    let topic = unique("foreign-js");
    // Subscribing made the stream, so a plain publish to the subject is stored.
    let (sub, mut rx) = subscribe(&broker, &topic).await;
    let plain = plain_client(&opts).await;
    plain
        .publish(topic.clone(), GARBAGE.into())
        .await
        .expect("publish");
    plain.flush().await.expect("flush");
    let d = next(&mut rx, "raw bytes through JetStream").await;
    assert_eq!(&d.message.body[..], GARBAGE);
    assert!(
        d.message.header.is_empty(),
        "no headers: an empty map, got {:?}",
        d.message.header
    );
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_headers_from_plain_clients_arrive() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts.clone()).await;
    let topic = unique("foreign-headers");
    let (sub, mut rx) = subscribe(&broker, &topic).await;
    let plain = plain_client(&opts).await;
    let mut headers = HeaderMap::new();
    headers.append("x-lower-case", "yes");
    headers.append("Repeated", "first");
    headers.append("Repeated", "last");
    headers.append("Empty", "");
    headers.append("Utf8", "grüße ✓");
    plain
        .publish_with_headers(topic.clone(), headers, "{}".into())
        .await
        .expect("publish");
    plain.flush().await.expect("flush");
    let d = next(&mut rx, "odd headers").await;
    let h = &d.message.header;
    assert_eq!(h.get("X-Lower-Case"), Some("yes"));
    assert_eq!(h.get("repeated"), Some("last"), "the last value wins");
    assert_eq!(h.get("empty"), Some(""));
    assert_eq!(h.get("utf8"), Some("grüße ✓"));
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_messages_reach_plain_clients_with_nats_headers() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts.clone()).await;
    let topic = unique("foreign-out");
    let plain = plain_client(&opts).await;
    let mut sub = plain.subscribe(topic.clone()).await.expect("subscribe");
    synced(&plain).await;
    let mut header = Metadata::new();
    header.insert("Micro-Id", "id-7");
    header.insert("Content-Type", "application/json");
    broker
        .publish(
            &topic,
            Message {
                header,
                body: "{\"a\":1}".into(),
            },
        )
        .await
        .expect("publish");
    let m = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("delivered in time")
        .expect("subscription open");
    assert_eq!(&m.payload[..], b"{\"a\":1}");
    let headers = m.headers.expect("NATS headers");
    assert_eq!(headers.get("Micro-Id").map(|v| v.as_str()), Some("id-7"));
    assert_eq!(
        headers.get("Content-Type").map(|v| v.as_str()),
        Some("application/json")
    );
    // Without headers, a plain PUB.
    broker
        .publish(
            &topic,
            Message {
                body: "x".into(),
                ..Default::default()
            },
        )
        .await
        .expect("publish");
    let m = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("delivered in time")
        .expect("subscription open");
    assert!(m.headers.is_none(), "no headers sent");
}

/// Publishes `HPUB` with a header value that is not UTF-8, straight on the wire.
async fn publish_non_utf8_header(address: &str, topic: &str) {
    let address = address.trim_start_matches("nats://");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.expect("INFO");
    assert!(line.starts_with("INFO"), "{line}");
    let headers: &[u8] = b"NATS/1.0\r\nX-Bad: \xff\xfe\xfd\r\n\r\n";
    let payload: &[u8] = b"bad-headers";
    let mut wire = Vec::new();
    wire.extend_from_slice(b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n");
    wire.extend_from_slice(
        format!(
            "HPUB {topic} {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .as_bytes(),
    );
    wire.extend_from_slice(headers);
    wire.extend_from_slice(payload);
    wire.extend_from_slice(b"\r\nPING\r\n");
    write.write_all(&wire).await.expect("write");
    loop {
        line.clear();
        let n = tokio::time::timeout(PATIENCE, read.read_line(&mut line))
            .await
            .expect("the server answers")
            .expect("read");
        assert!(n > 0, "the server closed the connection");
        assert!(!line.starts_with("-ERR"), "the server refused: {line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_are_not_utf8_do_not_end_the_subscription() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts.clone()).await;
    let topic = unique("foreign-bad-header");
    let (sub, mut rx) = subscribe(&broker, &topic).await;
    publish_non_utf8_header(&opts.servers[0], &topic).await;
    // async-nats drops the connection over it and reconnects; the subscription comes back on
    // its own. Messages sent while it is away are lost (at most once), so keep sending.
    let plain = plain_client(&opts).await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::select! {
            d = rx.recv() => {
                let d = d.expect("the subscriber is still there");
                if &d.message.body[..] == b"good" {
                    break;
                }
                // The bad message itself, should async-nats ever accept it.
                assert_eq!(&d.message.body[..], b"bad-headers");
            }
            _ = tick.tick() => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no message arrived within {PATIENCE:?} after one with bad headers"
                );
                plain.publish(topic.clone(), "good".into()).await.expect("publish");
            }
        }
    }
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_does_not_end_the_subscription() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts).await;
    let topic = unique("foreign-panic");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            if &d.message.body[..] == b"panic" {
                panic!("a handler bug");
            }
            if &d.message.body[..] == b"fail" {
                return Err(Error::internal("test", "failing on purpose"));
            }
            let _ = tx.send(d);
            Ok(())
        })
    });
    let sub = broker
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    for body in ["panic", "fail", "after"] {
        broker
            .publish(
                &topic,
                Message {
                    body: body.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("publish");
    }
    let d = next(&mut rx, "the message after a panic and an error").await;
    assert_eq!(&d.message.body[..], b"after");
    sub.unsubscribe().await.expect("unsubscribe");
}

async fn assert_oversized_refused(broker: &NatsBroker, topic: &str) {
    let body = vec![7u8; 2 * 1024 * 1024];
    let err = broker
        .publish(
            topic,
            Message {
                body: body.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("2 MiB is over the default max_payload of 1 MiB");
    assert_eq!(err.code, 413, "{err}");
    assert!(err.detail.contains("max_payload"), "{}", err.detail);
    assert!(err.detail.contains("nats at"), "{}", err.detail);
    // The connection is fine afterwards.
    broker
        .publish(
            topic,
            Message {
                body: "small".into(),
                ..Default::default()
            },
        )
        .await
        .expect("a small message after a refused one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_clearly() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts).await;
    assert_oversized_refused(&broker, &unique("foreign-big")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_clearly_in_jetstream_mode() {
    let Some(opts) = common::jetstream_options().await else {
        return;
    };
    let broker = connected(opts).await;
    assert_oversized_refused(&broker, &unique("foreign-big-js")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_nats_cannot_carry_are_refused() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts).await;
    let mut header = Metadata::new();
    header.insert("Has Space", "x");
    let err = broker
        .publish(
            &unique("foreign-bad-name"),
            Message {
                header,
                body: "x".into(),
            },
        )
        .await
        .expect_err("a space in a header name");
    assert_eq!(err.code, 400);
    assert!(err.detail.contains("Has Space"), "{}", err.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_envelopes_in_both_directions() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(NatsOptions {
        envelope: Envelope::GoMicro,
        ..opts.clone()
    })
    .await;
    let topic = unique("foreign-gomicro");
    let (sub, mut rx) = subscribe(&broker, &topic).await;
    let plain = plain_client(&opts).await;
    let mut go_side = plain.subscribe(topic.clone()).await.expect("subscribe");
    synced(&plain).await;

    // What Go Micro's NATS broker publishes: json.Marshal(&broker.Message{...}).
    let from_go = r#"{"Header":{"Micro-Id":"go-1","Content-Type":"application/json"},"Body":"eyJuYW1lIjoiZ28ifQ=="}"#;
    plain
        .publish(topic.clone(), from_go.into())
        .await
        .expect("publish");
    let d = next(&mut rx, "a Go Micro message").await;
    assert_eq!(&d.message.body[..], br#"{"name":"go"}"#);
    assert_eq!(d.message.header.get("micro-id"), Some("go-1"));
    let echoed = go_side.next().await.expect("the Go side sees it too");
    assert_eq!(&echoed.payload[..], from_go.as_bytes());

    // What this broker publishes, as Go Micro reads it.
    let mut header = Metadata::new();
    header.insert("Micro-Id", "rs-1");
    broker
        .publish(
            &topic,
            Message {
                header,
                body: "hi".into(),
            },
        )
        .await
        .expect("publish");
    let m = tokio::time::timeout(PATIENCE, go_side.next())
        .await
        .expect("delivered in time")
        .expect("subscription open");
    assert!(
        m.headers.is_none(),
        "Go Micro's layout uses no NATS headers"
    );
    let json: serde_json::Value = serde_json::from_slice(&m.payload).expect("a JSON envelope");
    assert_eq!(json["Header"]["Micro-Id"], "rs-1");
    assert_eq!(json["Body"], "aGk=");
    let d = next(&mut rx, "its own message").await;
    assert_eq!(&d.message.body[..], b"hi");

    // Anything else still arrives as it came.
    plain
        .publish(topic.clone(), GARBAGE.into())
        .await
        .expect("publish");
    let d = next(&mut rx, "raw bytes in the Go Micro layout").await;
    assert_eq!(&d.message.body[..], GARBAGE);
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_reads_both_layouts_without_configuration() {
    let Some(opts) = common::core_options() else {
        return;
    };
    // One broker on the default layout, one writing Go Micro's: each reads what the other
    // writes, and what a Go Micro publisher writes.
    let headers = connected(opts.clone()).await;
    let go_layout = connected(NatsOptions {
        envelope: Envelope::GoMicro,
        ..opts.clone()
    })
    .await;
    let topic = unique("foreign-mixed");
    let (sub_h, mut on_headers) = subscribe(&headers, &topic).await;
    let (sub_g, mut on_go) = subscribe(&go_layout, &topic).await;
    let plain = plain_client(&opts).await;
    synced(&plain).await;

    let from_go = r#"{"Header":{"Micro-Id":"go-1"},"Body":"Z28="}"#;
    plain
        .publish(topic.clone(), from_go.into())
        .await
        .expect("publish");
    for rx in [&mut on_headers, &mut on_go] {
        let d = next(rx, "Go Micro's layout").await;
        assert_eq!(&d.message.body[..], b"go");
        assert_eq!(d.message.header.get("micro-id"), Some("go-1"));
    }
    for (from, id) in [(&headers, "h-1"), (&go_layout, "g-1")] {
        let mut header = Metadata::new();
        header.insert("Micro-Id", id);
        from.publish(
            &topic,
            Message {
                header,
                body: "hi".into(),
            },
        )
        .await
        .expect("publish");
        for rx in [&mut on_headers, &mut on_go] {
            let d = next(rx, id).await;
            assert_eq!(&d.message.body[..], b"hi");
            assert_eq!(d.message.header.get("micro-id"), Some(id));
        }
    }
    sub_h.unsubscribe().await.expect("unsubscribe");
    sub_g.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_a_hundred_thousand_headers_is_dropped_and_the_next_delivered() {
    let Some(opts) = common::core_options() else {
        return;
    };
    let broker = connected(opts.clone()).await;
    let topic = unique("foreign-headers");
    let (sub, mut rx) = subscribe(&broker, &topic).await;
    let plain = plain_client(&opts).await;
    let mut witness = plain.subscribe(topic.clone()).await.expect("subscribe");
    synced(&plain).await;

    // Short distinct names, so the message stays under NATS's 1 MiB default payload limit.
    let mut flood = HeaderMap::new();
    for i in 0..100_000u32 {
        flood.insert(format!("h{i:x}").as_str(), "");
    }
    plain
        .publish_with_headers(topic.clone(), flood, "flood".into())
        .await
        .expect("publish");
    let mut ok = HeaderMap::new();
    ok.insert("Micro-Id", "after");
    plain
        .publish_with_headers(topic.clone(), ok, "normal".into())
        .await
        .expect("publish");
    plain.flush().await.expect("flush");
    // The server did pass the flood on: a plain client sees all of its headers.
    let seen = tokio::time::timeout(PATIENCE, witness.next())
        .await
        .expect("delivered in time")
        .expect("subscription open");
    assert_eq!(seen.headers.map(|h| h.iter().count()), Some(100_000));
    // Messages arrive in order: the first delivered must be the normal one.
    let d = next(&mut rx, "the message after the flood").await;
    assert_eq!(&d.message.body[..], b"normal");
    assert_eq!(d.message.header.get("micro-id"), Some("after"));
    sub.unsubscribe().await.expect("unsubscribe");
}
