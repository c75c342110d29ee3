//! The client side: unary calls on pooled HTTP/1.1 connections, streams on their own h2c
//! connection; both over TLS when the transport has it.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{Admitted, CallParams, Message, Socket};
use micro_core::{Error, Metadata, Result};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};

use crate::body::{read_to_limit, ChannelBody, ReadError};
use crate::frame::{self, FrameReader};
use crate::headers::{is_stream, micro_error, reply_metadata, request_head, to_header_map};
use crate::tls::{rustls_error_of, ClientStream, ClientTls, TlsConn};
use crate::{HttpOptions, ID, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, STREAM_BUFFER};

/// hyper's HTTP/1 read buffer may not be smaller than this.
const MIN_H1_BUF: usize = 8192;

/// The pooled HTTP/1.1 client for unary exchanges.
pub(crate) type PoolClient = Client<TimedConnector, Full<Bytes>>;

/// The pooling client shared by every unary socket of a transport, dialling TLS when `tls` is
/// given.
pub(crate) fn pool_client(opts: &HttpOptions, tls: Option<Arc<ClientTls>>) -> PoolClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // TLS URIs are `https`; the TLS itself is this crate's, on top of the TCP connection.
    http.enforce_http(false);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(opts.pool_idle_timeout)
        .pool_max_idle_per_host(opts.pool_max_idle_per_host)
        .http1_max_buf_size(opts.max_header_bytes.max(MIN_H1_BUF))
        .http1_title_case_headers(true)
        .build(TimedConnector { http, tls })
}

tokio::task_local! {
    /// The connect timeout of the dial whose request is on its way, for [`TimedConnector`].
    static CONNECT_TIMEOUT: Duration;
}

/// hyper-util's connector with the connect timeout of each dial rather than one per pool, and
/// the TLS handshake within that same timeout when the transport has TLS.
///
/// hyper-util calls the connector from the task that sends the request, where the dial's
/// timeout is in scope; should that ever change, the default of `DialOptions` applies.
#[derive(Clone)]
pub(crate) struct TimedConnector {
    http: HttpConnector,
    tls: Option<Arc<ClientTls>>,
}

impl tower_service::Service<Uri> for TimedConnector {
    type Response = TokioIo<ClientStream>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let limit = CONNECT_TIMEOUT
            .try_with(|limit| *limit)
            .unwrap_or(CallParams::default().connect_timeout);
        let addr = dst.authority().map(|a| a.to_string()).unwrap_or_default();
        let host = dst.host().unwrap_or_default().to_string();
        let connecting = tower_service::Service::call(&mut self.http, dst);
        let tls = self.tls.clone();
        Box::pin(async move {
            let deadline = Instant::now() + limit;
            let tcp = match timeout_at(deadline, connecting).await {
                Ok(connected) => connected?.into_inner(),
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into())
                }
            };
            let Some(tls) = tls else {
                return Ok(TokioIo::new(ClientStream::Plain(tcp)));
            };
            // A micro Error here reaches `send` whole, through hyper-util's error chain.
            match timeout_at(deadline, tls.handshake(tcp, &addr, &host, false)).await {
                Ok(Ok(stream)) => {
                    // The pool's errors keep their rustls cause, so the record is not needed.
                    let (conn, _) = TlsConn::new(stream);
                    Ok(TokioIo::new(ClientStream::Tls(Box::new(conn))))
                }
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(tls.handshake_timeout(&addr, limit).into()),
            }
        })
    }
}

/// `http://<addr>/`, or `https://<addr>/` with TLS: the URI of every request to `addr`.
pub(crate) fn uri_for(addr: &str, tls: bool) -> Result<Uri> {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}/").parse().map_err(|_| {
        Error::bad_request(
            ID,
            format!("{addr:?} is not an address to dial: expected host:port"),
        )
    })
}

