//! Circuit breakers over real calls: greeter services on the http transport, on loopback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{greeter_handler, GreeterClient, HelloReply, HelloRequest};
use greeter::GreeterService;
use micro::core::selector::Strategy;
use micro::registry::MemoryRegistry;
use micro::{Error, Handler, Request, Response, Service, ServiceBuilder};
use micro_wrapper_breaker::{BreakerOptions, CircuitState, EndpointBreakerLayer, NodeBreakerLayer};

fn builder(name: &str, registry: &MemoryRegistry) -> ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("the http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

/// `Greeter.Hello` that answers 500 while `failing` is set, counting the calls that reach it.
fn flaky_greeter(failing: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> Handler {
    Handler::new("Greeter").unary("Hello", move |req: Request<HelloRequest>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let fail = failing.load(Ordering::SeqCst);
        Box::pin(async move {
            if fail {
                return Err(Error::internal(
                    "greeter.Greeter.Hello",
                    "the database is down",
                ));
            }
            Ok(Response::new(HelloReply {
                message: format!("Hello {}", req.into_inner().name),
            }))
        })
    })
}

async fn started(b: ServiceBuilder) -> (Service, String) {
    let service = b.build().expect("build");
    service.start().await.expect("start");
    let address = micro::rpc::Server::address(service.server()).expect("listening");
    (service, address)
}

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

fn once(name: &str) -> Request<HelloRequest> {
    Request::new(HelloRequest { name: name.into() }).with_retries(0)
}

/// Lets the cool-down pass at once: the breakers read tokio's clock, which a test may move.
async fn let_pass(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn an_endpoint_circuit_opens_fails_fast_half_opens_and_recovers() {
    let registry = MemoryRegistry::new();
    let failing = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let (server, _) = started(
        builder("greeter", &registry).handler(flaky_greeter(failing.clone(), calls.clone())),
    )
    .await;
    let cool_down = Duration::from_secs(30);
    let breaker = EndpointBreakerLayer::new(
        BreakerOptions::default()
            .consecutive_failures(3)
            .failure_ratio(2.0)
            .open_for(cool_down),
    );
    let circuits = breaker.circuits().clone();
    let caller = builder("caller", &registry)
        .client_layer(breaker)
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());
    let key = "greeter.Greeter.Hello";

    // Closed: failures go through to the handler, until three in a row open the circuit.
    for _ in 0..3 {
        let e = within("call", greeter.hello(once("a")))
            .await
            .expect_err("the handler fails");
        assert_eq!(e.code, 500, "{e}");
        assert_eq!(e.detail, "the database is down");
    }
    assert!(circuits.state(key).is_open());

    // Open: calls fail fast, with a reason and a time to retry, and never reach the handler.
    let e = within("call", greeter.hello(once("b")))
        .await
        .expect_err("the circuit is open");
    assert_eq!(e.code, 503, "{e}");
    assert_eq!(e.id, "micro.breaker");
    assert!(
        e.detail.starts_with(
            "circuit open for endpoint greeter.Greeter.Hello (3 consecutive failures); \
             retry after "
        ),
        "{e}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Half-open after the cool-down: one trial goes through; it fails, so the circuit opens again.
    let_pass(cool_down).await;
    assert_eq!(circuits.state(key), CircuitState::HalfOpen);
    let e = within("trial", greeter.hello(once("c")))
        .await
        .expect_err("the trial fails");
    assert_eq!(e.code, 500);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    match circuits.state(key) {
        CircuitState::Open { reason, .. } => {
            assert_eq!(reason, "a trial call failed while half-open")
        }
        other => panic!("a failed trial reopens the circuit, got {other:?}"),
    }
    let e = within("call", greeter.hello(once("d")))
        .await
        .expect_err("open again");
    assert_eq!(e.code, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // The service recovers; after the next cool-down a successful trial closes the circuit.
    failing.store(false, Ordering::SeqCst);
    let_pass(cool_down).await;
    let reply = within("trial", greeter.hello(once("e")))
        .await
        .expect("the trial succeeds");
    assert_eq!(reply.get_ref().message, "Hello e");
    assert_eq!(circuits.state(key), CircuitState::Closed);
    for name in ["f", "g"] {
        within("call", greeter.hello(once(name)))
            .await
            .expect("closed again");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 7);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_caller_error_does_not_open_the_circuit() {
    let registry = MemoryRegistry::new();
    let (server, _) =
        started(builder("greeter", &registry).handler(greeter_handler(GreeterService))).await;
    let breaker = EndpointBreakerLayer::new(BreakerOptions::default().consecutive_failures(2));
    let circuits = breaker.circuits().clone();
    let caller = builder("caller", &registry)
        .client_layer(breaker)
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());
    for _ in 0..4 {
        // The greeter refuses empty names with a 400: the caller's mistake, not an outage.
        let e = within("call", greeter.hello(once("")))
            .await
            .expect_err("400");
        assert_eq!(e.code, 400);
    }
    assert_eq!(
        circuits.state("greeter.Greeter.Hello"),
        CircuitState::Closed
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn with_one_failing_node_calls_keep_succeeding_on_the_other() {
    let registry = MemoryRegistry::new();
    let (healthy, healthy_address) =
        started(builder("greeter", &registry).handler(greeter_handler(GreeterService))).await;
    let bad_calls = Arc::new(AtomicUsize::new(0));
    let (broken, broken_address) = started(builder("greeter", &registry).handler(flaky_greeter(
        Arc::new(AtomicBool::new(true)),
        bad_calls.clone(),
    )))
    .await;

    let breaker = NodeBreakerLayer::new(
        BreakerOptions::default()
            .consecutive_failures(2)
            .failure_ratio(2.0)
            .open_for(Duration::from_secs(60)),
    );
    let circuits = breaker.circuits().clone();
    // Round robin sends every other call to the broken node, which answers (500, so the
    // selector alone would keep it); the retry of each such call (Go Micro's policy, which
    // retries a 500) lands on the healthy node.
    let caller = builder("caller", &registry)
        .strategy(Strategy::RoundRobin)
        .attempt_layer(breaker)
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());
    for i in 0..12 {
        let reply = within(
            "call",
            greeter.hello(
                micro::Request::new(HelloRequest {
                    name: format!("n{i}"),
                })
                .with_retry(micro::rpc::RetryPolicy::GoMicro),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("call {i} failed although a healthy node exists: {e}"));
        assert_eq!(reply.get_ref().message, format!("Hello n{i}"));
    }
    // Two failures opened the broken node's circuit; from then on it reported the node
    // unreachable, the selector ejected it, and no call reached it again.
    assert_eq!(bad_calls.load(Ordering::SeqCst), 2);
    match circuits.state(&broken_address) {
        CircuitState::Open { reason, .. } => assert_eq!(reason, "2 consecutive failures"),
        other => panic!("the broken node's circuit should be open, got {other:?}"),
    }
    assert_eq!(circuits.state(&healthy_address), CircuitState::Closed);
    healthy.stop().await.expect("stop");
    broken.stop().await.expect("stop");
}

#[tokio::test]
async fn an_open_node_circuit_fails_fast_with_the_node_named() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (server, address) = started(builder("greeter", &registry).handler(flaky_greeter(
        Arc::new(AtomicBool::new(true)),
        calls.clone(),
    )))
    .await;
    let breaker = NodeBreakerLayer::new(
        BreakerOptions::default()
            .consecutive_failures(2)
            .open_for(Duration::from_secs(60)),
    );
    let caller = builder("caller", &registry)
        .attempt_layer(breaker)
        .build()
        .expect("caller");
    let greeter = GreeterClient::new("greeter", caller.client());
    for _ in 0..2 {
        let e = within("call", greeter.hello(once("a")))
            .await
            .expect_err("500");
        assert_eq!(e.code, 500);
    }
    let e = within("call", greeter.hello(once("b")))
        .await
        .expect_err("open");
    assert_eq!(e.code, 503, "{e}");
    let expected = format!("circuit open for node {address} of greeter (2 consecutive failures)");
    assert!(e.detail.starts_with(&expected), "{e}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the open circuit sent nothing"
    );
    server.stop().await.expect("stop");
}
