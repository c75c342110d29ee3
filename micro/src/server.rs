//! The RPC server: serves handlers over a transport, keeps its service registered, and stops
//! gracefully.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use micro_core::registry::{Endpoint, RegisterOptions};
use micro_core::rpc::{CallKind, StreamSlot};
use micro_core::transport::{
    Admitted, CallHandler, EndpointKind, Listener, Load, LoadLimits, Message as TransportMessage,
    Socket,
};
use micro_core::{rpc, Error, Metadata, Node, Registry, Result, Service, Transport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::BoxCloneSyncService;
use tower::{Service as TowerService, ServiceExt};

use crate::codec::Codecs;
use crate::handler::{finish_stream, EndpointFn, Handler, SharedSocket, StreamStart};
use crate::headers;
use crate::BoxFuture;
use micro_core::rpc::ServerCall;

/// The handler path as a tower service; layers wrap it.
pub type HandlerService = BoxCloneSyncService<ServerCall, rpc::Response, Error>;

/// Server settings (Go Micro's flag names in brackets).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The service name (`server_name`).
    pub name: String,
    /// The service version, `latest` by default.
    pub version: String,
    /// Service metadata.
    pub metadata: BTreeMap<String, String>,
    /// This node's own metadata (a metrics URL, a zone), registered with the node next to
    /// what the server sets itself (`broker`, `registry`, `server`, `transport`,
    /// `protocol`, which win). Unlike service metadata, every registry carries it (mDNS
    /// included), as Go Micro's `server.Metadata`.
    pub node_metadata: BTreeMap<String, String>,
    /// The node id, `<name>-<uuid>`.
    pub id: String,
    /// Where to listen (`server_address`), `127.0.0.1:0` by default.
    pub address: String,
    /// The address to register instead of the bound one (`server_advertise`).
    pub advertise: Option<String>,
    /// How long a registration lives (`register_ttl`, default 90 s).
    pub register_ttl: Duration,
    /// How often the registration is renewed (`register_interval`, default 30 s).
    pub register_interval: Duration,
    /// How long a stop waits for calls in flight; handlers still running then are cancelled.
    pub drain_wait: Duration,
    /// How long one register, renewal or deregister may take before it counts as failed (a
    /// registry that hangs must not hold a start or a stop).
    pub registry_timeout: Duration,
    /// Calls in flight and request bytes held at once (`server_max_calls`,
    /// `server_max_request_bytes`); past either, a call gets a fast `503`.
    pub limits: LoadLimits,
}

impl ServerOptions {
    /// Defaults for a service called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        ServerOptions {
            id: format!("{name}-{}", uuid::Uuid::new_v4()),
            name,
            version: "latest".into(),
            metadata: BTreeMap::new(),
            node_metadata: BTreeMap::new(),
            address: "127.0.0.1:0".into(),
            advertise: None,
            register_ttl: Duration::from_secs(90),
            register_interval: Duration::from_secs(30),
            drain_wait: Duration::from_secs(10),
            registry_timeout: Duration::from_secs(10),
            limits: LoadLimits::default(),
        }
    }
}

/// The RPC server of a service.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ServerOptions,
    registry: Arc<dyn Registry>,
    transport: Arc<dyn Transport>,
    node_metadata: BTreeMap<String, String>,
    codecs: Codecs,
    routes: Arc<HashMap<String, EndpointFn>>,
    endpoints: Vec<Endpoint>,
    // What the handlers' protos say of them, for the transport's reflection.
    file_descriptor_sets: Vec<Bytes>,
    service: HandlerService,
    running: Mutex<Option<Running>>,
    // Held by start and stop for their whole run, so that two of them never interleave.
    lifecycle: tokio::sync::Mutex<()>,
    calls: TaskTracker,
    // Calls in flight and their request bytes, within `opts.limits`.
    load: Arc<Load>,
    // Cancelled when the drain wait of a stop runs out: handlers still running are dropped.
    cancel: Mutex<CancellationToken>,
}

struct Running {
    listener: Arc<dyn Listener>,
    record: Service,
    renew: JoinHandle<()>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.opts.name)
            .field("id", &self.inner.opts.id)
            .field("address", &rpc::Server::address(self))
            .finish()
    }
}

