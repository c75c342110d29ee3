//! The API gateway of Micro for Rust: HTTP/JSON in front of a fleet's RPC services, for
//! browsers, PHP, curl and everything else that does not speak mucp or gRPC.
//!
//! The gateway calls through Micro's client, so it reaches mucp and gRPC nodes, Micro's and Go
//! Micro's, found in whatever registry the gateway's service is configured with. Start it from
//! the command line with `micro gateway` (`--address`, `MICRO_GATEWAY_ADDRESS`, default
//! `127.0.0.1:8080`) or in a program with [`Gateway::bind`].
//!
//! # Routes
//!
//! | route | what it does |
//! |---|---|
//! | `POST /api/{service}/{Type.Method}` | calls the endpoint with the JSON body (`{}` when empty); the reply's JSON is the response (Go Micro v6's route) |
//! | `POST /api/{service}/{Type}/{Method}` | the same, Go Micro's other form |
//! | either, with `Accept: text/event-stream` | a server-streaming endpoint as Server-Sent Events: one `data:` event per reply, an `error` event (Go Micro's error JSON) if it fails |
//! | `GET` on either | the query string is the request: `?name=John&count=3` is `{"name":"John","count":3}` (numbers and `true`/`false` as such, a repeated key as a list) |
//! | `GET` on either, upgraded to a WebSocket | any stream (server, client, bidirectional): one JSON text message per message each way; see below |
//! | `GET /openapi.json` | an OpenAPI 3.1 document of every endpoint in the registry, with the request and response schemas the services registered; rebuilt when the registry changes |
//! | `POST /event/{topic}` | publishes the JSON body on the broker (`Content-Type: application/json`), answers `202` |
//! | `GET /services` | the services in the registry (Go Micro's JSON) |
//! | `GET /services/{name}` | one service, every version with its nodes and endpoints |
//! | `GET /health` | `{"status":"ok"}` |
//!
//! ```text
//! curl -d '{"name":"John"}' http://127.0.0.1:8080/api/greeter/Greeter.Hello
//! {"message":"Hello John"}
//! ```
//!
//! # Streams over WebSocket
//!
//! Open a WebSocket on the endpoint's route (`ws://127.0.0.1:8080/api/greeter/Greeter.Chat`).
//! Each text message you send is one request message (JSON); the query string of the
//! upgrade, if any, is the first. An empty text message ends your messages (the service's
//! `recv` sees the end; a client stream answers then). Each reply arrives as one text
//! message, while you are still sending. The service ending the stream closes the
//! WebSocket with `1000`; an error closes it with `4000 +` its HTTP status (`4404`, `4504`,
//! ...) and the detail as the reason; a message that is not JSON with `4400`; nothing sent
//! either way for the gateway's timeout with `4504`. An unknown service is refused before the
//! upgrade, with its HTTP status. Messages are limited like bodies.
//!
//! # Errors
//!
//! A failed call answers with Go Micro's error JSON (`{"id":..,"code":..,"detail":..,"status":..}`)
//! and the HTTP status of its code: `400` for a bad request (a body that is not JSON
//! included), `404` for an unknown service or endpoint, `502`/`503` when no node could be
//! reached, `504` when the call ran out of time (Micro's `408`), and the handler's own code
//! otherwise.
//!
//! # Metadata
//!
//! Request headers on the allow-list ([`GatewayOptions::forward_headers`]: `Authorization`,
//! `Trace-Id`, `X-Request-Id`, `Traceparent`, `Tracestate`, `Baggage` by default) travel to the
//! service as metadata; the reply's metadata comes back as response headers. Hop-by-hop,
//! framing (`Content-Length`, `Content-Type`, `Transfer-Encoding`, ...), `Host` and `Micro-*`
//! headers never cross, either way, whatever the allow-list says.
//!
//! # Limits
//!
//! Bodies are limited to [`GatewayOptions::max_body_bytes`] (1 MiB, `MICRO_GATEWAY_MAX_BODY`;
//! larger ones get `413`), and every call, publication and registry read to
//! [`GatewayOptions::timeout`] (`MICRO_GATEWAY_TIMEOUT`, 10 s; past it `504`).
//!
//! # Who may call
//!
//! The gateway has no authentication yet, so it serves this machine's programs only: binding
//! a non-loopback address is refused, a request must name a loopback `Host` (against DNS
//! rebinding), and a browser request must come from a loopback page (`Origin`,
//! `Sec-Fetch-Site`), so a web page opened elsewhere cannot make a local browser call
//! services; otherwise `403`. Connection limits and slow-client timeouts are not built yet
//! (the hardening issue covers every server).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod openapi;
mod ws;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use micro::core::headers;
use micro::rpc::{self, CallOptions};
use micro::{Error, Json, Metadata, Result, Service};
use serde_json::Value;

