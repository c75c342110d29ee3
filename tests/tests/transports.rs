//! The transport conformance suite: the same calls over every transport Micro has (http, the
//! default; gRPC; and the in-process memory transport), through real services. Unary calls and
//! every stream kind, metadata both ways, a deadline that reaches the handler, errors kept
//! whole, a large body, an unknown endpoint, and a shutdown that lets a call under way finish
//! while new calls find nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::within;
use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest, StreamRequest};
use greeter::GreeterService;
use micro::registry::MemoryRegistry;
use micro::{Handler, Json, Request, Response, Service};
use tokio::sync::mpsc;

const TRANSPORTS: [&str; 3] = ["http", "grpc", "memory"];

fn builder(name: &str, transport: &str, registry: &MemoryRegistry) -> micro::ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport(transport).expect("the transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

/// `Slow.Wait`: says it started, waits as long as asked, then answers the deadline it saw (ms
/// left, 0 if none).
fn slow(started: mpsc::UnboundedSender<()>) -> Handler {
    Handler::new("Slow").unary("Wait", move |req: Request<Json<u64>>| {
        let _ = started.send(());
        Box::pin(async move {
            let left = req.deadline().map_or(0, |d| {
                d.saturating_duration_since(std::time::Instant::now())
                    .as_millis() as u64
            });
            tokio::time::sleep(Duration::from_millis(req.into_inner().0)).await;
            Ok(Response::new(Json(left)))
        })
    })
}

/// A greeter (and `Slow`) on `transport`, a client of the same transport, and what tells when
/// a `Slow.Wait` started.
async fn fleet(transport: &str) -> (Service, micro::Client, mpsc::UnboundedReceiver<()>) {
    let registry = MemoryRegistry::new();
    let (started, waits) = mpsc::unbounded_channel();
    let server = builder("greeter", transport, &registry)
        .handler(greeter_handler(GreeterService))
        .handler(slow(started))
        .build()
        .expect("build the greeter");
    within("start", server.start()).await.expect("start");
    let client = builder("caller", transport, &registry)
        .build()
        .expect("build the caller")
        .client();
    (server, client, waits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_every_stream_kind() {
    for transport in TRANSPORTS {
        let (server, client, _) = fleet(transport).await;
        let greeter = GreeterClient::new("greeter", client);
        let hello = greeter.hello(HelloRequest {
            name: "John".into(),
        });
        let reply = within(transport, hello).await.expect(transport);
        assert_eq!(reply.get_ref().message, "Hello John", "{transport}");

        let opened = greeter.stream(StreamRequest {
            name: "Ann".into(),
            count: 3,
        });
        let mut stream = within(transport, opened).await.expect(transport);
        let mut got = Vec::new();
        while let Some(r) = within(transport, stream.recv()).await.expect(transport) {
            got.push(r.message);
        }
        assert_eq!(
            got,
            ["Hello Ann #1", "Hello Ann #2", "Hello Ann #3"],
            "{transport}"
        );

        let mut collect = within(transport, greeter.collect(()))
            .await
            .expect(transport);
        for name in ["a", "b"] {
            collect
                .send(&HelloRequest { name: name.into() })
                .await
                .expect(transport);
        }
        collect.close_send().await.expect(transport);
        let joined = within(transport, collect.recv()).await.expect(transport);
        assert_eq!(
            joined.map(|r| r.message).as_deref(),
            Some("Hello a, b"),
            "{transport}"
        );

        let mut chat = within(transport, greeter.chat(())).await.expect(transport);
        for name in ["x", "y"] {
            chat.send(&HelloRequest { name: name.into() })
                .await
                .expect(transport);
            let r = within(transport, chat.recv()).await.expect(transport);
            assert_eq!(
                r.map(|r| r.message),
                Some(format!("Hello {name}")),
                "{transport}"
            );
        }
        chat.close_send().await.expect(transport);
        assert!(within(transport, chat.recv())
            .await
            .expect(transport)
            .is_none());
        server.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_errors_and_large_bodies() {
    for transport in TRANSPORTS {
        let (server, client, _) = fleet(transport).await;
        let greeter = GreeterClient::new("greeter", client.clone());
        let req = Request::new(HelloRequest {
            name: "John".into(),
        })
        .with_metadata("Trace-Id", "t-9");
        let reply = within(transport, greeter.hello(req))
            .await
            .expect(transport);
        assert_eq!(reply.metadata().get("trace-id"), Some("t-9"), "{transport}");

        let failed = within(transport, greeter.hello(HelloRequest::default())).await;
        let e = failed.expect_err("an empty name is refused");
        assert_eq!(
            (e.code, e.detail.as_str()),
            (400, "name must not be empty"),
            "{transport}"
        );

        let unknown = client.unary::<_, HelloRequest>(
            "greeter",
            "Greeter.Nope",
            Request::new(HelloRequest::default()),
        );
        let e = within(transport, unknown)
            .await
            .expect_err("no such endpoint");
        assert_eq!(e.code, 404, "{transport}: {e}");

        // A megabyte each way.
        let name = "n".repeat(1 << 20);
        let hello = greeter.hello(HelloRequest { name: name.clone() });
        let reply = within(transport, hello).await.expect(transport);
        assert_eq!(
            reply.get_ref().message.len(),
            "Hello ".len() + name.len(),
            "{transport}"
        );
        server.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_reaches_the_handler_and_bounds_the_call() {
    for transport in TRANSPORTS {
        let (server, client, _) = fleet(transport).await;
        let client = client.with_content_type("application/json");
        let req = Request::new(Json(0u64)).with_timeout(Duration::from_secs(3));
        let left = within(
            transport,
            client.unary::<_, Json<u64>>("greeter", "Slow.Wait", req),
        )
        .await
        .expect(transport)
        .into_inner()
        .0;
        assert!(left > 0 && left <= 3000, "{transport}: {left} ms left");

        let req = Request::new(Json(60_000u64))
            .with_timeout(Duration::from_millis(300))
            .with_retries(0);
        let late = client.unary::<_, Json<u64>>("greeter", "Slow.Wait", req);
        let e = within(transport, late)
            .await
            .expect_err("past its deadline");
        assert_eq!(e.code, 408, "{transport}: {e}");
        server.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_calls_under_way_and_takes_no_new_ones() {
    for transport in TRANSPORTS {
        let (server, client, mut waits) = fleet(transport).await;
        let json = client.clone().with_content_type("application/json");
        let req = Request::new(Json(300u64)).with_timeout(Duration::from_secs(10));
        let under_way = tokio::spawn(async move {
            json.unary::<_, Json<u64>>("greeter", "Slow.Wait", req)
                .await
        });
        // Once the handler runs, stopping must wait for it.
        within(transport, waits.recv())
            .await
            .expect("the call reached the handler");
        within(transport, server.stop()).await.expect("stop");
        let finished = within(transport, under_way).await.expect("joined");
        assert!(finished.is_ok(), "{transport}: {finished:?}");

        let greeter = GreeterClient::new("greeter", client);
        let after = greeter.hello(HelloRequest {
            name: "late".into(),
        });
        let e = within(transport, after)
            .await
            .expect_err("nothing serves any more");
        assert!(e.code == 404 || e.code >= 500, "{transport}: {e}");
    }
}
