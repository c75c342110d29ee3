//! The RPC client: selection, retries with backoff, deadlines, codecs, streams, publishing,
//! with a tower middleware stack around every call.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use micro_core::broker::Message as BrokerMessage;
use micro_core::rpc::{self, CallOptions, StreamSlot};
use micro_core::selector::{Outcome, Picker, SelectOptions};
use micro_core::transport::{CallParams, Message as TransportMessage, Socket};
use micro_core::{Broker, Codec, Error, Message, Metadata, Node, Result, Selector, Transport};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::codec::{Codecs, Decodable};
use crate::headers;
use crate::request::{Request, Response};
use crate::selector::DirectPicker;
use crate::BoxFuture;

/// The JSON codec's content type, the fallback for messages the client's codec cannot carry.
const JSON: &str = "application/json";

/// Client settings (Go Micro's names in brackets).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Retries after a failed first attempt (`client_retries`, default 1).
    pub retries: u32,
    /// Which failures are retried (`client_retry`): by default only those that cannot have
    /// run a handler ([`rpc::RetryPolicy`]).
    pub retry: rpc::RetryPolicy,
    /// The default deadline of a call (`client_request_timeout`, default 5 s).
    pub request_timeout: Duration,
    /// How long connecting to a node may take.
    pub dial_timeout: Duration,
    /// The codec for requests (`application/protobuf` by default).
    pub content_type: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retries: 1,
            retry: rpc::RetryPolicy::default(),
            request_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(5),
            content_type: "application/protobuf".into(),
        }
    }
}

/// Go Micro's backoff before retry number `attempt` (1 for the first retry): attempt^e x 100 ms.
pub fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    if attempt > 13 {
        return Duration::from_secs(120);
    }
    Duration::from_secs_f64(f64::from(attempt).powf(std::f64::consts::E) * 0.1)
}

pub use micro_core::rpc::Call;

/// The client's call path as a tower service; layers wrap it.
pub type CallService = BoxCloneSyncService<Call, rpc::Response, Error>;

/// One attempt's path (a call on one node) as a tower service; attempt layers wrap it.
pub type AttemptService = BoxCloneSyncService<Attempt, rpc::Response, AttemptError>;

pub use micro_core::rpc::{Attempt, AttemptError};

/// The publish path (one message to one topic) as a tower service; publish layers wrap it.
pub type PublishService = BoxCloneSyncService<Publication, (), Error>;

pub use micro_core::broker::Publication;

pub(crate) type Wrap<S> = Arc<dyn Fn(S) -> S + Send + Sync>;

/// The RPC client. Cheap to clone; clones share connections and the selector's cache.
#[derive(Clone)]
pub struct Client {
    parts: Arc<Parts>,
    service: CallService,
}

/// What a client is built from.
#[derive(Clone)]
struct Settings {
    selector: Arc<dyn Selector>,
    transport: Arc<dyn Transport>,
    /// More transports, for nodes whose `protocol` metadata names theirs.
    others: Vec<Arc<dyn Transport>>,
    broker: Arc<dyn Broker>,
    codecs: Codecs,
    opts: ClientOptions,
    call_layers: Vec<Wrap<CallService>>,
    attempt_layers: Vec<Wrap<AttemptService>>,
    publish_layers: Vec<Wrap<PublishService>>,
}

/// The settings and the attempt and publish paths built from them.
struct Parts {
    settings: Settings,
    attempt: AttemptService,
    publish: PublishService,
}

impl std::ops::Deref for Parts {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("selector", &self.parts.selector)
            .field("transport", &self.parts.transport.name())
            .field("broker", &self.parts.broker.name())
            .field("codecs", &self.parts.codecs)
            .field("options", &self.parts.opts)
            .finish()
    }
}

impl Client {
    /// A client that finds nodes with `selector`, reaches them over `transport` and publishes to
    /// `broker`.
    pub fn new(
        selector: Arc<dyn Selector>,
        transport: Arc<dyn Transport>,
        broker: Arc<dyn Broker>,
        codecs: Codecs,
        opts: ClientOptions,
    ) -> Self {
        Self::build(Settings {
            selector,
            transport,
            others: Vec::new(),
            broker,
            codecs,
            opts,
            call_layers: Vec::new(),
            attempt_layers: Vec::new(),
            publish_layers: Vec::new(),
        })
    }

