//! The rate limiter over real calls: the greeter on the http transport, on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{GreeterClient, HelloReply, HelloRequest};
use micro::debug::{HealthRequest, HealthResponse};
use micro::registry::MemoryRegistry;
use micro::{Handler, Request, Response, Service, ServiceBuilder};
use micro_wrapper_ratelimit::{Rate, RateLimitLayer, RateLimitStats};

fn builder(name: &str, registry: &MemoryRegistry) -> ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("the http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

/// `Greeter.Hello`, counting the calls that reach it.
fn counting_greeter(calls: Arc<AtomicUsize>) -> Handler {
    Handler::new("Greeter").unary("Hello", move |req: Request<HelloRequest>| {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(Response::new(HelloReply {
                message: format!("Hello {}", req.into_inner().name),
            }))
        })
    })
}

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

#[tokio::test]
async fn a_handler_limit_admits_its_burst_then_answers_429() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    // One token a minute: nothing refills while the test runs.
    let limit = RateLimitLayer::new(Rate::per_minute(1))
        .burst(3)
        .per_endpoint();
    let server = builder("greeter", &registry)
        .handler(counting_greeter(calls.clone()))
        .handler_layer(limit.clone())
        .build()
        .expect("build");
    server.start().await.expect("start");
    let caller = builder("caller", &registry).build().expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());

    for i in 0..3 {
        within("call", greeter.hello(hello(&format!("n{i}"))))
            .await
            .unwrap_or_else(|e| panic!("call {i} is within the burst: {e}"));
    }
    for _ in 0..2 {
        let e = within("call", greeter.hello(hello("late")))
            .await
            .expect_err("the burst is spent");
        assert_eq!(e.code, 429, "{e}");
        assert_eq!(e.status, "Too Many Requests");
        assert_eq!(e.id, "greeter.Greeter.Hello");
        assert!(
            e.detail
                .starts_with("rate limit exceeded for greeter.Greeter.Hello"),
            "{e}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "rejected calls never reach the handler"
    );

    // Per endpoint: another endpoint of the same service has a bucket of its own.
    let health = within(
        "health",
        caller.client().unary::<_, HealthResponse>(
            "greeter",
            "Debug.Health",
            Request::new(HealthRequest {}),
        ),
    )
    .await
    .expect("Debug.Health has its own bucket");
    assert_eq!(health.get_ref().status, "ok");
    assert_eq!(
        limit.stats(),
        RateLimitStats {
            admitted: 4,
            waited: 0,
            rejected: 2
        }
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_client_limit_rejects_before_anything_is_sent() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let server = builder("greeter", &registry)
        .handler(counting_greeter(calls.clone()))
        .build()
        .expect("build");
    server.start().await.expect("start");
    let limit = RateLimitLayer::new(Rate::per_minute(1)).burst(2);
    let caller = builder("caller", &registry)
        .client_layer(limit.clone())
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());

    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(within("call", greeter.hello(hello(&format!("n{i}")))).await);
    }
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    let limited: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert_eq!(ok, 2);
    assert_eq!(limited.len(), 3);
    for e in limited {
        assert_eq!(e.code, 429, "{e}");
        assert_eq!(e.id, "micro.client");
        assert!(e.detail.contains("for greeter:"), "per service: {e}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "only admitted calls were sent"
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn in_wait_mode_calls_over_the_limit_wait_their_turn_and_all_succeed() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let server = builder("greeter", &registry)
        .handler(counting_greeter(calls.clone()))
        .build()
        .expect("build");
    server.start().await.expect("start");
    // One call at a time, one every 25 ms.
    let limit = RateLimitLayer::new(Rate::per_second(40)).burst(1).wait();
    let caller = builder("caller", &registry)
        .client_layer(limit.clone())
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());

    let mut tasks = Vec::new();
    for i in 0..5 {
        let greeter = greeter.clone();
        tasks.push(tokio::spawn(async move {
            greeter.hello(hello(&format!("n{i}"))).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let reply = within("call", t)
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("call {i} should have waited, not failed: {e}"));
        assert_eq!(reply.get_ref().message, format!("Hello n{i}"));
    }
    assert_eq!(
        limit.stats(),
        RateLimitStats {
            admitted: 5,
            waited: 4,
            rejected: 0
        },
        "the first call went at once, the other four waited for their turn"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_wait_is_bounded_by_the_callers_deadline() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let limit = RateLimitLayer::new(Rate::per_minute(1)).wait();
    let server = builder("greeter", &registry)
        .handler(counting_greeter(calls.clone()))
        .handler_layer(limit.clone())
        .build()
        .expect("build");
    server.start().await.expect("start");
    let caller = builder("caller", &registry).build().expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());

    within("first call", greeter.hello(hello("first")))
        .await
        .expect("the bucket starts full");
    // The next turn is a minute away; the caller waits two seconds at most.
    let req = Request::new(hello("second")).with_timeout(Duration::from_secs(2));
    let e = within("second call", greeter.hello(req))
        .await
        .expect_err("its turn comes after its deadline");
    assert_eq!(e.code, 429, "refused at once, not timed out: {e}");
    assert!(e.detail.contains("past what this call may wait"), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(limit.stats().rejected, 1);
    server.stop().await.expect("stop");
}
