//! The server side: [`GrpcListener`] serves gRPC over HTTP/2 (plaintext or TLS) on one port,
//! answers `grpc.health.v1.Health` itself, answers unary calls with the server's
//! [`CallHandler`] through tonic's `Grpc::unary`, and hands each streaming call to it as a
//! [`Socket`].

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use micro_core::headers::{EOS, ERROR, STREAM};
use micro_core::transport::{
    Admitted, CallHandler, Connections, EndpointKind, Listener, Message, Socket,
};
use micro_core::{headers, rpc, Error, GrpcCode, Metadata, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codec::{CompressionEncoding, Streaming};
use tonic::metadata::MetadataMap;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::util::BoxCloneSyncService;
use tower_service::Service as _;

use crate::codec::RawCodec;
use crate::preface::read_preface;
use crate::tls::explain_server_handshake;
use crate::wire::{
    endpoint_of_path, error_of, error_of_status, is_eos, metadata_of_headers, micro_content_type,
    micro_timeout, normalize_status, parse_grpc_timeout, reply_headers, status_of_error,
};
use crate::{GrpcOptions, ID};

/// How many replies of one call may wait to be written before `send` waits.
const REPLY_BUFFER: usize = 16;
/// How long a new connection may take to show its first byte, finish a TLS handshake, and
/// send the HTTP/2 preface.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The standard health service, which the listener answers itself.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Server reflection, both versions in use (grpcurl speaks v1, most other tools v1alpha).
const REFLECTION_V1_PREFIX: &str = "/grpc.reflection.v1.ServerReflection/";
const REFLECTION_V1ALPHA_PREFIX: &str = "/grpc.reflection.v1alpha.ServerReflection/";

/// A gRPC service of tonic's that the listener runs as it is (reflection).
type TonicService = BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;

type ReplyStream = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, Status>> + Send>>;

/// The server side of [`GrpcTransport`](crate::GrpcTransport): one TCP port that answers any
/// gRPC method path, plus `grpc.health.v1.Health`.
///
/// Dropping the listener stops it as [`Listener::shutdown`] does, without waiting.
pub struct GrpcListener {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    serving: watch::Sender<bool>,
    tls: bool,
    connections: Arc<AtomicU64>,
}

impl fmt::Debug for GrpcListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcListener")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .field("connections", &self.connections())
            .field("serving", &*self.serving.borrow())
            .field("shut_down", &self.shutdown.is_cancelled())
            .finish()
    }
}

/// What every connection of one listener shares.
struct Shared {
    opts: Arc<GrpcOptions>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    local_addr: String,
    health: HealthServer<ServingHealth>,
    // v1 and v1alpha, when reflection is on.
    reflection: Option<(TonicService, TonicService)>,
    builder: http2::Builder<TokioExecutor>,
    handler: Arc<dyn CallHandler>,
    open: Arc<Connections>,
}