    fn build(settings: Settings) -> Self {
        let connect = Connect {
            transport: settings.transport.clone(),
            others: settings.others.clone().into(),
            dial_timeout: settings.opts.dial_timeout,
        };
        let mut attempt = AttemptService::new(connect);
        for wrap in &settings.attempt_layers {
            attempt = wrap(attempt);
        }
        let mut publish = PublishService::new(Publish {
            broker: settings.broker.clone(),
        });
        for wrap in &settings.publish_layers {
            publish = wrap(publish);
        }
        let parts = Arc::new(Parts {
            settings,
            attempt,
            publish,
        });
        let mut service = CallService::new(Dispatch {
            parts: parts.clone(),
        });
        for wrap in &parts.call_layers {
            service = wrap(service);
        }
        Client { parts, service }
    }

    fn rebuild(&self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.parts.settings.clone();
        change(&mut settings);
        Self::build(settings)
    }

    /// Wraps the call path in a tower layer (tracing, metrics, rate limits, ...): it sees each
    /// call once, retries included. Layers added later run first; errors of tower's own
    /// layers become Micro errors as [`crate::layer`] says.
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: Layer<CallService> + Send + Sync + 'static,
        L::Service: Service<Call, Response = rpc::Response> + Clone + Send + Sync + 'static,
        <L::Service as Service<Call>>::Error: Into<crate::layer::BoxError>,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        self.rebuild(|s| {
            s.call_layers.push(Arc::new(move |svc| {
                CallService::new(tower::util::MapErr::new(
                    layer.layer(svc),
                    crate::layer::error_of,
                ))
            }))
        })
    }

    /// Wraps each attempt (one try on one node) in a tower layer: per-attempt spans, per-node
    /// circuit breakers, ... Layers added later run first.
    pub fn attempt_layer<L>(self, layer: L) -> Self
    where
        L: Layer<AttemptService> + Send + Sync + 'static,
        L::Service: Service<Attempt, Response = rpc::Response, Error = AttemptError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Attempt>>::Future: Send + 'static,
    {
        self.rebuild(|s| {
            s.attempt_layers
                .push(Arc::new(move |svc| AttemptService::new(layer.layer(svc))))
        })
    }

    /// Wraps the publish path (one message to one topic) in a tower layer: producer spans,
    /// message counters, ... Layers added later run first; errors of tower's own layers
    /// become Micro errors as [`crate::layer`] says.
    pub fn publish_layer<L>(self, layer: L) -> Self
    where
        L: Layer<PublishService> + Send + Sync + 'static,
        L::Service: Service<Publication, Response = ()> + Clone + Send + Sync + 'static,
        <L::Service as Service<Publication>>::Error: Into<crate::layer::BoxError>,
        <L::Service as Service<Publication>>::Future: Send + 'static,
    {
        self.rebuild(|s| {
            s.publish_layers.push(Arc::new(move |svc| {
                PublishService::new(tower::util::MapErr::new(
                    layer.layer(svc),
                    crate::layer::error_of,
                ))
            }))
        })
    }

    pub(crate) fn with_publish_wrap(&self, wrap: Wrap<PublishService>) -> Self {
        self.rebuild(|s| s.publish_layers.push(wrap))
    }

    pub(crate) fn with_call_wrap(&self, wrap: Wrap<CallService>) -> Self {
        self.rebuild(|s| s.call_layers.push(wrap))
    }

    pub(crate) fn with_attempt_wrap(&self, wrap: Wrap<AttemptService>) -> Self {
        self.rebuild(|s| s.attempt_layers.push(wrap))
    }

    /// Adds a transport for nodes that register its protocol (`protocol=grpc`, say), so one
    /// client calls services of either protocol side by side.
    pub fn with_transport(&self, transport: Arc<dyn Transport>) -> Self {
        self.rebuild(|s| {
            s.others.retain(|t| t.protocol() != transport.protocol());
            s.others.push(transport);
        })
    }

    /// This client, encoding requests with another codec (`application/json`, say). Its
    /// middleware stays as it was.
    pub fn with_content_type(&self, content_type: impl Into<String>) -> Self {
        self.rebuild(|s| s.opts.content_type = content_type.into())
    }

    /// The client's settings.
    pub fn options(&self) -> &ClientOptions {
        &self.parts.opts
    }

    /// The broker publishing goes to.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.parts.broker
    }

    /// The codecs this client speaks.
    pub fn codecs(&self) -> &Codecs {
        &self.parts.codecs
    }

    fn codec(&self) -> Result<Arc<dyn Codec>> {
        self.parts.codecs.get(&self.parts.opts.content_type)
    }

    /// `msg` encoded with the client's codec or, when that codec cannot carry the message's
    /// type (a [`Json`](crate::Json) value on the default protobuf codec), with JSON; the
    /// codec used comes back with the bytes.
    pub(crate) fn encode(&self, msg: &dyn Message) -> Result<(Arc<dyn Codec>, Bytes)> {
        let codec = self.codec()?;
        let refused = match codec.encode(msg) {
            Ok(body) => return Ok((codec, body)),
            Err(e) if e.id == "micro.codec" && e.code == 400 => e,
            Err(e) => return Err(e),
        };
        match self.parts.codecs.get(JSON) {
            Ok(json) if json.content_type() != codec.content_type() => {
                let body = json.encode(msg).map_err(|_| refused)?;
                Ok((json, body))
            }
            _ => Err(refused),
        }
    }

    /// A typed unary call to `endpoint` (`Greeter.Hello`) of `service`.
    pub async fn unary<Req, Rsp>(
        &self,
        service: &str,
        endpoint: &str,
        req: Request<Req>,
    ) -> Result<Response<Rsp>>
    where
        Req: Message,
        Rsp: Decodable,
    {
        let (message, metadata, options) = req.into_parts();
        let (codec, body) = self.encode(&message)?;
        let request = rpc::Request {
            id: String::new(),
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            proto_service: options.proto_service.clone(),
            content_type: codec.content_type().to_string(),
            metadata,
            body,
        };
        let rsp = self.call_raw(request, options).await?;
        let codec = match rsp.content_type.is_empty() {
            true => codec,
            false => self.parts.codecs.get(&rsp.content_type)?,
        };
        let out = Rsp::decode_with(&*codec, &rsp.body)?;
        Ok(Response::from_parts(out, rsp.metadata))
    }

    /// An encoded unary call through the middleware stack.
    pub async fn call_raw(
        &self,
        request: rpc::Request,
        options: CallOptions,
    ) -> Result<rpc::Response> {
        self.service
            .clone()
            .oneshot(Call {
                request,
                options,
                stream: false,
            })
            .await
    }

    /// Opens a stream through the middleware stack (layers see it as a [`Call`] with `stream`
    /// set); returns its socket. An empty `request.id` gets a fresh stream id.
    pub async fn open_raw(
        &self,
        mut request: rpc::Request,
        options: CallOptions,
    ) -> Result<(Box<dyn Socket>, String)> {
        if request.id.is_empty() {
            request.id = uuid::Uuid::new_v4().to_string();
        }
        let stream_id = request.id.clone();
        let target = target(&request);
        let rsp = self
            .service
            .clone()
            .oneshot(Call {
                request,
                options,
                stream: true,
            })
            .await?;
        let socket = rsp.stream.and_then(|slot| slot.take()).ok_or_else(|| {
            Error::internal(
                "micro.client",
                format!("a layer answered the stream to {target} without opening it"),
            )
        })?;
        Ok((socket, stream_id))
    }

    /// Opens a stream for client-streaming or bidirectional endpoints. The request carries only
    /// metadata and options.
    pub async fn stream<Req, Rsp>(
        &self,
        service: &str,
        endpoint: &str,
        req: Request<()>,
    ) -> Result<Stream<Req, Rsp>>
    where
        Req: Message,
        Rsp: Decodable,
    {
        let codec = self.codec()?;
        let ((), metadata, options) = req.into_parts();
        let request = rpc::Request {
            id: String::new(),
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            proto_service: options.proto_service.clone(),
            content_type: codec.content_type().to_string(),
            metadata,
            body: Bytes::new(),
        };
        let (socket, stream_id) = self.open_raw(request, options).await?;
        Ok(Stream {
            socket,
            codec,
            codecs: self.parts.codecs.clone(),
            stream_id,
            send_closed: false,
            finished: false,
            _types: PhantomData,
        })
    }

    /// Opens a stream for a server-streaming endpoint: sends `req`, then reads the replies.
    pub async fn server_stream<Req, Rsp>(
        &self,
        service: &str,
        endpoint: &str,
        req: Request<Req>,
    ) -> Result<Stream<Req, Rsp>>
    where
        Req: Message,
        Rsp: Decodable,
    {
        let (message, metadata, options) = req.into_parts();
        let mut opener = Request::new(());
        *opener.metadata_mut() = metadata;
        *opener.options_mut() = options;
        let mut stream = self.stream(service, endpoint, opener).await?;
        stream.send(&message).await?;
        stream.close_send().await?;
        Ok(stream)
    }

    /// Publishes an already-encoded message through the publish layers to the broker.
    pub async fn publish_raw(&self, topic: &str, msg: BrokerMessage) -> Result<()> {
        let publication = Publication {
            topic: topic.to_string(),
            message: msg,
        };
        self.parts.publish.clone().oneshot(publication).await
    }
}

