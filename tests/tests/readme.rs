//! Every Rust snippet of the README compiles and runs: each one is copied below, between
//! `// README begin` and `// README end`, inside a test that sets up what it names, and
//! `the_readme_shows_what_is_tested_here` checks that the README still says exactly that.
//! (The README's first service is `examples/hello`, checked by that crate's own test.)

use std::path::Path;
use std::time::Duration;

use greeter::greeter::HelloRequest;

/// The README's Rust blocks, but those of `examples/hello`.
fn readme_snippets() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(readme).expect("read README.md");
    let mut snippets = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match &mut block {
            None if line == "```rust" => block = Some(String::new()),
            Some(snippet) if line.starts_with("```") => {
                if !snippet.starts_with("// examples/hello/") {
                    snippets.push(std::mem::take(snippet));
                }
                block = None;
            }
            Some(snippet) => {
                snippet.push_str(line);
                snippet.push('\n');
            }
            None => {}
        }
    }
    snippets
}

/// The snippets in this file, without the indentation of the test around them.
fn tested_snippets() -> Vec<String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readme.rs");
    let text = std::fs::read_to_string(source).expect("read tests/readme.rs");
    let mut snippets = Vec::new();
    let mut snippet: Option<String> = None;
    for line in text.lines() {
        match (&mut snippet, line.trim()) {
            (None, "// README begin") => snippet = Some(String::new()),
            (Some(s), "// README end") => {
                snippets.push(std::mem::take(s));
                snippet = None;
            }
            (Some(s), _) => {
                s.push_str(line.strip_prefix("    ").unwrap_or(line));
                s.push('\n');
            }
            (None, _) => {}
        }
    }
    snippets
}

#[test]
fn the_readme_shows_what_is_tested_here() {
    let tested = tested_snippets();
    let shown = readme_snippets();
    for snippet in &shown {
        assert!(
            tested.contains(snippet),
            "README.md shows a snippet no test runs; copy it into tests/readme.rs:\n{snippet}"
        );
    }
    assert_eq!(
        tested.len(),
        shown.len(),
        "tests/readme.rs runs snippets the README no longer shows"
    );
}

/// Builds, starts and stops a service, as the snippets leave them.
async fn start_and_stop(service: &micro::Service) -> micro::Result<()> {
    service.start().await?;
    service.stop().await
}

#[rustfmt::skip]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware() -> micro::Result<()> {
    let my_per_node_layer = tower::layer::util::Identity::new();
    let my_publish_layer = tower::layer::util::Identity::new();
    let my_metrics_layer = tower::layer::util::Identity::new();
    // README begin
    let service = micro::Service::builder("greeter")
        .client_layer(tower::limit::ConcurrencyLimitLayer::new(64))   // each call, retries included
        .attempt_layer(my_per_node_layer)                             // each try on one node
        .handler_layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
        .publish_layer(my_publish_layer)
        .subscriber_layer(my_metrics_layer)
        .build()?;
    // README end
    start_and_stop(&service).await
}

#[rustfmt::skip]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance() -> micro::Result<()> {
    let secret = "a secret of at least 32 bytes, for HS256";
    let token = "a token".to_string();
    // README begin
    let breaker = micro::breaker::NodeBreakerLayer::new(
        micro::breaker::BreakerOptions::default().consecutive_failures(3));
    let service = micro::Service::builder("greeter")
        .handler_layer(micro::ratelimit::RateLimitLayer::new(micro::ratelimit::Rate::per_second(100))
            .burst(20).per_endpoint())                                   // 429 over the limit
        .handler_layer(micro::validate::ValidateLayer::new()
            .endpoint_with("Greeter.Hello", |req: &HelloRequest| {       // 400 with field details
                let mut problems = micro::validate::Violations::new();
                problems.check(!req.name.is_empty(), "name", "must not be empty");
                problems.into_result()
            }))
        .handler_layer(micro::auth::AuthLayer::new(micro::auth::JwtVerifier::hs256(secret))
            .public("Greeter.Hello").require_scope("Admin.*", "admin"))  // 401 / 403
        .attempt_layer(breaker)                                          // per node: 503, node ejected
        .client_layer(micro::auth::BearerLayer::new(token.clone())
            .tls_only())                                                 // Authorization: Bearer ..., over TLS only
        .subscriber_layer(micro::auth::AuthLayer::new(micro::auth::JwtVerifier::hs256(secret))
            .require_scope("orders.*", "orders:write"))                  // events: 401 / 403, not requeued
        .publish_layer(micro::auth::BearerLayer::new(token))             // Authorization on each message
        .build()?;
    // README end
    start_and_stop(&service).await
}

#[rustfmt::skip]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability() -> micro::Result<()> {
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    // README begin
    let tracing = micro::otel::Tracing::from_provider(&tracer_provider);
    let metrics = micro::prometheus::Metrics::new()?;
    let service = micro::Service::builder("orders")
        .client_layer(metrics.clone()).client_layer(tracing.clone())
        .attempt_layer(metrics.clone()).attempt_layer(tracing.clone())
        .handler_layer(metrics.clone()).handler_layer(tracing.clone())
        .publish_layer(metrics.clone()).publish_layer(tracing.clone())
        .subscriber_layer(metrics.clone()).subscriber_layer(tracing)
        .build()?;
    let endpoint = metrics.serve("127.0.0.1:0").await?; // GET http://{endpoint.local_addr()}/metrics
    // README end
    assert!(endpoint.local_addr().ip().is_loopback());
    start_and_stop(&service).await
}

#[rustfmt::skip]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events() -> micro::Result<()> {
    // README begin
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Order { id: u64 }

    let service = micro::Service::builder("billing")
        .subscriber("orders.created", |e: micro::Event<micro::Json<Order>>| Box::pin(async move {
            println!("order {}", e.message.0.id);
            Ok(())
        }))
        .build()?;
    service.start().await?; // subscribes (and serves, and registers)
    service.publish("orders.created", &micro::Json(Order { id: 7 })).await?;
    // README end
    service.stop().await
}
