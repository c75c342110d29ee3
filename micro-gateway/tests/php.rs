//! The PHP example (`examples/php/client.php`) against a real gateway: the greeter, a Rust
//! subscriber and the gateway run in this process on the default http broker (each its own
//! listener, sharing an in-memory registry), and `php` runs the example as its own process
//! against the gateway's loopback port, so every call and the event cross real sockets.
//!
//! Needs `php` with its curl extension (Debian: `apt-get install php-cli php-curl`). Without
//! them the test says why and passes, unless `MICRO_TEST_REQUIRE_SERVICES=1`, where it fails.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::registry::MemoryRegistry;
use micro::Service;
use micro_conformance::program::output_within;
use micro_conformance::services_required;
use micro_gateway::{Gateway, GatewayOptions};
use serde_json::json;

mod common;

use common::TestResult;

/// How long the PHP client may take in all (it bounds each of its requests too).
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// How long the published event may take to reach the subscriber.
const DELIVERY_LIMIT: Duration = Duration::from_secs(20);
const TOPIC: &str = "php.greetings";

/// Why `php` cannot run the example, if it cannot.
fn php_missing() -> Option<String> {
    let check = Command::new("php")
        .args(["-r", "exit(function_exists('curl_init') ? 0 : 3);"])
        .output();
    match check {
        Err(e) => Some(format!(
            "php cannot run ({e}); install it with `apt-get install php-cli php-curl`"
        )),
        Ok(out) if out.status.code() == Some(3) => {
            Some("php lacks the curl extension; install it with `apt-get install php-curl`".into())
        }
        Ok(out) if !out.status.success() => Some(format!(
            "php fails to start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// A service on the in-memory `registry` and the default broker, which must be the http
/// broker: the event has to cross a socket.
fn service(name: &str, registry: &Arc<MemoryRegistry>) -> micro::ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .registry(registry.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_php_example_calls_streams_and_publishes_through_the_gateway() -> TestResult {
    if let Some(why) = php_missing() {
        assert!(
            !services_required(),
            "MICRO_TEST_REQUIRE_SERVICES=1 but {why}"
        );
        eprintln!("skipping the PHP example: {why}");
        return Ok(());
    }
    let registry = Arc::new(MemoryRegistry::new());
    let greeter = service("greeter", &registry)
        .handler(greeter_handler(GreeterService))
        .build()?;
    greeter.start().await?;
    let (collect, mut events) = common::collector();
    let listener = service("listener", &registry)
        .subscriber(TOPIC, collect)
        .build()?;
    listener.start().await?;
    let gateway_service = service("micro.gateway", &registry).build()?;
    for s in [&greeter, &listener, &gateway_service] {
        assert_eq!(
            s.broker().name(),
            "http",
            "{} is not on the http broker",
            s.name()
        );
    }
    let gateway = Gateway::bind("127.0.0.1:0", &gateway_service, GatewayOptions::default()).await?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/php/client.php");
    let mut php = Command::new("php");
    php.arg(&script)
        .env(
            "MICRO_GATEWAY_URL",
            format!("http://{}", gateway.local_addr()),
        )
        .env("MICRO_EXAMPLE_TOPIC", TOPIC);
    let run = tokio::task::spawn_blocking(move || output_within(php, None, CLIENT_LIMIT)).await;
    let event = match &run {
        Ok(out) if out.status.success() => tokio::time::timeout(DELIVERY_LIMIT, events.recv())
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    gateway.shutdown().await;
    gateway_service.broker().disconnect().await?;
    listener.stop().await?;
    greeter.stop().await?;

    let out = run?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.php failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Greeter.Hello: Hello John",
            "Greeter.Nope failed: code 404, detail: service greeter has no endpoint Greeter.Nope",
            "Greeter.Stream: Hello John #1",
            "Greeter.Stream: Hello John #2",
            "Greeter.Stream: Hello John #3",
            "Greeter.Nope stream failed: code 404, detail: service greeter has no endpoint Greeter.Nope",
            &format!("published to {TOPIC}: 202 Accepted"),
        ],
        "client.php printed:\n{stdout}"
    );
    assert_eq!(
        event,
        Some(json!({"from": "php", "message": "Hello John"})),
        "the subscriber did not get the event within {DELIVERY_LIMIT:?}"
    );
    Ok(())
}