#[async_trait::async_trait]
impl micro_core::Client for Client {
    async fn call(&self, req: rpc::Request, opts: &CallOptions) -> Result<rpc::Response> {
        self.call_raw(req, opts.clone()).await
    }

    async fn stream(&self, req: rpc::Request, opts: &CallOptions) -> Result<Box<dyn Socket>> {
        Ok(self.open_raw(req, opts.clone()).await?.0)
    }

    async fn publish(&self, topic: &str, msg: BrokerMessage) -> Result<()> {
        self.publish_raw(topic, msg).await
    }
}

/// The innermost call service: select, dial, send, receive, retry.
#[derive(Clone)]
struct Dispatch {
    parts: Arc<Parts>,
}

impl Service<Call> for Dispatch {
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        // The parts are passed apart (not as one `Call` taken apart inside), so the future
        // stores them once: it stays under 1 KiB, glibc's large-chunk threshold, whose slower
        // path (with `malloc_consolidate`) cost several percent of every call.
        let Call {
            request,
            options,
            stream,
        } = call;
        if stream {
            let parts = self.parts.clone();
            return Box::pin(async move {
                let socket = open_stream(&parts, request, &options).await?;
                Ok(rpc::Response {
                    stream: Some(StreamSlot::new(socket)),
                    ..rpc::Response::default()
                })
            });
        }
        Box::pin(dispatch(self.parts.clone(), request, options))
    }
}