const ID: &str = "micro.gateway";
/// How long [`Gateway::shutdown`] waits for requests under way.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Headers that belong to one HTTP hop or to the message's framing, or that Micro keeps for
/// itself: never passed between a caller and a service, whatever the allow-list says.
const NEVER_FORWARDED: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
];
const JSON: &str = "application/json";

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// The largest request body; a larger one gets `413`. `MICRO_GATEWAY_MAX_BODY`, 1 MiB.
    pub max_body_bytes: usize,
    /// Each call's deadline (sent to the service). `MICRO_GATEWAY_TIMEOUT`, 10 s.
    pub timeout: Duration,
    /// Request headers passed to services as metadata, compared ignoring case.
    /// `MICRO_GATEWAY_HEADERS` (comma separated) adds to the default list.
    pub forward_headers: Vec<String>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_body_bytes: 1024 * 1024,
            timeout: Duration::from_secs(10),
            forward_headers: [
                "Authorization",
                "Trace-Id",
                "X-Request-Id",
                "Traceparent",
                "Tracestate",
                "Baggage",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl GatewayOptions {
    /// The defaults with the `MICRO_GATEWAY_*` variables over them; a bad value is a `400`
    /// naming the variable.
    pub fn from_env() -> Result<Self> {
        let mut o = GatewayOptions::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var("MICRO_GATEWAY_MAX_BODY") {
            o.max_body_bytes = micro::core::env::parse_size(&v).ok_or_else(|| {
                micro::core::env::invalid("MICRO_GATEWAY_MAX_BODY", &v, "a size like 1MiB")
            })?;
        }
        if let Some(v) = var("MICRO_GATEWAY_TIMEOUT") {
            o.timeout = micro::config::parse_duration(&v).ok_or_else(|| {
                micro::core::env::invalid("MICRO_GATEWAY_TIMEOUT", &v, "a duration like 10s")
            })?;
        }
        if let Some(v) = var("MICRO_GATEWAY_HEADERS") {
            o.forward_headers.extend(
                v.split(',')
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty()),
            );
        }
        Ok(o)
    }
}

/// What every request shares.
struct Shared {
    service: Service,
    opts: GatewayOptions,
    /// The OpenAPI document as last built, with the registry generation it was built at.
    openapi: std::sync::Mutex<Option<(u64, Bytes)>>,
    /// Bumped by every registry change the watch sees; `None` while nothing watches (the
    /// document is then built for every request).
    generation: Arc<std::sync::atomic::AtomicU64>,
    watched: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with the router: ends the registry watch.
    _unwatch: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The gateway's routes over `service`'s client, registry and broker, as a tower service for
/// programs that serve it themselves.
pub fn router(service: &Service, opts: GatewayOptions) -> Router {
    let limit = opts.max_body_bytes;
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watched = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unwatch = tokio::runtime::Handle::try_current().ok().map(|runtime| {
        let (unwatch, stop) = tokio::sync::oneshot::channel();
        let registry = service.registry().clone();
        let (generation, watched) = (generation.clone(), watched.clone());
        runtime.spawn(watch_registry(registry, generation, watched, stop));
        unwatch
    });
    let shared = Arc::new(Shared {
        service: service.clone(),
        opts,
        openapi: std::sync::Mutex::new(None),
        generation,
        watched,
        _unwatch: unwatch,
    });
    Router::new()
        .route("/api/{service}/{endpoint}", post(call_json).get(call_query))
        .route(
            "/api/{service}/{kind}/{method}",
            post(call_json_split).get(call_query_split),
        )
        .route("/event/{topic}", post(publish))
        .route("/openapi.json", get(openapi_document))
        .route("/services", get(services))
        .route("/services/{name}", get(describe))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async {
            failure(Error::not_found(
                ID,
                "no such route: see /services, /api/{service}/{Type.Method}, /event/{topic}",
            ))
        })
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(local_callers_only))
        .with_state(shared)
}

/// Until the gateway has authentication it serves this machine's own programs only: a
/// request must name a loopback host (no DNS rebinding), and a browser's request must come
/// from a loopback page (no cross-site requests from a page the user opened elsewhere).
async fn local_callers_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !from_this_machine(request.headers()) {
        return failure(Error::forbidden(
            ID,
            "the gateway answers programs on this machine only (loopback Host and Origin) \
             until it has authentication",
        ));
    }
    next.run(request).await
}

