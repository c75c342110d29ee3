//! An independent MCP client, the `mcp` Python SDK (`tests/python/client.py`), against
//! [`micro_mcp::http_service`] on a real socket, in front of the greeter: it lists the tools,
//! calls `Hello` and `Stream`, gets a tool error for a bad request, and sees
//! `notifications/tools/list_changed` when a new service registers. Once with a session
//! (`initialize`), once with the SDK's default, the stateless 2026-07-28 protocol.
//!
//! Needs `python3` with the `mcp` package (`python3 -m pip install mcp`). Without it the tests
//! say why and pass, unless `MICRO_TEST_REQUIRE_SERVICES=1`, where they fail.

use std::net::SocketAddr;
use std::time::Duration;

use micro_mcp::McpOptions;

mod common;
use common::{Fleet, PythonClient};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Serves `service`'s MCP endpoint at `http://{address}/mcp`.
async fn serve_mcp(service: &micro::Service) -> std::io::Result<SocketAddr> {
    let opts = McpOptions {
        timeout: Duration::from_secs(5),
        ..McpOptions::default()
    };
    let app = axum::Router::new().route_service("/mcp", micro_mcp::http_service(service, opts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_a_session() -> TestResult {
    python_client("legacy").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_stateless() -> TestResult {
    python_client("auto").await
}

/// Runs `client.py` in `mode` against a fresh fleet; registers a second greeter, `late`, when
/// the client is ready for the tool list to change.
async fn python_client(mode: &str) -> TestResult {
    if let Some(why) = PythonClient::missing() {
        assert!(
            !micro_conformance::services_required(),
            "MICRO_TEST_REQUIRE_SERVICES=1 but {why}"
        );
        eprintln!("skipping the Python MCP client: {why}");
        return Ok(());
    }
    let mut fleet = Fleet::with_greeter().await?;
    let address = serve_mcp(&fleet.service("micro.mcp")?).await?;
    let url = format!("http://{address}/mcp");
    let mut client = PythonClient::start(&url, mode, "late.Greeter.Hello", &[])?;
    while let Some(line) = client.next_line().await {
        if line == "READY-FOR-CHANGE" {
            fleet.start_greeter("late").await?;
            break;
        }
    }
    client.expect_ok(mode).await;
    fleet.stop().await;
    Ok(())
}
