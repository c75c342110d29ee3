//! Who may call the gateway, over real sockets with curl: bearer tokens (static and JWT) and
//! per-endpoint scopes, browser origins (CORS), the rate per client, and the connection
//! limits (connections at once, request-head deadline, header count).

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::{curl, TestResult, BOUND};
use micro::auth::{JwtSigner, JwtVerifier};
use micro::Service;
use micro_gateway::{Auth, Gateway, GatewayOptions};
use serde_json::json;

async fn gateway(opts: GatewayOptions) -> Result<(Gateway, Service), micro::Error> {
    common::greeter_behind_gateway("greeter", opts).await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_and_scopes() -> TestResult {
    let auth = Auth::tokens([
        ("admin-token", vec!["admin".to_string()]),
        ("user-token", vec![]),
    ])
    .public("Greeter.Hello")
    .require_scope("Greeter.Stream", "admin");
    let opts = GatewayOptions {
        auth: Some(auth),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let base = format!("http://{}", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let api = |path: &str| format!("{base}{path}");
        let hello = r#"{"name":"John"}"#;
        // A public endpoint needs no token.
        let a = curl(&["-d", hello], &api("/api/greeter/Greeter.Hello"));
        assert_eq!(a.status, 200, "{}", a.body);
        // Everything else needs a known one.
        let a = curl(&[], &api("/services"));
        assert_eq!(a.status, 401, "{}", a.body);
        assert_eq!(a.json()["code"], 401);
        let a = curl(&["-H", &bearer("guess")], &api("/services"));
        assert_eq!(a.status, 401, "{}", a.body);
        let a = curl(&["-H", &bearer("user-token")], &api("/services"));
        assert_eq!(a.status, 200, "{}", a.body);
        // A scope is asked for by endpoint.
        let stream = api("/api/greeter/Greeter.Stream?name=A&count=1");
        let events = "Accept: text/event-stream";
        let a = curl(&["-H", &bearer("user-token"), "-H", events], &stream);
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.json()["detail"].as_str().unwrap_or("").contains("admin"));
        let a = curl(&["-H", &bearer("admin-token"), "-H", events], &stream);
        assert_eq!(a.status, 200, "{}", a.body);
        // With auth the gateway may take requests for other host names.
        let a = curl(
            &["-H", &bearer("user-token"), "-H", "Host: api.example.com"],
            &api("/services"),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        // The health check needs nothing.
        assert_eq!(curl(&[], &api("/health")).status, 200);
        // The document says who needs what.
        let a = curl(&["-H", &bearer("user-token")], &api("/openapi.json"));
        let doc = a.json();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["paths"]["/api/greeter/Greeter.Hello"]["post"]["security"],
            json!([])
        );
        assert!(doc["paths"]["/api/greeter/Greeter.Stream"]["post"]
            .get("security")
            .is_none());
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_with_scopes() -> TestResult {
    let secret = b"the gateway's shared secret, 32+ bytes";
    let auth = Auth::new(JwtVerifier::hs256(secret)).require_scope("Greeter.*", "greet");
    let opts = GatewayOptions {
        auth: Some(auth),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let signer = JwtSigner::hs256(secret);
    let far = 4_102_444_800u64;
    let greet = signer.sign(&json!({"sub": "ann", "scope": "greet", "exp": far}))?;
    let other = signer.sign(&json!({"sub": "bob", "scope": "read", "exp": far}))?;
    let expired = signer.sign(&json!({"sub": "ann", "scope": "greet", "exp": 1}))?;
    let forged = JwtSigner::hs256(b"somebody else's secret of 32+ bytes")
        .sign(&json!({"sub": "eve", "scope": "greet", "exp": far}))?;
    let url = format!("http://{}/api/greeter/Greeter.Hello", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let hello = |token: &str| curl(&["-H", &bearer(token), "-d", r#"{"name":"J"}"#], &url);
        let a = hello(&greet);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.json()["message"], "Hello J");
        assert_eq!(hello(&other).status, 403);
        assert_eq!(hello(&expired).status, 401);
        assert_eq!(hello(&forged).status, 401);
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins() -> TestResult {
    let opts = GatewayOptions {
        cors_origins: vec!["https://app.example".into()],
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let url = format!("http://{}/api/greeter/Greeter.Hello", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let from = |origin: &str| {
            curl(
                &["-H", &format!("Origin: {origin}"), "-d", r#"{"name":"J"}"#],
                &url,
            )
        };
        // A listed origin may call, and the browser is told so.
        let a = from("https://app.example");
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        // A loopback page may too.
        assert_eq!(from("http://localhost:3000").status, 200);
        // Another site's page may not.
        let a = from("https://evil.example");
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(a.header("access-control-allow-origin"), None);
        // The browser's preflight is answered for listed origins.
        let a = curl(
            &[
                "-X",
                "OPTIONS",
                "-H",
                "Origin: https://app.example",
                "-H",
                "Access-Control-Request-Method: POST",
                "-H",
                "Access-Control-Request-Headers: content-type, authorization",
            ],
            &url,
        );
        assert!(a.status < 300, "{} {}", a.status, a.body);
        let allowed = a.header("access-control-allow-headers").unwrap_or("");
        assert!(allowed.contains("authorization"), "{allowed}");
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_has_its_own_rate() -> TestResult {
    let opts = GatewayOptions {
        auth: Some(Auth::tokens([("one", vec![]), ("two", vec![])])),
        rate_limit: 1,
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let url = format!("http://{}/services", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        // Five requests on one connection in far less than the five seconds they would need.
        let statuses = |token: &str| -> Vec<String> {
            let mut command = std::process::Command::new("curl");
            command
                .args(["-s", "--max-time", "20", "-w", "%{http_code}\n"])
                .args(["-H", &bearer(token)]);
            for _ in 0..5 {
                command.args(["-o", "/dev/null", &url]);
            }
            let out = micro_conformance::program::output_within(command, None, BOUND);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        };
        let one = statuses("one");
        assert_eq!(one[0], "200", "{one:?}");
        assert!(one.iter().any(|s| s == "429"), "{one:?}");
        // Another client's allowance is its own.
        let two = statuses("two");
        assert_eq!(two[0], "200", "{two:?}");
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_and_slow_clients_cut_off() -> TestResult {
    let opts = GatewayOptions {
        max_connections: 1,
        header_timeout: Duration::from_millis(500),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let addr = gateway.local_addr();
    let base = format!("http://{addr}");
    tokio::task::spawn_blocking(move || -> TestResult {
        // A client that connects and sends nothing holds the only slot until the head
        // deadline closes its connection.
        let mut idle = TcpStream::connect(addr)?;
        idle.set_read_timeout(Some(BOUND))?;
        let mut waiting = TcpStream::connect(addr)?;
        waiting.set_read_timeout(Some(BOUND))?;
        waiting
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        waiting.read_to_string(&mut answer)?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The second was served only once the first was closed.
        idle.set_nonblocking(true)?;
        let mut byte = [0u8; 1];
        let closed = matches!(idle.read(&mut byte), Ok(0));
        assert!(
            closed,
            "the waiting client was served while the idle one held the slot"
        );

        // A request with too many header lines is refused.
        let mut args: Vec<String> = Vec::new();
        for i in 0..150 {
            args.push("-H".into());
            args.push(format!("X-Many-{i}: {i}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = curl(&args, &format!("{base}/health"));
        assert_eq!(a.status, 431, "{}", a.body);
        Ok(())
    })
    .await??;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_gateway_is_behind_the_same_auth() -> TestResult {
    let opts = GatewayOptions {
        auth: Some(Auth::tokens([("agent-token", vec![])])),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let url = format!("http://{}/mcp", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let initialize = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "curl", "version": "1"},
            },
        })
        .to_string();
        let post = |extra: &[&str]| {
            let mut args = vec![
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, text/event-stream",
                "-d",
                &initialize,
            ];
            args.extend_from_slice(extra);
            curl(&args, &url)
        };
        let refused = post(&[]);
        assert_eq!(refused.status, 401, "{}", refused.body);
        let agent = bearer("agent-token");
        let answered = post(&["-H", &agent]);
        assert_eq!(answered.status, 200, "{}", answered.body);
        assert!(answered.body.contains("serverInfo"), "{}", answered.body);
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

/// The MCP gateway's per-tool scopes, checked by the `mcp` Python SDK: the gateway verifies
/// the token, the tool asks for its scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_ask_for_their_scopes() -> TestResult {
    let check = std::process::Command::new("python3")
        .args(["-c", "from mcp import Client"])
        .output();
    if !check.as_ref().is_ok_and(|out| out.status.success()) {
        let why = format!("python3 with the mcp package cannot run: {check:?}");
        assert!(!micro_conformance::services_required(), "{why}");
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let opts = GatewayOptions {
        auth: Some(Auth::tokens([
            ("greeter-token", vec!["greet".to_string()]),
            ("reader-token", vec!["read".to_string()]),
        ])),
        mcp: Some(micro_mcp::McpOptions {
            scopes: vec![("greeter.*".to_string(), vec!["greet".to_string()])],
            ..micro_mcp::McpOptions::default()
        }),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = gateway(opts).await?;
    let url = format!("http://{}/mcp", gateway.local_addr());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_scopes.py");
    let mut run = std::process::Command::new("python3");
    run.arg(script)
        .args([url.as_str(), "greeter-token", "reader-token"]);
    let out = tokio::task::spawn_blocking(move || {
        micro_conformance::program::output_within(run, None, BOUND)
    })
    .await?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}
