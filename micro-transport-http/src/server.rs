//! The server side: [`HttpListener`] serves HTTP/1.1 and h2c (or both over TLS) on one port
//! and hands out one socket per unary request or stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::{Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use micro_core::transport::{Listener, Message, Socket, SocketHandler};
use micro_core::{Error, Metadata, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{drain, read_to_limit, ChannelBody, ReadError};
use crate::frame::{self, FrameReader};
use crate::headers::{is_stream, to_header_map, to_metadata};
use crate::{HttpOptions, ID, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, STREAM_BUFFER};

/// How many received exchanges may wait for `accept` before connections stop reading more.
const ACCEPT_QUEUE: usize = 256;

/// The longest a TLS handshake may take on the server (less when `idle_timeout` is shorter):
/// a real one takes milliseconds, and a client that says nothing must not hold a task.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type ServerBody = BoxBody<Bytes, Infallible>;

/// The server side of [`HttpTransport`](crate::HttpTransport): listens on one TCP port, speaks
/// HTTP/1.1 and h2c there (or, with [`HttpOptions::tls`], HTTP/1.1 and HTTP/2 over TLS only),
/// and yields one [`Socket`] per unary request or stream.
///
/// Dropping the listener stops it as [`Listener::shutdown`] does, without waiting.
pub struct HttpListener {
    local_addr: SocketAddr,
    queue: Mutex<mpsc::Receiver<Pending>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    connections: Arc<AtomicU64>,
    tls: bool,
    inline: Arc<OnceLock<SocketHandler>>,
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

/// A received exchange waiting for `accept`.
#[derive(Debug)]
struct Pending {
    socket: Box<dyn Socket>,
    // Streams answer their HTTP request only once accepted, so that a stream nobody accepts
    // fails with an error instead of looking like an empty stream.
    accepted: Option<oneshot::Sender<()>>,
}

/// What every connection task of one listener shares.
struct Shared {
    opts: Arc<HttpOptions>,
    builder: auto::Builder<TokioExecutor>,
    queue: mpsc::Sender<Pending>,
    shutdown: CancellationToken,
    local_addr: String,
    tls: Option<TlsAcceptor>,
    // Set by `serve_inline`: exchanges then run on their connection's task instead of queueing.
    inline: Arc<OnceLock<SocketHandler>>,
}

impl HttpListener {
    /// Binds `addr` (`host:port`, port 0 for any free port) and starts serving, with TLS when
    /// `opts.tls` is set (which then needs a certificate).
    pub async fn bind(addr: &str, opts: HttpOptions) -> Result<HttpListener> {
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
        let (queue_tx, queue_rx) = mpsc::channel(ACCEPT_QUEUE);
        let shared = Arc::new(Shared {
            builder: builder(&opts),
            opts,
            queue: queue_tx,
            shutdown: CancellationToken::new(),
            local_addr: local_addr.to_string(),
            tls,
            inline: Arc::new(OnceLock::new()),
        });
        let http = HttpListener {
            local_addr,
            queue: Mutex::new(queue_rx),
            shutdown: shared.shutdown.clone(),
            tasks: TaskTracker::new(),
            connections: Arc::new(AtomicU64::new(0)),
            tls: shared.tls.is_some(),
            inline: shared.inline.clone(),
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

    async fn accept(&self) -> Result<Option<Box<dyn Socket>>> {
        let mut queue = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Ok(None),
            queue = self.queue.lock() => queue,
        };
        let pending = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Ok(None),
            pending = queue.recv() => pending,
        };
        Ok(pending.map(|p| {
            if let Some(accepted) = p.accepted {
                let _ = accepted.send(());
            }
            p.socket
        }))
    }

    async fn shutdown(&self) {
        self.shutdown.cancel();
        {
            // Exchanges received but never accepted are dropped, which answers each with an
            // error; closing first stops new ones from queueing.
            let mut queue = self.queue.lock().await;
            queue.close();
            while queue.try_recv().is_ok() {}
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn serve_inline(&self, handler: SocketHandler) -> bool {
        // A second server on the same listener keeps the first one's handler.
        let _ = self.inline.set(handler);
        true
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
                let _ = stream.set_nodelay(true);
                tasks.spawn(serve_connection(stream, peer, shared.clone()));
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
    let mut closing = false;
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
            }
            _ = &mut idle, if !closing => {
                tracing::debug!(%peer, "closing idle connection");
                served.as_mut().graceful_shutdown();
                closing = true;
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
    let header = to_metadata(req.headers());
    if is_stream(req.headers()) {
        if http1 {
            let e = Error::new(
                ID,
                501,
                "streams over HTTP/1.1 are not supported here: micro.transport.http streams use h2c",
            );
            return error_reply(&e, &header, true);
        }
        return open_stream(req.into_body(), header, &conn, in_flight).await;
    }

    let opts = &conn.shared.opts;
    let mut body = req.into_body();
    let declared = http_body::Body::size_hint(&body).exact();
    let deadline = Instant::now() + opts.body_read_timeout;
    let body = match read_to_limit(&mut body, opts.max_body_bytes, deadline).await {
        Ok(bytes) => bytes,
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
            return error_reply(&e, &header, http1 && total.is_none());
        }
        Err(ReadError::TimedOut) => {
            let e = Error::timeout(
                ID,
                format!(
                    "request body did not arrive within {:?}",
                    opts.body_read_timeout
                ),
            );
            return error_reply(&e, &header, http1);
        }
        Err(ReadError::Failed(e)) => {
            let e = Error::internal(ID, format!("reading the request body failed: {e}"));
            return error_reply(&e, &header, http1);
        }
    };

    let (reply_tx, reply_rx) = oneshot::channel();
    let socket = UnaryServerSocket {
        request: Some(Message {
            header: header.clone(),
            body,
        }),
        reply: Some(reply_tx),
        peer: conn.peer.clone(),
    };
    let pending = Pending {
        socket: Box::new(socket),
        accepted: None,
    };
    if !deliver(&conn.shared, pending).await {
        return error_reply(&shutting_down(&conn), &header, false);
    }
    match reply_rx.await {
        Ok(reply) => reply,
        Err(_) if conn.shared.shutdown.is_cancelled() => {
            error_reply(&shutting_down(&conn), &header, false)
        }
        Err(_) => {
            let e = Error::internal(
                ID,
                format!(
                    "the server dropped the request{} without replying",
                    header
                        .get("Micro-Endpoint")
                        .map(|e| format!(" for {e}"))
                        .unwrap_or_default()
                ),
            );
            error_reply(&e, &header, false)
        }
    }
}

async fn open_stream(
    body: Incoming,
    header: Metadata,
    conn: &ConnContext,
    in_flight: InFlight,
) -> Response<ServerBody> {
    // The stream counts as in flight until its response body ends.
    let (tx, reply_body) = ChannelBody::new(STREAM_BUFFER, Some(Box::new(in_flight)));
    let socket = StreamServerSocket {
        reader: FrameReader::new(body, &conn.shared.opts, conn.peer.clone()),
        tx: Some(tx),
        peer: conn.peer.clone(),
        opts: conn.shared.opts.clone(),
    };
    let (accepted_tx, accepted_rx) = oneshot::channel();
    let pending = Pending {
        socket: Box::new(socket),
        accepted: Some(accepted_tx),
    };
    if !deliver(&conn.shared, pending).await || accepted_rx.await.is_err() {
        return error_reply(&shutting_down(conn), &header, false);
    }
    let mut reply = Response::new(reply_body.boxed());
    if let Some(id) = header.get("Micro-Stream") {
        if let Ok(id) = HeaderValue::from_bytes(id.as_bytes()) {
            reply.headers_mut().insert("micro-stream", id);
        }
    }
    reply
}

/// Hands an exchange to the server: a unary one runs right here on the connection's task when
/// the server serves inline (a stream gets a task of its own, since its replies flow through
/// the response this task has yet to return); otherwise it queues for `accept`. False when the
/// listener is shutting down.
async fn deliver(shared: &Shared, pending: Pending) -> bool {
    let Some(handler) = shared.inline.get() else {
        return shared.queue.send(pending).await.is_ok();
    };
    if shared.shutdown.is_cancelled() {
        return false;
    }
    match pending.accepted {
        Some(accepted) => {
            let _ = accepted.send(());
            tokio::spawn(handler(pending.socket));
        }
        None => handler(pending.socket).await,
    }
    true
}

fn shutting_down(conn: &ConnContext) -> Error {
    Error::internal(
        ID,
        format!("the server at {} is shutting down", conn.shared.local_addr),
    )
}

/// A 200 carrying `err` in `Micro-Error`: Go Micro clients read errors only from 200 replies.
/// `close` asks an HTTP/1 client to close the connection afterwards.
fn error_reply(err: &Error, request: &Metadata, close: bool) -> Response<ServerBody> {
    let mut reply = Response::new(Full::new(Bytes::new()).boxed());
    let headers = reply.headers_mut();
    for key in [
        "Micro-Id",
        "Micro-Service",
        "Micro-Endpoint",
        "Micro-Method",
        "Content-Type",
    ] {
        if let Some(value) = request.get(key) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.insert(name, value);
            }
        }
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

/// The server end of one unary exchange: `recv` yields the request once, `send` answers it.
struct UnaryServerSocket {
    request: Option<Message>,
    reply: Option<oneshot::Sender<Response<ServerBody>>>,
    peer: String,
}

impl std::fmt::Debug for UnaryServerSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryServerSocket")
            .field("peer", &self.peer)
            .field("replied", &self.reply.is_none())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Socket for UnaryServerSocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        let Some(reply) = self.reply.take() else {
            return Err(Error::internal(
                ID,
                format!(
                    "the reply to {} was sent already: a unary socket carries one exchange",
                    self.peer
                ),
            ));
        };
        let headers = match to_header_map(&msg.header, "reply") {
            Ok(headers) => headers,
            Err(e) => {
                // Keep the exchange open so the caller can still send an error reply.
                self.reply = Some(reply);
                return Err(e);
            }
        };
        let mut response = Response::new(Full::new(msg.body).boxed());
        *response.headers_mut() = headers;
        reply.send(response).map_err(|_| {
            Error::internal(
                ID,
                format!("the client at {} went away before the reply", self.peer),
            )
        })
    }

    async fn recv(&mut self) -> Result<Option<Message>> {
        Ok(self.request.take())
    }

    async fn close(&mut self) -> Result<()> {
        // Without a reply, the client gets a 500 rather than waiting for one.
        self.reply = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        self.peer.clone()
    }
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
        tx.send(frame).await.map_err(|_| {
            Error::internal(
                ID,
                format!(
                    "the stream from {} was closed or reset by the client",
                    self.peer
                ),
            )
        })
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