impl GrpcListener {
    /// Binds `addr` (`host:port`, port 0 for any free port) and starts serving every call
    /// with `handler`.
    pub async fn bind(
        addr: &str,
        opts: GrpcOptions,
        handler: Arc<dyn CallHandler>,
    ) -> Result<GrpcListener> {
        let tls = match &opts.tls {
            Some(tls) => Some(TlsAcceptor::from(tls.server_config(addr)?)),
            None => None,
        };
        let reflection = if opts.reflection {
            Some(reflection(&handler.file_descriptor_sets())?)
        } else {
            None
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::internal(ID, format!("listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::internal(ID, format!("listen on {addr}: {e}")))?;
        let (serving, serving_rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let health = HealthServer::new(ServingHealth {
            serving: serving_rx,
            shutdown: shutdown.clone(),
        });
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(opts.keepalive_interval)
            .keep_alive_timeout(opts.keepalive_timeout);
        let grpc = GrpcListener {
            local_addr,
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            serving,
            tls: tls.is_some(),
            connections: Arc::new(AtomicU64::new(0)),
        };
        let shared = Arc::new(Shared {
            open: Connections::new(opts.max_connections),
            opts: Arc::new(opts),
            tls,
            shutdown,
            local_addr: local_addr.to_string(),
            health,
            reflection,
            builder,
            handler,
        });
        grpc.tasks.spawn(accept_loop(
            listener,
            shared,
            grpc.tasks.clone(),
            grpc.connections.clone(),
        ));
        Ok(grpc)
    }

    /// How many TCP connections this listener has accepted so far (for tests and metrics).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether the health service reports `SERVING`.
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }
}

impl Drop for GrpcListener {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[async_trait::async_trait]
impl Listener for GrpcListener {
    fn local_addr(&self) -> String {
        self.local_addr.to_string()
    }

    async fn shutdown(&self) {
        self.serving.send_replace(false);
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn set_serving(&self, serving: bool) {
        self.serving.send_replace(serving);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    connections: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.fetch_add(1, Ordering::Relaxed);
                let Some(open) = shared.open.open() else {
                    tracing::warn!(%peer, addr = %shared.local_addr, "{} connections open already; closing a new one", shared.open.max());
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tasks.spawn(async move {
                    serve_connection(stream, peer, shared).await;
                    drop(open);
                });
            }
            Err(e) => {
                // Usually out of file descriptors: pause rather than spin.
                tracing::warn!(addr = %shared.local_addr, error = %e, "accepting a connection failed");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let peer = peer.to_string();
    let Some(acceptor) = shared.tls.clone() else {
        serve_http2(tcp, peer, shared, false).await;
        return;
    };
    // A TLS connection starts with a handshake record (0x16); anything else is a plaintext
    // client, which gets a status saying so rather than a broken connection.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)) => peeked,
    };
    match peeked {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    if first[0] != 0x16 {
        tracing::debug!(%peer, addr = %shared.local_addr, "plaintext client on a TLS port");
        serve_http2(tcp, peer, shared, true).await;
        return;
    }
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
    };
    match handshake {
        Ok(Ok(tls)) => serve_http2(tls, peer, shared, false).await,
        Ok(Err(e)) => tracing::debug!("{}", explain_server_handshake(&peer, &e)),
        Err(_) => tracing::debug!(%peer, "TLS handshake took longer than {HANDSHAKE_TIMEOUT:?}"),
    }
}

/// Serves HTTP/2 on one connection until it closes: once its preface arrived (within
/// `HANDSHAKE_TIMEOUT`, or `idle_timeout` when shorter), until it has had no call in flight for `idle_timeout`, or the listener
/// shuts down; then its calls get `write_timeout` to finish before it is cut.
async fn serve_http2<I>(io: I, peer: String, shared: Arc<Shared>, plaintext_on_tls: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = HANDSHAKE_TIMEOUT.min(shared.opts.idle_timeout);
    let preface = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        preface = read_preface(io, limit) => preface,
    };
    let Some(io) = preface else {
        tracing::debug!(%peer, "no HTTP/2 preface within {limit:?}; closed");
        return;
    };
    let (in_flight, idle_rx) = watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    let for_calls = shared.clone();
    let call_peer = peer.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = for_calls.clone();
        let peer = call_peer.clone();
        // The call counts as in flight until its response body ends.
        let call = InFlight::new(&in_flight);
        async move {
            let response = if plaintext_on_tls {
                requires_tls(&shared)
            } else {
                handle(req, shared, peer).await
            };
            Ok::<_, Infallible>(held(response, call))
        }
    });
    let conn = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = idle_for(idle_rx, shared.opts.idle_timeout);
    tokio::pin!(idle);
    let mut closing = false;
    let close_by = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_by);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shared.shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                close_by.as_mut().reset(Instant::now() + shared.opts.write_timeout);
            }
            _ = &mut idle, if !closing => {
                tracing::debug!(%peer, "closing idle connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
                close_by.as_mut().reset(Instant::now() + shared.opts.write_timeout);
            }
            _ = &mut close_by, if closing => {
                tracing::debug!(%peer, "cut a connection whose calls did not finish within {:?} of its closing", shared.opts.write_timeout);
                return;
            }
        }
    }
}

/// Counts a call as in flight on its connection for as long as it lives.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn new(counter: &Arc<watch::Sender<usize>>) -> Self {
        counter.send_modify(|n| *n += 1);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Completes once no call has been in flight for `limit`.
