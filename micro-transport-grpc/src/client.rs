//! The client side: pooled tonic channels (one per address, HTTP/2 multiplexes the calls),
//! [`unary`] calls, and [`ClientSocket`], which turns a stream's messages into one standard
//! streaming gRPC call.
//!
//! A channel nobody dials for [`POOL_IDLE_TIMEOUT`] is dropped from the pool, closing its
//! connection: nodes come and go, and one that left is simply never dialled again. The pool
//! also holds at most [`POOL_MAX_CHANNELS`] addresses, dropping the least recently used.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::Uri;
use hyper_util::rt::TokioIo;
use micro_core::headers::{self, EOS, ERROR, STREAM};
use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{CallParams, Message, Socket};
use micro_core::{Error, GrpcCode, Metadata, Result};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tonic::codec::{CompressionEncoding, Streaming};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tower::ServiceExt as _;

use crate::codec::RawCodec;
use crate::wire::{
    error_of, error_of_status, format_grpc_timeout, get, grpc_content_type, is_eos,
    metadata_of_headers, method_path, path_for, reply_content_type, request_headers, timeout_of,
};
use crate::{GrpcOptions, ID};

/// How many request messages of one call may wait to be written before `send` waits.
const REQUEST_BUFFER: usize = 16;

/// How long a pooled channel may go undialled before it is dropped: 60 s, the http
/// transport's default `pool_idle_timeout`. A call under way keeps its own handle, so a long
/// stream is not cut when its channel leaves the pool; the next dial connects anew.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many addresses may have a pooled channel at once.
pub(crate) const POOL_MAX_CHANNELS: usize = 1024;

type Connection = TokioIo<Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>>;

/// The client side of a transport: options, TLS and the channel pool.
pub(crate) struct ClientSide {
    opts: Arc<GrpcOptions>,
    pool: Mutex<Pool>,
    /// [`POOL_IDLE_TIMEOUT`] and [`POOL_MAX_CHANNELS`], as fields so that tests can shrink
    /// them.
    idle_timeout: Duration,
    max_channels: usize,
    next_id: AtomicU64,
    tls: OnceLock<Result<Arc<ClientConfig>>>,
}

/// One channel per address, with when each was last dialled.
struct Pool {
    channels: HashMap<String, Pooled>,
    /// Idle channels are looked for at most this often, so that a dial does not scan the
    /// whole pool each time.
    next_sweep: Instant,
}

struct Pooled {
    id: u64,
    channel: Channel,
    used: Instant,
}

impl Pool {
    /// Drops the channels undialled for `idle`, if it is time to look.
    fn sweep(&mut self, now: Instant, idle: Duration) {
        if now < self.next_sweep {
            return;
        }
        // Looking a quarter of the timeout apart drops a channel between `idle` and 1.25 x
        // `idle` after its last dial.
        self.next_sweep = now + idle / 4;
        self.channels
            .retain(|_, p| now.saturating_duration_since(p.used) < idle);
    }

    /// Makes room for one more address by dropping the least recently dialled.
    fn make_room(&mut self, max: usize) {
        while self.channels.len() >= max.max(1) {
            let oldest = self
                .channels
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(addr, _)| addr.clone());
            match oldest {
                Some(addr) => self.channels.remove(&addr),
                None => return,
            };
        }
    }
}

impl fmt::Debug for ClientSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSide")
            .field("channels", &self.pooled())
            .finish_non_exhaustive()
    }
}

