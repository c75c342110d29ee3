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

/// `Gate.Wait`: says it started, waits for a permit of `gate`, then answers the length of
/// the text it was sent.
fn gate(started: mpsc::UnboundedSender<()>, gate: Arc<tokio::sync::Semaphore>) -> Handler {
    Handler::new("Gate").unary("Wait", move |req: Request<Json<String>>| {
        let (started, gate) = (started.clone(), gate.clone());
        Box::pin(async move {
            let _ = started.send(());
            let _permit = gate.acquire().await;
            Ok(Response::new(Json(req.into_inner().0.len() as u64)))
        })
    })
}

async fn wait_call(client: &micro::Client, text: String) -> micro::Result<u64> {
    let req = Request::new(Json(text)).with_retries(0);
    let reply = client
        .unary::<Json<String>, Json<u64>>("gated", "Gate.Wait", req)
        .await?;
    Ok(reply.into_inner().0)
}

/// Calls until one is answered (the load a finished call held is freed as its reply leaves,
/// which the caller may see first); each refusal must be the server's 503.
async fn eventually_answered(client: &micro::Client, what: &str) -> u64 {
    within(what, async {
        loop {
            match wait_call(client, "x".into()).await {
                Ok(n) => return n,
                Err(e) => assert_eq!(e.code, 503, "{what}: {e}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_sheds_calls_with_a_fast_503() {
    use micro::transport::LoadLimits;
    for transport in TRANSPORTS {
        let registry = MemoryRegistry::new();
        let (started, mut entered) = mpsc::unbounded_channel();
        let open = Arc::new(tokio::sync::Semaphore::new(0));
        let server = builder("gated", transport, &registry)
            .handler(gate(started, open.clone()))
            .handler(greeter_handler(GreeterService))
            .limits(LoadLimits {
                max_calls: 2,
                max_request_bytes: 1 << 20,
            })
            .build()
            .expect("build");
        within("start", server.start()).await.expect("start");
        let client = builder("caller", transport, &registry)
            .build()
            .expect("build the caller")
            .client();

        // Calls in flight: two held in the handler, the third refused before it runs.
        let held: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn({
                    let client = client.clone();
                    async move { wait_call(&client, "held".into()).await }
                })
            })
            .collect();
        for _ in 0..2 {
            within("a held call starts", entered.recv()).await;
        }
        let e = within("the third call", wait_call(&client, "x".into()))
            .await
            .expect_err("a third call in flight is refused");
        assert_eq!(e.code, 503, "{transport}: {e}");
        assert!(e.detail.contains("busy"), "{transport}: {e}");
        assert!(entered.try_recv().is_err(), "{transport}: the handler ran");
        open.add_permits(2);
        for call in held {
            let answered = within("a held call", call).await.expect("joined");
            assert_eq!(answered.expect(transport), 4, "{transport}");
        }
        open.add_permits(1000);
        assert_eq!(
            eventually_answered(&client, transport).await,
            1,
            "{transport}"
        );

        // Request bytes held at once: 700 kB in the handler leaves no room for 700 kB more,
        // while a small call still goes through.
        open.forget_permits(usize::MAX);
        while entered.try_recv().is_ok() {}
        let big = "b".repeat(700_000);
        let first = tokio::spawn({
            let (client, big) = (client.clone(), big.clone());
            async move { wait_call(&client, big).await }
        });
        within("the big call starts", entered.recv()).await;
        let e = within("a second big call", wait_call(&client, big))
            .await
            .expect_err("no room for its bytes");
        assert_eq!(e.code, 503, "{transport}: {e}");
        assert!(e.detail.contains("bytes"), "{transport}: {e}");
        let small = tokio::spawn({
            let client = client.clone();
            async move { wait_call(&client, "small".into()).await }
        });
        within("the small call starts beside it", entered.recv()).await;
        open.add_permits(1000);
        let small = within("the small call", small).await.expect("joined");
        assert_eq!(small.expect(transport), 5, "{transport}");
        let first = within("the big call", first).await.expect("joined");
        assert_eq!(first.expect(transport), 700_000, "{transport}");

        // A stream in flight counts as a call too.
        eventually_answered(&client, transport).await;
        open.forget_permits(usize::MAX);
        while entered.try_recv().is_ok() {}
        let held = tokio::spawn({
            let client = client.clone();
            async move { wait_call(&client, "held".into()).await }
        });
        within("a held call starts", entered.recv()).await;
        let greeter = GreeterClient::new("gated", client.clone());
        let mut chat = within("chat", greeter.chat(())).await.expect(transport);
        chat.send(&HelloRequest { name: "x".into() })
            .await
            .expect(transport);
        let hello = within("chat reply", chat.recv()).await.expect(transport);
        assert_eq!(hello.map(|r| r.message).as_deref(), Some("Hello x"));
        let e = within("a call beside the stream", wait_call(&client, "x".into()))
            .await
            .expect_err("the stream and the held call fill the server");
        assert_eq!(e.code, 503, "{transport}: {e}");
        chat.close_send().await.expect(transport);
        assert!(within("chat end", chat.recv())
            .await
            .expect(transport)
            .is_none());
        open.add_permits(1000);
        within("the held call", held)
            .await
            .expect("joined")
            .expect(transport);
        eventually_answered(&client, transport).await;
        within("stop", server.stop()).await.expect("stop");
    }
}