async fn idle_for(mut in_flight: watch::Receiver<usize>, limit: Duration) {
    loop {
        if in_flight.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        match tokio::time::timeout(limit, in_flight.changed()).await {
            Err(_) => return,
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}

/// `response` with `hold` kept alive until its body has been sent (or dropped).
fn held(response: Response<Body>, hold: impl Send + Sync + 'static) -> Response<Body> {
    response.map(|body| {
        Body::new(Held {
            body,
            _hold: Box::new(hold),
        })
    })
}

/// A body and something that lives as long as it.
struct Held<B> {
    body: B,
    _hold: Box<dyn std::any::Any + Send + Sync>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body whose bytes count on the call's [`Admitted`] as they arrive: past the
/// server's bound it fails with `UNAVAILABLE`, which tonic answers the call with.
struct Metered {
    body: Incoming,
    admitted: Arc<Mutex<Admitted>>,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let held = self
                .admitted
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .hold(data.len());
            if let Err(e) = held {
                return Poll::Ready(Some(Err(status_of_error(&e).into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn requires_tls(shared: &Shared) -> Response<Body> {
    Status::unavailable(format!(
        "{} serves gRPC over TLS only and this client connected in plaintext: dial it with TLS \
         (Micro clients: set MICRO_TLS_CA to the CA that signed its certificate)",
        shared.local_addr
    ))
    .into_http()
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>, peer: String) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path.starts_with(HEALTH_PREFIX) {
        let mut health = shared.health.clone();
        return match health.call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if let Some((v1, v1alpha)) = &shared.reflection {
        let service = if path.starts_with(REFLECTION_V1_PREFIX) {
            Some(v1)
        } else if path.starts_with(REFLECTION_V1ALPHA_PREFIX) {
            Some(v1alpha)
        } else {
            None
        };
        if let Some(service) = service {
            return match service.clone().call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
    }
    if req.method() != Method::POST {
        let mut response = Status::unimplemented(format!(
            "gRPC calls are POST requests, not {}",
            req.method()
        ))
        .into_http();
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    let wire_ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = match micro_content_type(wire_ct.as_deref()) {
        Ok(ct) => ct,
        Err(status) => {
            let grpc = wire_ct
                .as_deref()
                .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/grpc"));
            let mut response = status.into_http();
            if !grpc {
                // As the gRPC spec asks, so that plain HTTP clients do not take it for a 200.
                *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            }
            return response;
        }
    };
    let Some(endpoint) = endpoint_of_path(&path) else {
        return Status::unimplemented(format!(
            "{path:?} is not a gRPC method path of the form /<package>.<Service>/<Method>"
        ))
        .into_http();
    };
    let timeout = match req.headers().get("grpc-timeout") {
        None => None,
        Some(value) => match value.to_str().ok().and_then(parse_grpc_timeout) {
            Some(t) => Some(t),
            None => {
                return Status::invalid_argument(format!(
                    "grpc-timeout {value:?} is not up to eight digits and a unit (H, M, S, m, u, n)"
                ))
                .into_http()
            }
        },
    };

    if shared.shutdown.is_cancelled() {
        return Status::unavailable(format!(
            "the server at {} is shutting down and takes no new calls",
            shared.local_addr
        ))
        .into_http();
    }
    let admitted = match shared.handler.admit() {
        Ok(admitted) => Arc::new(Mutex::new(admitted)),
        Err(e) => return status_of_error(&e).into_http(),
    };
    let req = req.map(|body| Metered {
        body,
        admitted: admitted.clone(),
    });
    let opts = &shared.opts;
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(opts.max_recv_message_bytes)
        .max_encoding_message_size(opts.max_send_message_bytes);
    if opts.gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    let mut response = match shared.handler.kind(&endpoint) {
        Some(EndpointKind::Unary) => {
            let handler = shared.handler.clone();
            let service = tower::service_fn(move |request: tonic::Request<Bytes>| {
                let handler = handler.clone();
                let endpoint = endpoint.clone();
                async move { unary(&*handler, request, endpoint, content_type, timeout).await }
            });
            let response = grpc.unary(service, req).await;
            // tonic refuses an oversized request with OUT_OF_RANGE, before the handler; gRPC
            // elsewhere says RESOURCE_EXHAUSTED, as the streaming side does.
            match Status::from_header_map(response.headers()) {
                Some(status) if status.code() == tonic::Code::OutOfRange => {
                    normalize_status(status).into_http()
                }
                _ => response,
            }
        }
        // An endpoint the server does not have goes the streaming way, which answers any
        // caller, unary or streaming, with the server's own error.
        Some(EndpointKind::Stream) | None => {
            let stream_id = uuid::Uuid::new_v4().to_string();
            let mut header = metadata_of_headers(req.headers());
            header.insert_static(STREAM, stream_id.clone());
            header.insert_static(headers::ENDPOINT, endpoint.clone());
            header.insert_static(headers::METHOD, endpoint.clone());
            header.insert_static(headers::CONTENT_TYPE, content_type);
            header.insert_static(headers::ACCEPT, content_type);
            if let Some(t) = timeout {
                header.insert_static(headers::TIMEOUT, micro_timeout(t));
            }
            let call = Call {
                shared: shared.clone(),
                open: header,
                peer,
                endpoint,
                stream_id,
                content_type,
                deadline: timeout.map(|t| Instant::now() + t),
            };
            let mut call = Some(call);
            let service = tower::service_fn(move |request: tonic::Request<Streaming<Bytes>>| {
                let call = call.take();
                async move {
                    match call {
                        Some(call) => call.start(request).await,
                        None => Err(Status::internal("a call was started twice")),
                    }
                }
            });
            grpc.streaming(service, req).await
        }
    };
    // Answer in the caller's own content type (application/grpc+json for JSON).
    if let Some(ct) = wire_ct.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        response.headers_mut().insert(CONTENT_TYPE, ct);
    }
    // The call counts for the server's load until its response has been sent.
    held(response, admitted)
}

/// A unary call: the typed request from the gRPC request, the handler's answer as the gRPC
/// response (its metadata as headers) or as the status of its error, within the caller's
/// deadline.
async fn unary(
    handler: &dyn CallHandler,
    request: tonic::Request<Bytes>,
    endpoint: String,
    content_type: &'static str,
    timeout: Option<Duration>,
) -> std::result::Result<tonic::Response<Bytes>, Status> {
    let (metadata, _, body) = request.into_parts();
    let mut metadata = metadata_of_headers(&metadata.into_headers());
    metadata.retain(|k, _| !headers::is_protocol(k));
    let req = rpc::Request {
        endpoint: endpoint.clone(),
        content_type: content_type.to_string(),
        metadata,
        body,
        ..rpc::Request::default()
    };
    // The caller's deadline bounds the call here whatever the handler does with it.
    let answer = tokio::select! {
        answer = handler.unary(req, timeout) => answer,
        _ = until(timeout.map(|t| Instant::now() + t)) => {
            return Err(Status::deadline_exceeded(format!(
                "{endpoint} did not finish within the caller's deadline"
            )))
        }
    };
    match answer {
        Ok(rsp) => {
            let mut response = tonic::Response::new(rsp.body);
            *response.metadata_mut() = MetadataMap::from_headers(reply_headers(&rsp.metadata));
            Ok(response)
        }
        Err(e) => Err(status_of_error(&e)),
    }
}

/// One streaming call, on its way to the handler.
struct Call {
    shared: Arc<Shared>,
    open: Metadata,
    peer: String,
    endpoint: String,
    stream_id: String,
    content_type: &'static str,
    deadline: Option<Instant>,
}

/// What the reply side of a call watches besides its channel.
struct ReplyWatch {
    deadline: Option<Instant>,
    endpoint: String,
    local_addr: String,
}

/// A reply from the server socket to the call's response.
enum Reply {
    Data { metadata: Metadata, body: Bytes },
    End(std::result::Result<(), Status>),
}

enum Next {
    Data(Metadata, Bytes),
    Done,
    Failed(Status),
}

impl Call {
    async fn start(
        self,
        request: tonic::Request<Streaming<Bytes>>,
    ) -> std::result::Result<tonic::Response<ReplyStream>, Status> {
        let (tx, mut rx) = mpsc::channel(REPLY_BUFFER);
        let watch = ReplyWatch {
            deadline: self.deadline,
            endpoint: self.endpoint.clone(),
            local_addr: self.shared.local_addr.clone(),
        };
        let socket = ServerSocket {
            peer: self.peer,
            open: Some(Message {
                header: self.open,
                body: Bytes::new(),
            }),
            requests: request.into_inner(),
            recv_done: false,
            stream_id: self.stream_id,
            content_type: self.content_type,
            replies: Some(tx),
            deadline: self.deadline,
            max_send: self.shared.opts.max_send_message_bytes,
            write_timeout: self.shared.opts.write_timeout,
            endpoint: self.endpoint,
        };
        if self.shared.shutdown.is_cancelled() {
            return Err(watch.shutting_down());
        }
        let first = run_until_first_reply(
            self.shared.handler.stream(Box::new(socket)),
            &mut rx,
            &watch,
        )
        .await;
        match first {
            Next::Data(metadata, body) => {
                let first = futures_util::stream::iter([Ok(body)]);
                let rest = futures_util::stream::unfold(Some((rx, watch)), |state| async move {
                    let (mut rx, watch) = state?;
                    match next_reply(&mut rx, &watch).await {
                        Next::Data(_, body) => Some((Ok(body), Some((rx, watch)))),
                        Next::Done => None,
                        Next::Failed(status) => Some((Err(status), None)),
                    }
                });
                let stream: ReplyStream = Box::pin(first.chain(rest));
                let mut response = tonic::Response::new(stream);
                *response.metadata_mut() = MetadataMap::from_headers(reply_headers(&metadata));
                Ok(response)
            }
            Next::Done => Ok(tonic::Response::new(
                Box::pin(futures_util::stream::empty()),
            )),
            Next::Failed(status) => Err(status),
        }
    }
}

/// Runs a stream's handler on this task until its first reply; then it goes on in a task of
/// its own, its replies flowing through the response.
async fn run_until_first_reply(
    handler: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    rx: &mut mpsc::Receiver<Reply>,
    watch: &ReplyWatch,
) -> Next {
    let mut running = Some(handler);
    let first = loop {
        let Some(handler) = running.as_mut() else {
            break next_reply(rx, watch).await;
        };
        tokio::select! {
            biased;
            _ = handler => running = None,
            next = next_reply(rx, watch) => break next,
        }
    };
    if let Some(handler) = running {
        tokio::spawn(handler);
    }
    first
}

/// Completes at `deadline`, or never without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl ReplyWatch {
    fn deadline_exceeded(&self) -> Status {
        Status::deadline_exceeded(format!(
            "{} did not finish within the caller's deadline",
            self.endpoint
        ))
    }

    fn shutting_down(&self) -> Status {
        Status::unavailable(format!(
            "the server at {} is shutting down and takes no new calls",
            self.local_addr
        ))
    }
}

async fn next_reply(rx: &mut mpsc::Receiver<Reply>, watch: &ReplyWatch) -> Next {
    let reply = tokio::select! {
        reply = rx.recv() => reply,
        _ = until(watch.deadline) => return Next::Failed(watch.deadline_exceeded()),
    };
    match reply {
        Some(Reply::Data { metadata, body }) => Next::Data(metadata, body),
        Some(Reply::End(Ok(()))) => Next::Done,
        Some(Reply::End(Err(status))) => Next::Failed(status),
        None => Next::Failed(Status::internal(format!(
            "the service ended the call to {} without an answer",
            watch.endpoint
        ))),
    }
}

/// The server end of one call: the open message, then the caller's messages, then `EOS`;
/// replies go out as response messages, and an end message sets the call's status.
struct ServerSocket {
    peer: String,
    open: Option<Message>,
    requests: Streaming<Bytes>,
    recv_done: bool,
    stream_id: String,
    content_type: &'static str,
    replies: Option<mpsc::Sender<Reply>>,
    deadline: Option<Instant>,
    max_send: usize,
    write_timeout: Duration,
    endpoint: String,
}

impl fmt::Debug for ServerSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServerSocket")
            .field("peer", &self.peer)
            .field("endpoint", &self.endpoint)
            .field("stream", &self.stream_id)
            .field("ended", &self.replies.is_none())
            .finish_non_exhaustive()
    }
}

impl ServerSocket {
    fn header(&self) -> Metadata {
        let mut header = Metadata::new();
        header.insert_static(STREAM, self.stream_id.clone());
        header.insert_static(headers::CONTENT_TYPE, self.content_type);
        header
    }
}

#[async_trait::async_trait]
impl Socket for ServerSocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        let Some(tx) = &self.replies else {
            return Err(Error::internal(
                ID,
                format!(
                    "the call to {} from {} has ended; nothing more can be sent",
                    self.endpoint, self.peer
                ),
            ));
        };
        let reply = if is_eos(&msg.header) {
            Reply::End(Ok(()))
        } else if let Some(e) = error_of(&msg.header) {
            Reply::End(Err(status_of_error(&e)))
        } else {
            if msg.body.len() > self.max_send {
                return Err(Error::from_grpc(
                    ID,
                    GrpcCode::ResourceExhausted,
                    format!(
                        "the reply of {} bytes to {} exceeds the limit of {} bytes \
                         (MICRO_GRPC_MAX_SEND_MSG_SIZE)",
                        msg.body.len(),
                        self.endpoint,
                        self.max_send
                    ),
                ));
            }
            Reply::Data {
                metadata: msg.header,
                body: msg.body,
            }
        };
        let ends = matches!(reply, Reply::End(_));
        let sent = tokio::time::timeout(self.write_timeout, tx.send(reply)).await;
        if ends {
            self.replies = None;
        }
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::internal(
                ID,
                format!(
                    "the call to {} from {} has ended: the caller went away or its deadline passed",
                    self.endpoint, self.peer
                ),
            )),
            Err(_) => {
                // The caller is not reading: end the call rather than wait on it.
                self.replies = None;
                Err(Error::timeout(
                    ID,
                    format!(
                        "the caller of {} at {} took no reply for {:?}: it stopped reading",
                        self.endpoint, self.peer, self.write_timeout
                    ),
                ))
            }
        }
    }

    async fn recv(&mut self) -> Result<Option<Message>> {
        if let Some(open) = self.open.take() {
            return Ok(Some(open));
        }
        if self.recv_done {
            return Ok(None);
        }
        let next = tokio::select! {
            next = self.requests.message() => next,
            _ = until(self.deadline) => Err(Status::deadline_exceeded(format!(
                "the caller's deadline for {} passed while waiting for its next message",
                self.endpoint
            ))),
        };
        let mut header = self.header();
        match next {
            Ok(Some(body)) => Ok(Some(Message { header, body })),
            Ok(None) => {
                self.recv_done = true;
                header.insert_static(ERROR, EOS);
                Ok(Some(Message {
                    header,
                    body: Bytes::new(),
                }))
            }
            Err(status) => {
                self.recv_done = true;
                let e = error_of_status(&normalize_status(status), ID);
                header.insert_static(ERROR, e.to_json());
                Ok(Some(Message {
                    header,
                    body: Bytes::new(),
                }))
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        // Without an end message the caller gets INTERNAL rather than waiting.
        self.replies = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        self.peer.clone()
    }
}

/// Server reflection (v1, v1alpha) over the handlers' file descriptor sets and the health
/// service's.
fn reflection(sets: &[Bytes]) -> Result<(TonicService, TonicService)> {
    // The handlers' files first: of two files with one name, reflection keeps the first.
    let builder = || {
        sets.iter()
            .fold(
                tonic_reflection::server::Builder::configure(),
                |builder, set| builder.register_encoded_file_descriptor_set(set),
            )
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let invalid = |e: tonic_reflection::server::Error| {
        Error::internal(
            ID,
            format!(
                "gRPC reflection: a handler's file descriptor set is not valid ({e}); fix the \
                 set given to Handler::file_descriptor_set, or set MICRO_GRPC_REFLECTION=false"
            ),
        )
    };
    let v1 = builder().build_v1().map_err(invalid)?;
    let v1alpha = builder().build_v1alpha().map_err(invalid)?;
    Ok((
        BoxCloneSyncService::new(v1),
        BoxCloneSyncService::new(v1alpha),
    ))
}

/// `grpc.health.v1.Health`, following [`Listener::set_serving`]. This port answers every
/// gRPC service, so every service name (and the overall `""`) gets the same status.
#[derive(Debug)]
struct ServingHealth {
    serving: watch::Receiver<bool>,
    shutdown: CancellationToken,
}

fn health_response(serving: bool) -> HealthCheckResponse {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

type HealthStream =
    Pin<Box<dyn Stream<Item = std::result::Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for ServingHealth {
    async fn check(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> std::result::Result<tonic::Response<HealthCheckResponse>, Status> {
        Ok(tonic::Response::new(health_response(
            *self.serving.borrow(),
        )))
    }

    type WatchStream = HealthStream;

    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> std::result::Result<tonic::Response<HealthStream>, Status> {
        // The current status first, then every change, until the listener shuts down.
        let updates = tokio_stream::wrappers::WatchStream::new(self.serving.clone())
            .map(|serving| Ok(health_response(serving)))
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(tonic::Response::new(Box::pin(updates)))
    }
}