impl ClientSide {
    pub(crate) fn new(opts: Arc<GrpcOptions>) -> Self {
        ClientSide {
            opts,
            pool: Mutex::new(Pool {
                channels: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            idle_timeout: POOL_IDLE_TIMEOUT,
            max_channels: POOL_MAX_CHANNELS,
            next_id: AtomicU64::new(1),
            tls: OnceLock::new(),
        }
    }

    /// How many addresses have a pooled channel.
    pub(crate) fn pooled(&self) -> usize {
        self.lock().channels.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client_tls(&self) -> Result<Option<Arc<ClientConfig>>> {
        match &self.opts.tls {
            None => Ok(None),
            Some(tls) => self
                .tls
                .get_or_init(|| tls.client_config())
                .clone()
                .map(Some),
        }
    }

    /// The pooled channel to `addr`, connecting first (within `timeout`) if there is none.
    pub(crate) async fn channel(&self, addr: &str, timeout: Duration) -> Result<(u64, Channel)> {
        {
            let now = Instant::now();
            let mut pool = self.lock();
            pool.sweep(now, self.idle_timeout);
            if let Some(found) = pool.channels.get_mut(addr) {
                found.used = now;
                return Ok((found.id, found.channel.clone()));
            }
        }
        let (id, channel) = self.connect(addr, timeout).await?;
        let mut pool = self.lock();
        if !pool.channels.contains_key(addr) {
            pool.make_room(self.max_channels);
        }
        // Another dial may have connected meanwhile; keep one channel per address.
        let pooled = pool.channels.entry(addr.to_string()).or_insert(Pooled {
            id,
            channel,
            used: Instant::now(),
        });
        pooled.used = Instant::now();
        Ok((pooled.id, pooled.channel.clone()))
    }

    /// Forgets `addr`'s channel after a connection failure, so the next dial connects anew
    /// (and reports why it cannot).
    fn evict(&self, addr: &str, id: u64) {
        let mut pool = self.lock();
        if pool.channels.get(addr).is_some_and(|p| p.id == id) {
            pool.channels.remove(addr);
        }
    }

    async fn connect(&self, addr: &str, timeout: Duration) -> Result<(u64, Channel)> {
        let tls = match (self.client_tls()?, &self.opts.tls) {
            (Some(config), Some(opts)) => {
                Some((TlsConnector::from(config), opts.server_name_for(addr)?))
            }
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bad_address = |e: &dyn fmt::Display| {
            Error::bad_request(ID, format!("{addr:?} is not a host:port to dial: {e}"))
        };
        // The URI only names the authority: the connector below dials and does TLS itself,
        // whatever tonic's own TLS features are, so the channel URI stays `http`.
        let origin: Uri = format!("{scheme}://{addr}")
            .parse()
            .map_err(|e| bad_address(&e))?;
        let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad_address(&e))?
            .origin(origin)
            .connect_timeout(self.opts.connect_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = self.opts.keepalive_interval {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(self.opts.keepalive_timeout);
        }
        let connector = Connector {
            addr: addr.into(),
            tls,
            opts: self.opts.clone(),
        };
        let timeout = timeout.min(self.opts.connect_timeout);
        let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| unreachable(addr, format!("connecting took longer than {timeout:?}")))?
            .map_err(|e| unreachable(addr, self.describe(addr, &e)))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok((id, channel))
    }

    /// A transport-level failure, explained.
    fn describe(&self, addr: &str, err: &(dyn std::error::Error + 'static)) -> String {
        if let Some(tls) = &self.opts.tls {
            if let Some(explained) = tls.explain(addr, err) {
                return explained;
            }
        }
        let mut parts: Vec<String> = Vec::new();
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(failure) = e.downcast_ref::<ConnectFailure>() {
                return failure.0.clone();
            }
            let text = e.to_string();
            if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            next = e.source();
        }
        parts.join(": ")
    }
}

/// Whether the status is tonic's channel giving up at the call's `grpc-timeout`.
fn timed_out(status: &Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = e.source();
    }
    false
}

fn unreachable(addr: &str, why: String) -> Error {
    Error::new(ID, 503, format!("gRPC node {addr} unreachable: {why}"))
}

/// Why a connection could not be made, already explained.
#[derive(Debug)]
struct ConnectFailure(String);

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectFailure {}

/// Dials the address (and does the TLS handshake) for tonic's channel.
#[derive(Clone)]
struct Connector {
    addr: Arc<str>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    opts: Arc<GrpcOptions>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Connection;
    type Error = ConnectFailure;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Connection, ConnectFailure>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), ConnectFailure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr = &*this.addr;
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| ConnectFailure(format!("cannot connect to {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let Some((connector, name)) = this.tls else {
                return Ok(TokioIo::new(Either::Left(tcp)));
            };
            match connector.connect(name, tcp).await {
                Ok(tls) => Ok(TokioIo::new(Either::Right(tls))),
                Err(e) => {
                    let explained = this
                        .opts
                        .tls
                        .as_ref()
                        .and_then(|tls| tls.explain(addr, &e))
                        .unwrap_or_else(|| format!("TLS handshake with {addr} failed: {e}"));
                    Err(ConnectFailure(explained))
                }
            }
        })
    }
}

/// The gRPC `content-type` a call goes out with; tonic itself always writes
/// `application/grpc`.
#[derive(Debug, Clone)]
struct WireContentType(HeaderValue);