fn from_this_machine(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let loopback = |host: &str| {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let host_ok = header(http::header::HOST.as_str()).is_none_or(loopback);
    let origin_ok = header(http::header::ORIGIN.as_str()).is_none_or(|origin| {
        let host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        loopback(host)
    });
    let site_ok =
        header("sec-fetch-site").is_none_or(|site| site != "cross-site" && site != "same-site");
    host_ok && origin_ok && site_ok
}

/// Errors that axum answers itself (413 for a large body, 405, a bad query string) as Go
/// Micro's error JSON, like every other error of the gateway.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the gateway accepts",
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method",
        _ => status
            .canonical_reason()
            .unwrap_or("the request cannot be answered"),
    };
    let error = Error::new(ID, i32::from(status.as_u16()), detail);
    (
        status,
        [(http::header::CONTENT_TYPE, JSON)],
        error.to_json(),
    )
        .into_response()
}

/// A running gateway; dropping it does not stop it (it serves until the runtime ends),
/// [`Gateway::shutdown`] does.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Listens on `addr` (a loopback address, port 0 for any) and serves the gateway over
    /// `service`. The service's broker is connected here, for `/event`.
    pub async fn bind(addr: &str, service: &Service, opts: GatewayOptions) -> Result<Gateway> {
        // Checked before binding: a public port is never opened, even for a moment.
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| Error::bad_request(ID, format!("cannot resolve {addr}: {e}")))?
            .collect();
        if resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback()) {
            return Err(Error::bad_request(
                ID,
                format!(
                    "refusing to serve {addr}: the gateway has no authentication yet, so it \
                     serves loopback addresses only (127.0.0.1, ::1)"
                ),
            ));
        }
        let listener = tokio::net::TcpListener::bind(&resolved[..])
            .await
            .map_err(|e| Error::internal(ID, format!("listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::internal(ID, format!("listen on {addr}: {e}")))?;
        service.broker().connect().await?;
        let app = router(service, opts);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped `Gateway` (no shutdown asked for) keeps serving.
                    if stopped.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the gateway stopped serving");
            }
        });
        Ok(Gateway {
            local_addr,
            stop,
            task,
        })
    }

    /// The address served, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops taking connections and waits for requests under way, at most
    /// [`SHUTDOWN_WAIT`]; connections still open then are closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_WAIT, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// A Micro error as the gateway answers it: Go Micro's JSON with the status of its code.
fn failure(e: Error) -> Response {
    (
        status_of(&e),
        [(http::header::CONTENT_TYPE, JSON)],
        e.to_json(),
    )
        .into_response()
}

