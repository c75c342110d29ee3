//! The http transport over real loopback sockets: unary exchanges, Go Micro's exact request,
//! limits, h2c, full-duplex streams, failures and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro_conformance::transport::{accepting, call_with, open_stream, Accepted};
use micro_core::transport::{Listener, Message, Socket, Transport};
use micro_core::Error;
use micro_transport_http::{HttpListener, HttpOptions, HttpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Every wait is bounded, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {WAIT:?}"))
}

fn message(header: &[(&str, &str)], body: &str) -> Message {
    Message {
        header: header.iter().copied().collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// A listener, and the calls it received for the test to answer by hand.
struct Server {
    listener: HttpListener,
    calls: Accepted,
}

impl std::ops::Deref for Server {
    type Target = HttpListener;
    fn deref(&self) -> &HttpListener {
        &self.listener
    }
}

async fn serve(opts: HttpOptions) -> (HttpTransport, Server, String) {
    let transport = HttpTransport::new(opts);
    let (handler, calls) = accepting(|_| Some(micro_core::transport::EndpointKind::Unary));
    let listener = transport.bind("127.0.0.1:0", handler).await.expect("bind");
    let addr = listener.local_addr();
    (transport, Server { listener, calls }, addr)
}

async fn accept(server: &Server) -> Box<dyn Socket> {
    within("accept", server.calls.accept())
        .await
        .expect("a call, the listener still up")
}

/// One unary call through `Transport::call`; the reply (or the node's error in
/// `Micro-Error`) as a message.
async fn call(transport: &HttpTransport, addr: &str, msg: Message) -> Message {
    micro_conformance::transport::call(transport, addr, msg)
        .await
        .expect("the node answers")
}

/// Opens a stream whose opening message carries `header`.
async fn stream(transport: &HttpTransport, addr: &str, header: &[(&str, &str)]) -> Box<dyn Socket> {
    open_stream(transport, addr, message(header, ""), WAIT)
        .await
        .expect("open the stream")
}

#[tokio::test]
async fn unary_round_trip_carries_headers_both_ways() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    let server = async {
        let mut socket = accept(&listener).await;
        let req = socket.recv().await.expect("recv").expect("request");
        assert!(socket.recv().await.expect("recv").is_none());
        let reply = message(
            &[
                ("Content-Type", "application/json"),
                ("Micro-Id", req.header.get("micro-id").unwrap_or_default()),
                ("Reply-Note", "ok"),
            ],
            r#"{"msg":"Hello John"}"#,
        );
        socket.send(reply).await.expect("send reply");
        req
    };
    let client = async {
        let request = message(
            &[
                ("Content-Type", "application/json"),
                ("Micro-Endpoint", "Greeter.Hello"),
                ("Micro-Id", "7"),
                ("Trace-Id", "t-123"),
            ],
            r#"{"name":"John"}"#,
        );
        call(&transport, &addr, request).await
    };
    let (req, reply) = tokio::join!(server, client);

    assert_eq!(req.body, r#"{"name":"John"}"#);
    assert_eq!(req.header.get("Micro-Endpoint"), Some("Greeter.Hello"));
    assert_eq!(req.header.get("trace-id"), Some("t-123"));
    assert_eq!(req.header.get("Content-Type"), Some("application/json"));
    for transport_header in ["Host", "Content-Length", "User-Agent", "Connection"] {
        assert!(!req.header.contains_key(transport_header), "{req:?}");
    }
    assert_eq!(req.header.get("Micro-Id"), Some("7"));
    assert_eq!(reply.body, r#"{"msg":"Hello John"}"#);
    // The reply's metadata: its headers less the protocol's (Micro-Id, ...).
    assert!(!reply.header.contains_key("micro-id"), "{reply:?}");
    assert_eq!(reply.header.get("Reply-Note"), Some("ok"));
    assert_eq!(reply.header.get("Content-Type"), Some("application/json"));
    assert!(!reply.header.contains_key("Micro-Error"));
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    let mut peers = Vec::new();
    for i in 0..5 {
        let server = async {
            let mut socket = accept(&listener).await;
            let req = socket.recv().await.expect("recv").expect("request");
            socket.send(req).await.expect("send");
            socket.remote_addr()
        };
        let body = format!("call {i}");
        let (peer, reply) = tokio::join!(
            server,
            call(&transport, &addr, message(&[("Micro-Id", "1")], &body))
        );
        assert_eq!(reply.body, body);
        peers.push(peer);
    }
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
    assert_eq!(listener.connections(), 1);
}

/// A connection driven by hand, for requests exactly as other implementations write them.
struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn micro_error(&self) -> Option<Error> {
        self.header("Micro-Error").map(Error::parse)
    }
}

impl RawConn {
    async fn connect(addr: &str) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = within("read", self.stream.read(&mut chunk))
            .await
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill().await, "connection closed before a response");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ascii head");
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').expect("a header line");
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("a length"))
            .expect("a Content-Length");
        while self.buf.len() < len {
            assert!(self.fill().await, "connection closed inside a body");
        }
        let body = self.buf.drain(..len).collect();
        RawResponse {
            status_line,
            headers,
            body,
        }
    }

    /// Whether the server closed the connection (rather than sending anything more).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        match within("read", self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        }
    }
}