/// The innermost publish service: hand the message to the broker.
#[derive(Clone)]
struct Publish {
    broker: Arc<dyn Broker>,
}

impl Service<Publication> for Publish {
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, p: Publication) -> Self::Future {
        let broker = self.broker.clone();
        Box::pin(async move { broker.publish(&p.topic, p.message).await })
    }
}

/// The innermost attempt service: dial the node's transport, send, receive.
#[derive(Clone)]
struct Connect {
    transport: Arc<dyn Transport>,
    // Shared, not a `Vec`: the attempt service is cloned for every call.
    others: Arc<[Arc<dyn Transport>]>,
    dial_timeout: Duration,
}

impl Connect {
    /// The transport for a node.
    fn transport_for(&self, node: &Node) -> &Arc<dyn Transport> {
        transport_for(&self.transport, &self.others, node)
    }
}

/// The transport for a node: the one of its `protocol`, else the default.
fn transport_for<'a>(
    default: &'a Arc<dyn Transport>,
    others: &'a [Arc<dyn Transport>],
    node: &Node,
) -> &'a Arc<dyn Transport> {
    match node.metadata.get("protocol") {
        Some(p) if p != default.protocol() => {
            others.iter().find(|t| t.protocol() == p).unwrap_or(default)
        }
        _ => default,
    }
}

/// Removes the [`CallOptions::tls_only_metadata`] entries from a request about to leave over
/// `transport`, unless the transport dials with TLS.
fn keep_off_plaintext(transport: &dyn Transport, names: &[String], request: &mut rpc::Request) {
    if !names.is_empty() && !transport.tls() {
        request
            .metadata
            .retain(|key, _| !names.iter().any(|n| n.eq_ignore_ascii_case(key)));
    }
}

impl Service<Attempt> for Connect {
    type Response = rpc::Response;
    type Error = AttemptError;
    type Future = BoxFuture<'static, std::result::Result<rpc::Response, AttemptError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { attempt_once(&this, attempt).await })
    }
}

async fn picker_for(parts: &Parts, service: &str, opts: &CallOptions) -> Result<Box<dyn Picker>> {
    match &opts.address {
        Some(addr) => Ok(Box::new(DirectPicker::new(addr))),
        None => {
            let select = SelectOptions {
                filters: opts.filters.clone(),
                strategy: None,
            };
            parts.selector.select(service, &select).await
        }
    }
}

