//! The gRPC transport over real loopback sockets: its client against its server, against a
//! plain tonic server, tonic's generated client and raw HTTP/2 against its server; every RPC
//! kind, metadata, deadlines, errors, size limits, gzip, TLS and mutual TLS, health, shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro_conformance::transport::{accepting, Accepted};
use micro_core::transport::{EndpointKind, Listener, Message, Socket};
use micro_core::{Error, Metadata};
use micro_transport_grpc::{GrpcListener, GrpcOptions, GrpcTransport, TlsOptions};
use prost::Message as _;
use tokio::net::TcpStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_greeter::greeter::greeter_client::GreeterClient;
use tonic_greeter::greeter::{HelloReply, HelloRequest, StreamRequest};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Every wait in these tests ends within this.
const BOUND: Duration = Duration::from_secs(10);

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

fn header(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().copied().collect()
}

fn eos(stream: &str) -> Message {
    Message {
        header: header(&[("Micro-Stream", stream), ("Micro-Error", "EOS")]),
        body: Bytes::new(),
    }
}

fn data(stream: &str, body: impl Into<Bytes>) -> Message {
    Message {
        header: header(&[
            ("Micro-Stream", stream),
            ("Content-Type", "application/protobuf"),
        ]),
        body: body.into(),
    }
}

fn error_message(stream: &str, e: &Error) -> Message {
    Message {
        header: header(&[("Micro-Stream", stream), ("Micro-Error", &e.to_json())]),
        body: Bytes::new(),
    }
}

fn hello(name: &str) -> Bytes {
    HelloRequest { name: name.into() }.encode_to_vec().into()
}