/// Everything a [`Server`] is built from.
pub(crate) struct ServerParts {
    pub(crate) opts: ServerOptions,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) broker_name: String,
    pub(crate) codecs: Codecs,
    pub(crate) handlers: Vec<Handler>,
    pub(crate) extra_endpoints: Vec<Endpoint>,
}

impl Server {
    pub(crate) fn new(
        parts: ServerParts,
        wrap: impl FnOnce(HandlerService) -> HandlerService,
    ) -> Self {
        let mut routes = HashMap::new();
        let mut endpoints = Vec::new();
        let mut file_descriptor_sets: Vec<Bytes> = Vec::new();
        for h in parts.handlers.into_iter().chain([crate::debug::handler()]) {
            // Handlers generated from one build share their set: keep one copy.
            if let Some(set) = h.file_descriptor_set {
                if !file_descriptor_sets.contains(&set) {
                    file_descriptor_sets.push(set);
                }
            }
            for (endpoint, f) in h.endpoints {
                routes.insert(endpoint.name.clone(), f);
                endpoints.push(endpoint);
            }
        }
        endpoints.extend(parts.extra_endpoints);
        let routes = Arc::new(routes);
        let service = wrap(HandlerService::new(Route {
            routes: routes.clone(),
            service: parts.opts.name.clone(),
            codecs: parts.codecs.clone(),
        }));
        let protocol = parts.transport.protocol();
        let mut node_metadata = parts.opts.node_metadata.clone();
        node_metadata.extend(
            [
                ("broker", parts.broker_name.as_str()),
                ("registry", parts.registry.name()),
                ("server", protocol),
                ("transport", parts.transport.name()),
                ("protocol", protocol),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Server {
            inner: Arc::new(Inner {
                load: Load::new(parts.opts.name.clone(), parts.opts.limits),
                opts: parts.opts,
                registry: parts.registry,
                transport: parts.transport,
                node_metadata,
                codecs: parts.codecs,
                routes,
                endpoints,
                file_descriptor_sets,
                service,
                running: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                calls: TaskTracker::new(),
                cancel: Mutex::new(CancellationToken::new()),
            }),
        }
    }

    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The server's settings.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.opts
    }

    /// The transport's name (`http`, `grpc`).
    pub fn transport_name(&self) -> &str {
        self.inner.transport.name()
    }

    /// The service as registered (with this node), once started.
    pub fn registration(&self) -> Option<Service> {
        self.running().as_ref().map(|r| r.record.clone())
    }

    fn record(&self, address: String) -> Service {
        let o = &self.inner.opts;
        Service {
            name: o.name.clone(),
            version: o.version.clone(),
            metadata: o.metadata.clone(),
            endpoints: self.inner.endpoints.clone(),
            nodes: vec![Node {
                id: o.id.clone(),
                address,
                metadata: self.inner.node_metadata.clone(),
            }],
        }
    }
}

#[async_trait::async_trait]
impl rpc::Server for Server {
    async fn start(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.running().is_some() {
            return Ok(());
        }
        let o = &self.inner.opts;
        *self
            .inner
            .cancel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = CancellationToken::new();
        // Serve first, register after: no caller finds this node before it answers.
        let handler = Arc::new(Serving(Arc::downgrade(&self.inner)));
        let listener: Arc<dyn Listener> = self
            .inner
            .transport
            .listen(&o.address, handler)
            .await
            .map_err(|e| {
                Error::internal(
                    "micro.server",
                    format!("{}: cannot listen on {}: {}", o.name, o.address, e.detail),
                )
            })?
            .into();
        let address = advertised(o.advertise.as_deref(), &listener.local_addr());
        let record = self.record(address.clone());
        let registry = self.inner.registry.clone();
        let opts = RegisterOptions {
            ttl: o.register_ttl,
        };
        if let Err(e) = bounded(o.registry_timeout, registry.register(&record, opts)).await {
            tracing::error!(
                service = %o.name, registry = registry.name(), error = %e,
                "cannot register; serving anyway and retrying"
            );
        }
        let renew = tokio::spawn(renew_loop(
            registry,
            record.clone(),
            opts,
            o.register_interval,
            o.registry_timeout,
        ));
        listener.set_serving(true);
        tracing::debug!(service = %o.name, id = %o.id, %address, transport = self.inner.transport.name(), "serving");
        *self.running() = Some(Running {
            listener,
            record,
            renew,
        });
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let Some(running) = self.running().take() else {
            return Ok(());
        };
        let o = &self.inner.opts;
        running.renew.abort();
        running.listener.set_serving(false);
        // Deregister first, so that callers stop choosing this node while it drains.
        let deregister = self.inner.registry.deregister(&running.record);
        if let Err(e) = bounded(o.registry_timeout, deregister).await {
            tracing::warn!(service = %o.name, error = %e, "cannot deregister");
        }
        self.inner.calls.close();
        let drain = async {
            tokio::join!(running.listener.shutdown(), self.inner.calls.wait());
        };
        if tokio::time::timeout(o.drain_wait, drain).await.is_err() {
            tracing::warn!(
                service = %o.name, in_flight = self.inner.calls.len(),
                "calls still running after the drain wait of {:?}; cancelling them", o.drain_wait
            );
            self.inner
                .cancel
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .cancel();
            // Cancelled handlers end at their next await; their callers get an error.
            let _ = tokio::time::timeout(o.drain_wait, self.inner.calls.wait()).await;
        }
        self.inner.calls.reopen();
        tracing::info!(service = %o.name, id = %o.id, "stopped");
        Ok(())
    }

