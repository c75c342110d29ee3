//! RPC over the real http transport on loopback: unary calls, every stream kind, metadata,
//! codecs, errors and deadlines.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{client, greeter, within};
use greeter::greeter::{GreeterClient, HelloRequest, StreamRequest};
use micro::registry::MemoryRegistry;
use micro::rpc::{CallOptions, Request as RawRequest};
use micro::{Handler, Json, Request, Response};
use serde::{Deserialize, Serialize};

#[tokio::test]
async fn unary_call_and_every_stream_kind() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let greeter = GreeterClient::new("greeter", client(&registry));

    let reply = within(
        "unary",
        greeter.hello(HelloRequest {
            name: "John".into(),
        }),
    )
    .await
    .expect("unary call");
    assert_eq!(reply.get_ref().message, "Hello John");

    // Server streaming: one request, `count` replies, then the end.
    let mut stream = within(
        "open server stream",
        greeter.stream(StreamRequest {
            name: "Ann".into(),
            count: 3,
        }),
    )
    .await
    .expect("server stream");
    let mut got = Vec::new();
    while let Some(r) = within("server stream recv", stream.recv())
        .await
        .expect("recv")
    {
        got.push(r.message);
    }
    assert_eq!(got, ["Hello Ann #1", "Hello Ann #2", "Hello Ann #3"]);

    // Client streaming: many requests, one reply.
    let mut collect = within("open client stream", greeter.collect(()))
        .await
        .expect("open");
    for name in ["a", "b", "c"] {
        collect
            .send(&HelloRequest { name: name.into() })
            .await
            .expect("send");
    }
    collect.close_send().await.expect("close");
    let joined = within("client stream reply", collect.recv())
        .await
        .expect("reply");
    assert_eq!(joined.expect("one reply").message, "Hello a, b, c");
    assert!(collect.recv().await.expect("end").is_none());

    // Bidirectional: each request answered as it arrives, before the next is sent.
    let mut chat = within("open bidi stream", greeter.chat(()))
        .await
        .expect("open");
    for name in ["x", "y"] {
        chat.send(&HelloRequest { name: name.into() })
            .await
            .expect("send");
        let r = within("bidi recv", chat.recv()).await.expect("recv");
        assert_eq!(r.expect("reply").message, format!("Hello {name}"));
    }
    chat.close_send().await.expect("close");
    assert!(within("bidi end", chat.recv())
        .await
        .expect("end")
        .is_none());

    service.stop().await.expect("stop");
}

