//! The http broker's protocol and behaviour: registry entries, Go Micro's JSON on the wire in
//! both directions, bad requests, failures, caching and disconnecting.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collector, next, raw_exchange, raw_post, until_live, TestRegistry, PATIENCE};
use micro_broker_http::{HttpBroker, HttpBrokerOptions, BROADCAST_VERSION, SERVICE_NAME};
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro_core::{Broker, Error, Metadata, Node, Registry, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn broker(registry: &TestRegistry) -> HttpBroker {
    HttpBroker::new(Arc::new(registry.clone()), HttpBrokerOptions::default()).expect("broker")
}

fn message(body: &str, pairs: &[(&str, &str)]) -> Message {
    Message {
        header: pairs.iter().copied().collect::<Metadata>(),
        body: body.to_string().into(),
    }
}

fn queue(name: &str) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.into()),
        auto_ack: true,
    }
}

/// The registered nodes of `topic`, by version.
async fn nodes(registry: &TestRegistry, topic: &str) -> Vec<(String, Node)> {
    registry
        .get_service(SERVICE_NAME)
        .await
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| {
            let version = s.version.clone();
            s.nodes.into_iter().map(move |n| (version.clone(), n))
        })
        .filter(|(_, n)| n.metadata.get("topic").map(String::as_str) == Some(topic))
        .collect()
}