    fn address(&self) -> Option<String> {
        self.running()
            .as_ref()
            .and_then(|r| r.record.nodes.first().map(|n| n.address.clone()))
    }
}

/// The address to register: the advertised one, else the bound one with an unspecified host
/// replaced by this machine's first private address (loopback when there is none).
fn advertised(advertise: Option<&str>, bound: &str) -> String {
    if let Some(a) = advertise {
        return a.to_string();
    }
    let Ok(addr) = bound.parse::<SocketAddr>() else {
        return bound.to_string();
    };
    if !addr.ip().is_unspecified() {
        return bound.to_string();
    }
    let ip = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| matches!(ip, IpAddr::V4(v4) if v4.is_private()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    SocketAddr::new(ip, addr.port()).to_string()
}

/// `op`, failing with a 408 naming the registry wait once `limit` has passed.
async fn bounded(limit: Duration, op: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(Error::timeout(
            "micro.server",
            format!("the registry did not answer within {limit:?}"),
        ))
    })
}

async fn renew_loop(
    registry: Arc<dyn Registry>,
    record: Service,
    opts: RegisterOptions,
    interval: Duration,
    limit: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        let wait = if failures == 0 {
            interval
        } else {
            // Retry sooner while the registry is away, growing up to the interval.
            interval.min(Duration::from_millis(250) * failures.min(40))
        };
        tokio::time::sleep(wait).await;
        match bounded(limit, registry.register(&record, opts)).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(service = %record.name, "registered again");
                }
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(service = %record.name, registry = registry.name(), error = %e, "cannot renew the registration");
            }
        }
    }
}

/// What the server gives its listener. It holds the server weakly, so a listener never keeps
/// a dropped server alive; every call counts as in flight for the drain, and a stop whose
/// drain wait ran out cancels it.
struct Serving(Weak<Inner>);

impl CallHandler for Serving {
    fn kind(&self, endpoint: &str) -> Option<EndpointKind> {
        let inner = self.0.upgrade()?;
        match inner.routes.get(endpoint)? {
            EndpointFn::Unary(_) => Some(EndpointKind::Unary),
            EndpointFn::ServerStream(_) | EndpointFn::Stream(_) => Some(EndpointKind::Stream),
        }
    }

    fn admit(&self) -> Result<Admitted> {
        match self.0.upgrade() {
            Some(inner) => inner.load.admit(),
            None => Err(Error::new("micro.server", 503, "the server is gone")),
        }
    }