/// One unary call: `POST /` with the request's mucp head, on a pooled connection; the reply's
/// `Micro-Error` is the node's answer, anything that keeps the reply from arriving whole makes
/// the node unreachable.
pub(crate) async fn unary(
    client: &PoolClient,
    uri: Uri,
    addr: &str,
    req: &rpc::Request,
    params: CallParams,
    opts: &HttpOptions,
    tls: Option<&ClientTls>,
) -> std::result::Result<rpc::Response, AttemptError> {
    if req.body.len() > opts.max_body_bytes {
        // Refused here: the node is not at fault.
        return Err(AttemptError::Answered(Error::payload_too_large(
            ID,
            format!(
                "request body of {} bytes exceeds the limit of {} bytes",
                req.body.len(),
                opts.max_body_bytes
            ),
        )));
    }
    let head = request_head(req, params.timeout).map_err(AttemptError::Answered)?;
    let mut request = Request::new(Full::new(req.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = head;
    let connect_timeout = params.connect_timeout;
    let sending = CONNECT_TIMEOUT.scope(connect_timeout, client.request(request));
    let reply = sending.await.map_err(|e| {
        AttemptError::Unreachable(if let Some(e) = find_micro_error(&e) {
            e.clone()
        } else if e.is_connect() {
            connect_error(addr, find_io(&e), connect_timeout)
        } else {
            failure(addr, "request to", &e, tls)
        })
    })?;
    let (head, mut body) = reply.into_parts();
    let limit = opts.max_body_bytes;
    let deadline = Instant::now() + opts.body_read_timeout;
    let body = read_to_limit(&mut body, limit, deadline, &mut Admitted::unbounded())
        .await
        .map_err(|e| {
            AttemptError::Unreachable(match e {
                ReadError::TooLarge(_) => Error::payload_too_large(
                    ID,
                    format!("reply from {addr} is larger than the limit of {limit} bytes"),
                ),
                ReadError::TimedOut => Error::timeout(
                    ID,
                    format!(
                        "reply body from {addr} did not arrive within {:?}",
                        opts.body_read_timeout
                    ),
                ),
                ReadError::Failed(e) => {
                    Error::internal(ID, format!("reading the reply from {addr}: {}", causes(&e)))
                }
                ReadError::Busy(e) => e,
            })
        })?;
    if let Some(e) = micro_error(&head.headers) {
        return Err(AttemptError::Answered(e));
    }
    if head.status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let detail = if text.is_empty() {
            format!("{addr} answered HTTP {}", head.status)
        } else {
            text
        };
        let e = Error::new(ID, i32::from(head.status.as_u16()), detail);
        return Err(AttemptError::Unreachable(e));
    }
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(rpc::Response {
        content_type,
        metadata: reply_metadata(&head.headers),
        body,
        stream: None,
    })
}

type ReplyFuture = Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>;

/// The client end of a stream: one h2c connection carrying one `POST /` whose request and
/// response bodies hold frames.
pub(crate) struct StreamClientSocket {
    addr: String,
    uri: Uri,
    opts: Arc<HttpOptions>,
    tls: Option<Arc<ClientTls>>,
    /// The first rustls error of the connection, which hyper's HTTP/2 errors leave out.
    tls_failure: Option<Arc<OnceLock<rustls::Error>>>,
    // Kept for the socket's lifetime: hyper ends the connection once every sender is gone.
    sender: http2::SendRequest<ChannelBody>,
    started: bool,
    tx: Option<mpsc::Sender<Bytes>>,
    reply: Option<ReplyFuture>,
    reader: Option<FrameReader>,
}

impl std::fmt::Debug for StreamClientSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClientSocket")
            .field("addr", &self.addr)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl StreamClientSocket {
    /// Connects to `addr` and speaks HTTP/2 with prior knowledge, or over TLS with ALPN `h2`
    /// when `tls` is given; connecting and the TLS handshake share `connect_timeout`.
    pub(crate) async fn connect(
        addr: &str,
        uri: Uri,
        opts: Arc<HttpOptions>,
        connect_timeout: Duration,
        tls: Option<Arc<ClientTls>>,
    ) -> Result<Self> {
        let deadline = Instant::now() + connect_timeout;
        let tcp = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(connect_error(addr, None, connect_timeout)),
            Ok(Err(e)) => return Err(connect_error(addr, Some(&e), connect_timeout)),
            Ok(Ok(tcp)) => tcp,
        };
        // Nagle's algorithm only delays small stream messages.
        let _ = tcp.set_nodelay(true);
        let mut tls_failure = None;
        let stream = match &tls {
            None => ClientStream::Plain(tcp),
            Some(tls) => {
                let host = uri.host().unwrap_or_default();
                match timeout_at(deadline, tls.handshake(tcp, addr, host, true)).await {
                    Ok(Ok(stream)) => {
                        let (conn, failure) = TlsConn::new(stream);
                        tls_failure = Some(failure);
                        ClientStream::Tls(Box::new(conn))
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(tls.handshake_timeout(addr, connect_timeout)),
                }
            }
        };
        let handshake = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
            .handshake(TokioIo::new(stream));
        let (sender, conn) = match timeout(connect_timeout, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(Error::internal(
                    ID,
                    format!("HTTP/2 handshake with {addr}: {}", causes(&e)),
                ))
            }
            Err(_) => {
                return Err(Error::internal(
                    ID,
                    format!("HTTP/2 handshake with {addr} timed out after {connect_timeout:?}"),
                ))
            }
        };
        let peer = addr.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer, error = %e, "stream connection ended with an error");
            }
        });
        Ok(StreamClientSocket {
            addr: addr.to_string(),
            uri,
            opts,
            tls,
            tls_failure,
            sender,
            started: false,
            tx: None,
            reply: None,
            reader: None,
        })
    }

    /// Sends the request head (the first message's header) and keeps the body open.
    fn start(&mut self, header: &Metadata) -> Result<()> {
        let mut headers = to_header_map(header, "stream")?;
        if !is_stream(&headers) {
            headers.insert("micro-stream", HeaderValue::from_static("1"));
        }
        let (tx, body) = ChannelBody::new(STREAM_BUFFER, None);
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        self.reply = Some(Box::pin(self.sender.send_request(req)));
        self.tx = Some(tx);
        self.started = true;
        Ok(())
    }

    fn closed_error(&self) -> Error {
        Error::internal(
            ID,
            format!(
                "the stream to {} was closed or reset by the peer",
                self.addr
            ),
        )
    }
}