/// A handler that fails every message.
fn failing() -> Handler {
    Arc::new(|_d: Delivery| Box::pin(async { Err(Error::bad_request("orders", "bad order")) }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_register_go_micro_entries() {
    let registry = TestRegistry::new();
    let b = broker(&registry);
    let (h, _rx) = collector();
    let broadcast = b
        .subscribe("orders", h.clone(), SubscribeOptions::default())
        .await
        .expect("subscribe");
    let worker = b
        .subscribe("orders", h, queue("workers"))
        .await
        .expect("subscribe");
    let found = nodes(&registry, "orders").await;
    assert_eq!(found.len(), 2);
    let mut versions: Vec<&str> = found.iter().map(|(v, _)| v.as_str()).collect();
    versions.sort();
    assert_eq!(versions, [BROADCAST_VERSION, "workers"]);
    for (_, node) in &found {
        assert!(node.id.starts_with("orders-"), "node id {}", node.id);
        assert!(
            uuid::Uuid::parse_str(&node.id["orders-".len()..]).is_ok(),
            "<topic>-<uuid>: {}",
            node.id
        );
        assert_eq!(node.address, b.address());
        let expected = BTreeMap::from([
            ("broker".to_string(), "http".to_string()),
            ("topic".to_string(), "orders".to_string()),
            ("secure".to_string(), "false".to_string()),
        ]);
        assert_eq!(node.metadata, expected);
    }
    assert_ne!(found[0].1.id, found[1].1.id);
    assert!(b.address().starts_with("127.0.0.1:"), "{}", b.address());
    assert_ne!(b.address(), "127.0.0.1:0");

    broadcast.unsubscribe().await.expect("unsubscribe");
    let left = nodes(&registry, "orders").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, "workers");
    worker.unsubscribe().await.expect("unsubscribe");
    assert!(nodes(&registry, "orders").await.is_empty());
    worker
        .unsubscribe()
        .await
        .expect("unsubscribing twice is harmless");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reaches_subscribers_of_other_brokers() {
    let registry = TestRegistry::new();
    let publisher = broker(&registry);
    let (sub_a, sub_b) = (broker(&registry), broker(&registry));

    // Other brokers' subscriptions reach the publisher through the registry watch, a moment
    // later: probe until the publisher sees them.
    let (ha, mut ra) = collector();
    let (hb, mut rb) = collector();
    let sa = sub_a
        .subscribe("news", ha, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let sb = sub_b
        .subscribe("news", hb, SubscribeOptions::default())
        .await
        .expect("subscribe");
    until_live(&publisher, "news", &mut [&mut ra, &mut rb]).await;

    // Broadcast: each subscriber broker gets the message, with its headers and the topic.
    publisher
        .publish("news", message("extra", &[("Trace-Id", "t-1")]))
        .await
        .expect("publish");
    for rx in [&mut ra, &mut rb] {
        let d = next(rx, "broadcast").await;
        assert_eq!(d.topic, "news");
        assert_eq!(&d.message.body[..], b"extra");
        assert_eq!(d.message.header.get("trace-id"), Some("t-1"));
        assert_eq!(d.message.header.get("Micro-Topic"), Some("news"));
    }

    // A queue group spread over two brokers: each message reaches it once.
    let (h1, mut r1) = collector();
    let (h2, mut r2) = collector();
    let q1 = sub_a
        .subscribe("jobs", h1, queue("workers"))
        .await
        .expect("subscribe");
    let q2 = sub_b
        .subscribe("jobs", h2, queue("workers"))
        .await
        .expect("subscribe");
    until_live(&publisher, "jobs", &mut [&mut r1, &mut r2]).await;
    for i in 0..20 {
        publisher
            .publish("jobs", message(&i.to_string(), &[]))
            .await
            .expect("publish");
    }
    // Each publish returned after its delivery, so everything has arrived by now.
    let mut got = Vec::new();
    for rx in [&mut r1, &mut r2] {
        while let Ok(d) = rx.try_recv() {
            got.push(
                String::from_utf8_lossy(&d.message.body)
                    .parse::<u32>()
                    .unwrap_or(99),
            );
        }
    }
    got.sort();
    assert_eq!(
        got,
        (0..20).collect::<Vec<u32>>(),
        "each message reached the group once"
    );
    for s in [sa, sb, q1, q2] {
        s.unsubscribe().await.expect("unsubscribe");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_go_micro_json_posted_by_hand() {
    let registry = TestRegistry::new();
    let b = broker(&registry);
    let (h, mut rx) = collector();
    let sub = b
        .subscribe("my topic", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "my topic").await.remove(0);
    let id = node.id.replace(' ', "+");

    // Exactly what Go Micro's http broker sends.
    let json = r#"{"Header":{"Micro-Id":"5e1c","Micro-Topic":"my topic","Content-Type":"application/json"},"Body":"eyJuYW1lIjoiSm9obiJ9"}"#;
    let (status, body) = raw_post(&node.address, &format!("/?id={id}"), json).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let d = next(&mut rx, "a hand-made message").await;
    assert_eq!(d.topic, "my topic");
    assert_eq!(&d.message.body[..], br#"{"name":"John"}"#);
    assert_eq!(d.message.header.get("micro-id"), Some("5e1c"));
    assert_eq!(
        d.message.header.get("content-type"),
        Some("application/json")
    );

    // Percent-escaped ids, `null` parts and a missing topic header are fine too.
    let escaped = node.id.replace(' ', "%20");
    let (status, _) = raw_post(
        &node.address,
        &format!("/?id={escaped}"),
        r#"{"Header":null,"Body":null}"#,
    )
    .await;
    assert_eq!(status, 200);
    let d = next(&mut rx, "an empty message").await;
    assert!(d.message.body.is_empty() && d.message.header.is_empty());
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_go_micro_json() {
    // A stand-in for a Go Micro subscriber: a registry entry pointing at a raw socket.
    let registry = TestRegistry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let node_id = "greetings-5b0b6b8e-0b4a-4b8c-9c1e-2d6f8a1e9f00";
    let service = Service {
        nodes: vec![Node {
            id: node_id.into(),
            address: address.clone(),
            metadata: BTreeMap::from([
                ("broker".to_string(), "http".to_string()),
                ("topic".to_string(), "greetings".to_string()),
                ("secure".to_string(), "false".to_string()),
            ]),
        }],
        ..Service::new(SERVICE_NAME, BROADCAST_VERSION)
    };
    registry
        .register(&service, Default::default())
        .await
        .expect("register");
    let go = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "the publisher hung up early");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("a Content-Length");
                if body.len() >= len {
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .expect("reply");
                    return (head.to_string(), body.to_string());
                }
            }
        }
    });
    let b = broker(&registry);
    b.publish(
        "greetings",
        message(
            "hi\u{0}",
            &[("Micro-Id", "m-1"), ("Content-Type", "text/plain")],
        ),
    )
    .await
    .expect("publish");
    let (head, body) = tokio::time::timeout(PATIENCE, go)
        .await
        .expect("the request arrived")
        .expect("the fake subscriber");
    let first = head.lines().next().unwrap_or_default();
    assert_eq!(first, format!("POST /?id={node_id} HTTP/1.1"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("host: {address}")),
        "{head}"
    );
    assert_eq!(
        body,
        r#"{"Header":{"Content-Type":"text/plain","Micro-Id":"m-1","Micro-Topic":"greetings"},"Body":"aGkA"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_of_300_000_header_keys_is_refused_and_the_next_delivered() {
    let registry = TestRegistry::new();
    let b = broker(&registry);
    let (h, mut rx) = collector();
    let sub = b
        .subscribe("flood", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "flood").await.remove(0);
    let path = format!("/?id={}", node.id.replace(' ', "+"));
    // About 3.9 MB, under the 4 MiB body limit: only the header count is wrong. Both layouts:
    // the compact one the fast reader takes, and a spaced one the general parser reads.
    for separator in [",", ", "] {
        let keys: Vec<String> = (0..300_000).map(|i| format!("\"k{i}\":\"\"")).collect();
        let json = format!(
            "{{\"Header\":{{{}}},\"Body\":\"aGk=\"}}",
            keys.join(separator)
        );
        let (status, body) = raw_post(&node.address, &path, &json).await;
        assert_eq!(status, 431, "{body}");
        assert!(body.contains("MICRO_MAX_HEADERS"), "{body}");
    }
    let (status, _) = raw_post(
        &node.address,
        &path,
        r#"{"Header":{"Micro-Id":"after"},"Body":"aGk="}"#,
    )
    .await;
    assert_eq!(status, 200);
    let d = next(&mut rx, "the message after the floods").await;
    assert_eq!(d.message.header.get("micro-id"), Some("after"));
    assert_eq!(&d.message.body[..], b"hi");
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_reason() {
    let registry = TestRegistry::new();
    let b = HttpBroker::new(
        Arc::new(registry.clone()),
        HttpBrokerOptions::default().with_max_body_bytes(1024),
    )
    .expect("broker");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe("bad", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "bad").await.remove(0);
    let addr = node.address.clone();
    let path = format!("/?id={}", node.id);
    let good = r#"{"Header":{},"Body":"aGk="}"#;

    let (status, body) = raw_exchange(
        &addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 405);
    assert!(body.contains("POST"), "{body}");

    let (status, body) = raw_post(&addr, "/", good).await;
    assert_eq!(status, 400);
    assert!(body.contains("missing subscriber id"), "{body}");

    let (status, body) = raw_post(&addr, "/?id=", good).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = raw_post(&addr, "/?id=bad-nobody", good).await;
    assert_eq!(status, 404);
    assert!(body.contains("no subscriber \\\"bad-nobody\\\""), "{body}");

    let (status, body) = raw_post(&addr, &path, "{not json").await;
    assert_eq!(status, 400);
    assert!(body.contains("not a broker message"), "{body}");

    let (status, body) = raw_post(&addr, &path, r#"{"Header":{"A":1}}"#).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = raw_post(&addr, &path, r#"{"Body":"no base64!"}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("base64"), "{body}");

    let (status, body) = raw_post(
        &addr,
        &path,
        r#"{"Header":{"Micro-Topic":"other"},"Body":""}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("not to \\\"other\\\""), "{body}");

    // Declared too large: refused before reading.
    let (status, body) = raw_exchange(
        &addr,
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(body.contains("1024 bytes"), "{body}");

    // Too large without a declared length: refused once the limit is passed.
    let chunk = "x".repeat(600);
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let (status, _) = raw_exchange(&addr, chunked.as_bytes()).await;
    assert_eq!(status, 413);

    // None of that reached the handler; a good request still does.
    assert!(
        rx.try_recv().is_err(),
        "bad requests never reach the handler"
    );
    let (status, _) = raw_post(&addr, &path, good).await;
    assert_eq!(status, 200);
    assert_eq!(
        &next(&mut rx, "a good request").await.message.body[..],
        b"hi"
    );
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out() {
    let registry = TestRegistry::new();
    let b = HttpBroker::new(
        Arc::new(registry.clone()),
        HttpBrokerOptions::default().with_request_timeout(Duration::from_millis(300)),
    )
    .expect("broker");
    let (h, _rx) = collector();
    let sub = b
        .subscribe("slow", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "slow").await.remove(0);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&node.address)
            .await
            .expect("connect");
        // Promise 100 bytes, send 2, and wait for the verdict.
        let head = format!(
            "POST /?id={} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{}}",
            node.id
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut response = vec![0u8; 1024];
        let n = stream.read(&mut response).await.expect("read");
        String::from_utf8_lossy(&response[..n]).to_string()
    };
    let response = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("answered in time");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_reach_the_publisher() {
    let registry = TestRegistry::new();
    let b = broker(&registry);
    let sub = b
        .subscribe("failing", failing(), SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "failing").await.remove(0);

    // The subscriber answers 500 with the handler's error as Micro error JSON.
    let (status, body) = raw_post(
        &node.address,
        &format!("/?id={}", node.id),
        r#"{"Header":{},"Body":""}"#,
    )
    .await;
    assert_eq!(status, 500);
    let e = Error::parse(&body);
    assert_eq!(
        (e.id.as_str(), e.code, e.detail.as_str()),
        ("orders", 400, "bad order")
    );

    // With nobody else subscribed, the publish fails and says why.
    let err = b
        .publish("failing", message("x", &[]))
        .await
        .expect_err("no subscriber took the message");
    assert_eq!(err.code, 500);
    assert!(err.detail.contains("bad order"), "{err}");

    // Once another subscriber takes it, the publish succeeds (the failure is only logged).
    let (h, mut rx) = collector();
    let ok = b
        .subscribe("failing", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish("failing", message("y", &[]))
        .await
        .expect("one subscriber took it");
    assert_eq!(
        &next(&mut rx, "the healthy subscriber").await.message.body[..],
        b"y"
    );

    // A handler that panics is a 500 too, and the server goes on.
    let panicking: Handler = Arc::new(|_d: Delivery| Box::pin(async { panic!("handler bug") }));
    let p = b
        .subscribe("panics", panicking, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let err = b
        .publish("panics", message("z", &[]))
        .await
        .expect_err("the handler panicked");
    assert!(err.detail.contains("panicked"), "{err}");
    assert!(err.detail.contains("handler bug"), "{err}");
    // So is a handler that panics before it returns its future.
    let eager: Handler = Arc::new(
        |_d: Delivery| -> micro_core::BoxFuture<'static, micro_core::Result<()>> {
            panic!("eager handler bug")
        },
    );
    let e = b
        .subscribe("panics-eagerly", eager, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let err = b
        .publish("panics-eagerly", message("z", &[]))
        .await
        .expect_err("the handler panicked");
    assert!(err.detail.contains("eager handler bug"), "{err}");
    b.publish("failing", message("after", &[]))
        .await
        .expect("the server still serves");
    assert_eq!(
        &next(&mut rx, "after a panic").await.message.body[..],
        b"after"
    );
    for s in [sub, ok, p, e] {
        s.unsubscribe().await.expect("unsubscribe");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_times_the_publish_out() {
    let registry = TestRegistry::new();
    let b = HttpBroker::new(
        Arc::new(registry.clone()),
        HttpBrokerOptions::default().with_request_timeout(Duration::from_millis(200)),
    )
    .expect("broker");
    let (release, released) = tokio::sync::watch::channel(false);
    let (finished, mut finishes) = tokio::sync::mpsc::unbounded_channel();
    let slow: Handler = Arc::new(move |_d: Delivery| {
        let mut released = released.clone();
        let finished = finished.clone();
        Box::pin(async move {
            let _ = tokio::time::timeout(PATIENCE, released.wait_for(|r| *r)).await;
            let _ = finished.send(());
            Ok(())
        })
    });
    let sub = b
        .subscribe("slow-handler", slow, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let started = Instant::now();
    let err = b
        .publish("slow-handler", message("x", &[]))
        .await
        .expect_err("timed out");
    assert!(started.elapsed() < PATIENCE);
    assert!(err.detail.contains("no answer within"), "{err}");
    // The publisher hung up, but the handler is not cancelled halfway: it runs to its end.
    let _ = release.send(true);
    let end = tokio::time::timeout(PATIENCE, finishes.recv()).await;
    assert!(
        matches!(end, Ok(Some(()))),
        "the handler was cut short when its publisher hung up"
    );
    sub.unsubscribe().await.expect("unsubscribe");
}

/// A registry entry for `topic` pointing at a port nobody listens on.
async fn dead_node(registry: &TestRegistry, topic: &str, version: &str) -> Service {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let service = Service {
        nodes: vec![Node {
            id: format!("{topic}-{}", uuid::Uuid::new_v4()),
            address,
            metadata: BTreeMap::from([
                ("broker".to_string(), "http".to_string()),
                ("topic".to_string(), topic.to_string()),
                ("secure".to_string(), "false".to_string()),
            ]),
        }],
        ..Service::new(SERVICE_NAME, version)
    };
    registry
        .register(&service, Default::default())
        .await
        .expect("register");
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_subscribers_are_skipped() {
    let registry = TestRegistry::new();
    let b = broker(&registry);

    // Only a dead subscriber: the publish says nobody could be reached.
    let dead = dead_node(&registry, "gone", BROADCAST_VERSION).await;
    let err = b
        .publish("gone", message("x", &[]))
        .await
        .expect_err("nobody reachable");
    assert_eq!(err.code, 503);
    assert!(err.detail.contains(&dead.nodes[0].address), "{err}");

    // A dead broadcast subscriber next to a live one: skipped.
    let (h, mut rx) = collector();
    let live = b
        .subscribe("gone", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish("gone", message("y", &[]))
        .await
        .expect("the live subscriber took it");
    assert_eq!(
        &next(&mut rx, "live subscriber").await.message.body[..],
        b"y"
    );

    // A dead member of a queue group: another member takes every message.
    dead_node(&registry, "work", "workers").await;
    let (hq, mut rq) = collector();
    let member = b
        .subscribe("work", hq, queue("workers"))
        .await
        .expect("subscribe");
    for i in 0..10 {
        b.publish("work", message(&i.to_string(), &[]))
            .await
            .expect("a live member took it");
        assert_eq!(
            String::from_utf8_lossy(&next(&mut rq, "live member").await.message.body),
            i.to_string()
        );
    }
    live.unsubscribe().await.expect("unsubscribe");
    member.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_cached_but_new_subscribers_show_up_fast() {
    let registry = TestRegistry::new();
    let publisher = HttpBroker::new(
        Arc::new(registry.clone()),
        // A long TTL: only the registry watch can make the new subscriber visible.
        HttpBrokerOptions::default().with_cache_ttl(Duration::from_secs(60)),
    )
    .expect("broker");
    let subscriber = broker(&registry);
    let (h, mut rx) = collector();
    let first = subscriber
        .subscribe("cached", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let before = registry.lookups();
    for i in 0..50 {
        publisher
            .publish("cached", message(&i.to_string(), &[]))
            .await
            .expect("publish");
    }
    assert!(
        registry.lookups() - before <= 2,
        "50 publishes made {} registry lookups",
        registry.lookups() - before
    );
    for _ in 0..50 {
        next(&mut rx, "cached publishing").await;
    }

    // Another broker subscribes: the publisher's watch sees it.
    let late_broker = broker(&registry);
    let (hl, mut rl) = collector();
    let late = late_broker
        .subscribe("cached", hl, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let started = Instant::now();
    loop {
        publisher
            .publish("cached", message("probe", &[]))
            .await
            .expect("publish");
        if tokio::time::timeout(Duration::from_millis(50), rl.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the new subscriber was not seen within 2 s"
        );
    }
    first.unsubscribe().await.expect("unsubscribe");
    late.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_deregisters_and_closes() {
    let registry = TestRegistry::new();
    let b = broker(&registry);
    let (h, _rx) = collector();
    let s1 = b
        .subscribe("bye", h.clone(), SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.subscribe("bye", h, queue("q")).await.expect("subscribe");
    let address = b.address();
    assert_eq!(nodes(&registry, "bye").await.len(), 2);
    b.disconnect().await.expect("disconnect");
    assert!(nodes(&registry, "bye").await.is_empty(), "deregistered");
    assert_eq!(b.address(), "127.0.0.1:0");
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "the listener at {address} is closed"
    );
    s1.unsubscribe()
        .await
        .expect("unsubscribing after disconnect is harmless");
    b.disconnect()
        .await
        .expect("disconnecting twice is harmless");
}

#[tokio::test]
async fn bad_options_are_refused() {
    let registry: Arc<dyn Registry> = Arc::new(TestRegistry::new());
    let e = HttpBroker::new(
        registry.clone(),
        HttpBrokerOptions::default()
            .with_register(Duration::from_secs(10), Duration::from_secs(10)),
    )
    .expect_err("interval must be below TTL");
    assert_eq!(e.code, 400);
    let b = HttpBroker::new(
        registry,
        HttpBrokerOptions::default().with_address("256.0.0.1:1"),
    )
    .expect("checked at connect");
    let e = b.connect().await.expect_err("cannot listen");
    assert!(e.detail.contains("256.0.0.1:1"), "{e}");
    assert_eq!(b.name(), "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_keeps_known_subscribers() {
    let registry = TestRegistry::new();
    let b = broker(&registry);
    let (h, mut rx) = collector();
    let sub = b
        .subscribe("outage", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    b.publish("outage", message("before", &[]))
        .await
        .expect("publish");
    next(&mut rx, "before the outage").await;

    registry.fail_lookups(true);
    // Subscribing elsewhere makes the cache stale; the lookup then fails.
    let (other, _orx) = collector();
    let o = b
        .subscribe("elsewhere", other, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let before = registry.lookups();
    b.publish("outage", message("during", &[]))
        .await
        .expect("published to the subscribers known before");
    assert_eq!(registry.lookups(), before + 1, "the registry was asked");
    assert_eq!(
        &next(&mut rx, "during the outage").await.message.body[..],
        b"during"
    );

    // With nothing known, the registry's error is the publish's.
    let fresh = broker(&registry);
    let err = fresh
        .publish("outage", message("x", &[]))
        .await
        .expect_err("nothing known and no registry");
    assert_eq!(err.code, 503);
    assert!(err.detail.contains("the registry is down"), "{err}");
    registry.fail_lookups(false);
    sub.unsubscribe().await.expect("unsubscribe");
    o.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_lookups_refresh_in_the_background() {
    let registry = TestRegistry::new();
    let ttl = Duration::from_millis(100);
    let publisher = HttpBroker::new(
        Arc::new(registry.clone()),
        HttpBrokerOptions::default().with_cache_ttl(ttl),
    )
    .expect("broker");
    let subscriber = broker(&registry);
    let (h, mut rx) = collector();
    let sub = subscriber
        .subscribe("aged", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    until_live(&publisher, "aged", &mut [&mut rx]).await;

    // The registry turns slow; the cached entry ages past its TTL (time is the condition).
    registry.delay_lookups(Duration::from_secs(3));
    let before = registry.lookups();
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let started = Instant::now();
    publisher
        .publish("aged", message("quick", &[]))
        .await
        .expect("publish");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the publish waited {:?} for the registry",
        started.elapsed()
    );
    assert_eq!(
        &next(&mut rx, "from the aged entry").await.message.body[..],
        b"quick"
    );
    // The refresh runs in a task of its own, which may start after the message arrived.
    tokio::time::timeout(PATIENCE, registry.until_lookups(before + 1))
        .await
        .expect("a refresh went out");
    assert_eq!(
        registry.lookups(),
        before + 1,
        "one refresh went out meanwhile"
    );
    registry.delay_lookups(Duration::ZERO);
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_server_holds_a_bounded_number_of_connections() {
    let registry = TestRegistry::new();
    let opts = HttpBrokerOptions {
        max_connections: 2,
        ..HttpBrokerOptions::default()
    };
    let b = HttpBroker::new(Arc::new(registry.clone()), opts).expect("broker");
    let (h, mut rx) = collector();
    let sub = b
        .subscribe("bounded", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "bounded").await.remove(0);

    // Two idle connections fill the server ...
    let first = tokio::net::TcpStream::connect(&node.address)
        .await
        .expect("connect");
    let second = tokio::net::TcpStream::connect(&node.address)
        .await
        .expect("connect");
    // ... so a third is closed at once, its request unanswered (a reset or an end: both say
    // the server took nothing).
    let json = r#"{"Header":{"Micro-Topic":"bounded"},"Body":""}"#;
    let request = format!(
        "POST /?id={} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        node.id.replace(' ', "+"),
        json.len()
    );
    // One request on a fresh connection: what came back, empty when the server took nothing.
    let attempt = || async {
        let mut conn = tokio::net::TcpStream::connect(&node.address)
            .await
            .expect("connect");
        let _ = conn.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer)).await;
        answer
    };
    let answer = attempt().await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // Once they close, messages are taken again.
    drop((first, second));
    let delivered = tokio::time::timeout(PATIENCE, async {
        loop {
            let answer = attempt().await;
            if !answer.is_empty() {
                return String::from_utf8_lossy(&answer).into_owned();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the server never took a message again");
    assert!(delivered.starts_with("HTTP/1.1 200"), "{delivered}");
    next(&mut rx, "a message after the others closed").await;
    sub.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test]
async fn a_slowloris_holds_no_disconnect() {
    let registry = TestRegistry::new();
    let opts = HttpBrokerOptions::default().with_idle_timeout(Duration::from_millis(300));
    let b = HttpBroker::new(Arc::new(registry.clone()), opts).expect("broker");
    let (h, _rx) = collector();
    let _sub = b
        .subscribe("slow", h, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let (_, node) = nodes(&registry, "slow").await.remove(0);
    // Half a request head, and nothing more.
    let mut slow = tokio::net::TcpStream::connect(&node.address)
        .await
        .expect("connect");
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("write");
    tokio::time::timeout(PATIENCE, b.disconnect())
        .await
        .expect("a disconnect is not held by a slowloris")
        .expect("disconnect");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slowloris's connection is closed");
}
