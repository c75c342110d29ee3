//! [`micro_mcp::McpServer`] over a byte stream (what stdio carries), with rmcp's own client on
//! the other end: the tools, calls, errors, the deny list, and `tools/list_changed` when a
//! service registers.

use std::time::Duration;

use micro_mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam};
use micro_mcp::rmcp::service::{NotificationContext, RunningService};
use micro_mcp::rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use micro_mcp::{McpOptions, McpServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

mod common;
use common::Fleet;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BOUND: Duration = Duration::from_secs(20);

/// A client that reports each `notifications/tools/list_changed` and each progress
/// notification (rmcp's client gives every request a progress token of its own).
struct Listener {
    changes: mpsc::UnboundedSender<()>,
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.changes.send(());
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }
}

async fn call(
    client: &RunningService<RoleClient, Listener>,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, Box<dyn std::error::Error + Send + Sync>> {
    let Value::Object(arguments) = arguments else {
        return Err("arguments must be an object".into());
    };
    let request = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
    Ok(tokio::time::timeout(BOUND, client.call_tool(request)).await??)
}

fn texts(result: &CallToolResult) -> Vec<String> {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_over_a_byte_stream() -> TestResult {
    let mut fleet = Fleet::with_greeter().await?;
    fleet.start_greeter("hidden").await?;
    let opts = McpOptions {
        timeout: Duration::from_secs(5),
        max_replies: 3,
        deny: vec!["hidden".into()],
        ..McpOptions::default()
    };
    let server = McpServer::new(&fleet.service("micro.mcp")?, opts);
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let (changes, mut changed) = mpsc::unbounded_channel();
    let (progress, mut progressed) = mpsc::unbounded_channel();
    let listener = Listener { changes, progress };
    let client = tokio::time::timeout(BOUND, listener.serve(client_io)).await??;

    let tools = tokio::time::timeout(BOUND, client.list_all_tools()).await??;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "greeter.Greeter.Chat",
            "greeter.Greeter.Collect",
            "greeter.Greeter.Hello",
            "greeter.Greeter.Stream"
        ],
        "one tool per endpoint (not the Debug handler's), none of the denied service"
    );
    let hello = &tools[2];
    assert_eq!(hello.input_schema["properties"]["name"]["type"], "string");
    assert_eq!(hello.input_schema["title"], "HelloRequest");

    let reply = call(&client, "greeter.Greeter.Hello", json!({"name": "Ann"})).await?;
    assert_eq!(reply.is_error, Some(false));
    assert_eq!(
        reply.structured_content,
        Some(json!({"message": "Hello Ann"}))
    );

    let refused = call(&client, "greeter.Greeter.Hello", json!({"name": ""})).await?;
    assert_eq!(refused.is_error, Some(true));
    let texts = texts(&refused);
    assert_eq!(texts[0], "400 Bad Request: name must not be empty");
    let error: micro::Error = serde_json::from_str(&texts[1])?;
    assert_eq!(
        (error.code, error.id.as_str()),
        (400, "greeter.Greeter.Hello")
    );

    // Asked for progress (rmcp's client asks on every request), each reply is one
    // notification. The first streaming call, so the first notifications.
    call(
        &client,
        "greeter.Greeter.Stream",
        json!({"name": "P", "count": 2}),
    )
    .await?;
    let mut notes = Vec::new();
    for _ in 0..2 {
        let note = tokio::time::timeout(BOUND, progressed.recv())
            .await?
            .ok_or("the client went away")?;
        notes.push((note.progress_token, note.progress, note.message));
    }
    notes.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(notes[0].0, notes[1].0, "one call's progress");
    assert_eq!(
        [
            (notes[0].1, notes[0].2.as_deref()),
            (notes[1].1, notes[1].2.as_deref())
        ],
        [(1.0, Some("reply 1")), (2.0, Some("reply 2"))]
    );

    // More replies than `max_replies`: the first three, and `truncated`.
    let streamed = call(
        &client,
        "greeter.Greeter.Stream",
        json!({"name": "S", "count": 5}),
    )
    .await?;
    let structured = streamed.structured_content.unwrap_or_default();
    let replies: Vec<&str> = structured["replies"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["message"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(replies, ["Hello S #1", "Hello S #2", "Hello S #3"]);
    assert_eq!(structured["truncated"], true);

    // A client stream takes the arguments as its one message.
    let collected = call(&client, "greeter.Greeter.Collect", json!({"name": "C"})).await?;
    assert_eq!(
        collected.structured_content,
        Some(json!({"replies": [{"message": "Hello C"}], "truncated": false}))
    );

    let unknown = call(&client, "hidden.Greeter.Hello", json!({"name": "Ann"})).await;
    assert!(
        unknown.is_err(),
        "a denied service's tool is unknown: {unknown:?}"
    );

    fleet.start_greeter("late").await?;
    tokio::time::timeout(BOUND, changed.recv())
        .await?
        .ok_or("the client went away")?;
    let tools = tokio::time::timeout(BOUND, client.list_all_tools()).await??;
    assert!(tools.iter().any(|t| t.name == "late.Greeter.Hello"));

    let _ = client.cancel().await;
    fleet.stop().await;
    Ok(())
}
