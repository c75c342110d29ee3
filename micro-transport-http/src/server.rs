//! The server side: [`HttpListener`] serves HTTP/1.1 and h2c (or both over TLS) on one port,
//! answers each unary request with the server's [`CallHandler`] on hyper's own
//! request/response, and hands each stream to it as a socket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use micro_core::transport::{Admitted, CallHandler, Connections, Listener, Message, Socket};
use micro_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{drain, read_to_limit, ChannelBody, ReadError};
use crate::frame::{self, FrameReader};
use crate::headers::{echo, is_stream, reply_head, request_of};
use crate::{HttpOptions, ID, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, STREAM_BUFFER};

/// The longest a TLS handshake may take on the server (less when `idle_timeout` is shorter):
/// a real one takes milliseconds, and a client that says nothing must not hold a task.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type ServerBody = BoxBody<Bytes, Infallible>;

/// The server side of [`HttpTransport`](crate::HttpTransport): listens on one TCP port, speaks
/// HTTP/1.1 and h2c there (or, with [`HttpOptions::tls`], HTTP/1.1 and HTTP/2 over TLS only),
/// answers unary requests through the server's [`CallHandler`] and hands it each stream.
///
/// Dropping the listener stops it as [`Listener::shutdown`] does, without waiting.
pub struct HttpListener {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    connections: Arc<AtomicU64>,
    tls: bool,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .field("connections", &self.connections())
            .field("shut_down", &self.shutdown.is_cancelled())
            .finish()
    }
}

/// What every connection task of one listener shares.
struct Shared {
    opts: Arc<HttpOptions>,
    builder: auto::Builder<TokioExecutor>,
    shutdown: CancellationToken,
    open: Arc<Connections>,
    local_addr: String,
    tls: Option<TlsAcceptor>,
    handler: Arc<dyn CallHandler>,
}

impl HttpListener {
    /// Binds `addr` (`host:port`, port 0 for any free port) and starts serving every call with
    /// `handler`, with TLS when `opts.tls` is set (which then needs a certificate).
    pub async fn bind(
        addr: &str,
        opts: HttpOptions,
        handler: Arc<dyn CallHandler>,
    ) -> Result<HttpListener> {
        let tls = match &opts.tls {
            Some(tls) => Some(TlsAcceptor::from(tls.server_config(addr)?)),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::internal(ID, format!("listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::internal(ID, format!("listen on {addr}: {e}")))?;
        let opts = Arc::new(opts);
        let shared = Arc::new(Shared {
            builder: builder(&opts),
            open: Connections::new(opts.max_connections),
            opts,
            shutdown: CancellationToken::new(),
            local_addr: local_addr.to_string(),
            tls,
            handler,
        });
        let http = HttpListener {
            local_addr,
            shutdown: shared.shutdown.clone(),
            tasks: TaskTracker::new(),
            connections: Arc::new(AtomicU64::new(0)),
            tls: shared.tls.is_some(),
        };
        http.tasks.spawn(accept_loop(
            listener,
            shared,
            http.tasks.clone(),
            http.connections.clone(),
        ));
        Ok(http)
    }

    /// How many TCP connections this listener has accepted so far (for tests and metrics),
    /// including TLS connections whose handshake failed.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether this listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[async_trait::async_trait]
impl Listener for HttpListener {
    fn local_addr(&self) -> String {
        self.local_addr.to_string()
    }

    async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn builder(opts: &HttpOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.idle_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .max_headers(opts.max_headers)
        .title_case_headers(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    builder
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

/// What the requests of one connection share.
struct ConnContext {
    shared: Arc<Shared>,
    peer: String,
    in_flight: Arc<watch::Sender<usize>>,
}

/// Counts a request as in flight for as long as it lives.
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

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let Some(acceptor) = &shared.tls else {
        return serve_http(stream, peer, shared).await;
    };
    let limit = TLS_HANDSHAKE_TIMEOUT.min(shared.opts.idle_timeout);
    let handshake = tokio::time::timeout(limit, acceptor.accept(stream));
    let accepted = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        accepted = handshake => accepted,
    };
    match accepted {
        Ok(Ok(tls)) => serve_http(tls, peer, shared).await,
        // The client learns why from the TLS alert; the server only notes it.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, ?limit, "TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 and HTTP/2 on one connection, plain or TLS, until it closes.
async fn serve_http<I>(io: I, peer: SocketAddr, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (in_flight, idle_rx) = watch::channel(0usize);
    let conn = Arc::new(ConnContext {
        shared: shared.clone(),
        peer: peer.to_string(),
        in_flight: Arc::new(in_flight),
    });
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(req, conn).await) }
    });
    let served = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let idle = idle_for(idle_rx, shared.opts.idle_timeout);
    tokio::pin!(idle);
    // Once closing, the calls under way get `write_timeout` to finish and be written; a peer
    // that stopped reading cannot hold the connection, nor a shutdown, any longer.
    let mut closing = false;
    let close_by = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_by);
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shared.shutdown.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
                close_by.as_mut().reset(Instant::now() + shared.opts.write_timeout);
            }
            _ = &mut idle, if !closing => {
                tracing::debug!(%peer, "closing idle connection");
                served.as_mut().graceful_shutdown();
                closing = true;
                close_by.as_mut().reset(Instant::now() + shared.opts.write_timeout);
            }
            _ = &mut close_by, if closing => {
                tracing::debug!(%peer, "closed a connection whose calls did not finish within {:?} of its closing", shared.opts.write_timeout);
                return;
            }
        }
    }
}

