//! How calls cross the network: [`Transport`] makes unary calls and opens streams, and
//! listens.
//!
//! A unary call is one request and one response on the transport's own request/response
//! (hyper's, tonic's): [`Transport::call`] takes a typed [`rpc::Request`] for one node and gives
//! back its [`rpc::Response`]. A stream is a [`Socket`] on which both sides send any number of
//! [`Message`]s, each a header map and a body. On the server side, [`Transport::listen`] takes
//! the server's [`CallHandler`]: the listener answers unary calls with it on its own
//! request/response, and hands it each stream as a socket.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::rpc::{self, AttemptError};
use crate::{Metadata, Result};

mod load;
pub use load::{Admitted, Connections, Load, LoadLimits, OpenConnection};

/// One message on a transport: headers (`Micro-Endpoint`, `Content-Type`, metadata ...) and a
/// body already encoded by a codec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The headers, compared case-insensitively.
    pub header: Metadata,
    /// The encoded body.
    pub body: Bytes,
}

/// Options of one unary call, [`Transport::call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallParams {
    /// What is left of the caller's deadline: sent to the server (`Timeout`, `grpc-timeout`),
    /// and the longest the call waits for its reply.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for CallParams {
    fn default() -> Self {
        CallParams {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether an endpoint takes one request and gives one reply, or streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// One request, one reply.
    Unary,
    /// Server, client or bidirectional streaming.
    Stream,
}

/// What a server gives its listener: the answer to every call that arrives. A listener
/// answers unary calls on its own request/response (hyper's, tonic's) and hands each stream
/// over as a socket.
pub trait CallHandler: Send + Sync + 'static {
    /// What kind of call `endpoint` is; `None` when the server has no such endpoint (a
    /// listener then hands the call over as a stream, which the server ends with its 404).
    fn kind(&self, endpoint: &str) -> Option<EndpointKind>;

    /// Takes one call (unary or stream) on within the server's [`Load`], as it arrives and
    /// before its body is read: a `503` when the server is full, which the listener answers at
    /// once. The listener counts the request body's bytes on the [`Admitted`] as they arrive
    /// ([`Admitted::hold`]) and keeps it until the call ends. Unbounded by default.
    fn admit(&self) -> Result<Admitted> {
        Ok(Admitted::unbounded())
    }

    /// Answers one unary call; `timeout` is the caller's, when it sent one. The listener reads
    /// the request's fields off its wire (`req.service` as the caller named it) and writes the
    /// response, or the error, back onto it.
    fn unary(
        &self,
        req: rpc::Request,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<rpc::Response>> + Send>>;

    /// Serves one stream. The socket's first message opens it (the request's mucp header:
    /// `Micro-Stream`, `Micro-Endpoint`, `Content-Type`, metadata); then come the caller's
    /// messages, each direction ending with `Micro-Error: EOS`.
    fn stream(&self, socket: Box<dyn Socket>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// The encoded protobuf `FileDescriptorSet`s that describe the server's proto services,
    /// for transports that serve reflection (gRPC's `grpc.reflection.v1`). None by default.
    fn file_descriptor_sets(&self) -> Vec<Bytes> {
        Vec::new()
    }
}

/// A transport plugin: `http` (the default), `grpc`, ...
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// The plugin's name, as written in `MICRO_TRANSPORT`.
    fn name(&self) -> &str;

    /// The RPC protocol this transport speaks, as registered in node metadata (`protocol`):
    /// `mucp` for Go Micro's protocol (the default), `grpc` for gRPC. Clients pick the
    /// transport for a node by it.
    fn protocol(&self) -> &str {
        "mucp"
    }

    /// Whether this transport's client side dials every address with TLS, checking the
    /// server's certificate, and never falls back to plaintext. Credentials that must not
    /// travel in the clear ([`CallOptions::tls_only_metadata`](crate::rpc::CallOptions)) go
    /// only over transports that say so. `false` unless a transport overrides it: a transport
    /// that cannot tell keeps them off.
    fn tls(&self) -> bool {
        false
    }

    /// One unary call to the node at `addr` (`host:port`). `req.id` is sent as the request id
    /// (the client fills it). An error the node answered with is [`AttemptError::Answered`];
    /// a node that could not be reached, or whose connection broke, is
    /// [`AttemptError::Unreachable`], which makes the selector eject it for a while.
    async fn call(
        &self,
        addr: &str,
        req: &rpc::Request,
        params: CallParams,
    ) -> std::result::Result<rpc::Response, AttemptError>;

    /// Opens a stream to `req`'s endpoint at `addr`: the stream starts with `req`'s id (the
    /// stream id), names and metadata (its body is ignored); then both sides send messages on
    /// the socket.
    async fn stream(
        &self,
        addr: &str,
        req: &rpc::Request,
        connect_timeout: Duration,
    ) -> Result<Box<dyn Socket>>;

    /// Listens on `addr` (`host:port`, port 0 for any) and serves every call with `handler`
    /// from then on.
    async fn listen(&self, addr: &str, handler: Arc<dyn CallHandler>) -> Result<Box<dyn Listener>>;
}

/// One side of an exchange or stream.
#[async_trait::async_trait]
pub trait Socket: Send + fmt::Debug {
    /// Sends a message to the peer.
    async fn send(&mut self, msg: Message) -> Result<()>;

    /// The next message from the peer; `None` once the peer has finished sending.
    ///
    /// Must be cancel-safe: a `recv` dropped before it finished (the other branch of a
    /// `select!` won) loses no message, so that callers can send while they wait for
    /// replies.
    async fn recv(&mut self) -> Result<Option<Message>>;

    /// Ends this side's sending; the peer's `recv` then returns `None`.
    async fn close(&mut self) -> Result<()>;

    /// The peer's address, for logs.
    fn remote_addr(&self) -> String;
}

/// The server side of a transport.
#[async_trait::async_trait]
pub trait Listener: Send + Sync + fmt::Debug {
    /// The address actually bound (with the real port when 0 was asked for).
    fn local_addr(&self) -> String;

    /// Stops taking calls, lets calls under way finish, and returns once every connection has
    /// closed. Callers bound the wait with their own timeout.
    async fn shutdown(&self);

    /// Tells the transport whether the service is ready for calls (registered) or not
    /// (starting, draining), for transports with a health protocol of their own, such as gRPC's
    /// `grpc.health.v1.Health`. The default does nothing.
    fn set_serving(&self, _serving: bool) {}
}
