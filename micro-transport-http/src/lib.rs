//! The default transport of Micro for Rust: Go Micro's `http` transport, on hyper.
//!
//! [`HttpTransport`] (plugin name `http`) carries the RPC messages of Go Micro's default protocol
//! ("mucp"), so Rust and Go Micro services call each other in both directions. It needs no
//! infrastructure: the server side is a [`HttpListener`] on a TCP port. It runs in plaintext,
//! or over TLS with optional client certificates (see [TLS](#tls)).
//!
//! # Wire format
//!
//! **Unary exchanges** are one HTTP/1.1 `POST /` each, on keep-alive connections that the
//! client pools per address. The message header becomes the HTTP headers and the body is the
//! body; the reply is a `200` whose headers are the reply's header (`Content-Type`,
//! `Micro-*`, ...). A Go Micro client sends, for example:
//!
//! ```text
//! POST / HTTP/1.1
//! Host: 127.0.0.1:8080
//! User-Agent: Go-http-client/1.1
//! Content-Length: 15
//! Accept: application/json
//! Content-Type: application/json
//! Micro-Endpoint: Greeter.Hello
//! Micro-Id: 0
//! Micro-Method: Greeter.Hello
//! Micro-Service: greeter
//! Timeout: 5000000000
//!
//! {"name":"John"}
//! ```
//!
//! and the server hands the handler a message with every header except the ones that describe
//! the HTTP connection (`Host`, `Content-Length`, `Connection`, `Transfer-Encoding`,
//! `User-Agent`, ...), names in Go's canonical form (`Micro-Endpoint`). The server also
//! accepts HTTP/2 with prior knowledge (h2c) on the same port.
//!
//! Errors the transport raises itself (a body over the limit, a request nobody answered, a
//! server shutting down) come back the way Go Micro expects them: status `200` with the error
//! JSON in `Micro-Error`. The client's [`Transport::call`] returns such replies as the node's
//! answer ([`AttemptError::Answered`]), like any handler error; a reply with another status
//! and no `Micro-Error` makes the node unreachable ([`AttemptError::Unreachable`]) with that
//! status as code and the body text as detail. A unary call is one hyper request and
//! response: its head is written straight from the typed request, with no header map in
//! between.
//!
//! **Streams** ([`Transport::stream`]) get a connection of their own, speaking
//! HTTP/2 with prior knowledge. One `POST /` carries the stream: its request body holds the
//! client's messages and its response body the server's, both open at once (full duplex).
//! The request head copies the opening message's header (the request's fields and metadata, as
//! `Transport::stream` sends it first) and always includes `Micro-Stream`, which
//! is how the server tells a stream from a unary exchange. Each message in either body is one
//! frame:
//!
//! ```text
//! [u32 big-endian header length][header: JSON object of string to string]
//! [u32 big-endian body length][body]
//! ```
//!
//! A side ends its sending by ending its body (`close`), which the peer's `recv` sees as `None`.
//! Go Micro's own HTTP/1 streams (which take over the connection) are not reproduced: an HTTP/1
//! request with `Micro-Stream` is refused with a `501` in `Micro-Error`.
//!
//! # Limits
//!
//! [`HttpOptions`] holds them, each also read by [`HttpOptions::from_env`]:
//!
//! | option | env | default |
//! |---|---|---|
//! | `max_header_bytes`: request/response head, stream frame header | `MICRO_HTTP_MAX_HEADER_BYTES` | 64 KiB |
//! | `max_headers`: entries of a request head (HTTP/1) or of a stream frame header | `MICRO_MAX_HEADERS` | 512 |
//! | `max_body_bytes`: unary body, stream frame body | `MICRO_HTTP_MAX_BODY` | 4 MiB |
//! | `idle_timeout`: connection without requests; a request head must arrive within it too | `MICRO_HTTP_IDLE_TIMEOUT` | 90 s |
//! | `body_read_timeout`: unary body, or the rest of a started stream frame | `MICRO_HTTP_BODY_TIMEOUT` | 30 s |
//! | `pool_max_idle_per_host`: pooled idle connections per address (keep it above the calls in flight to one node) | `MICRO_HTTP_POOL_MAX_IDLE` | 256 |
//! | `pool_idle_timeout`: how long the client keeps one | `MICRO_HTTP_POOL_IDLE_TIMEOUT` | 60 s |
//! | `max_connections`: connections the server holds open; a new one past it is closed at once | `MICRO_HTTP_MAX_CONNECTIONS` | 16 384 |
//! | `write_timeout`: a stream message waiting on a peer that stopped reading fails with a `408`; a closing connection's calls get this long before it is cut | `MICRO_HTTP_WRITE_TIMEOUT` | 30 s |
//!
//! A stream's first message must arrive within `body_read_timeout` of its opening. The server's
//! load is bounded too (`MICRO_SERVER_MAX_CALLS`, `MICRO_SERVER_MAX_REQUEST_BYTES`: see
//! [`CallHandler::admit`](micro_core::transport::CallHandler::admit)): a call past it is
//! answered at once with a `503` in `Micro-Error`, before its body is read.
//!
//! A unary request body over the limit is answered by the transport itself with a `413` in
//! `Micro-Error`; the server reads and discards the rest of it (up to
//! [`HttpOptions::drain_limit`]) so the keep-alive connection goes on serving, and closes the
//! connection when there is more. A body slower than its timeout gets a `408` and the
//! connection is closed. An oversized or malformed stream frame fails that stream's `recv`.
//! HTTP/2 connections are pinged every 30 s and dropped when a ping goes unanswered for 20 s.
//!
//! # TLS
//!
//! With [`HttpOptions::tls`] set (in code with [`TlsOptions`], or by the variables below), the
//! transport speaks TLS 1.2/1.3 through rustls with the `ring` provider, chosen explicitly per
//! configuration so that it does not clash with another crate's provider (`aws-lc-rs`, or a
//! process-wide default) in the same process:
//!
//! - The **server** speaks only TLS on its port, offering ALPN `h2` and `http/1.1`; the wire
//!   format inside is the one above (it tells HTTP/2 from HTTP/1.1 by the preface, so clients
//!   that send no ALPN, like Go Micro's, work too). Listening needs a certificate. A TLS
//!   handshake must finish within 10 s (or `idle_timeout` when shorter).
//! - The **client** dials every address with TLS once TLS is configured: node metadata such
//!   as `secure=true` is not consulted, so a transport talks TLS to all nodes or to none.
//!   Unary exchanges keep to pooled HTTP/1.1 (ALPN `http/1.1`), streams use HTTP/2 (ALPN `h2`)
//!   over TLS. The TLS handshake counts toward the call's connect timeout (`CallParams::connect_timeout`). Server
//!   certificates are checked against the host of the address dialled (an IP address must be
//!   in the certificate's IP SANs) unless [`TlsOptions::with_server_name`] names another.
//!
//! | env | PEM file | on the server | on the client |
//! |---|---|---|---|
//! | `MICRO_TLS_CERT` | certificate chain of this process, leaf first | its certificate | presented when a server asks for a client certificate |
//! | `MICRO_TLS_KEY` | private key of that certificate (PKCS#8, PKCS#1, SEC1) | | |
//! | `MICRO_TLS_CA` | CA bundle | client certificates signed by it are **required** (mutual TLS) | the only CAs trusted for servers |
//!
//! When none of the three is set (an empty value counts as unset) the transport is plaintext.
//! `MICRO_TLS_CERT` and `MICRO_TLS_KEY` go together; with only `MICRO_TLS_CA`, the transport
//! is a TLS client whose listener refuses to start. Without `MICRO_TLS_CA` the server asks for no client
//! certificate and the client trusts the system's root certificates (through
//! `rustls-native-certs`, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`). A certificate used both
//! to serve and as a client certificate needs both the `serverAuth` and `clientAuth` extended
//! key usages, or none. Every file is read and checked when the options are made: a missing or
//! unreadable file, one without the expected PEM block, or a key that does not belong to its
//! certificate is a `400` naming the file and the variable.
//!
//! A failed handshake is a retryable `500` that names the address and says what to fix: a
//! certificate not trusted (unknown issuer) or not valid for the name dialled, a server that
//! requires a client certificate or refused ours, a peer that does not speak TLS. A plaintext
//! client on a TLS port fails as soon as the server drops it, with a hint to configure TLS.
//!
//! ```no_run
//! use micro_transport_http::{HttpOptions, HttpTransport, TlsOptions};
//!
//! # fn main() -> micro_core::Result<()> {
//! // Mutual TLS: serve with this certificate, require and trust certificates from this CA.
//! let tls = TlsOptions::new()
//!     .with_identity_files("/etc/micro/tls/cert.pem", "/etc/micro/tls/key.pem")?
//!     .with_ca_file("/etc/micro/tls/ca.pem")?;
//! let transport = HttpTransport::new(HttpOptions::default().with_tls(tls));
//! // The same, from MICRO_TLS_CERT, MICRO_TLS_KEY and MICRO_TLS_CA:
//! let from_env = HttpTransport::new(HttpOptions::from_env()?);
//! # let _ = (transport, from_env);
//! # Ok(()) }
//! ```
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
//! use micro_transport_http::HttpTransport;
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
//! let transport = HttpTransport::default();
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

