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
//! | either, with `Accept: text/event-stream` | a server-streaming endpoint as Server-Sent Events: one `data:` event per reply; failing before the first reply, the error's HTTP status as a call's; failing later, an `error` event (Go Micro's error JSON) |
//! | `GET` on either | the query string is the request: `?name=John&count=3` is `{"name":"John","count":3}` (numbers and `true`/`false` as such, a repeated key as a list) |
//! | `GET` on either, upgraded to a WebSocket | any stream (server, client, bidirectional): one JSON text message per message each way; see below |
//! | `GET /openapi.json` | an OpenAPI 3.1 document of every endpoint in the registry, with the request and response schemas the services registered; rebuilt when the registry changes |
//! | `POST /event/{topic}` | publishes the JSON body on the broker (`Content-Type: application/json`), answers `202` |
//! | `GET /event/{topic}` | subscribes to the topic: Server-Sent Events, one `data:` event per message (its JSON body) until the client goes away; see [Event subscriptions](#event-subscriptions) |
//! | `GET /services` | the services in the registry (Go Micro's JSON) |
//! | `GET /services/{name}` | one service, every version with its nodes and endpoints |
//! | `GET /health` | `{"status":"ok"}` |
//! | `GET /` | the web dashboard's services page (HTML); see [The dashboard](#the-dashboard) |
//! | `GET /dashboard/...` | the dashboard's other pages: `service/{name}`, `service/{name}/{Type.Method}` (a form that calls the endpoint), `events`, and what they load (`watch`, `metrics/{name}`, `assets/...`); with path routes on, these paths are the dashboard's |
//! | `/mcp` | the MCP gateway (`micro-mcp`, Streamable HTTP): every endpoint a tool for AI agents; `Gateway.MCP` in auth rules; `MICRO_GATEWAY_MCP=off` leaves it out |
//! | any other path, with [`GatewayOptions::path_routes`] | Micro v3's path routes: `/greeter/say/hello` is `greeter`'s `Say.Hello`, `/foo/bar` `foo`'s `Foo.Bar`, `/foo` `Foo.Call`, `/v1/foo/bar` `v1.foo`'s `Foo.Bar`; kebab-case segments camel-cased; [`GatewayOptions::namespace`] goes before the service name |
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
//! # The dashboard
//!
//! The gateway's address in a browser shows the fleet ([`GatewayOptions::dashboard`],
//! `MICRO_GATEWAY_DASHBOARD=off` leaves it out):
//!
//! | page | what it shows |
//! |---|---|
//! | `/` | every service with its versions, node count and health (`Debug.Health` of each node), live as the registry changes; `?q=` filters by name (a text box filters as you type) |
//! | `/dashboard/service/{name}` | the nodes (id, address, transport, protocol, metadata), the endpoints with their request and response shapes, and request and error counts where nodes serve Prometheus metrics (node metadata `metrics`, see below) |
//! | `/dashboard/service/{name}/{Type.Method}` | a form made from the request's shape (and the request as raw JSON) that calls the endpoint through `/api/...`: the reply, or the error's code and detail, and the latency; a streaming endpoint's replies as they arrive; the same call as a `curl` and a `micro call` command line |
//! | `/dashboard/events` | publish JSON to a topic; subscribe to a topic and see its messages arrive |
//!
//! The pages are HTML made on the server, readable without JavaScript; a little JavaScript
//! (served by the gateway, like the stylesheet: nothing is fetched from elsewhere, and a
//! `Content-Security-Policy` says so) makes them live and calls endpoints. In auth rules
//! the pages are `Gateway.Dashboard`, and as they show the registry they also need what
//! `Gateway.Services` needs; the calls and events they make are checked as any other
//! (`Greeter.Hello`, `Event.<topic>`). Browsers do not send bearer tokens when they open a
//! page, so with auth either make the pages public
//! (`MICRO_GATEWAY_PUBLIC="Gateway.Dashboard,Gateway.Services"`) or put a proxy that adds
//! the header in front; a token typed into a page's token field goes with the calls, events
//! and live updates it makes (kept for the browser tab only).
//!
//! A node's metrics are found at the URL in its metadata key `metrics`
//! (`http://127.0.0.1:9100/metrics`; `micro::ServiceBuilder::node_metadata` with
//! `micro-wrapper-prometheus`'s `METADATA_KEY` and its server's URL), or the service's: the
//! gateway reads each (at most 4 MiB, within 2 s) and counts `*_server_requests_total` by
//! endpoint and status; the page works out calls per second. Only URLs on the node's own host
//! are read, so a registration cannot make the gateway fetch another address.
//!
//! # Event subscriptions
//!
//! `GET /event/{topic}` (with `Accept: text/event-stream`) subscribes the gateway's broker
//! to the topic, without a queue group (it takes no message from a service's group), for as
//! long as the client reads: each message is one `data:` event with the body's JSON and the
//! message's `Micro-Id` as the event id; a body that is not JSON is an `other` event with its
//! content type and length, a body larger than [`GatewayOptions::max_body_bytes`] a `large`
//! event with its length, and messages a slow client could not take in time are counted in a
//! `dropped` event. At most [`MAX_SUBSCRIPTIONS`] are open at once (`503` past that); the
//! broker subscription ends when the client goes away. Auth rules name it `Event.<topic>`,
//! as publishing.
//!
//! ```text
//! curl -N http://127.0.0.1:8080/event/orders.created
//! data: {"id":"1"}
//! ```
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
//! | limit | setting | default | past it |
//! |---|---|---|---|
//! | request body, WebSocket message | [`GatewayOptions::max_body_bytes`], `MICRO_GATEWAY_MAX_BODY` | 1 MiB | `413` |
//! | each call, stream opening, publication, registry read; WebSocket silence | [`GatewayOptions::timeout`], `MICRO_GATEWAY_TIMEOUT` | 10 s | `504` (close `4504`) |
//! | connections at once | [`GatewayOptions::max_connections`], `MICRO_GATEWAY_MAX_CONNECTIONS` | 1024 | wait to be accepted |
//! | a request's head; a kept-alive connection's wait for the next | [`GatewayOptions::header_timeout`], `MICRO_GATEWAY_HEADER_TIMEOUT` | 30 s | connection closed |
//! | header lines | [`GatewayOptions::max_headers`] | 100 | `431` |
//! | requests per second per client (token subject, else address) | [`GatewayOptions::rate_limit`], `MICRO_GATEWAY_RATE_LIMIT` | none | `429` |
//!
//! # Who may call
//!
//! **Without authentication** (the default) the gateway serves this machine's programs only:
//! binding a non-loopback address is refused, a request must name a loopback `Host` (against
//! DNS rebinding), and a browser's request must come from a loopback page or a listed origin
//! (`Origin`, `Sec-Fetch-Site`), so that a web page opened elsewhere cannot make a local
//! browser call services; otherwise `403`.
//!
//! **With authentication** ([`Auth`]) any address may be bound, and every route but
//! `/health` needs `Authorization: Bearer <token>` (`401` without a good one) unless a rule
//! makes it public; a rule may ask for a scope (`403` without it). Tokens are fixed ones
//! (`MICRO_GATEWAY_TOKENS="s3cret admin,other"`: each token with the scopes it grants) or
//! JSON Web Tokens (`MICRO_GATEWAY_JWT_SECRET` for HS256, `MICRO_GATEWAY_JWT_KEY` for an
//! RS256 public key file), checked by `micro-wrapper-auth`'s verifiers. Rules:
//! `MICRO_GATEWAY_PUBLIC="Greeter.Hello,Gateway.OpenAPI"`,
//! `MICRO_GATEWAY_SCOPES="Greeter.*=greet,Event.*=publish"`. The token also goes on to the
//! service as `Authorization` metadata, so services can check it again.
//!
//! **Browsers**: pages on loopback origins and on the origins in
//! `MICRO_GATEWAY_CORS_ORIGINS` (comma separated, `*` for any) may call; CORS preflights are
//! answered for them (methods `GET`, `POST`; headers `Content-Type`, `Accept` and the
//! forwarded ones). Other origins get `403`.
//!
//! ```no_run
//! use micro_gateway::{Auth, Gateway, GatewayOptions};
//! # async fn run(service: micro::Service) -> micro::Result<()> {
//! let auth = Auth::tokens([("s3cret", vec!["admin".to_string()])])
//!     .public("Greeter.Hello")
//!     .require_scope("Admin.*", "admin");
//! let opts = GatewayOptions { auth: Some(auth), ..GatewayOptions::default() };
//! let gateway = Gateway::bind("0.0.0.0:8080", &service, opts).await?;
//! # gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod access;
mod dashboard;
mod events;
mod openapi;
mod ws;