fn reply_text(body: &[u8]) -> String {
    HelloReply::decode(body)
        .map(|r| r.message)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// A stand-in for Micro's server, speaking the transport's socket protocol directly.
// ---------------------------------------------------------------------------------------

/// Serves the `greeter.Greeter` endpoints (protobuf) and a few test ones from `calls`.
fn serve(calls: Accepted) {
    tokio::spawn(async move {
        while let Some(socket) = calls.accept().await {
            tokio::spawn(serve_call(socket));
        }
    });
}

/// What the stand-in's endpoints are; it has no others.
fn kinds(endpoint: &str) -> Option<EndpointKind> {
    match endpoint {
        "Greeter.Stream" | "Greeter.Collect" | "Greeter.Chat" => Some(EndpointKind::Stream),
        "Greeter.Hello" | "Test.Meta" | "Test.Hold" => Some(EndpointKind::Unary),
        _ => None,
    }
}

/// One call: a unary one is its request message, answered by one reply; a stream opens with a
/// message of its own, then its requests and EOS, and ends with EOS or an error.
async fn serve_call(mut socket: Box<dyn Socket>) {
    let Ok(Some(open)) = socket.recv().await else {
        return;
    };
    let is_unary = open.header.get("Micro-Stream").is_none();
    let stream = open
        .header
        .get("Micro-Stream")
        .unwrap_or_default()
        .to_string();
    let endpoint = open
        .header
        .get("Micro-Endpoint")
        .unwrap_or_default()
        .to_string();
    let mut requests = Vec::new();
    // The stand-in reads every request before answering, except where noted.
    let needs_all = !matches!(endpoint.as_str(), "Greeter.Chat" | "Test.Hold");
    if is_unary {
        requests.push(open.clone());
    } else if needs_all {
        loop {
            match socket.recv().await {
                Ok(Some(m)) if m.header.get("Micro-Error") == Some("EOS") => break,
                Ok(Some(m)) if m.header.get("Micro-Error").is_some() => {
                    // The request stream failed (too big, truncated, ...): end with that error.
                    let e = Error::parse(m.header.get("Micro-Error").unwrap_or_default());
                    let _ = socket.send(error_message(&stream, &e)).await;
                    return;
                }
                Ok(Some(m)) => requests.push(m),
                _ => return,
            }
        }
    }
    let end = match endpoint.as_str() {
        "Greeter.Hello" => {
            let name = requests
                .first()
                .and_then(|m| HelloRequest::decode(m.body.clone()).ok())
                .map(|r| r.name)
                .unwrap_or_default();
            match name.as_str() {
                "" => Err(Error::bad_request(
                    "greeter.Greeter.Hello",
                    "name must not be empty",
                )),
                "drop" => return,
                "big" => {
                    let reply = HelloReply {
                        message: "x".repeat(8 * 1024),
                    };
                    // As Micro's server does: a reply that cannot be sent ends the call with
                    // the send's error.
                    socket.send(data(&stream, reply.encode_to_vec())).await
                }
                _ => {
                    let mut reply = data(
                        &stream,
                        HelloReply {
                            message: format!("Hello {name}"),
                        }
                        .encode_to_vec(),
                    );
                    reply.header.insert(
                        "Content-Type",
                        open.header.get("Content-Type").unwrap_or_default(),
                    );
                    if let Some(t) = open.header.get("trace-id") {
                        reply.header.insert("Trace-Id", t);
                    }
                    reply.header.insert("Reply-Note", "from the stand-in");
                    let _ = socket.send(reply).await;
                    Ok(())
                }
            }
        }
        "Greeter.Stream" => {
            let req = requests
                .first()
                .and_then(|m| StreamRequest::decode(m.body.clone()).ok())
                .unwrap_or_default();
            for i in 1..=req.count {
                let reply = HelloReply {
                    message: format!("Hello {} #{i}", req.name),
                };
                if socket
                    .send(data(&stream, reply.encode_to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(())
        }
        "Greeter.Collect" => {
            let names: Vec<String> = requests
                .iter()
                .filter_map(|m| HelloRequest::decode(m.body.clone()).ok())
                .map(|r| r.name)
                .collect();
            let reply = HelloReply {
                message: format!("Hello {}", names.join(", ")),
            };
            let _ = socket.send(data(&stream, reply.encode_to_vec())).await;
            Ok(())
        }
        "Greeter.Chat" => loop {
            match socket.recv().await {
                Ok(Some(m)) if m.header.get("Micro-Error").is_some() => break Ok(()),
                Ok(Some(m)) => {
                    let name = HelloRequest::decode(m.body)
                        .map(|r| r.name)
                        .unwrap_or_default();
                    let reply = HelloReply {
                        message: format!("Hello {name}"),
                    };
                    if socket
                        .send(data(&stream, reply.encode_to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                _ => return,
            }
        },
        "Test.Meta" => {
            // The open message's header as JSON.
            let map: std::collections::BTreeMap<String, String> = open
                .header
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
            let json = serde_json::to_vec(&map).unwrap_or_default();
            let _ = socket.send(data(&stream, json)).await;
            Ok(())
        }
        "Test.Hold" => {
            // Never answers: holds the call until its deadline ends it.
            while let Ok(Some(_)) = socket.recv().await {}
            std::future::pending::<()>().await;
            Ok(())
        }
        other => Err(Error::not_found(
            format!("greeter.{other}"),
            format!("service greeter has no endpoint {other}"),
        )),
    };
    let last = match end {
        Ok(()) => eos(&stream),
        Err(e) => error_message(&stream, &e),
    };
    let _ = socket.send(last).await;
}

async fn start(opts: GrpcOptions) -> Result<(Arc<GrpcListener>, String), Error> {
    let (handler, calls) = accepting(kinds);
    let listener = Arc::new(
        GrpcTransport::new(opts)
            .bind("127.0.0.1:0", handler)
            .await?,
    );
    let addr = listener.local_addr();
    serve(calls);
    Ok((listener, addr))
}

/// A unary request as Micro's client sends it; `Greeter.*` names its proto service as
/// generated clients do, the test endpoints go by Go Micro's path form.
fn unary(endpoint: &str, body: Bytes) -> Message {
    let mut header = header(&[
        ("Micro-Id", "1"),
        ("Micro-Service", "greeter"),
        ("Micro-Endpoint", endpoint),
        ("Micro-Method", endpoint),
        ("Content-Type", "application/protobuf"),
        ("Accept", "application/protobuf"),
        ("Timeout", "5000000000"),
    ]);
    if endpoint.starts_with("Greeter.") {
        header.insert("Micro-Proto-Service", "greeter.Greeter");
    }
    Message { header, body }
}

fn open(stream: &str, endpoint: &str) -> Message {
    let mut m = unary(endpoint, Bytes::new());
    m.header.remove("Timeout");
    m.header.insert("Micro-Stream", stream);
    m
}

async fn call(transport: &GrpcTransport, addr: &str, msg: Message) -> Result<Message, Error> {
    micro_conformance::transport::call(transport, addr, msg).await
}

async fn open_stream(
    transport: &GrpcTransport,
    addr: &str,
    open: Message,
) -> Result<Box<dyn Socket>, Error> {
    micro_conformance::transport::open_stream(transport, addr, open, Duration::from_secs(5)).await
}

fn error_in(reply: &Message) -> Option<Error> {
    reply.header.get("Micro-Error").map(Error::parse)
}

/// Reads a stream's replies until its end: the bodies and the ending error (None for EOS).
async fn drain(socket: &mut Box<dyn Socket>) -> (Vec<Message>, Option<Error>) {
    let mut replies = Vec::new();
    loop {
        match bounded("a stream reply", socket.recv()).await {
            Ok(Some(m)) if m.header.get("Micro-Error") == Some("EOS") => return (replies, None),
            Ok(Some(m)) if m.header.get("Micro-Error").is_some() => return (replies, error_in(&m)),
            Ok(Some(m)) => replies.push(m),
            Ok(None) => panic!("stream ended without EOS"),
            Err(e) => return (replies, Some(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Micro client -> Micro server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unary_calls_carry_body_metadata_and_codec() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default()).await?;
    let transport = GrpcTransport::default();

    let mut msg = unary("Greeter.Hello", hello("John"));
    msg.header.insert("Trace-Id", "t-1");
    let reply = call(&transport, &addr, msg).await?;
    assert_eq!(error_in(&reply), None);
    assert_eq!(reply_text(&reply.body), "Hello John");
    assert_eq!(reply.header.get("trace-id"), Some("t-1"));
    assert_eq!(reply.header.get("Reply-Note"), Some("from the stand-in"));
    assert_eq!(
        reply.header.get("Content-Type"),
        Some("application/protobuf")
    );
    assert!(reply.header.get("Micro-Stream").is_none());

    // JSON travels as application/grpc+json and comes back as application/json.
    let mut json = unary("Greeter.Hello", hello("Jane"));
    json.header.insert("Content-Type", "application/json");
    let reply = call(&transport, &addr, json).await?;
    assert_eq!(reply.header.get("Content-Type"), Some("application/json"));

    // Go Micro's path form reaches the same endpoint.
    let mut go = unary("Greeter.Hello", hello("Go"));
    go.header.remove("Micro-Proto-Service");
    go.header.insert("Micro-Service", "go.micro.srv.greeter");
    let reply = call(&transport, &addr, go).await?;
    assert_eq!(reply_text(&reply.body), "Hello Go");
    Ok(())
}

#[tokio::test]
async fn the_server_sees_the_callers_metadata_and_deadline() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default()).await?;
    let transport = GrpcTransport::default();
    let mut msg = unary("Test.Meta", Bytes::new());
    msg.header.insert("Trace-Id", "t-9");
    msg.header.insert("Timeout", "2000000000");
    let reply = call(&transport, &addr, msg).await?;
    let seen: std::collections::BTreeMap<String, String> = serde_json::from_slice(&reply.body)?;
    assert_eq!(seen.get("trace-id").map(String::as_str), Some("t-9"));
    assert_eq!(
        seen.get("micro-endpoint").map(String::as_str),
        Some("Test.Meta")
    );
    assert_eq!(
        seen.get("micro-method").map(String::as_str),
        Some("Test.Meta")
    );
    assert_eq!(
        seen.get("content-type").map(String::as_str),
        Some("application/protobuf")
    );
    let timeout: u64 = seen
        .get("timeout")
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or_default();
    assert!(
        (1_000_000_000..=2_000_000_000).contains(&timeout),
        "{timeout}"
    );
    // Micro's own headers stay off the wire.
    assert!(!seen.contains_key("micro-proto-service"), "{seen:?}");
    // gRPC carries no request id.
    assert_eq!(
        seen.get("micro-id").map(String::as_str),
        Some(""),
        "{seen:?}"
    );
    assert!(
        !seen
            .keys()
            .any(|k| k.starts_with("grpc-") || k == "te" || k == "user-agent"),
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn every_stream_kind_works() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default()).await?;
    let transport = GrpcTransport::default();
    // Server streaming.
    let mut s = open_stream(&transport, &addr, open("s1", "Greeter.Stream")).await?;
    let req = StreamRequest {
        name: "John".into(),
        count: 3,
    };
    s.send(data("s1", req.encode_to_vec())).await?;
    s.send(eos("s1")).await?;
    let (replies, end) = drain(&mut s).await;
    assert_eq!(end, None);
    let texts: Vec<String> = replies.iter().map(|m| reply_text(&m.body)).collect();
    assert_eq!(texts, ["Hello John #1", "Hello John #2", "Hello John #3"]);
    for m in &replies {
        assert_eq!(m.header.get("Micro-Stream"), Some("s1"));
        assert_eq!(m.header.get("Content-Type"), Some("application/protobuf"));
    }
    assert!(bounded("after EOS", s.recv()).await?.is_none());

    // Client streaming.
    let mut s = open_stream(&transport, &addr, open("s2", "Greeter.Collect")).await?;
    for name in ["a", "b", "c"] {
        s.send(data("s2", hello(name))).await?;
    }
    s.send(eos("s2")).await?;
    s.close().await?;
    let (replies, end) = drain(&mut s).await;
    assert_eq!(end, None);
    assert_eq!(replies.len(), 1);
    assert_eq!(reply_text(&replies[0].body), "Hello a, b, c");

    // Bidirectional, one reply per message, in turn.
    let mut s = open_stream(&transport, &addr, open("s3", "Greeter.Chat")).await?;
    for name in ["x", "y"] {
        s.send(data("s3", hello(name))).await?;
        let reply = bounded("a chat reply", s.recv()).await?.unwrap_or_default();
        assert_eq!(reply_text(&reply.body), format!("Hello {name}"));
    }
    s.send(eos("s3")).await?;
    let (replies, end) = drain(&mut s).await;
    assert!(replies.is_empty());
    assert_eq!(end, None);

    // Every call above went over one pooled connection.
    assert_eq!(_listener.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn errors_come_back_exactly() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default()).await?;
    let transport = GrpcTransport::default();

    let reply = call(&transport, &addr, unary("Greeter.Hello", hello(""))).await?;
    let e = error_in(&reply).unwrap_or_default();
    assert_eq!(
        e,
        Error::bad_request("greeter.Greeter.Hello", "name must not be empty")
    );

    let reply = call(&transport, &addr, unary("Greeter.Nope", Bytes::new())).await?;
    assert_eq!(error_in(&reply).map(|e| e.code), Some(404));

    // A handler that drops its socket without an answer: INTERNAL, not a hang.
    let reply = call(&transport, &addr, unary("Greeter.Hello", hello("drop"))).await?;
    let e = error_in(&reply).unwrap_or_default();
    assert_eq!(e.code, 500, "{e}");
    assert!(e.detail.contains("without replying"), "{e}");

    // The same on a stream.
    let mut s = open_stream(&transport, &addr, open("e1", "Greeter.Nope")).await?;
    s.send(eos("e1")).await?;
    let (_, end) = drain(&mut s).await;
    assert_eq!(end.map(|e| e.code), Some(404));
    Ok(())
}

#[tokio::test]
async fn deadlines_end_calls_on_both_sides() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default()).await?;
    let transport = GrpcTransport::default();

    // The server ends a call past its grpc-timeout with DEADLINE_EXCEEDED -> 408.
    let mut msg = unary("Test.Hold", hello("slow"));
    msg.header.insert("Timeout", "200000000");
    let reply = call(&transport, &addr, msg).await?;
    assert_eq!(error_in(&reply).map(|e| e.code), Some(408));

    // A caller's grpc-timeout bounds the call on the server, even when the caller itself
    // does not enforce it (tonic's client would cancel at the same moment).
    let timed = [
        ("content-type", "application/grpc"),
        ("grpc-timeout", "200m"),
    ];
    let r = bounded(
        "a held call",
        raw(
            &addr,
            http::Method::POST,
            "/test.Test/Hold",
            &timed,
            frame(&hello("x")),
        ),
    )
    .await?;
    assert_eq!(r.grpc_status(), Some(Code::DeadlineExceeded as i32));

    // The client stops waiting at its own deadline, even if the server never answers.
    let silent = silent_server().await?;
    let mut msg = unary("Greeter.Hello", hello("anyone"));
    msg.header.insert("Timeout", "200000000");
    let reply = call(&transport, &silent, msg).await?;
    let e = error_in(&reply).unwrap_or_default();
    assert_eq!(e.code, 408, "{e}");
    assert!(e.detail.contains(&silent), "{e}");
    Ok(())
}

async fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
}

/// A unary call with tonic's own generic client, to any path.
async fn raw_unary(
    addr: &str,
    path: &'static str,
    request: tonic::Request<HelloRequest>,
) -> Result<tonic::Response<HelloReply>, tonic::Status> {
    let channel = channel(addr)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
}

/// An HTTP/2 server that takes every request and never answers.
async fn silent_server() -> Result<String, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    std::future::pending::<
                        Result<http::Response<Full<Bytes>>, std::convert::Infallible>,
                    >()
                    .await
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------
// Standard clients -> Micro server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tonic_generated_clients_call_the_server() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default()).await?;
    let mut client = GreeterClient::new(channel(&addr).await?);

    let mut request = tonic::Request::new(HelloRequest {
        name: "John".into(),
    });
    request.metadata_mut().insert("trace-id", "t-7".parse()?);
    let reply = bounded("hello", client.hello(request)).await?;
    assert_eq!(
        reply.metadata().get("trace-id").map(|v| v.as_bytes()),
        Some(&b"t-7"[..])
    );
    assert_eq!(reply.into_inner().message, "Hello John");

    let status = bounded("hello", client.hello(HelloRequest::default()))
        .await
        .err();
    let status = status.ok_or("an empty name must fail")?;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "name must not be empty");

    let mut replies = bounded(
        "stream",
        client.stream(StreamRequest {
            name: "Jo".into(),
            count: 2,
        }),
    )
    .await?
    .into_inner();
    let mut texts = Vec::new();
    while let Some(reply) = bounded("a reply", replies.message()).await? {
        texts.push(reply.message);
    }
    assert_eq!(texts, ["Hello Jo #1", "Hello Jo #2"]);

    let names = ["a", "b"].map(|n| HelloRequest { name: n.into() });
    let reply = bounded("collect", client.collect(tokio_stream::iter(names.clone()))).await?;
    assert_eq!(reply.into_inner().message, "Hello a, b");

    let mut chat = bounded("chat", client.chat(tokio_stream::iter(names)))
        .await?
        .into_inner();
    let mut texts = Vec::new();
    while let Some(reply) = bounded("a reply", chat.message()).await? {
        texts.push(reply.message);
    }
    assert_eq!(texts, ["Hello a", "Hello b"]);

    let nope = raw_unary(
        &addr,
        "/greeter.Greeter/Nope",
        tonic::Request::new(HelloRequest::default()),
    )
    .await;
    assert_eq!(nope.err().map(|s| s.code()), Some(Code::NotFound));
    Ok(())
}

#[tokio::test]
async fn gzip_compresses_both_ways() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default().with_gzip(true)).await?;
    let name = "compressible ".repeat(1000);

    let mut client = GreeterClient::new(channel(&addr).await?)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let reply = bounded("hello", client.hello(HelloRequest { name: name.clone() })).await?;
    assert_eq!(
        reply.metadata().get("grpc-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    assert_eq!(reply.into_inner().message, format!("Hello {name}"));

    // A Micro client with gzip on compresses its requests and reads compressed replies.
    let transport = GrpcTransport::new(GrpcOptions::default().with_gzip(true));
    let reply = call(&transport, &addr, unary("Greeter.Hello", hello(&name))).await?;
    assert_eq!(reply_text(&reply.body), format!("Hello {name}"));
    Ok(())
}

/// One raw HTTP/2 exchange, for requests no gRPC client would send.
struct Raw {
    status: u16,
    headers: http::HeaderMap,
    trailers: Option<http::HeaderMap>,
}

impl Raw {
    fn grpc_status(&self) -> Option<i32> {
        let from = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        self.trailers
            .as_ref()
            .and_then(from)
            .or_else(|| from(&self.headers))
    }
}

async fn raw(
    addr: &str,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Raw, Box<dyn std::error::Error>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await?;
    Ok(Raw {
        status,
        headers,
        trailers: collected.trailers().cloned(),
    })
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[tokio::test]
async fn bad_requests_get_fitting_statuses() -> TestResult {
    let (_listener, addr) = start(GrpcOptions::default().with_max_message_bytes(1024)).await?;
    let post = http::Method::POST;
    let grpc = [("content-type", "application/grpc")];
    let hello_frame = frame(&hello("x"));

    let r = bounded(
        "json",
        raw(
            &addr,
            post.clone(),
            "/greeter.Greeter/Hello",
            &[("content-type", "application/json")],
            hello_frame.clone(),
        ),
    )
    .await?;
    assert_eq!(
        (r.status, r.grpc_status()),
        (415, Some(Code::InvalidArgument as i32))
    );

    let r = bounded(
        "xml",
        raw(
            &addr,
            post.clone(),
            "/greeter.Greeter/Hello",
            &[("content-type", "application/grpc+xml")],
            hello_frame.clone(),
        ),
    )
    .await?;
    assert_eq!(
        (r.status, r.grpc_status()),
        (200, Some(Code::Unimplemented as i32))
    );

    let r = bounded(
        "no path",
        raw(&addr, post.clone(), "/nothing", &grpc, hello_frame.clone()),
    )
    .await?;
    assert_eq!(r.grpc_status(), Some(Code::Unimplemented as i32));

    let r = bounded(
        "get",
        raw(
            &addr,
            http::Method::GET,
            "/greeter.Greeter/Hello",
            &grpc,
            Vec::new(),
        ),
    )
    .await?;
    assert_eq!(r.status, 405);

    let bad_timeout = [
        ("content-type", "application/grpc"),
        ("grpc-timeout", "soon"),
    ];
    let r = bounded(
        "timeout",
        raw(
            &addr,
            post.clone(),
            "/greeter.Greeter/Hello",
            &bad_timeout,
            hello_frame.clone(),
        ),
    )
    .await?;
    assert_eq!(r.grpc_status(), Some(Code::InvalidArgument as i32));

    // A frame that promises 100 bytes and ends after 3.
    let truncated = vec![0, 0, 0, 0, 100, 1, 2, 3];
    let r = bounded(
        "truncated",
        raw(
            &addr,
            post.clone(),
            "/greeter.Greeter/Hello",
            &grpc,
            truncated,
        ),
    )
    .await?;
    assert_eq!(r.grpc_status(), Some(Code::Internal as i32));

    let big = frame(&hello(&"x".repeat(2048)));
    let r = bounded(
        "big",
        raw(&addr, post.clone(), "/greeter.Greeter/Hello", &grpc, big),
    )
    .await?;
    assert_eq!(r.grpc_status(), Some(Code::ResourceExhausted as i32));

    // The JSON flavour is answered in kind.
    let json = [("content-type", "application/grpc+json")];
    let r = bounded(
        "json",
        raw(&addr, post, "/test.Test/Meta", &json, frame(b"{}")),
    )
    .await?;
    assert_eq!(r.grpc_status(), Some(0));
    assert_eq!(
        r.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc+json"[..])
    );
    Ok(())
}

#[tokio::test]
async fn size_limits_give_resource_exhausted() -> TestResult {
    let small = GrpcOptions::default().with_max_message_bytes(1024);
    let (_listener, addr) = start(small.clone()).await?;
    let transport = GrpcTransport::default();

    // The server refuses a request over its limit.
    let reply = call(
        &transport,
        &addr,
        unary("Greeter.Hello", hello(&"x".repeat(2048))),
    )
    .await?;
    assert_eq!(error_in(&reply).map(|e| e.code), Some(429));
    // ... and a reply over its limit.
    let reply = call(&transport, &addr, unary("Greeter.Hello", hello("big"))).await?;
    assert_eq!(error_in(&reply).map(|e| e.code), Some(429));

    // The client refuses to send over its limit, and to take a reply over it.
    let (_roomy, roomy_addr) = start(GrpcOptions::default()).await?;
    let small_client = GrpcTransport::new(small);
    let reply = call(
        &small_client,
        &roomy_addr,
        unary("Greeter.Hello", hello(&"x".repeat(2048))),
    )
    .await?;
    assert_eq!(error_in(&reply).map(|e| e.code), Some(429));
    let reply = call(
        &small_client,
        &roomy_addr,
        unary("Greeter.Hello", hello("big")),
    )
    .await?;
    let e = error_in(&reply).unwrap_or_default();
    assert_eq!(e.code, 429, "{e}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Micro client -> plain tonic server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_client_calls_a_plain_tonic_server() -> TestResult {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?.to_string();
    tokio::spawn(tonic_greeter::serve(tcp, std::future::pending()));
    let transport = GrpcTransport::default();

    let mut msg = unary("Greeter.Hello", hello("John"));
    msg.header.insert("Trace-Id", "t-3");
    let reply = call(&transport, &addr, msg).await?;
    assert_eq!(reply_text(&reply.body), "Hello John");
    assert_eq!(reply.header.get("Trace-Id"), Some("t-3"));
    assert_eq!(
        reply.header.get("Content-Type"),
        Some("application/protobuf")
    );

    let reply = call(&transport, &addr, unary("Greeter.Hello", hello(""))).await?;
    let e = error_in(&reply).unwrap_or_default();
    assert_eq!(
        (e.code, e.id.as_str(), e.detail.as_str()),
        (400, "greeter.Greeter.Hello", "name must not be empty")
    );

    let reply = call(&transport, &addr, unary("Greeter.Nope", Bytes::new())).await?;
    assert_eq!(error_in(&reply).map(|e| e.code), Some(501));

    let mut s = open_stream(&transport, &addr, open("t1", "Greeter.Stream")).await?;
    s.send(data(
        "t1",
        StreamRequest {
            name: "T".into(),
            count: 2,
        }
        .encode_to_vec(),
    ))
    .await?;
    s.send(eos("t1")).await?;
    let (replies, end) = drain(&mut s).await;
    assert_eq!(end, None);
    let texts: Vec<String> = replies.iter().map(|m| reply_text(&m.body)).collect();
    assert_eq!(texts, ["Hello T #1", "Hello T #2"]);

    let mut s = open_stream(&transport, &addr, open("t2", "Greeter.Chat")).await?;
    s.send(data("t2", hello("q"))).await?;
    let reply = bounded("chat", s.recv()).await?.unwrap_or_default();
    assert_eq!(reply_text(&reply.body), "Hello q");
    s.send(eos("t2")).await?;
    let (replies, end) = drain(&mut s).await;
    assert!(replies.is_empty());
    assert_eq!(end, None);
    Ok(())
}

#[tokio::test]
async fn unreachable_nodes_are_errors_naming_the_address() -> TestResult {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = closed.local_addr()?.to_string();
    drop(closed);
    let e = call(
        &GrpcTransport::default(),
        &addr,
        unary("Greeter.Hello", hello("x")),
    )
    .await
    .err()
    .ok_or("calling a closed port must fail")?;
    assert_eq!(e.code, 503, "{e}");
    assert!(e.is_retryable());
    assert!(e.detail.contains(&addr), "{e}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Health and shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn health_follows_set_serving() -> TestResult {
    let (listener, addr) = start(GrpcOptions::default()).await?;
    let mut health = HealthClient::new(channel(&addr).await?);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let status = |r: tonic_health::pb::HealthCheckResponse| r.status;

    let r = bounded("check", health.check(check("")))
        .await?
        .into_inner();
    assert_eq!(status(r), ServingStatus::NotServing as i32);

    let mut watch = bounded("watch", health.watch(check("")))
        .await?
        .into_inner();
    let first = bounded("watch", watch.message()).await?.map(status);
    assert_eq!(first, Some(ServingStatus::NotServing as i32));

    listener.set_serving(true);
    let r = bounded("check", health.check(check("")))
        .await?
        .into_inner();
    assert_eq!(status(r), ServingStatus::Serving as i32);
    let r = bounded("check", health.check(check("greeter.Greeter")))
        .await?
        .into_inner();
    assert_eq!(status(r), ServingStatus::Serving as i32);
    let next = bounded("watch", watch.message()).await?.map(status);
    assert_eq!(next, Some(ServingStatus::Serving as i32));

    listener.set_serving(false);
    let next = bounded("watch", watch.message()).await?.map(status);
    assert_eq!(next, Some(ServingStatus::NotServing as i32));
    Ok(())
}

#[tokio::test]
async fn shutdown_drains_calls_in_flight() -> TestResult {
    let (listener, addr) = start(GrpcOptions::default()).await?;
    listener.set_serving(true);
    let transport = GrpcTransport::default();
    let mut s = open_stream(&transport, &addr, open("d1", "Greeter.Chat")).await?;
    s.send(data("d1", hello("before"))).await?;
    let reply = bounded("chat", s.recv()).await?.unwrap_or_default();
    assert_eq!(reply_text(&reply.body), "Hello before");

    let stopping = listener.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    // The call under way goes on to its end.
    s.send(data("d1", hello("during"))).await?;
    let reply = bounded("chat", s.recv()).await?.unwrap_or_default();
    assert_eq!(reply_text(&reply.body), "Hello during");
    s.send(eos("d1")).await?;
    let (_, end) = drain(&mut s).await;
    assert_eq!(end, None);
    drop(s);
    bounded("shutdown", shutdown).await?;
    assert!(!listener.is_serving());

    // Nothing listens any more.
    let e = call(
        &GrpcTransport::default(),
        &addr,
        unary("Greeter.Hello", hello("x")),
    )
    .await
    .err();
    assert_eq!(e.map(|e| e.code), Some(503));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn make_pki(ca_name: &str) -> Result<Pki, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key)?;
    let leaf = |purpose: ExtendedKeyUsagePurpose| -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    Ok(Pki {
        server: leaf(ExtendedKeyUsagePurpose::ServerAuth)?,
        client: leaf(ExtendedKeyUsagePurpose::ClientAuth)?,
        ca: ca.pem(),
    })
}

async fn hello_over(transport: &GrpcTransport, addr: &str) -> Result<Message, Error> {
    call(transport, addr, unary("Greeter.Hello", hello("TLS"))).await
}

#[tokio::test]
async fn tls_and_mutual_tls() -> TestResult {
    let pki = make_pki("test CA")?;
    let server_tls = TlsOptions::new().with_identity_pem(&pki.server.0, &pki.server.1)?;

    // TLS: the client trusts the CA.
    let (_plain_tls, addr) = start(GrpcOptions::default().with_tls(server_tls.clone())).await?;
    let trusting = GrpcTransport::new(
        GrpcOptions::default().with_tls(TlsOptions::new().with_ca_pem(&pki.ca)?),
    );
    let reply = hello_over(&trusting, &addr).await?;
    assert_eq!(reply_text(&reply.body), "Hello TLS");

    // Mutual TLS: the server requires a client certificate its CA signed.
    let (_mtls, addr) =
        start(GrpcOptions::default().with_tls(server_tls.with_ca_pem(&pki.ca)?)).await?;
    let with_cert = GrpcTransport::new(
        GrpcOptions::default().with_tls(
            TlsOptions::new()
                .with_ca_pem(&pki.ca)?
                .with_identity_pem(&pki.client.0, &pki.client.1)?,
        ),
    );
    let reply = hello_over(&with_cert, &addr).await?;
    assert_eq!(reply_text(&reply.body), "Hello TLS");

    // Without a client certificate the call fails, saying what to set.
    let e = hello_over(&trusting, &addr)
        .await
        .err()
        .ok_or("mTLS without a certificate must fail")?;
    assert!(e.detail.contains("client certificate"), "{e}");
    assert!(e.detail.contains(&addr), "{e}");

    // A client certificate from another CA is refused too.
    let stranger = make_pki("another CA")?;
    let foreign = GrpcTransport::new(
        GrpcOptions::default().with_tls(
            TlsOptions::new()
                .with_ca_pem(&pki.ca)?
                .with_identity_pem(&stranger.client.0, &stranger.client.1)?,
        ),
    );
    let e = hello_over(&foreign, &addr)
        .await
        .err()
        .ok_or("a foreign certificate must fail")?;
    assert!(
        e.detail.contains("rejected this client's certificate"),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_failures_are_clear() -> TestResult {
    let pki = make_pki("test CA")?;
    let server_tls = TlsOptions::new().with_identity_pem(&pki.server.0, &pki.server.1)?;
    let (_tls, tls_addr) = start(GrpcOptions::default().with_tls(server_tls)).await?;

    // A client that does not trust the server's CA.
    let other = make_pki("another CA")?;
    let untrusting = GrpcTransport::new(
        GrpcOptions::default().with_tls(TlsOptions::new().with_ca_pem(&other.ca)?),
    );
    let e = hello_over(&untrusting, &tls_addr)
        .await
        .err()
        .ok_or("an untrusted server must fail")?;
    assert_eq!(e.code, 503, "{e}");
    assert!(
        e.detail.contains("not signed by a CA this client trusts"),
        "{e}"
    );
    assert!(e.detail.contains("MICRO_TLS_CA"), "{e}");

    // A plaintext client on the TLS port is told so.
    let reply = hello_over(&GrpcTransport::default(), &tls_addr).await?;
    let e = error_in(&reply).ok_or("a plaintext call to a TLS port must fail")?;
    assert_eq!(e.code, 503, "{e}");
    assert!(e.detail.contains("TLS only"), "{e}");

    // A TLS client on a plaintext port is told so.
    let (_plain, plain_addr) = start(GrpcOptions::default()).await?;
    let tls_client = GrpcTransport::new(
        GrpcOptions::default().with_tls(TlsOptions::new().with_ca_pem(&pki.ca)?),
    );
    let e = hello_over(&tls_client, &plain_addr)
        .await
        .err()
        .ok_or("TLS to a plaintext port must fail")?;
    assert!(e.detail.contains("plaintext"), "{e}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bounds: connections, prefaces, idle connections, callers that stop reading
// ---------------------------------------------------------------------------------------

/// Whether the server closes `tcp` (rather than it staying open past `BOUND`), reading and
/// throwing away whatever the server sends first (its SETTINGS, a GOAWAY).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    bounded("the server closing the connection", async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
}

/// The client preface and an empty SETTINGS frame, as every HTTP/2 client starts.
const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_those_open_keep_working() -> TestResult {
    let opts = GrpcOptions {
        max_connections: 2,
        ..GrpcOptions::default()
    };
    let (_listener, addr) = start(opts.clone()).await?;
    let transport = GrpcTransport::new(opts);
    let mut held = vec![
        TcpStream::connect(&addr).await?,
        TcpStream::connect(&addr).await?,
    ];
    let mut third = TcpStream::connect(&addr).await?;
    assert!(closed_by_server(&mut third).await);
    held.pop();
    let reply = bounded("a call once there is room", async {
        loop {
            if let Ok(reply) = call(&transport, &addr, unary("Greeter.Hello", hello("Ann"))).await {
                return reply;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(reply_text(&reply.body), "Hello Ann");
    Ok(())
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() -> TestResult {
    // The write timeout bounds the close: this raw client answers no PING of the GOAWAY.
    let opts = GrpcOptions {
        idle_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_millis(200),
        ..GrpcOptions::default()
    };
    let (_listener, addr) = start(opts.clone()).await?;
    // No preface at all.
    let mut silent = TcpStream::connect(&addr).await?;
    assert!(closed_by_server(&mut silent).await);
    // A preface, then no call.
    let mut idle = TcpStream::connect(&addr).await?;
    tokio::io::AsyncWriteExt::write_all(&mut idle, PREFACE_AND_SETTINGS).await?;
    assert!(closed_by_server(&mut idle).await);
    // The server itself goes on.
    let transport = GrpcTransport::new(opts);
    let reply = call(&transport, &addr, unary("Greeter.Hello", hello("Bo"))).await?;
    assert_eq!(reply_text(&reply.body), "Hello Bo");
    Ok(())
}

#[tokio::test]
async fn a_caller_that_stops_reading_fails_the_servers_send_and_holds_no_shutdown() -> TestResult {
    let opts = GrpcOptions {
        write_timeout: Duration::from_millis(200),
        ..GrpcOptions::default()
    };
    let (handler, calls) = accepting(kinds);
    let transport = GrpcTransport::new(opts);
    let listener = transport.bind("127.0.0.1:0", handler).await?;
    let addr = listener.local_addr();
    let _client = open_stream(&transport, &addr, open("s-1", "Greeter.Stream")).await?;
    let mut socket = bounded("the call", calls.accept()).await.ok_or("no call")?;
    bounded("the opening", socket.recv()).await?;
    // The caller never reads: its flow-control window fills, then the server's buffer.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let e = bounded("sends until one fails", async {
        loop {
            if let Err(e) = socket.send(data("s-1", chunk.clone())).await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(e.code, 408, "{e}");
    assert!(e.detail.contains("stopped reading"), "{e}");
    drop(socket);
    bounded(
        "shutdown beside a caller that reads nothing",
        listener.shutdown(),
    )
    .await;
    Ok(())
}