#[tokio::test]
async fn metadata_travels_both_ways() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let greeter = GreeterClient::new("greeter", client(&registry));
    let req = Request::new(HelloRequest {
        name: "John".into(),
    })
    .with_metadata("Trace-Id", "t-123");
    let reply = within("call", greeter.hello(req)).await.expect("call");
    assert_eq!(reply.metadata().get("trace-id"), Some("t-123"));
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn protobuf_and_json_are_served_by_one_server() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let proto = GreeterClient::new("greeter", client(&registry));
    let json = GreeterClient::new(
        "greeter",
        client(&registry).with_content_type("application/json"),
    );
    let a = within("proto", proto.hello(HelloRequest { name: "P".into() }))
        .await
        .expect("proto");
    let b = within("json", json.hello(HelloRequest { name: "J".into() }))
        .await
        .expect("json");
    assert_eq!(a.get_ref().message, "Hello P");
    assert_eq!(b.get_ref().message, "Hello J");

    // The JSON on the wire is canonical proto3 JSON, as a Go Micro or curl client sends it.
    let raw = RawRequest {
        id: String::new(),
        proto_service: None,
        service: "greeter".into(),
        endpoint: "Greeter.Hello".into(),
        content_type: "application/json".into(),
        metadata: Default::default(),
        body: Bytes::from_static(br#"{"name":"Raw","unknownField":1}"#),
    };
    let rsp = within(
        "raw json",
        client(&registry).call_raw(raw, CallOptions::default()),
    )
    .await
    .expect("raw json call");
    assert_eq!(rsp.content_type, "application/json");
    assert_eq!(&rsp.body[..], br#"{"message":"Hello Raw"}"#);
    service.stop().await.expect("stop");
}

fn raw(endpoint: &str, content_type: &str, body: &'static [u8]) -> RawRequest {
    RawRequest {
        id: String::new(),
        proto_service: None,
        service: "greeter".into(),
        endpoint: endpoint.into(),
        content_type: content_type.into(),
        metadata: Default::default(),
        body: Bytes::from_static(body),
    }
}

#[tokio::test]
async fn bad_requests_get_fitting_errors() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let c = client(&registry);
    let call = |r: RawRequest| {
        let c = c.clone();
        async move { within("call", c.call_raw(r, CallOptions::default())).await }
    };

    let unknown_service = GreeterClient::new("nobody", c.clone());
    let err = unknown_service
        .hello(HelloRequest { name: "x".into() })
        .await
        .expect_err("no such service");
    assert_eq!(err.code, 404);
    assert!(err.detail.contains("nobody"), "{err}");

    let err = call(raw("Greeter.Nope", "application/json", b"{}"))
        .await
        .expect_err("unknown endpoint");
    assert_eq!(err.code, 404);
    assert!(err.detail.contains("Greeter.Nope"), "{err}");

    let err = call(raw(
        "Greeter.Hello",
        "application/protobuf",
        b"\xff\xff\xff\xff",
    ))
    .await
    .expect_err("garbage");
    assert_eq!(err.code, 400);
    assert!(err.detail.contains("protobuf"), "{err}");

    let err = call(raw("Greeter.Hello", "application/json", b"{\"name\":"))
        .await
        .expect_err("cut JSON");
    assert_eq!(err.code, 400);

    let err = call(raw("Greeter.Hello", "text/xml", b"<x/>"))
        .await
        .expect_err("wrong content type");
    assert_eq!(err.code, 415);
    assert!(err.detail.contains("application/json"), "{err}");

    let err = call(raw("Greeter.Hello", "application/json", br#"{"name":""}"#))
        .await
        .expect_err("handler error");
    assert_eq!(err.code, 400);
    assert_eq!(err.id, "greeter.Greeter.Hello");

    let big = vec![b'a'; 5 << 20];
    let mut oversized = raw("Greeter.Hello", "application/octet-stream", b"");
    oversized.body = Bytes::from(big);
    let err = within("oversized", c.call_raw(oversized, CallOptions::default()))
        .await
        .expect_err("oversized body");
    assert_eq!(err.code, 413, "{err}");

    // The server is still fine.
    let ok = GreeterClient::new("greeter", c.clone())
        .hello(HelloRequest {
            name: "after".into(),
        })
        .await;
    assert_eq!(ok.expect("still serving").get_ref().message, "Hello after");
    service.stop().await.expect("stop");
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Wait {
    millis: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Waited {
    deadline_ms: Option<u64>,
}

/// `Slow.Wait`: reports the deadline it was given, waits, and signals if it was cancelled.
fn slow(cancelled: tokio::sync::mpsc::UnboundedSender<Option<u64>>) -> Handler {
    Handler::new("Slow").unary("Wait", move |req: Request<Json<Wait>>| {
        let cancelled = cancelled.clone();
        Box::pin(async move {
            let deadline_ms = req.deadline().map(|d| {
                d.saturating_duration_since(std::time::Instant::now())
                    .as_millis() as u64
            });
            struct Guard(
                tokio::sync::mpsc::UnboundedSender<Option<u64>>,
                Option<u64>,
                bool,
            );
            impl Drop for Guard {
                fn drop(&mut self) {
                    if !self.2 {
                        let _ = self.0.send(self.1);
                    }
                }
            }
            let mut guard = Guard(cancelled, deadline_ms, false);
            tokio::time::sleep(Duration::from_millis(req.get_ref().0.millis)).await;
            guard.2 = true;
            Ok(Response::new(Json(Waited { deadline_ms })))
        })
    })
}

#[tokio::test]
async fn the_timeout_reaches_the_server_and_bounds_the_handler() {
    let registry = MemoryRegistry::new();
    let (tx, mut cancelled) = tokio::sync::mpsc::unbounded_channel();
    let service = greeter(&registry, vec![slow(tx)]).await;
    let c = client(&registry).with_content_type("application/json");

    let req = Request::new(Json(Wait { millis: 60_000 }))
        .with_timeout(Duration::from_millis(500))
        .with_retries(0);
    let err = within(
        "slow call",
        c.unary::<_, Json<Waited>>("greeter", "Slow.Wait", req),
    )
    .await
    .expect_err("deadline");
    assert_eq!(err.code, 408, "{err}");

    // The server saw the deadline and dropped the handler when it passed.
    let seen = within("handler cancelled", cancelled.recv())
        .await
        .expect("handler ran");
    let ms = seen.expect("the handler saw a deadline");
    assert!(ms <= 500, "deadline {ms} ms is the caller's 500 ms or less");

    // A call within its deadline gets the deadline too, and succeeds.
    let req = Request::new(Json(Wait { millis: 0 })).with_timeout(Duration::from_secs(3));
    let ok = within(
        "fast call",
        c.unary::<_, Json<Waited>>("greeter", "Slow.Wait", req),
    )
    .await
    .expect("fast call");
    let ms = ok.into_inner().0.deadline_ms.expect("deadline sent");
    assert!(ms > 0 && ms <= 3000, "{ms}");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn a_stream_opened_to_a_unary_endpoint_is_a_clear_error() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let c = client(&registry);
    let mut s = within(
        "open",
        c.stream::<HelloRequest, greeter::greeter::HelloReply>(
            "greeter",
            "Greeter.Hello",
            Request::new(()),
        ),
    )
    .await
    .expect("open");
    let err = within("the answer", s.recv())
        .await
        .expect_err("a unary endpoint");
    assert_eq!(err.code, 400, "{err}");
    assert_eq!(err.id, "greeter.Greeter.Hello");
    assert!(err.detail.contains("unary endpoint"), "{err}");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn every_service_answers_debug_health() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let c = client(&registry).with_content_type("application/json");
    let raw = RawRequest {
        id: String::new(),
        proto_service: None,
        service: "greeter".into(),
        endpoint: "Debug.Health".into(),
        content_type: "application/json".into(),
        metadata: Default::default(),
        body: Bytes::from_static(b"{}"),
    };
    let rsp = within("health", c.call_raw(raw, CallOptions::default()))
        .await
        .expect("health");
    assert_eq!(&rsp.body[..], br#"{"status":"ok"}"#);
    let typed = c
        .unary::<_, micro::debug::HealthResponse>(
            "greeter",
            "Debug.Health",
            Request::new(micro::debug::HealthRequest {}),
        )
        .await
        .expect("typed health");
    assert_eq!(typed.into_inner().status, "ok");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_own_call() {
    // Both transports run handlers on the connection's own task: a panic there must end that
    // one call with an error, and leave the server and the connection serving.
    for transport in ["http", "grpc"] {
        let registry = MemoryRegistry::new();
        let boom = Handler::new("Boom").unary("Now", |_req: Request<Json<Wait>>| {
            Box::pin(async move {
                if std::hint::black_box(true) {
                    panic!("a handler bug");
                }
                Ok(Response::new(Json(Waited::default())))
            })
        });
        let service = common::builder("greeter", &registry)
            .transport(micro::plugins::transport(transport).expect("transport"))
            .handler(greeter::greeter::greeter_handler(greeter::GreeterService))
            .handler(boom)
            .build()
            .expect("build the service");
        service.start().await.expect("start");
        let c = client(&registry).with_content_type("application/json");
        for _ in 0..3 {
            let req = Request::new(Json(Wait { millis: 0 })).with_retries(0);
            let err = within(
                "a call to a panicking handler",
                c.unary::<_, Json<Waited>>("greeter", "Boom.Now", req),
            )
            .await
            .expect_err("the handler panicked");
            assert!(err.code >= 500, "{transport}: {err}");
            let hello = GreeterClient::new("greeter", client(&registry));
            let reply = within(
                "a call after the panic",
                hello.hello(HelloRequest {
                    name: "still here".into(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("{transport}: the server stopped serving: {e}"));
            assert!(
                reply.get_ref().message.contains("still here"),
                "{transport}"
            );
        }
        service.stop().await.expect("stop");
    }
}

/// A caller may race a stream's `recv` against other work in `select!` (the gateway's
/// WebSocket bridge does): a `recv` given up before its reply came loses nothing, on either
/// transport, whether the stream's response head or a later reply was under way.
#[tokio::test]
async fn a_stream_recv_given_up_in_select_loses_nothing() {
    for transport in ["http", "grpc"] {
        let registry = MemoryRegistry::new();
        let service = common::builder("greeter", &registry)
            .transport(micro::plugins::transport(transport).expect("transport"))
            .handler(greeter::greeter::greeter_handler(greeter::GreeterService))
            .build()
            .expect("build");
        service.start().await.expect("start");
        let caller = common::builder("caller", &registry)
            .transport(micro::plugins::transport(transport).expect("transport"))
            .build()
            .expect("build the caller");
        let greeter = GreeterClient::new("greeter", caller.client());
        let mut chat = within("open", greeter.chat(())).await.expect("open");
        let mut given_up = 0;
        for name in ["a", "b", "c", "d"] {
            chat.send(&HelloRequest { name: name.into() })
                .await
                .expect("send");
            // The other branch is ready at once, so `recv` is dropped unfinished until
            // its reply is there.
            let reply = within("recv", async {
                loop {
                    tokio::select! {
                        biased;
                        r = chat.recv() => break r,
                        () = tokio::task::yield_now() => given_up += 1,
                    }
                }
            })
            .await
            .expect("recv");
            assert_eq!(
                reply.expect("a reply").message,
                format!("Hello {name}"),
                "{transport}"
            );
        }
        assert!(given_up > 0, "{transport}: recv was never given up");
        chat.close_send().await.expect("close");
        assert!(within("end", chat.recv()).await.expect("end").is_none());
        service.stop().await.expect("stop");
    }
}