pub use events::MAX_SUBSCRIPTIONS;

pub use access::Auth;

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

/// The gateway's settings, for a program's `--help`.
pub const ENVIRONMENT: &str = "\
Gateway settings:
  MICRO_GATEWAY_ADDRESS          where to listen (127.0.0.1:8080; non-loopback needs auth)
  MICRO_GATEWAY_TIMEOUT          each call, publication, registry read (10s)
  MICRO_GATEWAY_MAX_BODY         largest body or WebSocket message (1MiB)
  MICRO_GATEWAY_HEADERS          more request headers passed on as metadata (comma separated)
  MICRO_GATEWAY_MAX_CONNECTIONS  connections at once (1024)
  MICRO_GATEWAY_HEADER_TIMEOUT   time for a request head; idle keep-alive (30s)
  MICRO_GATEWAY_RATE_LIMIT       requests per second per client (0: none)
  MICRO_GATEWAY_CORS_ORIGINS     origins whose pages may call, besides loopback (* for any)
  MICRO_GATEWAY_TOKENS           fixed bearer tokens, each with its scopes (\"tok scope,tok2\")
  MICRO_GATEWAY_JWT_SECRET       HS256 secret of the JWTs to accept
  MICRO_GATEWAY_JWT_KEY          file with the RS256 public key (PEM) of the JWTs to accept
  MICRO_GATEWAY_PUBLIC           endpoints anyone may call (Greeter.Hello,Gateway.OpenAPI)
  MICRO_GATEWAY_SCOPES           scopes endpoints need (Greeter.*=greet,Event.*=publish)
  MICRO_GATEWAY_PATHS            v3: Micro v3's path routes too (/greeter/say/hello); api: not
  MICRO_GATEWAY_NAMESPACE        put before path routes' service names (go.micro.api)
  MICRO_GATEWAY_MCP              on: the MCP gateway at /mcp (default); off: not served
  MICRO_GATEWAY_DASHBOARD        on: the web dashboard at / (default); off: not served
  MICRO_MCP_TIMEOUT, MICRO_MCP_MAX_REPLIES, MICRO_MCP_SERVICES, MICRO_MCP_DENY,
  MICRO_MCP_SCOPES, MICRO_MCP_RATE_LIMIT
                                 the MCP gateway's call bound, stream replies, services shown,
                                 tools' scopes and rates (see micro mcp --help)";
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
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The largest request body; a larger one gets `413`. `MICRO_GATEWAY_MAX_BODY`, 1 MiB.
    pub max_body_bytes: usize,
    /// Each call's deadline (sent to the service). `MICRO_GATEWAY_TIMEOUT`, 10 s.
    pub timeout: Duration,
    /// Request headers passed to services as metadata, compared ignoring case.
    /// `MICRO_GATEWAY_HEADERS` (comma separated) adds to the default list.
    pub forward_headers: Vec<String>,
    /// Bearer-token authentication ([`Auth::from_env`]). Without it the gateway serves this
    /// machine's programs only; with it, any address may be bound.
    pub auth: Option<Auth>,
    /// Origins whose web pages may call the gateway (`https://app.example.com`), besides
    /// loopback pages; `*` for any. `MICRO_GATEWAY_CORS_ORIGINS`, comma separated.
    pub cors_origins: Vec<String>,
    /// Requests per second each client may make (its token's subject, else its address);
    /// 0 for no limit. `MICRO_GATEWAY_RATE_LIMIT`, 0.
    pub rate_limit: u32,
    /// Connections served at once; more wait to be accepted. `MICRO_GATEWAY_MAX_CONNECTIONS`,
    /// 1024.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and how long a kept-alive
    /// connection may wait for its next request. `MICRO_GATEWAY_HEADER_TIMEOUT`, 30 s.
    pub header_timeout: Duration,
    /// The most header lines a request may have (more: `431`). 100.
    pub max_headers: usize,
    /// Micro v3's path routes for every other path: `/greeter/say/hello` calls `greeter`'s
    /// `Say.Hello`, `/foo/bar` `foo`'s `Foo.Bar`, `/v1/foo/bar` `v1.foo`'s `Foo.Bar`,
    /// kebab-case segments camel-cased. `MICRO_GATEWAY_PATHS=v3`; off by default.
    pub path_routes: bool,
    /// Put before the service name of path routes (`go.micro.api` makes `/greeter/...` call
    /// `go.micro.api.greeter`). `MICRO_GATEWAY_NAMESPACE`; none by default.
    pub namespace: String,
    /// The MCP gateway at `/mcp` (every endpoint a tool for AI agents, `micro-mcp`), behind
    /// the same auth, rate and origin checks as the rest; `None` leaves it out.
    /// `MICRO_MCP_*` settings; `MICRO_GATEWAY_MCP=off` leaves it out.
    pub mcp: Option<micro_mcp::McpOptions>,
    /// The web dashboard at `/` (services, endpoint forms, events), behind the same auth
    /// (`Gateway.Dashboard`), rate and origin checks. `MICRO_GATEWAY_DASHBOARD=off` leaves it
    /// out; on by default.
    pub dashboard: bool,
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
            auth: None,
            cors_origins: Vec::new(),
            rate_limit: 0,
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            max_headers: 100,
            path_routes: false,
            namespace: String::new(),
            mcp: Some(micro_mcp::McpOptions::default()),
            dashboard: true,
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
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect()
        };
        if let Some(v) = var("MICRO_GATEWAY_HEADERS") {
            o.forward_headers.extend(list(&v));
        }
        if let Some(v) = var("MICRO_GATEWAY_CORS_ORIGINS") {
            o.cors_origins = list(&v);
        }
        let number = |name: &str, v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| micro::core::env::invalid(name, v, "a whole number"))
        };
        if let Some(v) = var("MICRO_GATEWAY_RATE_LIMIT") {
            o.rate_limit = number("MICRO_GATEWAY_RATE_LIMIT", &v)?;
        }
        if let Some(v) = var("MICRO_GATEWAY_MAX_CONNECTIONS") {
            o.max_connections = number("MICRO_GATEWAY_MAX_CONNECTIONS", &v)?.max(1) as usize;
        }
        if let Some(v) = var("MICRO_GATEWAY_HEADER_TIMEOUT") {
            o.header_timeout = micro::config::parse_duration(&v).ok_or_else(|| {
                micro::core::env::invalid("MICRO_GATEWAY_HEADER_TIMEOUT", &v, "a duration like 30s")
            })?;
        }
        if let Some(v) = var("MICRO_GATEWAY_PATHS") {
            o.path_routes = match v.trim() {
                "v3" => true,
                "api" => false,
                _ => {
                    return Err(micro::core::env::invalid(
                        "MICRO_GATEWAY_PATHS",
                        &v,
                        "v3 (path routes too) or api (only /api/...)",
                    ))
                }
            };
        }
        if let Some(v) = var("MICRO_GATEWAY_NAMESPACE") {
            o.namespace = v.trim().to_string();
        }
        o.mcp = match var("MICRO_GATEWAY_MCP").as_deref().map(str::trim) {
            None | Some("on") => Some(micro_mcp::McpOptions::from_env()?),
            Some("off") => None,
            Some(v) => {
                return Err(micro::core::env::invalid(
                    "MICRO_GATEWAY_MCP",
                    v,
                    "on (serve /mcp, the default) or off",
                ))
            }
        };
        o.dashboard = match var("MICRO_GATEWAY_DASHBOARD").as_deref().map(str::trim) {
            None | Some("on") => true,
            Some("off") => false,
            Some(v) => {
                return Err(micro::core::env::invalid(
                    "MICRO_GATEWAY_DASHBOARD",
                    v,
                    "on (serve the dashboard at /, the default) or off",
                ))
            }
        };
        o.auth = Auth::from_env()?;
        Ok(o)
    }
}