/// Completes once no request has been in flight for `limit`.
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

async fn handle(req: Request<Incoming>, conn: Arc<ConnContext>) -> Response<ServerBody> {
    let in_flight = InFlight::new(&conn.in_flight);
    let http1 = req.version() < Version::HTTP_2;
    let (head, mut body) = req.into_parts();
    let mut admitted = match conn.shared.handler.admit() {
        Ok(admitted) => admitted,
        // On HTTP/1 the unread body would have to be drained first: close instead.
        Err(e) => return error_reply(&e, &head.headers, http1),
    };
    if is_stream(&head.headers) {
        if http1 {
            let e = Error::new(
                ID,
                501,
                "streams over HTTP/1.1 are not supported here: micro.transport.http streams use h2c",
            );
            return error_reply(&e, &head.headers, true);
        }
        return open_stream(body, &head.headers, &conn, (in_flight, admitted));
    }

    let opts = &conn.shared.opts;
    let declared = http_body::Body::size_hint(&body).exact();
    let deadline = Instant::now() + opts.body_read_timeout;
    let bytes = match read_to_limit(&mut body, opts.max_body_bytes, deadline, &mut admitted).await {
        Ok(bytes) => bytes,
        Err(ReadError::Busy(e)) => return error_reply(&e, &head.headers, http1),
        Err(ReadError::TooLarge(seen)) => {
            // On HTTP/1 the rest of the body must be read off the connection before it can
            // carry the next request; HTTP/2 simply resets this one stream.
            let too_big_to_drain = declared.is_some_and(|n| n > opts.drain_limit() as u64);
            let total = if http1 && !too_big_to_drain {
                drain(&mut body, seen, opts.drain_limit(), deadline).await
            } else {
                None
            };
            let size = match total.or(declared) {
                Some(n) => format!("{n} bytes"),
                None => format!("more than {seen} bytes"),
            };
            let e = Error::payload_too_large(
                ID,
                format!(
                    "request body of {size} exceeds the limit of {} bytes",
                    opts.max_body_bytes
                ),
            );
            return error_reply(&e, &head.headers, http1 && total.is_none());
        }
        Err(ReadError::TimedOut) => {
            let e = Error::timeout(
                ID,
                format!(
                    "request body did not arrive within {:?}",
                    opts.body_read_timeout
                ),
            );
            return error_reply(&e, &head.headers, http1);
        }
        Err(ReadError::Failed(e)) => {
            let e = Error::internal(ID, format!("reading the request body failed: {e}"));
            return error_reply(&e, &head.headers, http1);
        }
    };
    if conn.shared.shutdown.is_cancelled() {
        return error_reply(&shutting_down(&conn), &head.headers, false);
    }
    let (request, timeout) = match request_of(&head.headers, bytes) {
        Ok(parsed) => parsed,
        Err(e) => return error_reply(&e, &head.headers, false),
    };
    // The handler runs right here, on the connection's task: no queue, no spawn per call.
    match conn.shared.handler.unary(request, timeout).await {
        Ok(rsp) => match reply_head(&head.headers, &rsp) {
            Ok(headers) => {
                let mut reply = Response::new(Full::new(rsp.body).boxed());
                *reply.headers_mut() = headers;
                reply
            }
            Err(e) => error_reply(&e, &head.headers, false),
        },
        Err(e) => error_reply(&e, &head.headers, false),
    }
}