fn target(req: &rpc::Request) -> String {
    format!("{}.{}", req.service, req.endpoint)
}

async fn dispatch(
    parts: Arc<Parts>,
    request: rpc::Request,
    options: CallOptions,
) -> Result<rpc::Response> {
    let parts = &*parts;
    let timeout = options.timeout.unwrap_or(parts.opts.request_timeout);
    let deadline = Instant::now() + timeout;
    let retries = options.retries.unwrap_or(parts.opts.retries);
    let policy = options.retry.unwrap_or(parts.opts.retry);
    let mut picker = picker_for(parts, &request.service, &options).await?;
    let mut attempt = 0;
    loop {
        let wait = backoff(attempt);
        if Instant::now() + wait >= deadline {
            return Err(deadline_error(&request, timeout));
        }
        // Not even a zero sleep on the first attempt: tokio rounds a sleep up to the timer's
        // next millisecond tick, which cost every call up to 1 ms (micro-bench found it).
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        // Held to the end of the attempt: dropping it, however the call ends (cancelled with
        // this future included), takes the node's in-flight count back.
        let node = picker.pick()?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut this_try = request.clone();
        if this_try.id.is_empty() {
            this_try.id = uuid::Uuid::new_v4().to_string();
        }
        if !options.tls_only_metadata.is_empty() {
            let transport = transport_for(&parts.transport, &parts.others, node.node());
            keep_off_plaintext(&**transport, &options.tls_only_metadata, &mut this_try);
        }
        let try_once = Attempt {
            node: node.node().clone(),
            request: this_try,
            timeout: remaining,
            number: attempt,
        };
        let result = tokio::time::timeout(remaining, parts.attempt.clone().oneshot(try_once)).await;
        let (err, reached) = match result {
            Ok(Ok(rsp)) => {
                parts
                    .selector
                    .mark(&request.service, &node, Outcome::Success);
                return Ok(rsp);
            }
            Ok(Err(AttemptError::Answered(e))) => {
                parts
                    .selector
                    .mark(&request.service, &node, Outcome::Success);
                (e, true)
            }
            Ok(Err(AttemptError::Unreachable(e))) => {
                parts
                    .selector
                    .mark(&request.service, &node, Outcome::Failure);
                (e, false)
            }
            Err(_) => {
                // No answer within the deadline: a node that hangs is as bad as one that is
                // down, so eject it like one.
                parts
                    .selector
                    .mark(&request.service, &node, Outcome::Failure);
                return Err(deadline_error(&request, timeout));
            }
        };
        if !policy.retries(&err, reached) || attempt >= retries {
            return Err(err);
        }
        tracing::debug!(target = %target(&request), node = %node.address, error = %err, attempt, "retrying");
        attempt += 1;
    }
}

fn deadline_error(req: &rpc::Request, timeout: Duration) -> Error {
    Error::timeout(
        "micro.client",
        format!("call to {} timed out after {timeout:?}", target(req)),
    )
}

async fn attempt_once(
    connect: &Connect,
    attempt: Attempt,
) -> std::result::Result<rpc::Response, AttemptError> {
    let params = CallParams {
        timeout: attempt.timeout,
        connect_timeout: connect.dial_timeout.min(attempt.timeout),
    };
    let node = &attempt.node;
    connect
        .transport_for(node)
        .call(&node.address, &attempt.request, params)
        .await
}

