//! The gRPC transport of Micro for Rust, on tonic.
//!
//! [`GrpcTransport`] (plugin name `grpc`, protocol `grpc`) speaks standard gRPC over HTTP/2,
//! so standard gRPC clients (grpcio, grpcurl, tonic, grpc-go) call Micro services, and Micro
//! clients call standard gRPC servers that know nothing of Micro. A service serving on it
//! registers its node with `protocol=grpc`, `server=grpc`, `transport=grpc`; Micro's client
//! picks this transport for nodes that say `protocol=grpc`.
//!
//! # Method paths
//!
//! The server answers any method path on one port. `/<x>.<Type>/<Method>` reaches the
//! endpoint `<Type>.<Method>`, with `<Type>` the part after the last dot of the service, so the
//! standard `/greeter.Greeter/Hello` (proto package `greeter`) and Go Micro's
//! `/<service name>.Greeter/Hello` (`/go.micro.srv.greeter.Greeter/Hello`) both reach
//! `Greeter.Hello`. An unknown endpoint is the Micro server's `404`, which goes out as
//! `NOT_FOUND`.
//!
//! The client calls `/<proto service>/<Method>` when the request names its proto service
//! (`rpc::Request::proto_service`; generated clients set `greeter.Greeter`), else Go Micro's
//! `/<service>.<Type>/<Method>`.
//!
//! # Calls
//!
//! Unary calls are unary on both sides: [`Transport::call`] makes one with tonic's
//! `Grpc::unary` on the caller's task, and the listener answers endpoints the server says are
//! unary ([`CallHandler::kind`]) with `Grpc::unary` too, handing the typed request to
//! [`CallHandler::unary`] and writing its response (metadata as headers) or its error's status.
//!
//! A stream is one [`Socket`]. On the server, `recv` yields an open message (`Micro-Stream`,
//! `Micro-Endpoint`, `Micro-Method`, `Content-Type`, `Timeout` and the caller's metadata), then
//! one message per request message, then a `Micro-Error: EOS` message when the caller
//! half-closes. What the server sends back: the first data message's metadata becomes the
//! response headers, data messages become response messages, `EOS` ends the call with `OK`,
//! and any other `Micro-Error` ends it with that error's status. A socket dropped without an
//! end answers `INTERNAL`. On the client ([`Transport::stream`]) data messages go out as
//! request messages, `EOS` half-closes, and `recv` yields the replies, then `EOS` (status OK)
//! or a `Micro-Error` message. A connection that cannot be made or breaks is an error (503)
//! naming the address, so the caller can try another node.
//!
//! # Mapping
//!
//! | Micro | gRPC |
//! |---|---|
//! | `Content-Type: application/protobuf` | `content-type: application/grpc` (`+proto` accepted) |
//! | `Content-Type: application/json` | `content-type: application/grpc+json` |
//! | `Timeout` (decimal nanoseconds) | `grpc-timeout` (and `timeout` metadata for Go Micro servers) |
//! | metadata (`Trace-Id: t-1`) | ASCII metadata (`trace-id: t-1`); `Micro-*`, reserved and `-bin` keys stay off the wire |
//! | `Micro-Error` JSON | `grpc-status` = `Error::grpc_code`, `grpc-message` = detail, JSON in a `micro-error` trailer |
//!
//! Other content types are refused: `415` with `INVALID_ARGUMENT` for non-gRPC ones,
//! `UNIMPLEMENTED` for other gRPC codecs. Statuses from servers become Micro errors with
//! `Error::from_grpc` (`UNAVAILABLE` is a retryable 503); Go Micro's gRPC servers put their
//! error JSON in `grpc-message`, which is read back as such. The server ends calls past their
//! `grpc-timeout` with `DEADLINE_EXCEEDED`; the client stops waiting at its `Timeout` with a
//! 408. A message over the size limit fails with `RESOURCE_EXHAUSTED` on either side.
//!
//! # Health
//!
//! The listener serves the standard `grpc.health.v1.Health` (`Check` and `Watch`, through
//! tonic-health's service): `SERVING` once [`Listener::set_serving`] is called with `true`
//! (Micro's server does after registering), `NOT_SERVING` before and while stopping. Since the port
//! answers every gRPC service, every service name gets that same status.
//!
//! # Options
//!
//! [`GrpcOptions`] holds them, each also read by [`GrpcOptions::from_env`]:
//!
//! | option | env | default |
//! |---|---|---|
//! | `max_recv_message_bytes` | `MICRO_GRPC_MAX_RECV_MSG_SIZE` (`MICRO_GRPC_MAX_MSG_SIZE` sets both) | 4 MiB |
//! | `max_send_message_bytes` | `MICRO_GRPC_MAX_SEND_MSG_SIZE` | 4 MiB |
//! | `gzip`: compress what this side sends (gzip is always accepted) | `MICRO_GRPC_GZIP` | off |
//! | `keepalive_interval`: HTTP/2 pings (`0` = off) | `MICRO_GRPC_KEEPALIVE_INTERVAL` | 30 s |
//! | `keepalive_timeout`: unanswered ping closes the connection | `MICRO_GRPC_KEEPALIVE_TIMEOUT` | 20 s |
//! | `connect_timeout`: TCP + TLS handshake | `MICRO_GRPC_CONNECT_TIMEOUT` | 5 s |
//! | `tls` | `MICRO_TLS_CERT`, `MICRO_TLS_KEY`, `MICRO_TLS_CA` | none (h2c) |
//!
//! # TLS
//!
//! With TLS set (any `MICRO_TLS_*` variable), the server speaks only TLS on its port and the
//! client dials every address with TLS (ALPN `h2`):
//!
//! - `MICRO_TLS_CERT` + `MICRO_TLS_KEY` (PEM files): the server's certificate (required to
//!   listen); the client presents them when a server asks for a client certificate.
//! - `MICRO_TLS_CA` (PEM file): the server requires every client to present a certificate
//!   this CA signed (mutual TLS); the client trusts only servers whose certificate it signed.
//!   Without it the server asks for no client certificate and the client trusts the system
//!   roots.
//!
//! A plaintext client on a TLS port gets `UNAVAILABLE` saying the port needs TLS; a TLS client
//! that does not trust the server, or that the server refuses, gets an error that says which
//! and which variable to set. See [`TlsOptions`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use micro_core::rpc::{Request, Response};
//! use micro_core::transport::{CallHandler, CallParams, EndpointKind, Socket, Transport};
//! use micro_core::{BoxFuture, Result};
//! use micro_transport_grpc::GrpcTransport;
//!
//! /// The server: answers every unary call with its own body.
//! struct Echo;
//!
//! impl CallHandler for Echo {
//!     fn kind(&self, _endpoint: &str) -> Option<EndpointKind> {
//!         Some(EndpointKind::Unary)
//!     }
//!     fn unary(&self, req: Request, _timeout: Option<Duration>) -> BoxFuture<'static, Result<Response>> {
//!         let reply = Response { content_type: req.content_type, body: req.body, ..Response::default() };
//!         Box::pin(async move { Ok(reply) })
//!     }
//!     fn stream(&self, _socket: Box<dyn Socket>) -> BoxFuture<'static, ()> {
//!         Box::pin(async {})
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> micro_core::Result<()> {
//! let transport = GrpcTransport::default();
//! let listener = transport.listen("127.0.0.1:0", Arc::new(Echo)).await?;
//! let addr = listener.local_addr();
//!
//! // The client: one unary call.
//! let request = Request {
//!     id: "1".into(),
//!     service: "echo".into(),
//!     endpoint: "Echo.Call".into(),
//!     content_type: "application/protobuf".into(),
//!     body: "hello".into(),
//!     ..Request::default()
//! };
//! let reply = transport.call(&addr, &request, CallParams::default()).await?;
//! assert_eq!(reply.body, "hello");
//! # Ok(()) }
//! ```

mod client;
mod codec;
mod options;
mod server;
mod tls;
mod wire;

use std::sync::Arc;

use std::time::Duration;

use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{CallHandler, CallParams, Listener, Message, Socket, Transport};
use micro_core::Result;

pub use options::GrpcOptions;
pub use server::GrpcListener;
pub use tls::TlsOptions;

use client::{unary, ClientSide, ClientSocket};

/// The `id` of every error this transport raises itself.
const ID: &str = "micro.transport.grpc";

/// The `grpc` transport: standard gRPC over HTTP/2, on tonic.
///
/// Cloning is cheap; clones share the channel pool (one HTTP/2 connection per address, which
/// carries every call to it).
#[derive(Clone)]
pub struct GrpcTransport {
    opts: Arc<GrpcOptions>,
    client: Arc<ClientSide>,
}

impl Default for GrpcTransport {
    fn default() -> Self {
        GrpcTransport::new(GrpcOptions::default())
    }
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("options", &self.opts)
            .field("pooled_channels", &self.client.pooled())
            .finish()
    }
}