fn set_content_type(mut req: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    if let Some(WireContentType(ct)) = req.extensions().get::<WireContentType>().cloned() {
        req.headers_mut().insert(CONTENT_TYPE, ct);
    }
    req
}

/// The channel as the calls use it: with the wire content type set on each request.
type WireService = tower::util::MapRequest<
    Channel,
    fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>,
>;

/// A tonic client on `channel`, with the transport's compression and size limits.
fn grpc_client(opts: &GrpcOptions, channel: &Channel) -> tonic::client::Grpc<WireService> {
    let service = channel.clone().map_request(set_content_type as fn(_) -> _);
    let grpc = tonic::client::Grpc::new(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(opts.max_recv_message_bytes)
        .max_encoding_message_size(opts.max_send_message_bytes);
    if opts.gzip {
        grpc.send_compressed(CompressionEncoding::Gzip)
    } else {
        grpc
    }
}

/// One unary call: tonic's `Grpc::unary` on the pooled channel to `addr`, on the caller's
/// task, bounded by the call's timeout (sent as `grpc-timeout`, which tonic's channel
/// enforces, and as `timeout` in decimal nanoseconds, which Go Micro's gRPC server reads).
pub(crate) async fn unary(
    side: &Arc<ClientSide>,
    addr: &str,
    req: &rpc::Request,
    params: CallParams,
) -> std::result::Result<rpc::Response, AttemptError> {
    use AttemptError::{Answered, Unreachable};
    let (channel_id, channel) = side
        .channel(addr, params.connect_timeout)
        .await
        .map_err(Unreachable)?;
    let error_id = || format!("{}.{}", req.service, req.endpoint);
    let path = method_path(
        &req.endpoint,
        req.proto_service.as_deref(),
        Some(&req.service),
    )
    .map_err(Answered)?;
    let path = PathAndQuery::from_maybe_shared(Bytes::from(path)).map_err(|e| {
        Answered(Error::bad_request(
            ID,
            format!("not a gRPC method path: {e}"),
        ))
    })?;
    let wire_ct = grpc_content_type(Some(&req.content_type)).map_err(Answered)?;
    let request_ct = if wire_ct == "application/grpc+json" {
        "application/json"
    } else {
        "application/protobuf"
    };
    let limit = side.opts.max_send_message_bytes;
    if req.body.len() > limit {
        return Err(Answered(Error::from_grpc(
            ID,
            GrpcCode::ResourceExhausted,
            format!(
                "the request of {} bytes for {path} exceeds the limit of {limit} bytes \
                 (MICRO_GRPC_MAX_SEND_MSG_SIZE)",
                req.body.len()
            ),
        )));
    }
    let mut metadata = request_headers(&req.metadata).map_err(Answered)?;
    if let Ok(value) = HeaderValue::from_str(&params.timeout.as_nanos().to_string()) {
        metadata.insert(http::header::HeaderName::from_static("timeout"), value);
    }
    if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(params.timeout)) {
        metadata.insert("grpc-timeout", value);
    }
    let mut request = tonic::Request::new(req.body.clone());
    *request.metadata_mut() = MetadataMap::from_headers(metadata);
    // tonic writes `application/grpc` itself; only another content type needs carrying.
    if wire_ct != "application/grpc" {
        request
            .extensions_mut()
            .insert(WireContentType(HeaderValue::from_static(wire_ct)));
    }
    let mut grpc = grpc_client(&side.opts, &channel);
    let call = async move {
        grpc.ready()
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        grpc.unary(request, path, RawCodec).await
    };
    let deadline_passed = || {
        Answered(Error::timeout(
            error_id(),
            format!(
                "no reply from {addr} to {} within the deadline of {:?}",
                req.endpoint, params.timeout
            ),
        ))
    };
    // tonic's channel enforces the grpc-timeout it sends: no timer of our own.
    let status = match call.await {
        Ok(response) => {
            // tonic has merged the trailers into the metadata already.
            let (metadata, body, _) = response.into_parts();
            let headers = metadata.into_headers();
            let wire_ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            return Ok(rpc::Response {
                content_type: reply_content_type(wire_ct, request_ct).to_string(),
                metadata: metadata_of_headers(&headers),
                body,
                stream: None,
            });
        }
        Err(status) => status,
    };
    if timed_out(&status) {
        // The channel enforces the grpc-timeout it sends: that is the deadline, not a
        // broken connection.
        return Err(deadline_passed());
    }
    if let Some(source) = std::error::Error::source(&status) {
        // The connection failed, not the call: the caller may try another node.
        side.evict(addr, channel_id);
        let why = side.describe(addr, source);
        let detail = format!("the call to {} failed: {why}", req.endpoint);
        return Err(Unreachable(unreachable(addr, detail)));
    }
    Err(Answered(error_of_status(&status, &error_id())))
}