/// What every request shares.
struct Shared {
    service: Service,
    opts: GatewayOptions,
    limiter: Option<access::Limiter>,
    /// The OpenAPI document as last built, with the registry generation it was built at.
    openapi: std::sync::Mutex<Option<(u64, Bytes)>>,
    /// Bumped by every registry change the watch sees; `None` while nothing watches (the
    /// document is then built for every request).
    generation: Arc<std::sync::atomic::AtomicU64>,
    watched: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with the router: ends the registry watch.
    _unwatch: Option<tokio::sync::oneshot::Sender<()>>,
    /// Open event subscriptions (`GET /event/{topic}`), at most [`MAX_SUBSCRIPTIONS`].
    subscriptions: Arc<tokio::sync::Semaphore>,
    /// Cancelled by [`Gateway::shutdown`]: ends the streams that would otherwise stay open
    /// (event subscriptions, the dashboard's live updates).
    closing: tokio_util::sync::CancellationToken,
}

/// The gateway's routes over `service`'s client, registry and broker, as a tower service for
/// programs that serve it themselves.
pub fn router(service: &Service, opts: GatewayOptions) -> Router {
    app(service, opts).0
}

/// The routes, and what ends their open streams (the MCP gateway's, and the others').
fn app(
    service: &Service,
    opts: GatewayOptions,
) -> (
    Router,
    Option<tokio_util::sync::CancellationToken>,
    tokio_util::sync::CancellationToken,
) {
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
    let cors = cors(&opts);
    let mcp = opts.mcp.clone().map(|mcp_opts| {
        let mut mcp = micro_mcp::http_service(service, mcp_opts);
        if opts.auth.is_some() {
            // Any host name: tokens guard the gateway then, as on every other route.
            mcp.config.allowed_hosts.clear();
        }
        mcp
    });
    let shared = Arc::new(Shared {
        service: service.clone(),
        limiter: access::Limiter::new(opts.rate_limit),
        opts,
        openapi: std::sync::Mutex::new(None),
        generation,
        watched,
        _unwatch: unwatch,
        subscriptions: Arc::new(tokio::sync::Semaphore::new(MAX_SUBSCRIPTIONS)),
        closing: tokio_util::sync::CancellationToken::new(),
    });
    let closing = shared.closing.clone();
    let mut routes = Router::new();
    let mut stop_mcp = None;
    if let Some(mcp) = mcp {
        use tower::Layer as _;

        stop_mcp = Some(mcp.config.cancellation_token.clone());
        let bounded = tower_http::limit::RequestBodyLimitLayer::new(limit).layer(mcp);
        let admitted =
            axum::middleware::from_fn_with_state(shared.clone(), admit_mcp).layer(bounded);
        routes = routes.route_service("/mcp", admitted);
    }
    let routes = routes
        .route("/api/{service}/{endpoint}", post(call_json).get(call_query))
        .route(
            "/api/{service}/{kind}/{method}",
            post(call_json_split).get(call_query_split),
        )
        .route("/event/{topic}", post(publish).get(events::subscribe))
        .route("/openapi.json", get(openapi_document))
        .route("/services", get(services))
        .route("/services/{name}", get(describe))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(dashboard::routes(&shared))
        .fallback(by_path)
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            browser_checks,
        ))
        .layer(cors)
        .with_state(shared);
    (routes, stop_mcp, closing)
}