#[async_trait::async_trait]
impl Socket for StreamClientSocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        if !self.started {
            self.start(&msg.header)?;
        }
        let frame = frame::encode(&msg, &self.opts)?;
        let Some(tx) = &self.tx else {
            return Err(Error::internal(
                ID,
                format!("send after close on the stream to {}", self.addr),
            ));
        };
        if tx.send(frame).await.is_err() {
            return Err(self.closed_error());
        }
        Ok(())
    }

    /// Cancel-safe, as [`Socket::recv`] asks.
    async fn recv(&mut self) -> Result<Option<Message>> {
        if !self.started {
            self.start(&Metadata::new())?;
        }
        if self.reader.is_none() {
            // Polled where it lies and taken once it has answered: a `recv` given up for
            // another branch of a `select!` loses nothing.
            let Some(pending) = self.reply.as_mut() else {
                return Err(self.closed_error());
            };
            let reply = pending.await;
            self.reply = None;
            let reply = reply.map_err(|e| {
                let recorded = self.tls_failure.as_ref().and_then(|f| f.get());
                match (&self.tls, recorded) {
                    (Some(tls), Some(cause)) => Error::internal(
                        ID,
                        format!(
                            "the stream to {} failed: {}",
                            self.addr,
                            tls.explain(&self.addr, cause)
                        ),
                    ),
                    _ => failure(&self.addr, "the stream to", &e, self.tls.as_deref()),
                }
            })?;
            if let Some(e) = micro_error(reply.headers()) {
                return Err(e);
            }
            if reply.status() != StatusCode::OK {
                return Err(Error::new(
                    ID,
                    i32::from(reply.status().as_u16()),
                    format!(
                        "{} refused the stream with HTTP {}",
                        self.addr,
                        reply.status()
                    ),
                ));
            }
            self.reader = Some(FrameReader::new(
                reply.into_body(),
                &self.opts,
                self.addr.clone(),
                None,
            ));
        }
        match &mut self.reader {
            Some(reader) => reader.next().await,
            None => Err(self.closed_error()),
        }
    }

    async fn close(&mut self) -> Result<()> {
        if !self.started {
            self.start(&Metadata::new())?;
        }
        // Dropping the sender ends the request body: the server's recv then sees None.
        self.tx = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        self.addr.clone()
    }
}