async fn open_stream(
    parts: &Parts,
    req: rpc::Request,
    opts: &CallOptions,
) -> Result<Box<dyn Socket>> {
    let mut picker = picker_for(parts, &req.service, opts).await?;
    let retries = opts.retries.unwrap_or(parts.opts.retries);
    let connect = Connect {
        transport: parts.transport.clone(),
        others: parts.others.clone().into(),
        dial_timeout: parts.opts.dial_timeout,
    };
    let mut attempt = 0;
    loop {
        let node = picker.pick()?;
        let transport = connect.transport_for(&node);
        let opened = if opts.tls_only_metadata.is_empty() || transport.tls() {
            transport
                .stream(&node.address, &req, parts.opts.dial_timeout)
                .await
        } else {
            let mut plain = req.clone();
            keep_off_plaintext(&**transport, &opts.tls_only_metadata, &mut plain);
            transport
                .stream(&node.address, &plain, parts.opts.dial_timeout)
                .await
        };
        match opened {
            Ok(socket) => {
                parts.selector.mark(&req.service, &node, Outcome::Success);
                return Ok(socket);
            }
            Err(e) => {
                parts.selector.mark(&req.service, &node, Outcome::Failure);
                if attempt >= retries || !e.is_retryable() {
                    return Err(e);
                }
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// The caller's side of a stream: send requests, then read replies.
pub struct Stream<Req, Rsp> {
    socket: Box<dyn Socket>,
    codec: Arc<dyn Codec>,
    codecs: Codecs,
    stream_id: String,
    send_closed: bool,
    finished: bool,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp> fmt::Debug for Stream<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.stream_id)
            .field("peer", &self.socket.remote_addr())
            .finish()
    }
}

impl<Req: Message, Rsp: Decodable> Stream<Req, Rsp> {
    /// Sends one message.
    pub async fn send(&mut self, msg: &Req) -> Result<()> {
        if self.send_closed {
            return Err(Error::bad_request(
                "micro.client",
                "send on a stream whose sending side is closed",
            ));
        }
        let body = self.codec.encode(msg)?;
        let header = stream_header(&self.stream_id, self.codec.content_type(), None);
        self.socket.send(TransportMessage { header, body }).await
    }

    /// Ends the sending side; the server's `recv` then returns `None`. Closing a stream the
    /// server has already ended is not an error.
    pub async fn close_send(&mut self) -> Result<()> {
        if self.send_closed {
            return Ok(());
        }
        self.send_closed = true;
        let header = stream_header(
            &self.stream_id,
            self.codec.content_type(),
            Some(headers::EOS),
        );
        // A server that has already finished (a server stream that read its one request, say)
        // may have closed its side, and the transport then refuses more input. That is no
        // failure of the call: the replies are still there, and `recv` reports a real break.
        let sent = self
            .socket
            .send(TransportMessage {
                header,
                body: Bytes::new(),
            })
            .await;
        let closed = self.socket.close().await;
        if let Err(e) = sent.and(closed) {
            tracing::debug!(stream = %self.stream_id, error = %e, "closing a stream the peer already ended");
        }
        Ok(())
    }

    /// The next reply; `None` once the server has ended the stream.
    ///
    /// Cancel-safe: race it against [`Stream::send`]'s inputs in `select!` to send and
    /// receive at the same time on a bidirectional stream; a `recv` given up loses nothing.
    pub async fn recv(&mut self) -> Result<Option<Rsp>> {
        if self.finished {
            return Ok(None);
        }
        let msg = recv_stream_message(&mut *self.socket, &self.codecs).await;
        match msg {
            Ok(Some((codec, body))) => Ok(Some(Rsp::decode_with(&*codec, &body)?)),
            Ok(None) => {
                self.finished = true;
                Ok(None)
            }
            Err(e) => {
                self.finished = true;
                Err(e)
            }
        }
    }
}

pub(crate) fn stream_header(id: &str, content_type: &str, error: Option<&str>) -> Metadata {
    let mut h = Metadata::with_capacity(3);
    h.insert_static(headers::STREAM, id);
    h.insert_static(headers::CONTENT_TYPE, content_type);
    if let Some(e) = error {
        h.insert_static(headers::ERROR, e);
    }
    h
}

/// Reads the next data message of a stream: `None` on EOS, an error on a `Micro-Error` or when
/// the peer went away without EOS.
pub(crate) async fn recv_stream_message(
    socket: &mut dyn Socket,
    codecs: &Codecs,
) -> Result<Option<(Arc<dyn Codec>, Bytes)>> {
    match socket.recv().await? {
        None => Err(Error::internal(
            "micro.stream",
            format!(
                "{} ended the stream without an end-of-stream message",
                socket.remote_addr()
            ),
        )),
        Some(msg) if headers::is_eos(&msg.header) => Ok(None),
        Some(msg) => {
            if let Some(e) = headers::error_of(&msg.header) {
                return Err(e);
            }
            let ct = headers::get(&msg.header, headers::CONTENT_TYPE).unwrap_or_default();
            Ok(Some((codecs.get(ct)?, msg.body)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_go_micro() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        let two = backoff(2).as_millis();
        assert!((650..=660).contains(&two), "{two}");
        assert_eq!(backoff(20), Duration::from_secs(120));
    }
}