/// The MCP gateway is one more route: the same tokens, rate and origins (`Gateway.MCP` in
/// auth rules). The token's claims go with the request, for the tools' own scopes.
async fn admit_mcp(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match shared.admit(&caller, "Gateway.MCP").await {
        Ok(Some(claims)) => {
            request.extensions_mut().insert(claims);
        }
        Ok(None) => {}
        Err(e) => return failure(e),
    }
    next.run(request).await
}

/// Cross-origin requests from allowed pages: loopback pages, and the listed origins.
fn cors(opts: &GatewayOptions) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};

    let allowed = opts.cors_origins.clone();
    let mut headers = vec![http::header::CONTENT_TYPE, http::header::ACCEPT];
    headers.extend(
        opts.forward_headers
            .iter()
            .filter_map(|h| HeaderName::try_from(h.as_str()).ok()),
    );
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| access::origin_allowed(o, &allowed))
        }))
        .allow_methods([http::Method::GET, http::Method::POST])
        .allow_headers(headers)
        .max_age(Duration::from_secs(600))
}

/// What a handler knows of its caller.
struct Caller {
    headers: HeaderMap,
    peer: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(Caller {
            headers: parts.headers.clone(),
            peer,
        })
    }
}

impl Shared {
    /// Lets `caller` reach `endpoint`, or says why not (`401`, `403`, `429`).
    async fn admit(&self, caller: &Caller, endpoint: &str) -> Result<Option<micro::auth::Claims>> {
        access::admit(
            self.opts.auth.as_ref(),
            self.limiter.as_ref(),
            &caller.headers,
            caller.peer,
            endpoint,
        )
        .await
    }
}