/// The error for an address that could not be reached: a retryable 503 naming the address (as
/// the gRPC transport's), so that a gateway answers it as the unavailable backend it is.
fn connect_error(addr: &str, cause: Option<&io::Error>, connect_timeout: Duration) -> Error {
    let why = match cause {
        None => format!("timed out after {connect_timeout:?}"),
        Some(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("timed out after {connect_timeout:?}")
        }
        // The kind reads best ("connection refused"); the message adds "(os error 111)".
        Some(e) if e.raw_os_error().is_some() => e.kind().to_string(),
        Some(e) => e.to_string(),
    };
    Error::new(ID, 503, format!("connect to {addr}: {why}"))
}

/// The error for an exchange with `addr` that failed after connecting ("request to",
/// "the stream to"): what TLS said when it was TLS, with a hint when a plaintext client got
/// something other than HTTP back.
fn failure(
    addr: &str,
    what: &str,
    err: &(dyn StdError + 'static),
    tls: Option<&ClientTls>,
) -> Error {
    if let (Some(tls), Some(e)) = (tls, find_rustls(err)) {
        // With TLS 1.3 a server refuses a client certificate only after the client's side of
        // the handshake is done, so the refusal shows up here, on the first exchange.
        return Error::internal(
            ID,
            format!("{what} {addr} failed: {}", tls.explain(addr, e)),
        );
    }
    let mut detail = format!("{what} {addr} failed: {}", causes(err));
    // A TLS server answers plaintext with a TLS alert or by closing the connection.
    if tls.is_none() {
        if find_hyper(err).is_some_and(hyper::Error::is_parse) {
            detail.push_str(&format!(
                " ({addr} did not answer in HTTP: if it expects TLS, configure TLS on this \
                 transport)"
            ));
        } else if find_io(err).is_some() {
            detail.push_str(&format!(
                " (if {addr} expects TLS, configure TLS on this transport)"
            ));
        }
    }
    Error::internal(ID, detail)
}

/// The micro error behind `err`, as raised by the TLS side of [`TimedConnector`].
fn find_micro_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<Error>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// The rustls error behind `err`: tokio-rustls wraps them in `io::Error`s, which do not
/// report what they wrap as their `source`.
fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e.downcast_ref::<io::Error>().and_then(rustls_error_of) {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// The first hyper error in `err`'s chain.
fn find_hyper<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a hyper::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<hyper::Error>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// The innermost I/O error behind `err`, if any.
fn find_io<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(err);
    let mut found = None;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            found = Some(io);
        }
        cur = e.source();
    }
    found
}

/// `err` and its causes, as one line. The outermost layer is left out when it has a cause:
/// hyper-util's own says only "client error (SendRequest)".
pub(crate) fn causes(err: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = if err.source().is_some() {
        err.source()
    } else {
        Some(err)
    };
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}
