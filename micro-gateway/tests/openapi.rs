//! `GET /openapi.json` over a real socket: valid OpenAPI 3.1 by an independent validator
//! (Python's openapi-spec-validator), schemas that a real exchange satisfies, and a document
//! that follows the registry as services come and go.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::broker::MemoryBroker;
use micro::registry::MemoryRegistry;
use micro::Service;
use micro_conformance::program::output_within;
use micro_gateway::{Gateway, GatewayOptions};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BOUND: Duration = Duration::from_secs(30);

/// The body of `curl -s <args> <url>`.
fn curl(args: &[&str], url: &str) -> String {
    let mut command = Command::new("curl");
    command
        .args(["-s", "--fail-with-body", "--max-time", "20"])
        .args(args)
        .arg(url);
    let out = output_within(command, None, BOUND);
    assert!(out.status.success(), "curl {args:?} {url}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn validator_missing() -> Option<String> {
    let check = Command::new("python3")
        .args([
            "-c",
            "import openapi_spec_validator, openapi_schema_validator",
        ])
        .output();
    match check {
        Err(e) => Some(format!("python3 cannot run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "python3 lacks openapi-spec-validator ({}); install it with `python3 -m pip install \
             openapi-spec-validator`",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// The document's paths, once `wanted` says they are as expected; polls the gateway (the
/// registry watch runs beside the requests) for at most the bound.
async fn paths_once(base: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let url = format!("{base}/openapi.json");
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let url = url.clone();
        let body = tokio::task::spawn_blocking(move || curl(&[], &url))
            .await
            .expect("curl ran");
        let doc: Value = serde_json::from_str(&body).expect("the document is JSON");
        if wanted(&doc["paths"]) {
            return doc["paths"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the document did not follow the registry: {}",
            doc["paths"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_follows_the_registry() -> TestResult {
    if let Some(why) = validator_missing() {
        assert!(
            !micro_conformance::services_required(),
            "MICRO_TEST_REQUIRE_SERVICES=1: {why}"
        );
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let registry = Arc::new(MemoryRegistry::new());
    let broker = Arc::new(MemoryBroker::new());
    let service = |name: &str| {
        Service::builder(name)
            .ignore_env()
            .registry(registry.clone())
            .broker(broker.clone())
    };
    let greeter = service("greeter")
        .handler(greeter_handler(GreeterService))
        .build()?;
    greeter.start().await?;
    let gateway = Gateway::bind(
        "127.0.0.1:0",
        &service("micro.gateway").build()?,
        GatewayOptions::default(),
    )
    .await?;
    let base = format!("http://{}", gateway.local_addr());

    let paths = paths_once(&base, |p| p.get("/api/greeter/Greeter.Hello").is_some()).await;
    for path in [
        "/api/greeter/Greeter.Stream",
        "/api/greeter/Greeter.Chat",
        "/services",
        "/event/{topic}",
    ] {
        assert!(paths.get(path).is_some(), "{path} missing from {paths}");
    }
    let stream = &paths["/api/greeter/Greeter.Stream"]["post"]["responses"]["200"]["content"];
    assert!(stream.get("text/event-stream").is_some(), "{stream}");
    // The RPC's proto comment and its @example, registered by the generated handler.
    let hello = &paths["/api/greeter/Greeter.Hello"]["post"];
    assert_eq!(
        hello["description"],
        "Replies with a greeting for the name in the request."
    );
    assert_eq!(
        hello["requestBody"]["content"]["application/json"]["example"],
        serde_json::json!({"name": "John"})
    );

    // An independent validator reads the document, and a real exchange fits its schemas.
    let dir = std::env::temp_dir().join(format!("micro-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("{base}/api/greeter/Greeter.Hello");
    let (doc, reply) = tokio::task::spawn_blocking(move || {
        let doc = curl(&[], &format!("{base}/openapi.json"));
        let reply = curl(&["-d", r#"{"name":"John"}"#], &url);
        (doc, reply)
    })
    .await?;
    assert_eq!(reply, r#"{"message":"Hello John"}"#);
    let file = |name: &str, text: &str| -> std::io::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_openapi.py");
    let mut check = Command::new("python3");
    check.arg(script).args([
        file("doc.json", &doc)?,
        "/api/greeter/Greeter.Hello".to_string(),
        file("request.json", r#"{"name":"John"}"#)?,
        file("reply.json", &reply)?,
    ]);
    let out = output_within(check, None, BOUND);
    assert!(out.status.success(), "the validator refused: {out:?}");
    std::fs::remove_dir_all(&dir)?;

    // A service that starts appears; one that stops goes.
    let second = service("hello")
        .handler(greeter_handler(GreeterService))
        .build()?;
    second.start().await?;
    let base = format!("http://{}", gateway.local_addr());
    paths_once(&base, |p| p.get("/api/hello/Greeter.Hello").is_some()).await;
    second.stop().await?;
    paths_once(&base, |p| p.get("/api/hello/Greeter.Hello").is_none()).await;

    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}