    fn unary(
        &self,
        req: rpc::Request,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Result<rpc::Response>> {
        let Some(inner) = self.0.upgrade() else {
            // No handler ran: retryable, like the shed and draining answers.
            return Box::pin(async { Err(Error::new("micro.server", 503, "the server is gone")) });
        };
        let calls = inner.calls.clone();
        let cancel = inner.cancel_token();
        // Kept for error ids, `<service>.<endpoint>`, which are made only when there is one.
        let endpoint = req.endpoint.clone();
        Box::pin(calls.track_future(async move {
            let call = serve_unary(&inner, req, timeout, &endpoint);
            let id = || format!("{}.{endpoint}", inner.opts.name);
            let result = tokio::select! {
                ended = AssertUnwindSafe(call).catch_unwind() => ended.unwrap_or_else(|_| {
                    tracing::error!(id = %id(), "a handler panicked; its caller gets an error");
                    Err(Error::internal(id(), "the handler panicked"))
                }),
                _ = cancel.cancelled() => {
                    tracing::warn!(id = %id(), "cancelled a handler still running at the end of the drain wait");
                    Err(Error::new(id(), 503, "the server stopped before the handler finished"))
                }
            };
            result.map_err(|mut e| {
                if e.id.is_empty() {
                    e.id = id();
                }
                e
            })
        }))
    }

    fn stream(&self, socket: Box<dyn Socket>) -> BoxFuture<'static, ()> {
        let Some(inner) = self.0.upgrade() else {
            // The server is gone: dropping the socket ends the stream with an error.
            return Box::pin(async {});
        };
        let calls = inner.calls.clone();
        let cancel = inner.cancel_token();
        Box::pin(calls.track_future(guarded(cancel, serve_socket(inner, socket))))
    }

    fn file_descriptor_sets(&self) -> Vec<Bytes> {
        self.0
            .upgrade()
            .map(|inner| inner.file_descriptor_sets.clone())
            .unwrap_or_default()
    }
}

/// Runs one stream; a handler that panics ends only its own stream (its socket is dropped,
/// which ends it with an error for the caller) and is logged. A stop whose drain wait ran out
/// cancels it the same way.
async fn guarded(cancel: CancellationToken, serve: impl Future<Output = ()>) {
    tokio::select! {
        ended = AssertUnwindSafe(serve).catch_unwind() => {
            if ended.is_err() {
                tracing::error!("a handler panicked; its caller gets an error");
            }
        }
        _ = cancel.cancelled() => tracing::warn!("cancelled a handler still running at the end of the drain wait"),
    }
}