mod body;
mod client;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod options;
mod server;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{CallHandler, CallParams, Listener, Message, Socket, Transport};
use micro_core::Result;

pub use options::HttpOptions;
pub use server::HttpListener;
pub use tls::TlsOptions;

use client::{pool_client, unary, uri_for, PoolClient, StreamClientSocket};
use tls::ClientTls;

/// The `id` of every error this transport raises.
const ID: &str = "micro.transport.http";

/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How many frames a stream buffers on its way out before `send` waits.
const STREAM_BUFFER: usize = 16;

/// The `http` transport: unary exchanges over pooled HTTP/1.1, streams over h2c; both over TLS
/// when [`HttpOptions::tls`] is set.
///
/// Cloning is cheap and clones share the connection pool.
#[derive(Clone)]
pub struct HttpTransport {
    opts: Arc<HttpOptions>,
    pool: PoolClient,
    // Building the client's TLS from checked options fails only if rustls itself cannot be set
    // up; `new` stays infallible and every dial reports such an error instead.
    tls: std::result::Result<Option<Arc<ClientTls>>, micro_core::Error>,
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport::new(HttpOptions::default())
    }
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport with the given limits and TLS.
    pub fn new(opts: HttpOptions) -> Self {
        let tls = match &opts.tls {
            Some(tls) => tls.client().map(|client| Some(Arc::new(client))),
            None => Ok(None),
        };
        HttpTransport {
            pool: pool_client(&opts, tls.clone().ok().flatten()),
            opts: Arc::new(opts),
            tls,
        }
    }

    /// The limits and TLS this transport applies.
    pub fn options(&self) -> &HttpOptions {
        &self.opts
    }

    /// Like [`Transport::listen`], but returns the concrete listener.
    pub async fn bind(&self, addr: &str, handler: Arc<dyn CallHandler>) -> Result<HttpListener> {
        HttpListener::bind(addr, HttpOptions::clone(&self.opts), handler).await
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    fn name(&self) -> &str {
        "http"
    }

    /// With [`HttpOptions::tls`] every dial is TLS (or fails): there is no plaintext fallback.
    fn tls(&self) -> bool {
        matches!(self.tls, Ok(Some(_)))
    }

    async fn call(
        &self,
        addr: &str,
        req: &rpc::Request,
        params: CallParams,
    ) -> std::result::Result<rpc::Response, AttemptError> {
        let tls = self.tls.clone().map_err(AttemptError::Unreachable)?;
        let uri = uri_for(addr, tls.is_some()).map_err(AttemptError::Unreachable)?;
        unary(
            &self.pool,
            uri,
            addr,
            req,
            params,
            &self.opts,
            tls.as_deref(),
        )
        .await
    }

    async fn stream(
        &self,
        addr: &str,
        req: &rpc::Request,
        connect_timeout: Duration,
    ) -> Result<Box<dyn Socket>> {
        let tls = self.tls.clone()?;
        let uri = uri_for(addr, tls.is_some())?;
        let mut socket =
            StreamClientSocket::connect(addr, uri, self.opts.clone(), connect_timeout, tls).await?;
        // The first frame opens the stream; its header is the HTTP request's head too.
        let mut header = micro_core::headers::request_header(req, None);
        header.insert_static(micro_core::headers::STREAM, req.id.clone());
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
        let transport = HttpTransport::default();
        assert_eq!(transport.name(), "http");
        assert_eq!(transport.options(), &HttpOptions::default());
    }
}