type CallResult = std::result::Result<tonic::Response<Streaming<Bytes>>, Status>;

enum State {
    /// Nothing sent yet.
    Idle,
    /// The call is under way; its response head has not arrived.
    Calling(JoinHandle<CallResult>),
    /// Reading replies; the response metadata still to be handed out.
    Receiving {
        replies: Box<Streaming<Bytes>>,
        metadata: Option<Metadata>,
        content_type: &'static str,
    },
    /// Ended: `recv` returns `None`.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Idle,
    Stream(String),
}

/// The client end of one streaming gRPC call (unary calls are [`unary`]).
pub(crate) struct ClientSocket {
    side: Arc<ClientSide>,
    addr: String,
    channel: (u64, Channel),
    mode: Mode,
    state: State,
    requests: Option<mpsc::Sender<Bytes>>,
    request_ct: &'static str,
    deadline: Option<(Instant, Duration)>,
    path: PathAndQuery,
    // The request's header, kept for naming the call in errors.
    request: Metadata,
}

impl fmt::Debug for ClientSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClientSocket")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Drop for ClientSocket {
    fn drop(&mut self) {
        if let State::Calling(task) = &self.state {
            task.abort();
        }
    }
}

impl ClientSocket {
    pub(crate) fn new(side: Arc<ClientSide>, addr: &str, channel: (u64, Channel)) -> Self {
        ClientSocket {
            side,
            addr: addr.to_string(),
            channel,
            mode: Mode::Idle,
            state: State::Idle,
            requests: None,
            request_ct: "application/protobuf",
            deadline: None,
            path: PathAndQuery::from_static("/"),
            request: Metadata::new(),
        }
    }

    /// The id of errors this call reports: `<service>.<endpoint>` when the request named them.
    fn error_id(&self) -> String {
        let header = &self.request;
        match (
            get(header, headers::SERVICE),
            get(header, headers::ENDPOINT).or_else(|| get(header, headers::METHOD)),
        ) {
            (Some(service), Some(endpoint)) => format!("{service}.{endpoint}"),
            _ => ID.to_string(),
        }
    }

    fn check_size(&self, body: &Bytes) -> Result<()> {
        let limit = self.side.opts.max_send_message_bytes;
        if body.len() > limit {
            return Err(Error::from_grpc(
                ID,
                GrpcCode::ResourceExhausted,
                format!(
                    "the request of {} bytes for {} exceeds the limit of {limit} bytes \
                     (MICRO_GRPC_MAX_SEND_MSG_SIZE)",
                    body.len(),
                    self.path
                ),
            ));
        }
        Ok(())
    }