impl Inner {
    fn cancel_token(&self) -> CancellationToken {
        self.cancel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

async fn serve_socket(inner: Arc<Inner>, mut socket: Box<dyn Socket>) {
    let first = match socket.recv().await {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(peer = %socket.remote_addr(), error = %e, "bad stream from peer");
            return;
        }
    };
    serve_stream(&inner, socket, first).await;
}

fn endpoint_of(header: &Metadata) -> Option<String> {
    headers::get(header, headers::ENDPOINT)
        .or_else(|| headers::get(header, headers::METHOD))
        .map(str::to_string)
}

fn deadline_of(header: &Metadata) -> Result<Option<Instant>> {
    match headers::get(header, headers::TIMEOUT) {
        None => Ok(None),
        Some(ns) => {
            let ns: u64 = ns.trim().parse().map_err(|_| {
                Error::bad_request(
                    "micro.server",
                    format!("Timeout header {ns:?} is not a number of nanoseconds"),
                )
            })?;
            Ok(Some(Instant::now() + Duration::from_nanos(ns)))
        }
    }
}

/// The call a request opens, checked before any layer sees it: it names an endpoint this
/// server has (else a 404, so that a caller cannot make layers key on made-up names), in a
/// codec it speaks, and carries the server's own service name whatever the caller said.
fn server_call(
    inner: &Inner,
    mut request: rpc::Request,
    timeout: Option<Duration>,
) -> Result<(ServerCall, EndpointFn)> {
    let name = &inner.opts.name;
    if request.endpoint.is_empty() {
        return Err(Error::bad_request(
            name.clone(),
            "the request names no endpoint: set the Micro-Endpoint header (e.g. Greeter.Hello)",
        ));
    }
    let endpoint = &request.endpoint;
    let f = inner.routes.get(endpoint).cloned().ok_or_else(|| {
        Error::not_found(
            format!("{name}.{endpoint}"),
            format!("service {name} has no endpoint {endpoint}"),
        )
    })?;
    let codec = inner.codecs.get(&request.content_type)?;
    request.service.clone_from(name);
    request.content_type = codec.content_type().to_string();
    let call = ServerCall {
        request,
        deadline: timeout.map(|t| Instant::now() + t),
        codec,
        kind: CallKind::Unary,
    };
    Ok((call, f))
}

/// The typed request a stream's opening message carries.
fn opening_request(header: &Metadata) -> Result<(rpc::Request, Option<Duration>)> {
    let request = rpc::Request {
        id: headers::get(header, headers::STREAM)
            .unwrap_or_default()
            .to_string(),
        service: headers::get(header, headers::SERVICE)
            .unwrap_or_default()
            .to_string(),
        endpoint: endpoint_of(header).unwrap_or_default(),
        proto_service: None,
        content_type: headers::get(header, headers::CONTENT_TYPE)
            .unwrap_or_default()
            .to_string(),
        metadata: headers::metadata_of(header),
        body: bytes::Bytes::new(),
    };
    let timeout = deadline_of(header)?.map(|d| d.saturating_duration_since(Instant::now()));
    Ok((request, timeout))
}

/// Fills in the error id of a handler's error: `<service>.<endpoint>`.
fn with_id(mut e: Error, inner: &Inner, endpoint: &str) -> Error {
    if e.id.is_empty() {
        e.id = format!("{}.{endpoint}", inner.opts.name);
    }
    e
}

/// A unary call, from the listener to the handler path and back.
async fn serve_unary(
    inner: &Inner,
    request: rpc::Request,
    timeout: Option<Duration>,
    endpoint: &str,
) -> Result<rpc::Response> {
    let (call, f) = server_call(inner, request, timeout)?;
    match f {
        EndpointFn::Unary(_) => run_handler(inner, call, endpoint).await,
        EndpointFn::ServerStream(_) | EndpointFn::Stream(_) => {
            let endpoint = &call.request.endpoint;
            Err(Error::bad_request(
                format!("{}.{endpoint}", inner.opts.name),
                format!("{endpoint} is a streaming endpoint: open a stream to call it"),
            ))
        }
    }
}

/// Runs a call through the handler path, bounded by the caller's deadline.
async fn run_handler(inner: &Inner, call: ServerCall, endpoint: &str) -> Result<rpc::Response> {
    let Some(deadline) = call.deadline else {
        return inner.service.clone().oneshot(call).await;
    };
    let fut = inner.service.clone().oneshot(call);
    tokio::time::timeout_at(deadline.into(), fut)
        .await
        .unwrap_or_else(|_| {
            Err(Error::timeout(
                format!("{}.{endpoint}", inner.opts.name),
                "the handler did not finish within the caller's timeout",
            ))
        })
}

/// The innermost handler service: routes a call to its endpoint, unary or stream.
#[derive(Clone)]
struct Route {
    routes: Arc<HashMap<String, EndpointFn>>,
    service: String,
    codecs: Codecs,
}

impl TowerService<ServerCall> for Route {
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let endpoint = &call.request.endpoint;
        let id = || format!("{}.{endpoint}", self.service);
        // The server routes only calls to endpoints it has; a layer may still send another.
        let refuse = |e: Error| -> Self::Future { Box::pin(async move { Err(e) }) };
        let slot = match (&call.kind, self.routes.get(endpoint)) {
            (CallKind::Unary, Some(EndpointFn::Unary(f))) => return f(call),
            (CallKind::ServerStream(slot), Some(EndpointFn::ServerStream(_)))
            | (CallKind::Stream(slot), Some(EndpointFn::Stream(_))) => slot.clone(),
            (_, None) => {
                let detail = format!("service {} has no endpoint {endpoint}", self.service);
                return refuse(Error::not_found(id(), detail));
            }
            (_, Some(_)) => {
                let detail = format!("{endpoint} was called as another kind of call than it is");
                return refuse(Error::bad_request(id(), detail));
            }
        };
        let (Some(EndpointFn::ServerStream(f) | EndpointFn::Stream(f)), Some(socket)) =
            (self.routes.get(endpoint), slot.take())
        else {
            return refuse(Error::internal(id(), "the stream was taken by a layer"));
        };
        let start = StreamStart {
            socket,
            codec: call.codec,
            codecs: self.codecs.clone(),
            deadline: call.deadline,
            request: call.request,
        };
        let run = f(start);
        Box::pin(async move {
            run.await?;
            Ok(rpc::Response::default())
        })
    }
}