/// The HTTP status the gateway answers a Micro error with.
fn status_of(e: &Error) -> StatusCode {
    match e.code {
        // The service did not answer in time: the gateway's upstream timed out.
        408 => StatusCode::GATEWAY_TIMEOUT,
        // The caller's body is checked before any call: a 413 here is the service's reply
        // that was too large for the transport, a bad answer from upstream.
        413 => StatusCode::BAD_GATEWAY,
        _ => StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn call_json(
    State(shared): State<Arc<Shared>>,
    Path((service, endpoint)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&shared, service, endpoint, &headers, body).await
}

async fn call_json_split(
    State(shared): State<Arc<Shared>>,
    Path((service, kind, method)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&shared, service, format!("{kind}.{method}"), &headers, body).await
}

async fn call_query(
    State(shared): State<Arc<Shared>>,
    Path((service, endpoint)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => websocket(shared, service, endpoint, query, &headers, upgrade).await,
        Err(_) => {
            let body = Bytes::from(query_json(query).to_string());
            call(&shared, service, endpoint, &headers, body).await
        }
    }
}

async fn call_query_split(
    State(shared): State<Arc<Shared>>,
    Path((service, kind, method)): Path<(String, String, String)>,
    query: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let endpoint = format!("{kind}.{method}");
    call_query(
        State(shared),
        Path((service, endpoint)),
        query,
        headers,
        upgrade,
    )
    .await
}

/// A stream over WebSocket: opened before the upgrade, so that an unknown service or a
/// refused stream is an HTTP error; then carried by [`ws::bridge`].
async fn websocket(
    shared: Arc<Shared>,
    service: String,
    endpoint: String,
    query: Vec<(String, String)>,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(e) = check_endpoint(&endpoint) {
        return failure(e);
    }
    let first = (!query.is_empty()).then(|| query_json(query));
    let mut opener = micro::Request::new(());
    *opener.metadata_mut() = metadata_of(headers, &shared.opts.forward_headers);
    let client = shared.service.client().with_content_type(JSON);
    let opened = client.stream::<Json<Value>, Json<Value>>(&service, &endpoint, opener);
    let stream = match bounded(&shared.opts, "opening the stream", opened).await {
        Ok(stream) => stream,
        Err(e) => return failure(e),
    };
    let idle = shared.opts.timeout;
    upgrade
        .max_message_size(shared.opts.max_body_bytes)
        .on_upgrade(move |socket| ws::bridge(socket, stream, first, idle))
}

/// A query string as a JSON object: numbers and booleans as such, repeated keys as lists.
fn query_json(query: Vec<(String, String)>) -> Value {
    let mut object: BTreeMap<String, Value> = BTreeMap::new();
    for (key, text) in query {
        // Only where the JSON reads back as the same text: `007`, `1.50` and integers beyond
        // 64 bits stay strings.
        let value = match serde_json::from_str::<Value>(&text) {
            Ok(v @ (Value::Number(_) | Value::Bool(_))) if same_text(&v, &text) => v,
            _ => Value::String(text),
        };
        match object.get_mut(&key) {
            Some(Value::Array(list)) => list.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                object.insert(key, value);
            }
        }
    }
    Value::Object(object.into_iter().collect())
}

/// The 400 for a body that does not parse as JSON.
pub(crate) fn not_json(what: &str, e: &serde_json::Error) -> Error {
    Error::bad_request(ID, format!("{what} is not JSON: {e}"))
}

/// Whether `value` written as JSON is exactly `text`.
fn same_text(value: &Value, text: &str) -> bool {
    let written = value.to_string();
    written == text
}

/// An endpoint must read `Type.Method`.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let valid = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.ends_with('.');
    if endpoint.contains('.') && valid(endpoint) {
        return Ok(());
    }
    Err(Error::bad_request(
        ID,
        format!("{endpoint:?} is not an endpoint: name it Type.Method (Greeter.Hello)"),
    ))
}

/// One call: the JSON body to `endpoint` of `service`, the reply (or the error) back.
async fn call(
    shared: &Shared,
    service: String,
    endpoint: String,
    headers: &HeaderMap,
    mut body: Bytes,
) -> Response {
    if let Err(e) = check_endpoint(&endpoint) {
        return failure(e);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        body = Bytes::from_static(b"{}");
    }
    let metadata = metadata_of(headers, &shared.opts.forward_headers);
    let wants_events = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_events {
        // A stream sends the request as a value: parsed there, once.
        return server_stream(shared, service, endpoint, metadata, &body).await;
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return failure(not_json("the request body", &e));
    }
    let request = rpc::Request {
        service,
        endpoint,
        content_type: JSON.to_string(),
        metadata,
        body,
        ..rpc::Request::default()
    };
    let options = CallOptions {
        timeout: Some(shared.opts.timeout),
        ..CallOptions::default()
    };
    match shared.service.client().call_raw(request, options).await {
        Ok(reply) => {
            let mut response = (
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, JSON)],
                reply.body,
            )
                .into_response();
            for (key, value) in reply.metadata.iter() {
                if !forwardable(key) {
                    continue;
                }
                if let (Ok(name), Ok(value)) =
                    (HeaderName::try_from(key), HeaderValue::try_from(value))
                {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Err(e) => failure(e),
    }
}

/// A server-streaming call answered as Server-Sent Events: one `data:` event per reply (its
/// JSON), then the stream ends; an error, before or during the stream, is an `error` event
/// with Go Micro's error JSON. The whole stream is bounded by the gateway's timeout.
async fn server_stream(
    shared: &Shared,
    service: String,
    endpoint: String,
    metadata: Metadata,
    body: &[u8],
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt as _;

    let message: Value = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(e) => return failure(not_json("the request body", &e)),
    };
    let mut request = micro::Request::new(Json(message));
    *request.metadata_mut() = metadata;
    let client = shared.service.client().with_content_type(JSON);
    let opened = client.server_stream::<Json<Value>, Json<Value>>(&service, &endpoint, request);
    let stream = match bounded(&shared.opts, "opening the stream", opened).await {
        Ok(stream) => stream,
        Err(e) => return failure(e),
    };
    let deadline = tokio::time::Instant::now() + shared.opts.timeout;
    let limit = shared.opts.timeout;
    // `Some(stream)` while replies may come; an error ends it after one `error` event.
    let events = futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        let next = tokio::time::timeout_at(deadline, stream.recv()).await;
        let event = match next {
            Ok(Ok(Some(Json(reply)))) => {
                return Some((Event::default().data(reply.to_string()), Some(stream)))
            }
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => e,
            Err(_) => Error::timeout(ID, format!("the stream did not end within {limit:?}")),
        };
        Some((Event::default().event("error").data(event.to_json()), None))
    })
    .map(Ok::<_, std::convert::Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Whether a header may cross the gateway at all.
fn forwardable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !NEVER_FORWARDED.contains(&lower.as_str())
        && !lower.starts_with("micro-")
        && !lower.starts_with("x-micro-")
        && !headers::is_protocol(name)
}