/// The request a Go Micro v4 client sends for `Greeter.Hello`.
fn go_micro_request(addr: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: {}\r\nAccept: application/json\r\nContent-Type: application/json\r\n\
         Micro-Endpoint: Greeter.Hello\r\nMicro-Id: 0\r\nMicro-Method: Greeter.Hello\r\n\
         Micro-Service: greeter\r\nTimeout: 5000000000\r\nTrace-Id: t-123\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_go_micro_request_is_understood_and_answered() {
    let (_transport, listener, addr) = serve(HttpOptions::default()).await;
    let mut conn = RawConn::connect(&addr).await;
    for round in 0..2 {
        conn.write(go_micro_request(&addr, r#"{"name":"John"}"#).as_bytes())
            .await;
        let mut socket = accept(&listener).await;
        let req = socket.recv().await.expect("recv").expect("request");
        let expected = [
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("Micro-Endpoint", "Greeter.Hello"),
            ("Micro-Id", "0"),
            ("Micro-Method", "Greeter.Hello"),
            ("Micro-Service", "greeter"),
            ("Timeout", "5000000000"),
            ("Trace-Id", "t-123"),
        ];
        let got: Vec<(&str, &str)> = req.header.iter().collect();
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (k, v) in expected {
            assert!(got.contains(&(k, v)), "missing {k}: {v} in {got:?}");
        }
        assert_eq!(req.body, r#"{"name":"John"}"#);

        let reply = message(
            &[
                ("Content-Type", "application/json"),
                ("Micro-Id", "0"),
                ("Micro-Endpoint", "Greeter.Hello"),
            ],
            r#"{"msg":"Hello John"}"#,
        );
        socket.send(reply).await.expect("send");
        let rsp = conn.response().await;
        assert_eq!(rsp.status_line, "HTTP/1.1 200 OK", "round {round}");
        assert_eq!(rsp.header("Content-Type"), Some("application/json"));
        assert_eq!(rsp.header("Content-Length"), Some("20"));
        assert_eq!(rsp.header("Micro-Id"), Some("0"));
        assert!(
            rsp.headers.iter().any(|(k, _)| k == "Micro-Endpoint"),
            "header names go out in Go's canonical case: {rsp:?}"
        );
        assert_eq!(rsp.body, br#"{"msg":"Hello John"}"#);
    }
    assert_eq!(listener.connections(), 1);
}

fn small_body_limit() -> HttpOptions {
    HttpOptions {
        max_body_bytes: 1024,
        ..HttpOptions::default()
    }
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_the_connection_keeps_serving() {
    let (_transport, listener, addr) = serve(small_body_limit()).await;
    let mut conn = RawConn::connect(&addr).await;

    // Declared with Content-Length.
    conn.write(go_micro_request(&addr, &"x".repeat(3000)).as_bytes())
        .await;
    let rsp = conn.response().await;
    assert_eq!(rsp.status_line, "HTTP/1.1 200 OK");
    let e = rsp.micro_error().expect("a Micro-Error");
    assert_eq!(e.code, 413);
    assert_eq!(e.id, "micro.transport.http");
    assert_eq!(
        e.detail,
        "request body of 3000 bytes exceeds the limit of 1024 bytes"
    );
    assert_eq!(rsp.header("Micro-Id"), Some("0"));
    assert!(rsp.body.is_empty());

    // Chunked, so the size shows only while reading.
    let chunk = "y".repeat(1000);
    let mut chunked = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nMicro-Id: 1\r\n\r\n"
    );
    for _ in 0..3 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    conn.write(chunked.as_bytes()).await;
    let e = conn.response().await.micro_error().expect("a Micro-Error");
    assert_eq!(e.code, 413);
    assert_eq!(
        e.detail,
        "request body of 3000 bytes exceeds the limit of 1024 bytes"
    );

    // The same connection then carries a normal request to the server, which never saw the
    // oversized ones.
    conn.write(go_micro_request(&addr, r#"{"name":"John"}"#).as_bytes())
        .await;
    let mut socket = accept(&listener).await;
    let req = socket.recv().await.expect("recv").expect("request");
    assert_eq!(req.body, r#"{"name":"John"}"#);
    socket
        .send(message(&[("Content-Type", "application/json")], "{}"))
        .await
        .expect("send");
    let rsp = conn.response().await;
    assert_eq!(rsp.status_line, "HTTP/1.1 200 OK");
    assert!(rsp.micro_error().is_none());
    assert_eq!(rsp.body, b"{}");
    assert_eq!(listener.connections(), 1);
}

#[tokio::test]
async fn a_body_beyond_the_drain_limit_closes_the_connection() {
    let (_transport, _listener, addr) = serve(small_body_limit()).await;
    let mut conn = RawConn::connect(&addr).await;
    // Only the head: the declared length alone is enough to refuse it.
    conn.write(
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
    )
    .await;
    let rsp = conn.response().await;
    assert_eq!(rsp.micro_error().map(|e| e.code), Some(413));
    assert_eq!(rsp.header("Connection"), Some("close"));
    assert!(conn.closed().await);
}

#[tokio::test]
async fn a_slow_body_times_out_and_the_connection_closes() {
    let opts = HttpOptions {
        body_read_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let (_transport, _listener, addr) = serve(opts).await;
    let mut conn = RawConn::connect(&addr).await;
    conn.write(
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\nonly ten..")
            .as_bytes(),
    )
    .await;
    let e = conn.response().await.micro_error().expect("a Micro-Error");
    assert_eq!(e.code, 408, "{e}");
    assert!(conn.closed().await);
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let opts = HttpOptions {
        idle_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let (_transport, _listener, addr) = serve(opts).await;
    let mut conn = RawConn::connect(&addr).await;
    assert!(conn.closed().await);
}

#[tokio::test]
async fn a_too_large_header_is_refused_and_the_server_goes_on() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    let mut conn = RawConn::connect(&addr).await;
    let huge = "h".repeat(100 * 1024);
    let request =
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nBig: {huge}\r\nContent-Length: 0\r\n\r\n");
    // The server may stop reading half way, so the write itself may fail.
    let _ = conn.stream.write_all(request.as_bytes()).await;
    let mut reply = Vec::new();
    let _ = within("read", conn.stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );

    let server = async {
        let mut socket = accept(&listener).await;
        let req = socket.recv().await.expect("recv").expect("request");
        socket.send(req).await.expect("send");
    };
    let (_, reply) = tokio::join!(server, call(&transport, &addr, message(&[], "still here")));
    assert_eq!(reply.body, "still here");
}

async fn h2_client<B>(addr: &str) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn h2c_unary_works() {
    let (_transport, listener, addr) = serve(HttpOptions::default()).await;
    let mut sender = h2_client(&addr).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("micro-endpoint", "Greeter.Hello")
        .body(Full::new(Bytes::from_static(br#"{"name":"John"}"#)))
        .expect("request");
    let client = async {
        let rsp = within("h2 response", sender.send_request(req))
            .await
            .expect("response");
        let status = rsp.status();
        let content_type = rsp.headers().get("content-type").cloned();
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        (status, content_type, body)
    };
    let server = async {
        let mut socket = accept(&listener).await;
        let req = socket.recv().await.expect("recv").expect("request");
        assert_eq!(req.header.get("Micro-Endpoint"), Some("Greeter.Hello"));
        assert_eq!(req.body, r#"{"name":"John"}"#);
        socket
            .send(message(
                &[("Content-Type", "application/json")],
                r#"{"msg":"hi"}"#,
            ))
            .await
            .expect("send");
    };
    let ((status, content_type, body), ()) = tokio::join!(client, server);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type.as_ref().map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert_eq!(body, r#"{"msg":"hi"}"#);
}

#[tokio::test]
async fn a_stream_is_full_duplex() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    let listener = Arc::new(listener);
    let server = tokio::spawn({
        let listener = listener.clone();
        async move {
            let mut socket = accept(&listener).await;
            let mut seen = Vec::new();
            while let Some(msg) = within("server recv", socket.recv()).await.expect("recv") {
                seen.push(msg.clone());
                socket
                    .send(message(
                        &[("Echo", "yes")],
                        &format!("echo {}", String::from_utf8_lossy(&msg.body)),
                    ))
                    .await
                    .expect("echo");
            }
            socket.close().await.expect("close");
            seen
        }
    });

    let mut socket = stream(
        &transport,
        &addr,
        &[("Micro-Stream", "s-1"), ("Micro-Endpoint", "Chat.Talk")],
    )
    .await;
    // The server echoes the opening message too.
    let opened = within("client recv", socket.recv())
        .await
        .expect("recv")
        .expect("the opening's echo");
    assert_eq!(opened.body, "echo ");
    for i in 0..3 {
        let msg = message(
            &[("Micro-Stream", "s-1"), ("Micro-Endpoint", "Chat.Talk")],
            &format!("m{i}"),
        );
        within("client send", socket.send(msg)).await.expect("send");
        // The echo arrives while the request body is still open: full duplex.
        let echo = within("client recv", socket.recv())
            .await
            .expect("recv")
            .expect("an echo");
        assert_eq!(echo.body, format!("echo m{i}"));
        assert_eq!(echo.header.get("echo"), Some("yes"));
    }
    socket.close().await.expect("close");
    assert!(within("client end", socket.recv())
        .await
        .expect("recv")
        .is_none());

    let seen = within("server task", server).await.expect("server task");
    assert_eq!(seen.len(), 4, "the opening and three messages");
    assert_eq!(seen[0].header.get("Micro-Stream"), Some("s-1"));
    assert_eq!(seen[0].header.get("Micro-Endpoint"), Some("Chat.Talk"));
    assert_eq!(seen[3].body, "m2");
    assert_eq!(listener.connections(), 1);
}

#[tokio::test]
async fn garbage_stream_frames_end_the_stream_with_an_error() {
    let (_transport, listener, addr) = serve(HttpOptions::default()).await;
    let cases: [(&[u8], i32); 3] = [
        // A header length far over the limit.
        (&[0xff, 0xff, 0xff, 0xff, 0, 0], 413),
        // A header that is not a JSON object of strings.
        (&[0, 0, 0, 3, b'[', b'1', b']', 0, 0, 0, 0], 400),
        // A frame cut short by the end of the body.
        (&[0, 0, 0, 2, b'{', b'}', 0, 0, 0, 9, b'x'], 400),
    ];
    for (garbage, code) in cases {
        let mut sender = h2_client(&addr).await;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/"))
            .header("micro-stream", "1")
            .body(Full::new(Bytes::from_static(garbage)))
            .expect("request");
        let reply = sender.send_request(req);
        let mut socket = accept(&listener).await;
        let e = within("recv", socket.recv())
            .await
            .expect_err("garbage is an error");
        assert_eq!(e.code, code, "{e}");
        // Later reads report the same error rather than garbage messages.
        assert_eq!(socket.recv().await.err(), Some(e));
        drop(socket);
        let rsp = within("h2 response", reply).await.expect("response");
        let body = within("body", rsp.into_body().collect()).await;
        assert!(body.map(|b| b.to_bytes().is_empty()).unwrap_or(true));
    }
}

#[tokio::test]
async fn a_dead_address_is_a_retryable_error_naming_it() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let transport = HttpTransport::default();

    let e = micro_conformance::transport::call(&transport, &addr, message(&[], "hi"))
        .await
        .expect_err("nobody listens");
    assert_eq!(e.code, 503);
    assert!(e.is_retryable());
    assert_eq!(
        e.detail,
        format!("connect to {addr}: connection refused"),
        "{e}"
    );

    let e = open_stream(
        &transport,
        &addr,
        message(&[("Micro-Stream", "1")], ""),
        WAIT,
    )
    .await
    .expect_err("nobody listens");
    assert_eq!(e.code, 503);
    assert_eq!(e.detail, format!("connect to {addr}: connection refused"));
}

#[tokio::test]
async fn a_status_other_than_200_becomes_an_error() {
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = raw.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (mut stream, _) = raw.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nno such thing")
            .await;
    });
    let transport = HttpTransport::default();
    let e = micro_conformance::transport::call(&transport, &addr, message(&[], "hi"))
        .await
        .expect_err("a 404 is no answer from a Micro node");
    assert_eq!(e.code, 404);
    assert_eq!(e.detail, "no such thing");
}

#[tokio::test]
async fn a_server_socket_dropped_without_reply_answers_500() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    let server = async {
        let socket = accept(&listener).await;
        drop(socket);
    };
    let (_, reply) = tokio::join!(
        server,
        call(
            &transport,
            &addr,
            message(
                &[("Micro-Endpoint", "Greeter.Hello"), ("Micro-Id", "3")],
                "{}"
            )
        )
    );
    let e = Error::parse(reply.header.get("Micro-Error").expect("a Micro-Error"));
    assert_eq!(e.code, 500);
    assert!(e.detail.contains("without replying"), "{e}");
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    let listener = Arc::new(listener);
    let client = tokio::spawn({
        let transport = transport.clone();
        let addr = addr.clone();
        async move { call(&transport, &addr, message(&[], "in flight")).await }
    });
    let mut socket = accept(&listener).await;
    let req = socket.recv().await.expect("recv").expect("request");

    let shutdown = tokio::spawn({
        let listener = listener.clone();
        async move { listener.shutdown().await }
    });
    // The call in flight holds the shutdown.
    assert!(!shutdown.is_finished());

    socket.send(req).await.expect("reply in flight");
    let reply = within("client", client).await.expect("client task");
    assert_eq!(reply.body, "in flight");
    within("shutdown", shutdown).await.expect("shutdown task");

    // Nothing listens any more.
    let e = micro_conformance::transport::call(&transport, &addr, message(&[], "late"))
        .await
        .expect_err("the listener is gone");
    assert_eq!(e.code, 503);
}

#[tokio::test]
async fn the_connect_timeout_of_each_dial_applies() {
    // A listener that never accepts, with its backlog filled: further connects hang (Linux
    // drops their SYNs), like an address that swallows packets.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr").to_string();
    let _listener = socket.listen(1).expect("listen");
    let mut held = Vec::new();
    let mut hung = false;
    for _ in 0..16 {
        match timeout(Duration::from_millis(200), TcpStream::connect(&addr)).await {
            Ok(conn) => held.push(conn.expect("connect")),
            Err(_) => {
                hung = true;
                break;
            }
        }
    }
    assert!(hung, "could not fill the backlog of {addr}");

    let transport = HttpTransport::default();
    for (stream, limit) in [(false, 300), (false, 600), (true, 300)] {
        let connect_timeout = Duration::from_millis(limit);
        let started = std::time::Instant::now();
        let e = if stream {
            open_stream(
                &transport,
                &addr,
                message(&[("Micro-Stream", "1")], ""),
                connect_timeout,
            )
            .await
            .err()
        } else {
            call_with(&transport, &addr, message(&[], "hi"), connect_timeout)
                .await
                .err()
        };
        let e = e.expect("nobody accepts");
        assert_eq!(e.code, 503);
        assert_eq!(
            e.detail,
            format!("connect to {addr}: timed out after {limit}ms"),
            "stream: {stream}"
        );
        assert!(started.elapsed() >= Duration::from_millis(limit));
    }
}

#[tokio::test]
async fn a_stream_whose_client_goes_away_ends_on_the_server() {
    let (transport, listener, addr) = serve(HttpOptions::default()).await;
    assert_eq!(transport.name(), "http");
    let mut client = stream(&transport, &addr, &[("Micro-Stream", "2")]).await;
    client
        .send(message(&[("Micro-Stream", "2")], "first"))
        .await
        .expect("send");
    let mut server = accept(&listener).await;
    let opening = server.recv().await.expect("recv").expect("the opening");
    assert_eq!(opening.header.get("Micro-Stream"), Some("2"));
    let first = server.recv().await.expect("recv").expect("a message");
    assert_eq!(first.body, "first");
    drop(client);
    // Ended or reset, but never a hang and never a made-up message.
    match within("recv after the client left", server.recv()).await {
        Ok(None) | Err(_) => {}
        Ok(Some(msg)) => panic!("unexpected {msg:?}"),
    }
}

#[tokio::test]
async fn an_http1_stream_is_refused_with_an_error() {
    let (_transport, _listener, addr) = serve(HttpOptions::default()).await;
    let mut conn = RawConn::connect(&addr).await;
    conn.write(
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nMicro-Stream: 1\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let rsp = conn.response().await;
    assert_eq!(rsp.status_line, "HTTP/1.1 200 OK");
    let e = rsp.micro_error().expect("a Micro-Error");
    assert_eq!(e.code, 501);
    assert!(e.detail.contains("h2c"), "{e}");
}

/// Opens raw TCP connections until the server closes one at once; they are kept open.
async fn fill_up(addr: &str, max: usize) -> Vec<RawConn> {
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(RawConn::connect(addr).await);
    }
    held
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_those_open_keep_working() {
    let opts = HttpOptions {
        max_connections: 2,
        ..HttpOptions::default()
    };
    let (transport, listener, addr) = serve(opts).await;
    let listener = Arc::new(listener);
    tokio::spawn({
        let listener = listener.clone();
        async move {
            while let Some(mut socket) = listener.calls.accept().await {
                let _ = socket.recv().await;
                let _ = socket.send(message(&[], "served")).await;
            }
        }
    });
    let mut held = fill_up(&addr, 2).await;
    // The two open ones are served: a request on one of them is answered.
    held[0].write(go_micro_request(&addr, "x").as_bytes()).await;
    assert!(held[0].response().await.micro_error().is_none());
    let mut third = RawConn::connect(&addr).await;
    assert!(third.closed().await, "a third connection is closed at once");
    // Once one closes, a new one is taken again.
    drop(held.pop());
    within("a call once there is room", async {
        loop {
            let sent = micro_conformance::transport::call(
                &transport,
                &addr,
                message(&[("Micro-Endpoint", "A.B")], "x"),
            )
            .await;
            if let Ok(reply) = sent {
                break reply;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A request body that sends nothing and never ends.
struct Silent;

impl http_body::Body for Silent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_stream_whose_first_message_never_comes_times_out() {
    let opts = HttpOptions {
        body_read_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let (_transport, listener, addr) = serve(opts).await;
    let mut h2 = h2_client::<Silent>(&addr).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/"))
        .header("Micro-Stream", "s-1")
        .header("Content-Type", "application/protobuf")
        .body(Silent)
        .expect("a request");
    let _response = within("the stream's response", h2.send_request(request))
        .await
        .expect("a response");
    let mut socket = accept(&listener).await;
    let e = within("the first message", socket.recv())
        .await
        .expect_err("no first message");
    assert_eq!(e.code, 408, "{e}");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_fails_the_servers_send() {
    let opts = HttpOptions {
        write_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let (transport, listener, addr) = serve(opts).await;
    let _client = stream(
        &transport,
        &addr,
        &[("Micro-Stream", "s-1"), ("Micro-Endpoint", "Feed.Flood")],
    )
    .await;
    let mut socket = accept(&listener).await;
    within("the opening", socket.recv()).await.expect("opening");
    // The client never reads: its flow-control window fills, then the server's buffer.
    let chunk = "x".repeat(64 * 1024);
    let e = within("sends until one fails", async {
        let mut sent = 0usize;
        loop {
            match socket.send(message(&[], &chunk)).await {
                Ok(()) => sent += 1,
                Err(e) => break (e, sent),
            }
        }
    })
    .await;
    assert_eq!(e.0.code, 408, "{}", e.0);
    assert!(e.0.detail.contains("stopped reading"), "{}", e.0);
    // Nor does that client hold up a shutdown: its connection is cut once closing.
    drop(socket);
    within(
        "shutdown beside a client that reads nothing",
        listener.shutdown(),
    )
    .await;
}