/// Browsers' requests come from allowed pages only; without auth, requests must also name a
/// loopback host (no DNS rebinding) and come from no other site.
async fn browser_checks(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authenticated = shared.opts.auth.is_some();
    if !access::browser_allowed(request.headers(), &shared.opts.cors_origins, authenticated) {
        let why = if authenticated {
            "the page's origin may not call the gateway (see MICRO_GATEWAY_CORS_ORIGINS)"
        } else {
            "without authentication the gateway answers this machine's programs and allowed \
             pages only (loopback Host, allowed Origin)"
        };
        return failure(Error::forbidden(ID, why));
    }
    next.run(request).await
}

/// Errors that axum answers itself (413 for a large body, 405, a bad query string) as Go
/// Micro's error JSON, like every other error of the gateway; the dashboard's error pages
/// (HTML) stay pages.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let content_type = response.headers().get(http::header::CONTENT_TYPE);
    let answered = content_type.is_some_and(|v| {
        v.as_bytes().starts_with(JSON.as_bytes()) || v.as_bytes().starts_with(b"text/html")
    });
    if !(status.is_client_error() || status.is_server_error()) || answered {
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
    stop_mcp: Option<tokio_util::sync::CancellationToken>,
    closing: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Listens on `addr` (port 0 for any) and serves the gateway over `service`. Without
    /// [`GatewayOptions::auth`] only loopback addresses may be bound. The service's broker is
    /// connected here, for `/event`.
    pub async fn bind(addr: &str, service: &Service, opts: GatewayOptions) -> Result<Gateway> {
        // Checked before binding: a public port is never opened without auth, even for a
        // moment.
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| Error::bad_request(ID, format!("cannot resolve {addr}: {e}")))?
            .collect();
        let public = resolved.iter().any(|a| !a.ip().is_loopback());
        if resolved.is_empty() || (public && opts.auth.is_none()) {
            return Err(Error::bad_request(
                ID,
                format!(
                    "refusing to serve {addr} without authentication: set MICRO_GATEWAY_TOKENS, \
                     MICRO_GATEWAY_JWT_SECRET or MICRO_GATEWAY_JWT_KEY, or serve a loopback \
                     address (127.0.0.1, ::1)"
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
        let limits = (opts.max_connections, opts.header_timeout, opts.max_headers);
        let (app, stop_mcp, closing) = app(service, opts);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            // A dropped `Gateway` (no shutdown asked for) keeps serving.
            if stopped.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let task = tokio::spawn(serve(listener, app, limits, stopped));
        Ok(Gateway {
            local_addr,
            stop,
            stop_mcp,
            closing,
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
        // MCP's event streams stay open until told to end.
        if let Some(stop_mcp) = &self.stop_mcp {
            stop_mcp.cancel();
        }
        self.closing.cancel();
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

/// Accepts connections until `stopped`, at most `max_connections` at once, each with a
/// deadline for every request head (which also closes idle kept-alive connections); then
/// lets requests under way finish. Aborting the task closes every connection.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    (max_connections, header_timeout, max_headers): (usize, Duration, usize),
    stopped: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    // HTTP/1.1 (with WebSocket upgrades), what browsers, PHP and curl speak to a plain-text
    // gateway.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_headers(max_headers)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            () = &mut stopped => break,
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next() => continue,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, peer, slot)) = accepted else {
            continue;
        };
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(app);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            // The head deadline starts once the first byte is in: a client that sends
            // nothing is cut off here.
            let mut first = [0u8; 1];
            let arrived = tokio::time::timeout(header_timeout, stream.peek(&mut first)).await;
            if !matches!(arrived, Ok(Ok(1))) {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "a gateway connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection, once a slot is free; `None` (after a pause) when accepting failed.
async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer, slot))
        }
        Err(e) => {
            // Usually out of file descriptors: pause rather than spin.
            tracing::warn!(error = %e, "the gateway could not accept a connection");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
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
    caller: Caller,
    body: Bytes,
) -> Response {
    call(&shared, service, endpoint, &caller, body).await
}

async fn call_json_split(
    State(shared): State<Arc<Shared>>,
    Path((service, kind, method)): Path<(String, String, String)>,
    caller: Caller,
    body: Bytes,
) -> Response {
    call(&shared, service, format!("{kind}.{method}"), &caller, body).await
}

async fn call_query(
    State(shared): State<Arc<Shared>>,
    Path((service, endpoint)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    caller: Caller,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    by_get(shared, service, endpoint, query, caller, upgrade).await
}

/// A `GET` on an endpoint: a stream when it asks for a WebSocket, else a call with the query
/// string as the request.
async fn by_get(
    shared: Arc<Shared>,
    service: String,
    endpoint: String,
    query: Vec<(String, String)>,
    caller: Caller,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => websocket(shared, service, endpoint, query, &caller, upgrade).await,
        Err(_) => {
            let body = Bytes::from(query_json(query).to_string());
            call(&shared, service, endpoint, &caller, body).await
        }
    }
}

async fn call_query_split(
    State(shared): State<Arc<Shared>>,
    Path((service, kind, method)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    caller: Caller,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let endpoint = format!("{kind}.{method}");
    by_get(shared, service, endpoint, query, caller, upgrade).await
}

/// A stream over WebSocket: opened before the upgrade, so that an unknown service or a
/// refused stream is an HTTP error; then carried by [`ws::bridge`].
async fn websocket(
    shared: Arc<Shared>,
    service: String,
    endpoint: String,
    query: Vec<(String, String)>,
    caller: &Caller,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(e) = check_endpoint(&endpoint) {
        return failure(e);
    }
    if let Err(e) = shared.admit(caller, &endpoint).await {
        return failure(e);
    }
    let first = (!query.is_empty()).then(|| query_json(query));
    let mut opener = micro::Request::new(());
    *opener.metadata_mut() = metadata_of(&caller.headers, &shared.opts.forward_headers);
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

/// Every path no other route takes: Micro v3's path routes when they are on, else `404`.
async fn by_path(
    State(shared): State<Arc<Shared>>,
    method: http::Method,
    uri: http::Uri,
    Query(query): Query<Vec<(String, String)>>,
    caller: Caller,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    let route = shared
        .opts
        .path_routes
        .then(|| route_of(uri.path(), &shared.opts.namespace))
        .flatten();
    let Some((service, endpoint)) = route else {
        return failure(Error::not_found(
            ID,
            "no such route: see /services, /api/{service}/{Type.Method}, /event/{topic}",
        ));
    };
    match method {
        http::Method::GET => by_get(shared, service, endpoint, query, caller, upgrade).await,
        http::Method::POST => call(&shared, service, endpoint, &caller, body).await,
        _ => failure(Error::new(ID, 405, "path routes take GET and POST")),
    }
}

/// Micro v3's path resolution: the service and endpoint a path names, if any.
fn route_of(path: &str, namespace: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let versioned =
        |p: &str| p.len() > 1 && p.starts_with('v') && p[1..].chars().all(|c| c.is_ascii_digit());
    let (service, handler, rest) = match parts.as_slice() {
        [] => return None,
        [version, name, rest @ ..] if versioned(version) => {
            (format!("{version}.{name}"), *name, rest)
        }
        [name, rest @ ..] => (name.to_string(), *name, rest),
    };
    let endpoint = match rest {
        [] => format!("{}.Call", camel(handler)),
        [method] => format!("{}.{}", camel(handler), camel(method)),
        [.., kind, method] => format!("{}.{}", camel(kind), camel(method)),
    };
    let service = match namespace {
        "" => service,
        ns => format!("{ns}.{service}"),
    };
    Some((service, endpoint))
}

/// `say-hello` and `say_hello` as `SayHello`; `hello` as `Hello`.
fn camel(segment: &str) -> String {
    segment
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
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
    caller: &Caller,
    mut body: Bytes,
) -> Response {
    if let Err(e) = check_endpoint(&endpoint) {
        return failure(e);
    }
    if let Err(e) = shared.admit(caller, &endpoint).await {
        return failure(e);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        body = Bytes::from_static(b"{}");
    }
    let metadata = metadata_of(&caller.headers, &shared.opts.forward_headers);
    let wants_events = caller
        .headers
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
    let late = move || Error::timeout(ID, format!("the stream did not end within {limit:?}"));
    // A stream that fails before its first reply (an unknown endpoint, a refused request)
    // is answered with the error's HTTP status, as a call would be.
    let mut stream = stream;
    let first = match tokio::time::timeout_at(deadline, stream.recv()).await {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => return failure(e),
        Err(_) => return failure(late()),
    };
    let reply = |Json(reply): Json<Value>| Event::default().data(reply.to_string());
    let rest = first.is_some().then_some(stream);
    let head = futures_util::stream::iter(first.map(reply));
    // `Some(stream)` while replies may come; an error ends it after one `error` event.
    let tail = futures_util::stream::unfold(rest, move |state| async move {
        let mut stream = state?;
        let next = tokio::time::timeout_at(deadline, stream.recv()).await;
        let event = match next {
            Ok(Ok(Some(next))) => return Some((reply(next), Some(stream))),
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => e,
            Err(_) => late(),
        };
        Some((Event::default().event("error").data(event.to_json()), None))
    });
    let events = head.chain(tail).map(Ok::<_, std::convert::Infallible>);
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
    caller: Caller,
    body: Bytes,
) -> Response {
    if let Err(e) = shared.admit(&caller, &format!("Event.{topic}")).await {
        return failure(e);
    }
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

async fn services(State(shared): State<Arc<Shared>>, caller: Caller) -> Response {
    if let Err(e) = shared.admit(&caller, "Gateway.Services").await {
        return failure(e);
    }
    let registry = shared.service.registry();
    match bounded(&shared.opts, "listing services", registry.list_services()).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => failure(e),
    }
}

async fn describe(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    caller: Caller,
) -> Response {
    if let Err(e) = shared.admit(&caller, "Gateway.Services").await {
        return failure(e);
    }
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
async fn openapi_document(State(shared): State<Arc<Shared>>, caller: Caller) -> Response {
    use std::sync::atomic::Ordering;

    if let Err(e) = shared.admit(&caller, "Gateway.OpenAPI").await {
        return failure(e);
    }
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
            let auth = shared.opts.auth.as_ref();
            let doc = openapi::document(&services, auth.is_some(), &|endpoint| {
                auth.is_some_and(|a| a.is_public(endpoint))
            });
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

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn micro_v3_path_routes() {
        let route = |p: &str, ns: &str| route_of(p, ns).map(|(s, e)| format!("{s} {e}"));
        assert_eq!(
            route("/greeter/say/hello", ""),
            Some("greeter Say.Hello".into())
        );
        assert_eq!(route("/foo/bar", ""), Some("foo Foo.Bar".into()));
        assert_eq!(route("/v1/foo/bar", ""), Some("v1.foo Foo.Bar".into()));
        assert_eq!(route("/foo", ""), Some("foo Foo.Call".into()));
        assert_eq!(
            route("/greeter/say-hello/to-all", ""),
            Some("greeter SayHello.ToAll".into())
        );
        assert_eq!(
            route("/greeter/Greeter/Hello", "go.micro.api"),
            Some("go.micro.api.greeter Greeter.Hello".into())
        );
        assert_eq!(route("/", ""), None);
    }
}
