//! Handlers: a named group of endpoints (`Greeter.Hello`, ...), each a typed function.
//! Generated code builds them; hand-written code can too.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use micro_core::registry::Endpoint;
use micro_core::transport::{Message as TransportMessage, Socket};
use micro_core::{rpc, Codec, Message, Metadata, Result};

use crate::client::{recv_stream_message, stream_header};
use crate::codec::{Codecs, Decodable};
use crate::headers;
use crate::request::{Request, Response};
use crate::BoxFuture;

use micro_core::rpc::ServerCall;

pub(crate) type UnaryFn =
    Arc<dyn Fn(ServerCall) -> BoxFuture<'static, Result<rpc::Response>> + Send + Sync>;
pub(crate) type StreamFn = Arc<dyn Fn(StreamStart) -> BoxFuture<'static, Result<()>> + Send + Sync>;

pub(crate) type SharedSocket = Arc<tokio::sync::Mutex<Box<dyn Socket>>>;

/// What a stream handler starts from: the call as the handler path delivered it (metadata as
/// the layers left it; for a server stream, its request in `request.body`) and the stream.
pub(crate) struct StreamStart {
    pub(crate) request: rpc::Request,
    pub(crate) deadline: Option<std::time::Instant>,
    pub(crate) socket: Box<dyn Socket>,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) codecs: Codecs,
}

#[derive(Clone)]
pub(crate) enum EndpointFn {
    Unary(UnaryFn),
    /// One request, then replies: the server reads the request before the handler path.
    ServerStream(StreamFn),
    /// Client or bidirectional streaming.
    Stream(StreamFn),
}

/// A named group of endpoints, registered on a service.
#[derive(Clone)]
pub struct Handler {
    name: String,
    pub(crate) endpoints: Vec<(Endpoint, EndpointFn)>,
    pub(crate) file_descriptor_set: Option<Bytes>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.name)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|(e, _)| &e.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Handler {
    /// An empty handler for the type `name` (`Greeter`); endpoints are `<name>.<Method>`.
    pub fn new(name: impl Into<String>) -> Self {
        Handler {
            name: name.into(),
            endpoints: Vec::new(),
            file_descriptor_set: None,
        }
    }

    /// Attaches the encoded protobuf `FileDescriptorSet` that describes this handler's proto
    /// service (generated handlers attach theirs), so that transports with server reflection
    /// (the gRPC transport) can describe it to tools such as grpcurl.
    pub fn file_descriptor_set(mut self, encoded: impl Into<Bytes>) -> Self {
        self.file_descriptor_set = Some(encoded.into());
        self
    }

    /// Adds `key = value` to the registered metadata of the endpoint `method` (`Hello` for
    /// `Greeter.Hello`), added before: Go Micro's `server.EndpointMetadata`. Tools read some
    /// keys: `description` (what the endpoint does, for the MCP gateway, OpenAPI and the
    /// dashboard; `micro-build` sets it from the RPC's proto comment), `example` (a JSON
    /// request) and `scopes` (what the MCP gateway asks of callers, comma separated).
    ///
    /// Metadata for a method the handler does not have yet is dropped, with a warning.
    pub fn endpoint_metadata(
        mut self,
        method: &str,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let name = format!("{}.{method}", self.name);
        match self.endpoints.iter_mut().find(|(e, _)| e.name == name) {
            Some((endpoint, _)) => {
                endpoint.metadata.insert(key.into(), value.into());
            }
            None => tracing::warn!(
                endpoint = %name,
                "metadata for an endpoint the handler does not have (yet): add the endpoint first"
            ),
        }
        self
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoints, as registered.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.iter().map(|(e, _)| e.clone()).collect()
    }

    fn endpoint<Req: Message, Rsp: Message>(&self, method: &str, stream: bool) -> Endpoint {
        let mut metadata = BTreeMap::new();
        if stream {
            metadata.insert("stream".to_string(), "true".to_string());
        }
        Endpoint {
            name: format!("{}.{method}", self.name),
            request: Some(Req::describe()),
            response: Some(Rsp::describe()),
            metadata,
        }
    }

    /// Adds a unary endpoint.
    pub fn unary<Req, Rsp, F>(mut self, method: &str, f: F) -> Self
    where
        Req: Decodable,
        Rsp: Message,
        F: Fn(Request<Req>) -> BoxFuture<'static, Result<Response<Rsp>>> + Send + Sync + 'static,
    {
        let endpoint = self.endpoint::<Req, Rsp>(method, false);
        let f = Arc::new(f);
        let run: UnaryFn = Arc::new(move |call: ServerCall| {
            let f = f.clone();
            Box::pin(async move {
                let message = Req::decode_with(&*call.codec, &call.request.body)?;
                let req = Request::incoming(
                    message,
                    call.request.metadata,
                    call.request.endpoint,
                    call.deadline,
                );
                let (reply, metadata) = f(req).await?.into_parts();
                Ok(rpc::Response {
                    content_type: call.codec.content_type().to_string(),
                    metadata,
                    body: call.codec.encode(&reply)?,
                    stream: None,
                })
            })
        });
        self.endpoints.push((endpoint, EndpointFn::Unary(run)));
        self
    }

    /// Adds a server-streaming endpoint: one request, many replies.
    pub fn server_stream<Req, Rsp, F>(mut self, method: &str, f: F) -> Self
    where
        Req: Decodable,
        Rsp: Message,
        F: Fn(Request<Req>, ServerStream<Req, Rsp>) -> BoxFuture<'static, Result<()>>
            + Send
            + Sync
            + 'static,
    {
        let endpoint = self.endpoint::<Req, Rsp>(method, true);
        let f = Arc::new(f);
        let run: StreamFn = Arc::new(move |start: StreamStart| {
            let f = f.clone();
            Box::pin(async move {
                let first = Req::decode_with(&*start.codec, &start.request.body)?;
                let req = Request::incoming(
                    first,
                    start.request.metadata.clone(),
                    start.request.endpoint.clone(),
                    start.deadline,
                );
                let mut stream = ServerStream::<Req, Rsp>::new(start);
                // The one request is in; what follows from the caller is its end of stream.
                stream.recv_done = true;
                f(req, stream).await
            })
        });
        self.endpoints
            .push((endpoint, EndpointFn::ServerStream(run)));
        self
    }

    /// Adds a client-streaming or bidirectional endpoint.
    pub fn stream<Req, Rsp, F>(mut self, method: &str, f: F) -> Self
    where
        Req: Decodable,
        Rsp: Message,
        F: Fn(ServerStream<Req, Rsp>) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        let endpoint = self.endpoint::<Req, Rsp>(method, true);
        let f = Arc::new(f);
        let run: StreamFn = Arc::new(move |start: StreamStart| {
            let f = f.clone();
            Box::pin(async move { f(ServerStream::new(start)).await })
        });
        self.endpoints.push((endpoint, EndpointFn::Stream(run)));
        self
    }
}

