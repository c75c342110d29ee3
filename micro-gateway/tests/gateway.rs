//! The gateway over real sockets, driven by curl (an independent HTTP client): the greeter
//! and the gateway share an in-memory registry and broker in this process, and curl runs as
//! its own process against the gateway's loopback port.

use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::broker::MemoryBroker;
use micro::core::registry::{Node, RegisterOptions, Service as Registration};
use micro::core::Registry as _;
use micro::registry::MemoryRegistry;
use micro::{Json, Request, Response, Service};
use micro_gateway::{Gateway, GatewayOptions};
use serde_json::Value;

mod common;

use common::{curl, TestResult, BOUND};

/// A handler slower than the gateway's deadline: `Wait` answers late, `Trickle` streams one
/// reply, then nothing.
fn slow_handler() -> micro::Handler {
    micro::Handler::new("Slow")
        .unary("Wait", |_req: Request<Json<Value>>| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Response::new(Json(Value::Null)))
            }) as micro::BoxFuture<'static, micro::Result<Response<Json<Value>>>>
        })
        .server_stream(
            "Trickle",
            |_req: Request<Json<Value>>,
             mut stream: micro::ServerStream<Json<Value>, Json<Value>>| {
                Box::pin(async move {
                    stream.send(&Json(serde_json::json!({"n": 1}))).await?;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(())
                }) as micro::BoxFuture<'static, micro::Result<()>>
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_over_curl() -> TestResult {
    let registry = Arc::new(MemoryRegistry::new());
    let broker = Arc::new(MemoryBroker::new());
    let greeter = Service::builder("greeter")
        .ignore_env()
        .registry(registry.clone())
        .broker(broker.clone())
        .handler(greeter_handler(GreeterService))
        .handler(slow_handler())
        .build()?;
    greeter.start().await?;
    // A subscriber that hands what it gets to the test.
    let (collect, mut events) = common::collector();
    let listener = Service::builder("listener")
        .ignore_env()
        .registry(registry.clone())
        .broker(broker.clone())
        .subscriber("orders.created", collect)
        .build()?;
    listener.start().await?;
    // A service whose only node is dead.
    let mut ghost = Registration::new("ghost", "latest");
    ghost.nodes.push(Node {
        id: "ghost-1".into(),
        address: "127.0.0.1:1".into(),
        metadata: [("protocol".to_string(), "mucp".to_string())].into(),
    });
    registry
        .register(&ghost, RegisterOptions::default())
        .await?;

    let gateway_service = Service::builder("micro.gateway")
        .ignore_env()
        .registry(registry.clone())
        .broker(broker.clone())
        .build()?;
    let opts = GatewayOptions {
        timeout: Duration::from_millis(500),
        max_body_bytes: 64 * 1024,
        ..GatewayOptions::default()
    };
    let gateway = Gateway::bind("127.0.0.1:0", &gateway_service, opts).await?;
    let base = format!("http://{}", gateway.local_addr());

    let checks = tokio::task::spawn_blocking(move || -> TestResult {
        let api = |path: &str| format!("{base}{path}");
        let post = |path: &str, body: &str, extra: &[&str]| {
            let mut args = vec![
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ];
            args.extend_from_slice(extra);
            curl(&args, &api(path))
        };

        // Both of Go Micro's routes, metadata in and out.
        let hello = post(
            "/api/greeter/Greeter.Hello",
            r#"{"name":"John"}"#,
            &["-H", "Trace-Id: t-9"],
        );
        assert_eq!(hello.status, 200, "{}", hello.body);
        assert_eq!(hello.json()["message"], "Hello John");
        assert_eq!(hello.header("content-type"), Some("application/json"));
        assert_eq!(hello.header("trace-id"), Some("t-9"), "{:?}", hello.headers);
        let split = post("/api/greeter/Greeter/Hello", r#"{"name":"Jane"}"#, &[]);
        assert_eq!(split.json()["message"], "Hello Jane");
        let empty = post("/api/greeter/Greeter.Hello", "", &[]);
        assert_eq!(
            empty.status, 400,
            "an empty body is {{}}: the greeter refuses an empty name"
        );

        // GET with the query string as the request.
        let query = curl(&[], &api("/api/greeter/Greeter.Hello?name=Query"));
        assert_eq!(query.status, 200, "{}", query.body);
        assert_eq!(query.json()["message"], "Hello Query");

        // Errors: Go Micro's JSON with a fitting status.
        let refused = post("/api/greeter/Greeter.Hello", r#"{"name":""}"#, &[]);
        assert_eq!(refused.status, 400);
        assert_eq!(refused.json()["id"], "greeter.Greeter.Hello");
        assert_eq!(refused.json()["detail"], "name must not be empty");
        assert_eq!(post("/api/nobody/Greeter.Hello", "{}", &[]).status, 404);
        assert_eq!(post("/api/greeter/Greeter.Nope", "{}", &[]).status, 404);
        assert_eq!(post("/api/greeter/Hello", "{}", &[]).status, 400);
        let not_json = post("/api/greeter/Greeter.Hello", "{name", &[]);
        assert_eq!(not_json.status, 400);
        assert!(not_json.body.contains("not JSON"), "{}", not_json.body);
        let dead = post("/api/ghost/Ghost.Call", "{}", &[]);
        assert!(
            matches!(dead.status, 502 | 503),
            "{} {}",
            dead.status,
            dead.body
        );
        let slow = post("/api/greeter/Slow.Wait", "{}", &[]);
        assert_eq!(slow.status, 504, "{}", slow.body);
        // With Expect: 100-continue the gateway answers before curl sends the body.
        let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(100 * 1024));
        let too_big = post(
            "/api/greeter/Greeter.Hello",
            &big,
            &["-H", "Expect: 100-continue"],
        );
        assert_eq!(too_big.status, 413);
        assert_eq!(too_big.json()["code"], 413, "{}", too_big.body);
        assert_eq!(curl(&["-X", "DELETE"], &api("/health")).json()["code"], 405);

        // Only this machine's programs: a foreign Host or a cross-site page is refused.
        let rebound = curl(&["-H", "Host: evil.example"], &api("/health"));
        assert_eq!(rebound.status, 403, "{}", rebound.body);
        let cross_site = post(
            "/api/greeter/Greeter.Hello",
            r#"{"name":"csrf"}"#,
            &[
                "-H",
                "Origin: http://evil.example",
                "-H",
                "Sec-Fetch-Site: cross-site",
            ],
        );
        assert_eq!(cross_site.status, 403);
        let local_page = post(
            "/api/greeter/Greeter.Hello",
            r#"{"name":"page"}"#,
            &["-H", "Origin: http://localhost:3000"],
        );
        assert_eq!(local_page.status, 200, "{}", local_page.body);

        // A server stream as Server-Sent Events, and a failing one as an error event.
        let sse = ["-N", "-H", "Accept: text/event-stream"];
        let streamed = post(
            "/api/greeter/Greeter.Stream",
            r#"{"name":"S","count":3}"#,
            &sse,
        );
        assert_eq!(streamed.status, 200, "{}", streamed.body);
        assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
        let data: Vec<&str> = streamed
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(
            data,
            [
                r#"{"message":"Hello S #1"}"#,
                r#"{"message":"Hello S #2"}"#,
                r#"{"message":"Hello S #3"}"#
            ],
            "{}",
            streamed.body
        );
        // Failing before the first reply is an HTTP error, as a call's would be.
        let failed = post("/api/greeter/Greeter.Nope", "{}", &sse);
        assert_eq!(failed.status, 404, "{}", failed.body);
        assert_eq!(failed.json()["code"], 404, "{}", failed.body);
        // Failing later is an error event after the replies.
        let late = post("/api/greeter/Slow.Trickle", "{}", &sse);
        assert_eq!(late.status, 200, "{}", late.body);
        let (replies, error) = late
            .body
            .split_once("event: error")
            .ok_or("no error event")?;
        assert!(replies.contains(r#"data: {"n":1}"#), "{}", late.body);
        assert!(error.contains(r#""code":408"#), "{}", late.body);

        // Query values keep their text unless it is a number or boolean exactly.
        let padded = curl(&[], &api("/api/greeter/Greeter.Hello?name=007"));
        assert_eq!(padded.json()["message"], "Hello 007", "{}", padded.body);
        assert_eq!(curl(&[], &api("/nowhere")).status, 404);

        // The registry, read through the gateway.
        let services = curl(&[], &api("/services"));
        let names: Vec<String> = services
            .json()
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        assert!(names.iter().any(|n| n == "greeter"), "{}", services.body);
        let described = curl(&[], &api("/services/greeter")).json();
        let endpoints: Vec<&str> = described[0]["endpoints"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(endpoints.contains(&"Greeter.Hello"), "{described}");
        assert_eq!(curl(&[], &api("/services/nobody")).status, 404);
        assert_eq!(curl(&[], &api("/health")).json()["status"], "ok");

        // Events.
        let published = post("/event/orders.created", r#"{"id":"7"}"#, &[]);
        assert_eq!(published.status, 202, "{}", published.body);
        assert_eq!(post("/event/orders.created", "nope", &[]).status, 400);
        Ok(())
    })
    .await?;
    let event = tokio::time::timeout(BOUND, events.recv()).await;
    gateway.shutdown().await;
    listener.stop().await?;
    greeter.stop().await?;
    checks?;
    assert_eq!(event.ok().flatten(), Some(serde_json::json!({"id": "7"})));
    Ok(())
}

#[tokio::test]
async fn a_public_address_is_refused_without_auth() -> TestResult {
    let service = Service::builder("micro.gateway")
        .ignore_env()
        .registry(Arc::new(MemoryRegistry::new()))
        .broker(Arc::new(MemoryBroker::new()))
        .build()?;
    let refused = Gateway::bind("0.0.0.0:0", &service, GatewayOptions::default())
        .await
        .err()
        .ok_or("the gateway served a public address")?;
    assert_eq!(refused.code, 400);
    assert!(refused.detail.contains("loopback"), "{refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_v3_path_routes_with_a_namespace() -> TestResult {
    let opts = GatewayOptions {
        path_routes: true,
        namespace: "go.micro.api".into(),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = common::greeter_behind_gateway("go.micro.api.greeter", opts).await?;
    let base = format!("http://{}", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let hello = curl(
            &["-d", r#"{"name":"V3"}"#],
            &format!("{base}/greeter/greeter/hello"),
        );
        assert_eq!(hello.status, 200, "{}", hello.body);
        assert_eq!(hello.json()["message"], "Hello V3");
        let query = curl(&[], &format!("{base}/greeter/Greeter/Hello?name=Q"));
        assert_eq!(query.json()["message"], "Hello Q", "{}", query.body);
        // The fixed routes keep their meaning.
        assert_eq!(curl(&[], &format!("{base}/health")).status, 200);
        // A path naming no service is the registry's 404.
        let nobody = curl(&["-d", "{}"], &format!("{base}/nobody/home"));
        assert_eq!(nobody.status, 404, "{}", nobody.body);
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}