/// Serves a stream: the opening message names the endpoint; for a server stream its one
/// request is read first; then the call goes down the handler path like a unary one (a layer
/// may refuse it there), and its result ends the stream: EOS, or the error.
async fn serve_stream(inner: &Inner, mut socket: Box<dyn Socket>, first: TransportMessage) {
    let stream_id = headers::get(&first.header, headers::STREAM)
        .unwrap_or_default()
        .to_string();
    let endpoint = endpoint_of(&first.header).unwrap_or_default();
    let content_type = headers::get(&first.header, headers::CONTENT_TYPE)
        .unwrap_or_default()
        .to_string();
    let opened =
        opening_request(&first.header).and_then(|(req, timeout)| server_call(inner, req, timeout));
    let (mut call, f) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let e = with_id(e, inner, &endpoint);
            finish_stream(&mut *socket, &stream_id, &content_type, Err(e)).await;
            return;
        }
    };
    let reply_type = call.codec.content_type().to_string();
    if let EndpointFn::Unary(_) = f {
        let e = Error::bad_request(
            format!("{}.{endpoint}", inner.opts.name),
            format!("{endpoint} is a unary endpoint: call it, do not open a stream"),
        );
        finish_stream(&mut *socket, &stream_id, &reply_type, Err(e)).await;
        return;
    }
    if let EndpointFn::ServerStream(_) = f {
        match read_request(inner, &mut *socket, &call).await {
            Ok((codec, body)) => {
                call.codec = codec;
                call.request.body = body;
            }
            Err(e) => {
                let e = with_id(e, inner, &endpoint);
                finish_stream(&mut *socket, &stream_id, &reply_type, Err(e)).await;
                return;
            }
        }
    }
    // The endpoint gets a handle on the socket; the server keeps it too, to end the stream
    // whether the endpoint ran or a layer refused the call.
    let shared: SharedSocket = Arc::new(tokio::sync::Mutex::new(socket));
    let slot = StreamSlot::new(Box::new(SocketHandle(shared.clone())));
    call.kind = match f {
        EndpointFn::ServerStream(_) => CallKind::ServerStream(slot),
        _ => CallKind::Stream(slot),
    };
    // A stream's deadline is its handler's to keep (it runs for as long as it sends).
    let result = inner.service.clone().oneshot(call).await.map(drop);
    let result = result.map_err(|e| with_id(e, inner, &endpoint));
    let mut socket = shared.lock().await;
    finish_stream(&mut **socket, &stream_id, &reply_type, result).await;
}

/// The endpoint's handle on a stream socket the server also holds.
#[derive(Debug)]
struct SocketHandle(SharedSocket);

#[async_trait::async_trait]
impl Socket for SocketHandle {
    async fn send(&mut self, msg: TransportMessage) -> Result<()> {
        self.0.lock().await.send(msg).await
    }

    async fn recv(&mut self) -> Result<Option<TransportMessage>> {
        self.0.lock().await.recv().await
    }

    async fn close(&mut self) -> Result<()> {
        self.0.lock().await.close().await
    }

    fn remote_addr(&self) -> String {
        self.0
            .try_lock()
            .map(|s| s.remote_addr())
            .unwrap_or_default()
    }
}

/// The one request of a server stream.
async fn read_request(
    inner: &Inner,
    socket: &mut dyn Socket,
    call: &ServerCall,
) -> Result<(Arc<dyn micro_core::Codec>, bytes::Bytes)> {
    let (codec, body) = crate::client::recv_stream_message(socket, &inner.codecs)
        .await?
        .ok_or_else(|| {
            Error::bad_request(
                format!("{}.{}", inner.opts.name, call.request.endpoint),
                "the stream ended before its request arrived",
            )
        })?;
    let same = codec.content_type() == call.codec.content_type();
    Ok((if same { call.codec.clone() } else { codec }, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_what_was_asked_or_a_concrete_address() {
        assert_eq!(advertised(Some("10.0.0.5:80"), "0.0.0.0:80"), "10.0.0.5:80");
        assert_eq!(advertised(None, "127.0.0.1:8080"), "127.0.0.1:8080");
        let a: SocketAddr = advertised(None, "0.0.0.0:8080")
            .parse()
            .expect("socket address");
        assert!(!a.ip().is_unspecified());
        assert_eq!(a.port(), 8080);
    }
}