    /// Starts the call with its first message.
    fn start(&mut self, msg: Message) -> Result<()> {
        let Message { header, .. } = msg;
        let path = path_for(&header)?;
        let path = PathAndQuery::from_maybe_shared(Bytes::from(path))
            .map_err(|e| Error::bad_request(ID, format!("not a gRPC method path: {e}")))?;
        self.path = path.clone();
        let wire_ct = grpc_content_type(get(&header, headers::CONTENT_TYPE))?;
        self.request_ct = if wire_ct == "application/grpc+json" {
            "application/json"
        } else {
            "application/protobuf"
        };
        let mut metadata = request_headers(&header)?;
        if let Some(timeout) = timeout_of(&header)? {
            if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(timeout)) {
                metadata.insert("grpc-timeout", value);
            }
            self.deadline = Some((Instant::now() + timeout, timeout));
        }
        // tonic writes `application/grpc` itself; only another content type needs carrying.
        let wire_ct = (wire_ct != "application/grpc")
            .then(|| WireContentType(HeaderValue::from_static(wire_ct)));
        let stream = get(&header, STREAM).map(str::to_string);
        self.request = header;
        let Some(id) = stream else {
            return Err(Error::internal(
                ID,
                "a gRPC socket carries streams: unary calls go through Transport::call",
            ));
        };
        self.mode = Mode::Stream(id);
        let (tx, rx) = mpsc::channel::<Bytes>(REQUEST_BUFFER);
        self.requests = Some(tx);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        *request.metadata_mut() = MetadataMap::from_headers(metadata);
        if let Some(ct) = wire_ct {
            request.extensions_mut().insert(ct);
        }
        let mut grpc = self.grpc();
        let task = tokio::spawn(async move {
            grpc.ready()
                .await
                .map_err(|e| Status::from_error(Box::new(e)))?;
            grpc.streaming(request, path, RawCodec).await
        });
        self.state = State::Calling(task);
        Ok(())
    }

    /// A tonic client for one call on the pooled channel.
    fn grpc(&self) -> tonic::client::Grpc<WireService> {
        grpc_client(&self.side.opts, &self.channel.1)
    }

    /// The headers of a message of this call: the stream id in stream mode.
    fn header(&self) -> Metadata {
        let mut header = Metadata::new();
        if let Mode::Stream(id) = &self.mode {
            header.insert_static(STREAM, id.clone());
        }
        header
    }

    /// The message or error for a status that ended the call.
    fn failed(&mut self, status: Status) -> Result<Option<Message>> {
        self.state = State::Done;
        if timed_out(&status) {
            // The channel enforces the grpc-timeout it sends: that is the deadline, not a
            // broken connection.
            return self.deadline_passed();
        }
        if let Some(source) = std::error::Error::source(&status) {
            // The connection failed, not the call: the caller may try another node.
            self.side.evict(&self.addr, self.channel.0);
            let why = self.side.describe(&self.addr, source);
            return Err(unreachable(
                &self.addr,
                format!("the call to {} failed: {why}", self.path),
            ));
        }
        let e = error_of_status(&status, &self.error_id());
        let mut header = self.header();
        header.insert_static(ERROR, e.to_json());
        Ok(Some(Message {
            header,
            body: Bytes::new(),
        }))
    }

    fn deadline_passed(&mut self) -> Result<Option<Message>> {
        self.state = State::Done;
        let after = self.deadline.map(|(_, t)| t).unwrap_or_default();
        let e = Error::timeout(
            self.error_id(),
            format!(
                "no reply from {} to {} within the deadline of {after:?}",
                self.addr, self.path
            ),
        );
        let mut header = self.header();
        header.insert_static(ERROR, e.to_json());
        Ok(Some(Message {
            header,
            body: Bytes::new(),
        }))
    }

    /// What one reply read from the stream means: the message (with the response metadata on
    /// the first), the end, or the status that ended the call.
    fn received(
        &mut self,
        next: std::result::Result<Option<Bytes>, Status>,
    ) -> Result<Option<Message>> {
        let mut header = self.header();
        let State::Receiving {
            metadata,
            content_type,
            ..
        } = &mut self.state
        else {
            return Ok(None);
        };
        header.insert_static(headers::CONTENT_TYPE, *content_type);
        match next {
            Ok(Some(body)) => {
                if let Some(mut first) = metadata.take() {
                    first.extend_from(&header);
                    header = first;
                }
                Ok(Some(Message { header, body }))
            }
            Ok(None) => {
                self.state = State::Done;
                header.insert_static(ERROR, EOS);
                Ok(Some(Message {
                    header,
                    body: Bytes::new(),
                }))
            }
            Err(status) => self.failed(status),
        }
    }
}

