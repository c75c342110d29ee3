//! The `mcp` Python SDK (`tests/python/client.py`) starts an MCP server on stdio, as a desktop
//! agent starts `micro mcp`: a copy of this program that runs the greeter and
//! [`micro_mcp::serve_stdio`]. The client lists the tools, calls them, and sees the tool list
//! change when the server, told by a file the test creates, registers a new service. Once with
//! `initialize`, once with the SDK's default, the 2026-07-28 protocol.
//!
//! A test of its own (`harness = false`): the server must own standard output, where the
//! test harness would write. Needs `python3` with `mcp`; without it the test says why and
//! passes, unless `MICRO_TEST_REQUIRE_SERVICES=1`, where it fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use micro_mcp::McpOptions;

mod common;
use common::{Fleet, PythonClient};

/// Set for the copy of this program that serves MCP: the file whose appearance makes it
/// register the `late` service.
const TRIGGER: &str = "MICRO_MCP_TEST_STDIO_TRIGGER";

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match std::env::var_os(TRIGGER) {
        Some(trigger) => runtime.block_on(server(PathBuf::from(trigger))),
        None => runtime.block_on(test()),
    }
}

/// The test: the Python client in each mode, with a copy of this program as its server.
async fn test() -> ExitCode {
    if let Some(why) = PythonClient::missing() {
        if micro_conformance::services_required() {
            eprintln!("MICRO_TEST_REQUIRE_SERVICES=1 but {why}");
            return ExitCode::FAILURE;
        }
        eprintln!("skipping the Python MCP client over stdio: {why}");
        println!("python_stdio: 0 passed, 0 failed, 2 skipped");
        return ExitCode::SUCCESS;
    }
    let program = std::env::current_exe().expect("the test's own path");
    let program = program.to_str().expect("a UTF-8 path");
    for mode in ["legacy", "auto"] {
        let trigger =
            std::env::temp_dir().join(format!("micro-mcp-stdio-{}-{mode}", std::process::id()));
        let _ = std::fs::remove_file(&trigger);
        let env = [(TRIGGER, trigger.as_os_str())];
        let mut client = PythonClient::start(program, mode, "late.Greeter.Hello", &env)
            .expect("start the Python client");
        while let Some(line) = client.next_line().await {
            if line == "READY-FOR-CHANGE" {
                std::fs::write(&trigger, b"").expect("create the trigger file");
                break;
            }
        }
        client.expect_ok(&format!("stdio, {mode}")).await;
        let _ = std::fs::remove_file(&trigger);
        println!("test python_stdio ({mode}) ... ok");
    }
    println!("python_stdio: 2 passed, 0 failed");
    ExitCode::SUCCESS
}

/// The server the Python client starts: the greeter, and MCP on stdio until the client
/// closes it; `late` registers once `trigger` exists.
async fn server(trigger: PathBuf) -> ExitCode {
    let mut fleet = match Fleet::with_greeter().await {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("cannot start the greeter: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mcp = match fleet.service("micro.mcp") {
        Ok(mcp) => mcp,
        Err(e) => {
            eprintln!("cannot build the MCP service: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = McpOptions {
        timeout: Duration::from_secs(5),
        ..McpOptions::default()
    };
    let serving = tokio::spawn(async move { micro_mcp::serve_stdio(&mcp, opts).await });
    if appeared(&trigger, &serving).await {
        if let Err(e) = fleet.start_greeter("late").await {
            eprintln!("cannot start the late greeter: {e}");
        }
    }
    let served = serving.await;
    fleet.stop().await;
    match served {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("serve_stdio failed: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("serve_stdio panicked: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `path` appears while the server still serves, within the client's limit.
async fn appeared(path: &Path, serving: &tokio::task::JoinHandle<micro::Result<()>>) -> bool {
    let deadline = tokio::time::Instant::now() + PythonClient::LIMIT;
    while !serving.is_finished() && tokio::time::Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