/// The handler's side of a stream: receive requests, send replies. Returning from the handler
/// ends the stream (with the handler's error, if any).
pub struct ServerStream<Req, Rsp> {
    socket: Box<dyn Socket>,
    codec: Arc<dyn Codec>,
    codecs: Codecs,
    metadata: Metadata,
    endpoint: String,
    stream_id: String,
    recv_done: bool,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp> fmt::Debug for ServerStream<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream")
            .field("endpoint", &self.endpoint)
            .field("id", &self.stream_id)
            .finish()
    }
}

impl<Req: Decodable, Rsp: Message> ServerStream<Req, Rsp> {
    fn new(start: StreamStart) -> Self {
        ServerStream {
            socket: start.socket,
            codec: start.codec,
            codecs: start.codecs,
            metadata: start.request.metadata,
            endpoint: start.request.endpoint,
            stream_id: start.request.id,
            recv_done: false,
            _types: PhantomData,
        }
    }

    /// The caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The next request; `None` once the caller has closed its side.
    pub async fn recv(&mut self) -> Result<Option<Req>> {
        if self.recv_done {
            return Ok(None);
        }
        match recv_stream_message(&mut *self.socket, &self.codecs).await {
            Ok(Some((codec, body))) => Ok(Some(Req::decode_with(&*codec, &body)?)),
            Ok(None) => {
                self.recv_done = true;
                Ok(None)
            }
            Err(e) => {
                self.recv_done = true;
                Err(e)
            }
        }
    }

    /// Sends one reply.
    pub async fn send(&mut self, msg: &Rsp) -> Result<()> {
        let body = self.codec.encode(msg)?;
        let header = stream_header(&self.stream_id, self.codec.content_type(), None);
        self.socket.send(TransportMessage { header, body }).await
    }
}

/// Ends a stream after its handler returned: EOS on success, the error otherwise.
pub(crate) async fn finish_stream(
    socket: &mut dyn Socket,
    stream_id: &str,
    content_type: &str,
    result: Result<()>,
) {
    let marker = match result {
        Ok(()) => headers::EOS.to_string(),
        Err(e) => e.to_json(),
    };
    let header = stream_header(stream_id, content_type, Some(&marker));
    let end = TransportMessage {
        header,
        body: Bytes::new(),
    };
    if let Err(e) = socket.send(end).await {
        tracing::debug!(error = %e, "could not end the stream; the caller is gone");
    }
    let _ = socket.close().await;
}