impl GrpcTransport {
    /// A transport with these options. Nothing connects until the first dial.
    pub fn new(opts: GrpcOptions) -> Self {
        let opts = Arc::new(opts);
        GrpcTransport {
            client: Arc::new(ClientSide::new(opts.clone())),
            opts,
        }
    }

    /// A transport configured by `MICRO_GRPC_*` and `MICRO_TLS_*` ([`GrpcOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Ok(Self::new(GrpcOptions::from_env()?))
    }

    /// The options this transport applies.
    pub fn options(&self) -> &GrpcOptions {
        &self.opts
    }

    /// Like [`Transport::listen`], but returns the concrete listener.
    pub async fn bind(&self, addr: &str, handler: Arc<dyn CallHandler>) -> Result<GrpcListener> {
        GrpcListener::bind(addr, GrpcOptions::clone(&self.opts), handler).await
    }
}

#[async_trait::async_trait]
impl Transport for GrpcTransport {
    fn name(&self) -> &str {
        "grpc"
    }

    fn protocol(&self) -> &str {
        "grpc"
    }

    async fn call(
        &self,
        addr: &str,
        req: &rpc::Request,
        params: CallParams,
    ) -> std::result::Result<rpc::Response, AttemptError> {
        unary(&self.client, addr, req, params).await
    }

    async fn stream(
        &self,
        addr: &str,
        req: &rpc::Request,
        connect_timeout: Duration,
    ) -> Result<Box<dyn Socket>> {
        let channel = self.client.channel(addr, connect_timeout).await?;
        let mut socket = ClientSocket::new(self.client.clone(), addr, channel);
        let mut header = micro_core::headers::request_header(req, None);
        header.insert_static(micro_core::headers::STREAM, req.id.clone());
        // Names the method path only; protocol headers never travel as gRPC metadata.
        if let Some(proto) = &req.proto_service {
            header.insert_static(micro_core::headers::PROTO_SERVICE, proto.clone());
        }
        socket
            .send(Message {
                header,
                body: bytes::Bytes::new(),
            })
            .await?;
        Ok(Box::new(socket))
    }

    async fn listen(&self, addr: &str, handler: Arc<dyn CallHandler>) -> Result<Box<dyn Listener>> {
        Ok(Box::new(self.bind(addr, handler).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_outside_a_runtime() {
        // Plugins are often constructed from configuration before the runtime starts.
        let transport = GrpcTransport::default();
        assert_eq!((transport.name(), transport.protocol()), ("grpc", "grpc"));
        assert_eq!(transport.options(), &GrpcOptions::default());
    }
}
