//! Dead nodes, retries and graceful stops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{builder, client, greeter, within};
use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest};
use greeter::GreeterService;
use micro::core::registry::RegisterOptions;
use micro::core::selector::Strategy;
use micro::registry::{MemoryRegistry, Node, Registry, Service};
use micro::{Handler, Json, Request, Response};
use tokio::sync::{mpsc, Semaphore};

/// A port on loopback with nothing listening: bind, note the port, close.
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr").to_string();
    drop(l);
    a
}

#[tokio::test]
async fn a_retry_lands_on_a_healthy_node_when_one_node_is_dead() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    // A node that crashed without deregistering.
    let mut dead = Service::new("greeter", "latest");
    dead.nodes.push(Node {
        id: "greeter-dead".into(),
        address: dead_address().await,
        metadata: Default::default(),
    });
    registry
        .register(&dead, RegisterOptions::default())
        .await
        .expect("register dead node");

    let caller = builder("caller", &registry)
        .strategy(Strategy::RoundRobin)
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());
    for i in 0..20 {
        let r = within(
            "call",
            greeter.hello(HelloRequest {
                name: format!("n{i}"),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("call {i} failed although a healthy node exists: {e}"));
        assert_eq!(r.get_ref().message, format!("Hello n{i}"));
    }

    service.stop().await.expect("stop");
}

#[tokio::test]
async fn direct_address_calls_skip_the_registry() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let address = micro::rpc::Server::address(service.server()).expect("listening");
    let elsewhere = MemoryRegistry::new(); // knows no services at all
    let greeter = GreeterClient::new("greeter", client(&elsewhere));
    let req = Request::new(HelloRequest {
        name: "direct".into(),
    })
    .with_address(address);
    let r = within("direct call", greeter.hello(req))
        .await
        .expect("direct call");
    assert_eq!(r.get_ref().message, "Hello direct");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn a_graceful_stop_lets_calls_in_flight_finish() {
    let registry = MemoryRegistry::new();
    // `Gate.Pass` signals when it is entered and waits until the test opens the gate.
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let handler = Handler::new("Gate").unary("Pass", move |req: Request<Json<u32>>| {
        let entered_tx = entered_tx.clone();
        let gate = g.clone();
        Box::pin(async move {
            let _ = entered_tx.send(());
            let _permit = gate
                .acquire()
                .await
                .map_err(|_| micro::Error::internal("gate", "closed"))?;
            Ok(Response::new(Json(req.into_inner().0 + 1)))
        })
    });
    let service = builder("gated", &registry)
        .handler(handler)
        .handler(greeter_handler(GreeterService))
        .build()
        .expect("build");
    service.start().await.expect("start");

    let c = client(&registry).with_content_type("application/json");
    let mut calls = Vec::new();
    for i in 0..16u32 {
        let c = c.clone();
        calls.push(tokio::spawn(async move {
            let req = Request::new(Json(i)).with_timeout(Duration::from_secs(30));
            c.unary::<_, Json<u32>>("gated", "Gate.Pass", req).await
        }));
    }
    for _ in 0..16 {
        within("all calls in flight", entered.recv())
            .await
            .expect("entered");
    }

    let stopping = {
        let service = service.clone();
        tokio::spawn(async move { service.stop().await })
    };
    // Deregistration comes first: wait until the registry no longer lists the service.
    within("deregistered", async {
        while registry.get_service("gated").await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "stop waits for the calls in flight"
    );
    gate.add_permits(16);

    for (i, call) in calls.into_iter().enumerate() {
        let r = within("call", call)
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("call {i} failed during the stop: {e}"));
        assert_eq!(r.into_inner().0, i as u32 + 1);
    }
    within("stop", stopping).await.expect("task").expect("stop");
}

#[tokio::test]
async fn a_stopped_server_deregisters_and_refuses_new_calls() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let address = micro::rpc::Server::address(service.server()).expect("listening");
    service.stop().await.expect("stop");
    assert_eq!(
        registry
            .get_service("greeter")
            .await
            .expect_err("gone")
            .code,
        404
    );
    let greeter = GreeterClient::new("greeter", client(&registry));
    let req = Request::new(HelloRequest {
        name: "late".into(),
    })
    .with_address(address)
    .with_retries(0);
    let err = within("call to a stopped server", greeter.hello(req))
        .await
        .expect_err("refused");
    assert_eq!(err.code, 503, "a transport error: {err}");
}

/// By default a call is retried only when no handler can have run it: a handler that failed
/// with a timeout or a server error runs once; Go Micro's policy, asked for per call, runs it
/// again; a `503` (shed before the handler) is retried either way.
#[tokio::test]
async fn a_handler_runs_twice_only_when_the_caller_asks_for_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let failing = Handler::new("Flaky").unary("Fail", move |req: Request<Json<u16>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let code = i32::from(req.into_inner().0);
        Box::pin(async move { Err(micro::Error::new("flaky.Flaky.Fail", code, "failed")) })
            as micro::BoxFuture<'static, micro::Result<Response<Json<u16>>>>
    });
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![failing]).await;
    let caller = client(&registry).with_content_type("application/json");
    let runs_for = |code: u16, policy: Option<micro::rpc::RetryPolicy>| {
        let caller = caller.clone();
        let runs = runs.clone();
        async move {
            runs.store(0, Ordering::SeqCst);
            let mut request = Request::new(Json(code)).with_retries(1);
            if let Some(policy) = policy {
                request = request.with_retry(policy);
            }
            let failed = within(
                "call",
                caller.unary::<Json<u16>, Json<u16>>("greeter", "Flaky.Fail", request),
            )
            .await
            .expect_err("the handler fails");
            assert_eq!(failed.code, i32::from(code));
            runs.load(Ordering::SeqCst)
        }
    };
    use micro::rpc::RetryPolicy::GoMicro;
    assert_eq!(runs_for(500, None).await, 1);
    assert_eq!(runs_for(408, None).await, 1);
    assert_eq!(runs_for(503, None).await, 2);
    assert_eq!(runs_for(500, Some(GoMicro)).await, 2);
    assert_eq!(runs_for(400, Some(GoMicro)).await, 1);
    service.stop().await.expect("stop");
}
