//! One tool call: the arguments to the endpoint through the Micro client, the reply (or the
//! collected replies of a stream) back as the tool's result, an error as an error result.

use std::time::Duration;

use micro::rpc::{self, CallOptions};
use micro::{Client, Error, Json, Result};
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Map, Value};
use tokio::time::{timeout_at, Instant};

use crate::catalog::Route;
use crate::{McpOptions, ID};

const JSON: &str = "application/json";

/// Where a streaming call reports each reply, when the caller asked for progress.
pub(crate) type Progress = Option<(Peer<RoleServer>, ProgressToken)>;

/// Calls the endpoint `route` with `arguments`: the reply, or the collected replies of a
/// stream, as a tool result.
pub(crate) async fn call(
    client: &Client,
    opts: &McpOptions,
    route: &Route,
    arguments: Map<String, Value>,
    progress: Progress,
) -> Result<CallToolResult> {
    match route.stream {
        false => unary(client, opts, route, arguments).await,
        true => stream(client, opts, route, arguments, progress).await,
    }
}

async fn unary(
    client: &Client,
    opts: &McpOptions,
    route: &Route,
    arguments: Map<String, Value>,
) -> Result<CallToolResult> {
    let request = rpc::Request {
        service: route.service.clone(),
        endpoint: route.endpoint.clone(),
        content_type: JSON.to_string(),
        body: Value::Object(arguments).to_string().into(),
        ..rpc::Request::default()
    };
    let options = CallOptions {
        timeout: Some(opts.timeout),
        ..CallOptions::default()
    };
    let deadline = Instant::now() + opts.timeout;
    let reply = timeout_at(deadline, client.call_raw(request, options))
        .await
        .map_err(|_| late(route, opts.timeout))??;
    let body: &[u8] = match reply.body.as_ref() {
        b"" => b"{}",
        body => body,
    };
    let reply: Value = serde_json::from_slice(body).map_err(|e| {
        Error::internal(
            ID,
            format!(
                "{} of {} answered with something that is not JSON: {e}",
                route.endpoint, route.service
            ),
        )
    })?;
    Ok(match reply {
        Value::Object(_) => CallToolResult::structured(reply),
        other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
    })
}

/// A streaming endpoint: the arguments as its one request message, then its replies until it
/// ends, until `max_replies`, or until the timeout, whichever comes first.
async fn stream(
    client: &Client,
    opts: &McpOptions,
    route: &Route,
    arguments: Map<String, Value>,
    progress: Progress,
) -> Result<CallToolResult> {
    let deadline = Instant::now() + opts.timeout;
    let request = micro::Request::new(Json(Value::Object(arguments))).with_timeout(opts.timeout);
    let opened =
        client.server_stream::<Json<Value>, Json<Value>>(&route.service, &route.endpoint, request);
    let mut stream = timeout_at(deadline, opened)
        .await
        .map_err(|_| late(route, opts.timeout))??;
    let mut replies = Vec::new();
    let truncated = loop {
        match timeout_at(deadline, stream.recv()).await {
            Ok(Ok(Some(Json(reply)))) if replies.len() < opts.max_replies => {
                replies.push(reply);
                if let Some((peer, token)) = &progress {
                    let note = ProgressNotificationParam::new(token.clone(), replies.len() as f64)
                        .with_message(format!("reply {}", replies.len()));
                    // Progress is a courtesy: a peer too slow to take it does not hold the call.
                    let _ = tokio::time::timeout_at(deadline, peer.notify_progress(note)).await;
                }
            }
            Ok(Ok(Some(_))) => break true,
            Ok(Ok(None)) => break false,
            Ok(Err(e)) => return Err(e),
            Err(_) if replies.is_empty() => return Err(late(route, opts.timeout)),
            Err(_) => break true,
        }
    };
    Ok(CallToolResult::structured(
        json!({"replies": replies, "truncated": truncated}),
    ))
}

fn late(route: &Route, limit: Duration) -> Error {
    Error::timeout(
        ID,
        format!(
            "{} of {} did not answer within {limit:?}",
            route.endpoint, route.service
        ),
    )
}

/// A Micro error as a tool error: a line for people (`400 Bad Request: name must not be
/// empty`), then the error's JSON (`{"id":..,"code":..,"detail":..,"status":..}`).
pub(crate) fn failure(e: &Error) -> CallToolResult {
    let status = match e.status.as_str() {
        "" => micro::core::status_text(e.code),
        status => status,
    };
    CallToolResult::error(vec![
        ContentBlock::text(format!("{} {status}: {}", e.code, e.detail)),
        ContentBlock::text(e.to_json()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reads_as_code_status_and_detail() {
        let result = failure(&Error::bad_request("greeter", "name must not be empty"));
        assert_eq!(result.is_error, Some(true));
        let texts: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        assert_eq!(texts[0], "400 Bad Request: name must not be empty");
        let parsed: Error = serde_json::from_str(&texts[1]).unwrap_or_default();
        assert_eq!(parsed.code, 400);
    }
}