/// The allowed request headers, as metadata.
fn metadata_of(headers: &HeaderMap, allowed: &[String]) -> Metadata {
    let mut metadata = Metadata::new();
    for name in allowed {
        if !forwardable(name) {
            continue;
        }
        if let Some(value) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            metadata.insert(name.clone(), value.to_string());
        }
    }
    metadata
}

async fn publish(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return failure(not_json("the event", &e)),
    };
    let client = shared.service.client().with_content_type(JSON);
    match bounded(
        &shared.opts,
        "publishing",
        client.publish(&topic, &Json(value)),
    )
    .await
    {
        Ok(()) => (
            StatusCode::ACCEPTED,
            [(http::header::CONTENT_TYPE, JSON)],
            "{}",
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

/// `f` within the gateway's timeout; past it, a 408 (answered as 504).
async fn bounded<T>(
    opts: &GatewayOptions,
    what: &str,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(opts.timeout, f)
        .await
        .map_err(|_| Error::timeout(ID, format!("{what} took longer than {:?}", opts.timeout)))?
}

async fn services(State(shared): State<Arc<Shared>>) -> Response {
    let registry = shared.service.registry();
    match bounded(&shared.opts, "listing services", registry.list_services()).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => failure(e),
    }
}

async fn describe(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let registry = shared.service.registry();
    match bounded(
        &shared.opts,
        "reading the registry",
        registry.get_service(&name),
    )
    .await
    {
        Ok(versions) => axum::Json(versions).into_response(),
        Err(e) => failure(e),
    }
}

/// Follows the registry, bumping `generation` on every change, until `stop` fires or its
/// sender is dropped. `watched` says whether the watch is running (the OpenAPI document is
/// kept between requests only then).
async fn watch_registry(
    registry: Arc<dyn micro::core::Registry>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    watched: Arc<std::sync::atomic::AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use futures_util::StreamExt as _;
    use std::sync::atomic::Ordering;

    let mut changes = tokio::select! {
        watch = registry.watch(None) => match watch {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "the gateway cannot watch the registry: it builds the OpenAPI document for every request");
                return;
            }
        },
        _ = &mut stop => return,
    };
    // Changes between the watch's start and now are covered: nothing was kept before it.
    generation.fetch_add(1, Ordering::SeqCst);
    watched.store(true, Ordering::SeqCst);
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(Ok(_)) => {
                    generation.fetch_add(1, Ordering::SeqCst);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the gateway's registry watch failed");
                    break;
                }
                None => break,
            },
            _ = &mut stop => break,
        }
    }
    watched.store(false, Ordering::SeqCst);
}

/// `GET /openapi.json`: kept until the registry changes.
async fn openapi_document(State(shared): State<Arc<Shared>>) -> Response {
    use std::sync::atomic::Ordering;

    let watched = shared.watched.load(Ordering::SeqCst);
    let generation = shared.generation.load(Ordering::SeqCst);
    let kept = shared
        .openapi
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let body = match kept {
        Some((built, body)) if watched && built == generation => body,
        _ => {
            let services =
                match bounded(&shared.opts, "reading the registry", every_service(&shared)).await {
                    Ok(services) => services,
                    Err(e) => return failure(e),
                };
            let doc = openapi::document(&services, false, &|_| true);
            let body = Bytes::from(doc.to_string());
            *shared.openapi.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((generation, body.clone()));
            body
        }
    };
    ([(http::header::CONTENT_TYPE, JSON)], body).into_response()
}

/// Every service with its endpoints: the listing may leave endpoints out, so each is read.
async fn every_service(shared: &Shared) -> Result<Vec<micro::core::registry::Service>> {
    let registry = shared.service.registry();
    let mut services = Vec::new();
    for listed in registry.list_services().await? {
        match registry.get_service(&listed.name).await {
            Ok(versions) => services.extend(versions),
            // Gone since the listing.
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(services)
}