#[async_trait::async_trait]
impl Socket for ClientSocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        match &self.mode {
            Mode::Idle => self.start(msg),
            Mode::Stream(_) => {
                if is_eos(&msg.header) || error_of(&msg.header).is_some() {
                    // The end of the caller's messages: half-close the request stream.
                    self.requests = None;
                    return Ok(());
                }
                self.check_size(&msg.body)?;
                let Some(tx) = &self.requests else {
                    return Err(Error::internal(
                        ID,
                        format!(
                            "send on the stream {} to {} after its sending side was closed",
                            self.path, self.addr
                        ),
                    ));
                };
                tx.send(msg.body).await.map_err(|_| {
                    Error::internal(
                        ID,
                        format!(
                            "the stream {} to {} has ended; its last message tells why",
                            self.path, self.addr
                        ),
                    )
                })
            }
        }
    }

    /// Cancel-safe: each await polls what `self.state` holds in place, so a `recv` given up
    /// for another branch of a `select!` loses nothing.
    async fn recv(&mut self) -> Result<Option<Message>> {
        let deadline = self.deadline.map(|(at, _)| at);
        loop {
            match &mut self.state {
                State::Idle => {
                    return Err(Error::internal(
                        ID,
                        "recv on a gRPC socket before anything was sent",
                    ));
                }
                State::Done => return Ok(None),
                State::Calling(task) => {
                    let joined = tokio::select! {
                        joined = &mut *task => joined,
                        _ = crate::server::until(deadline) => {
                            task.abort();
                            return self.deadline_passed();
                        }
                    };
                    match joined {
                        Ok(Ok(response)) => {
                            let (metadata, replies, _) = response.into_parts();
                            let headers = metadata.into_headers();
                            let wire_ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
                            let content_type = reply_content_type(wire_ct, self.request_ct);
                            self.state = State::Receiving {
                                replies: Box::new(replies),
                                metadata: Some(metadata_of_headers(&headers)),
                                content_type,
                            };
                        }
                        Ok(Err(status)) => return self.failed(status),
                        Err(e) => {
                            self.state = State::Done;
                            return Err(Error::internal(
                                ID,
                                format!("the call {} to {} failed: {e}", self.path, self.addr),
                            ));
                        }
                    }
                }
                State::Receiving { replies, .. } => {
                    let next = tokio::select! {
                        next = replies.message() => next,
                        _ = crate::server::until(deadline) => return self.deadline_passed(),
                    };
                    return self.received(next);
                }
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.requests = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        self.addr.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GrpcListener, GrpcTransport};

    async fn listener() -> (GrpcListener, String) {
        // Nothing is called here: any handler will do.
        let (handler, _) = micro_conformance::transport::accepting(|_| {
            Some(micro_core::transport::EndpointKind::Unary)
        });
        let listener = GrpcTransport::default()
            .bind("127.0.0.1:0", handler)
            .await
            .expect("bind on loopback");
        let addr = micro_core::transport::Listener::local_addr(&listener);
        (listener, addr)
    }

    const DIAL: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn an_unused_channel_is_dropped_after_the_idle_timeout() {
        let (_a, gone) = listener().await;
        let (_b, kept) = listener().await;
        let side = ClientSide::new(Arc::new(GrpcOptions::default()));
        side.channel(&gone, DIAL).await.expect("dial");
        let (first, _) = side.channel(&kept, DIAL).await.expect("dial");
        assert_eq!(side.pooled(), 2);

        // Time is moved by hand: `kept` is dialled again (a pooled hit) just before the
        // timeout, `gone` is never dialled again, then the sweep runs past the timeout.
        let start = Instant::now();
        let almost = start + POOL_IDLE_TIMEOUT - Duration::from_secs(1);
        {
            let mut pool = side.lock();
            pool.channels.get_mut(&kept).expect("pooled").used = almost;
        }
        side.lock().sweep(
            start + POOL_IDLE_TIMEOUT + Duration::from_secs(1),
            side.idle_timeout,
        );
        assert_eq!(side.pooled(), 1, "the idle channel was dropped");
        let (again, _) = side.channel(&kept, DIAL).await.expect("dial");
        assert_eq!(again, first, "the channel in use is kept, not reconnected");
        let (fresh, _) = side.channel(&gone, DIAL).await.expect("dial");
        assert_ne!(fresh, first, "a dropped address connects anew when dialled");
    }

    #[tokio::test]
    async fn a_dial_drops_channels_left_idle() {
        let (_a, gone) = listener().await;
        let (_b, other) = listener().await;
        let mut side = ClientSide::new(Arc::new(GrpcOptions::default()));
        // A zero timeout: whatever is not being dialled right now has been idle long enough.
        side.idle_timeout = Duration::ZERO;
        side.channel(&gone, DIAL).await.expect("dial");
        side.channel(&other, DIAL).await.expect("dial");
        assert_eq!(
            side.pooled(),
            1,
            "the first channel left the pool at the next dial"
        );
        assert!(side.lock().channels.contains_key(&other));
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_max_channels() {
        let (_a, first) = listener().await;
        let (_b, second) = listener().await;
        let (_c, third) = listener().await;
        let mut side = ClientSide::new(Arc::new(GrpcOptions::default()));
        side.max_channels = 2;
        side.channel(&first, DIAL).await.expect("dial");
        side.channel(&second, DIAL).await.expect("dial");
        // `first` is dialled again, so `second` is now the least recently used.
        side.channel(&first, DIAL).await.expect("dial");
        side.channel(&third, DIAL).await.expect("dial");
        let pool = side.lock();
        assert_eq!(pool.channels.len(), 2);
        assert!(pool.channels.contains_key(&first));
        assert!(pool.channels.contains_key(&third));
    }
}
