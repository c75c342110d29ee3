//! The MCP gateway of Micro for Rust: every endpoint of every service in the registry is a tool
//! that AI agents call over the [Model Context Protocol](https://modelcontextprotocol.io), on
//! the official Rust SDK (`rmcp`).
//!
//! Two ways in:
//!
//! - **stdio**, for desktop agents that start the server themselves: [`serve_stdio`] (what
//!   `micro mcp` runs). The agent's configuration:
//!
//!   ```json
//!   {"mcpServers": {"micro": {"command": "micro", "args": ["mcp"]}}}
//!   ```
//!
//!   Standard output carries the protocol, so logs must go to standard error.
//!
//! - **Streamable HTTP** (the spec's HTTP transport, sessions or the stateless 2026-07-28
//!   protocol): [`http_service`] is a tower service to mount at `/mcp`:
//!
//!   ```no_run
//!   # async fn run(service: micro::Service) -> Result<(), Box<dyn std::error::Error>> {
//!   let mcp = micro_mcp::http_service(&service, micro_mcp::McpOptions::from_env()?);
//!   let app = axum::Router::new().route_service("/mcp", mcp);
//!   let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!   axum::serve(listener, app).await?;
//!   # Ok(())
//!   # }
//!   ```
//!
//! # What is mapped how
//!
//! | MCP | from Micro |
//! |---|---|
//! | one tool per endpoint | every endpoint of every service in the registry (`list_services`, then `get_service` for each, since listings may leave endpoints out); subscribers (`subscriber = "true"` endpoint metadata) and the `Debug` handler every server has (`Debug.Health`) are not tools |
//! | tool name | `{service}.{Endpoint}`, Go Micro's name (`greeter.Greeter.Hello`); MCP names allow only `a-z A-Z 0-9 _ . -` and 128 characters, so any other character becomes `_` (`go.micro/blog` is `go.micro_blog.…`) and a longer name gets no tool; of two endpoints that end up with one name, the first (by service name) keeps it |
//! | `description` | the endpoint's `description` metadata (Go Micro's convention; `micro-build` registers the RPC's proto comment there), else `Calls {Endpoint} of {service}.`; then the `example` metadata (`micro-build`: an `@example` JSON line in the comment), the scopes the tool needs, and for streaming endpoints (`stream = "true"`) how they answer |
//! | `inputSchema`, `outputSchema` | JSON Schema of the request and response messages, built from the registry's description of them (`Value`: field names and type names, nested messages, `[]T` lists, `map<K, V>` maps, and from `micro-build` services enum value names and oneof groups), as protobuf's JSON writes them: 64-bit integers as integers or strings, bytes as base64, enums as value names, well-known types (`Timestamp`, `Duration`, wrappers, `Struct`, ...) in their JSON form; each member of a oneof excludes the others (`dependentSchemas`); an enum or message described no further takes any value; the `example` as the input's `examples` |
//! | `tools/call` | the endpoint called through the service's Micro client with the arguments as its JSON request (mucp or gRPC, found in the registry, within [`McpOptions::timeout`]); the JSON reply is the result's `structuredContent` (and its text) |
//! | a streaming endpoint | the arguments are its one request message; the result is `{"replies": [...], "truncated": bool}`, the replies it streamed until it ended, [`McpOptions::max_replies`] or the timeout (`truncated` then); each reply is a `notifications/progress` when the call asked for progress |
//! | a Micro error | a tool result with `isError: true` whose text is `{code} {status}: {detail}` (`400 Bad Request: name must not be empty`) followed by the error's JSON, never a protocol error; a call that timed out is Micro's `408` |
//! | `notifications/tools/list_changed` | the registry is watched; when a change alters the tool list, sessions opened with `initialize` get the notification, and 2026-07-28 clients get it on their `subscriptions/listen` stream |
//! | scopes | a tool asks any one of its scopes: the endpoint's `scopes` metadata (comma separated) and [`McpOptions::scopes`]; over HTTP, a caller whose verified token (the gateway's `micro::auth::Claims`, in the request's extensions) lacks them gets a `403` tool error, one with no token a `401`; not over HTTP (stdio), the caller is the user who started the server and may call every tool |
//! | rate | [`McpOptions::rate_limits`]: calls per second of each caller (token subject, or `anonymous`, or `local`) to each tool; past it, a `429` tool error |
//! | audit | one `tracing` event per call at INFO, target `micro_mcp::audit`: the tool, the caller, the outcome code (200, or the error's code) and the latency |
//!
//! [`McpOptions`] chooses which services are tools (allow and deny lists), their scopes and
//! rates, and bounds each call; [`McpOptions::from_env`] reads `MICRO_MCP_TIMEOUT`,
//! `MICRO_MCP_MAX_REPLIES`, `MICRO_MCP_SERVICES` (the allow list, comma separated),
//! `MICRO_MCP_DENY`, `MICRO_MCP_SCOPES` (`greeter.*=greet,*=read`) and `MICRO_MCP_RATE_LIMIT`
//! (`20`, or `greeter.*=5,*=20`).
//!
//! Authentication itself is the HTTP server's: the API gateway (`micro-gateway`) checks bearer
//! tokens and JWTs before `/mcp` and passes the claims on. Mounted elsewhere, put the
//! caller's `micro::auth::Claims` into the request's extensions the same way.

mod call;
mod catalog;
mod guard;
mod options;
mod server;

use std::sync::Arc;

use micro::{Error, Result};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt as _;

pub use options::McpOptions;
pub use server::McpServer;

/// The rmcp version this crate is built on, for naming its types (transports, configuration).
pub use rmcp;

/// Who raises the errors of this crate.
const ID: &str = "micro.mcp";

/// The Streamable HTTP service [`http_service`] returns: a tower service of
/// `http::Request<B>` (any body), never failing, to mount at `/mcp`.
///
/// Its `config` field is public: before mounting, widen `config.allowed_hosts` (loopback
/// names only by default, against DNS rebinding) when it serves other hosts, and cancel
/// `config.cancellation_token` on shutdown to end its open streams.
pub type McpHttpService = StreamableHttpService<McpServer, LocalSessionManager>;

/// Serves MCP on standard input and output until the client closes them: the server a
/// desktop agent starts (`micro mcp`). Tools are the endpoints in `service`'s registry, called
/// with `service`'s client.
pub async fn serve_stdio(service: &micro::Service, opts: McpOptions) -> Result<()> {
    let running = McpServer::new(service, opts)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::internal(ID, format!("MCP over stdio did not start: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| Error::internal(ID, format!("MCP over stdio failed: {e}")))?;
    Ok(())
}

/// The MCP Streamable HTTP endpoint (sessions kept in memory) over `service`'s registry and
/// client, to mount at `/mcp` (`axum::Router::route_service("/mcp", ..)`). Call it within a
/// Tokio runtime: it starts watching the registry.
pub fn http_service(service: &micro::Service, opts: McpOptions) -> McpHttpService {
    let server = McpServer::new(service, opts);
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    )
}