/// Answers a stream's request at once, its response body carrying the server's messages, and
/// hands the stream to the handler on a task of its own (its replies flow through the response
/// this task has yet to return).
fn open_stream(
    body: Incoming,
    request: &http::HeaderMap,
    conn: &ConnContext,
    in_flight: (InFlight, Admitted),
) -> Response<ServerBody> {
    if conn.shared.shutdown.is_cancelled() {
        return error_reply(&shutting_down(conn), request, false);
    }
    // The stream counts as in flight, on its connection and for the server's load, until its
    // response body ends.
    let (tx, reply_body) = ChannelBody::new(STREAM_BUFFER, Some(Box::new(in_flight)));
    let opts = &conn.shared.opts;
    let socket = StreamServerSocket {
        reader: FrameReader::new(body, opts, conn.peer.clone(), Some(opts.body_read_timeout)),
        tx: Some(tx),
        peer: conn.peer.clone(),
        opts: conn.shared.opts.clone(),
    };
    tokio::spawn(conn.shared.handler.stream(Box::new(socket)));
    let mut reply = Response::new(reply_body.boxed());
    if let Some(id) = request.get("micro-stream") {
        reply.headers_mut().insert("micro-stream", id.clone());
    }
    reply
}

/// A call that arrived while the server stops: no handler ran it, so it is a `503` that
/// callers retry on another node (as gRPC's `UNAVAILABLE` is), never a `500`.
fn shutting_down(conn: &ConnContext) -> Error {
    Error::new(
        ID,
        503,
        format!(
            "the server at {} is shutting down and takes no new calls",
            conn.shared.local_addr
        ),
    )
}

/// A 200 carrying `err` in `Micro-Error`: Go Micro clients read errors only from 200 replies.
/// `close` asks an HTTP/1 client to close the connection afterwards.
fn error_reply(err: &Error, request: &http::HeaderMap, close: bool) -> Response<ServerBody> {
    let mut reply = Response::new(Full::new(Bytes::new()).boxed());
    let headers = reply.headers_mut();
    echo(request, headers);
    if let Some(ct) = request.get(http::header::CONTENT_TYPE) {
        headers.insert(http::header::CONTENT_TYPE, ct.clone());
    }
    let json = HeaderValue::from_bytes(err.to_json().as_bytes()).unwrap_or_else(|_| {
        HeaderValue::from_static(r#"{"id":"micro.transport.http","code":500,"detail":"an error that cannot travel in a header","status":"Internal Server Error"}"#)
    });
    headers.insert("micro-error", json);
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    reply
}

/// The server end of a stream: frames in from the request body, out through the response body.
struct StreamServerSocket {
    reader: FrameReader,
    tx: Option<mpsc::Sender<Bytes>>,
    peer: String,
    opts: Arc<HttpOptions>,
}

impl std::fmt::Debug for StreamServerSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServerSocket")
            .field("peer", &self.peer)
            .field("closed", &self.tx.is_none())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Socket for StreamServerSocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        let frame = frame::encode(&msg, &self.opts)?;
        let Some(tx) = &self.tx else {
            return Err(Error::internal(
                ID,
                format!("send after close on the stream from {}", self.peer),
            ));
        };
        match tokio::time::timeout(self.opts.write_timeout, tx.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::internal(
                ID,
                format!(
                    "the stream from {} was closed or reset by the client",
                    self.peer
                ),
            )),
            Err(_) => Err(Error::timeout(
                ID,
                format!(
                    "the client at {} took no stream message for {:?}: it stopped reading",
                    self.peer, self.opts.write_timeout
                ),
            )),
        }
    }

    async fn recv(&mut self) -> Result<Option<Message>> {
        self.reader.next().await
    }

    async fn close(&mut self) -> Result<()> {
        self.tx = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        self.peer.clone()
    }
}
