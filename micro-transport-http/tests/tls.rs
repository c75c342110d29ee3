//! The http transport over TLS on loopback: unary exchanges over HTTP/1.1 and HTTP/2, streams,
//! mutual TLS, the errors of untrusted or mismatched peers, and `MICRO_TLS_*`.
//!
//! Every certificate is made here with rcgen: a CA, a server certificate for 127.0.0.1 and
//! client certificates, some signed by a second CA nobody trusts.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro_conformance::transport::{accepting, call_with, open_stream, Accepted};
use micro_core::transport::{Listener, Message, Socket};
use micro_core::Error;
use micro_transport_http::{HttpListener, HttpOptions, HttpTransport, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Every wait is bounded, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

/// How long a failure against the wrong kind of peer may take: well under the default timeouts.
const FAST: Duration = Duration::from_secs(3);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {WAIT:?}"))
}

/// A test CA that issues certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) with no extended key usage,
    /// so it serves as server and as client certificate.
    fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The PKI of one test: the trusted CA, a server certificate for loopback, a client
/// certificate from the same CA, and one from a CA nobody trusts.
struct Pki {
    ca: Ca,
    server: Issued,
    client: Issued,
    rogue_ca: Ca,
    rogue_client: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("micro test CA");
        let rogue_ca = Ca::new("rogue CA");
        Pki {
            server: ca.issue("greeter", &["127.0.0.1", "localhost"]),
            client: ca.issue("caller", &["caller.local"]),
            rogue_client: rogue_ca.issue("intruder", &["intruder.local"]),
            ca,
            rogue_ca,
        }
    }

    /// A server certificate; with `mtls`, client certificates from the CA are required.
    fn server_tls(&self, mtls: bool) -> TlsOptions {
        let tls = TlsOptions::new()
            .with_identity_pem(&self.server.cert, &self.server.key)
            .expect("server identity");
        if mtls {
            tls.with_ca_pem(self.ca.pem()).expect("server CA")
        } else {
            tls
        }
    }

    /// A client that trusts the CA, presenting `identity` when asked.
    fn client_tls(&self, identity: Option<&Issued>) -> TlsOptions {
        let tls = TlsOptions::new()
            .with_ca_pem(self.ca.pem())
            .expect("client CA");
        match identity {
            Some(id) => tls
                .with_identity_pem(&id.cert, &id.key)
                .expect("client identity"),
            None => tls,
        }
    }
}

fn with_tls(tls: TlsOptions) -> HttpOptions {
    HttpOptions::default().with_tls(tls)
}

fn message(header: &[(&str, &str)], body: &str) -> Message {
    Message {
        header: header.iter().copied().collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// Opens a stream on `transport`; the echo server answers its opening first.
async fn stream(transport: &HttpTransport, addr: &str) -> Result<Box<dyn Socket>, Error> {
    let opening = message(&[("Micro-Stream", "1")], "");
    let mut socket = open_stream(transport, addr, opening, Duration::from_secs(5)).await?;
    let echo = within("the opening's echo", socket.recv()).await?;
    assert_eq!(echo.map(|m| m.body), Some(bytes::Bytes::new()));
    Ok(socket)
}

/// A listener, and the calls it received for the test to answer.
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

async fn serve(opts: HttpOptions) -> (Arc<Server>, String) {
    let (handler, calls) = accepting(|_| Some(micro_core::transport::EndpointKind::Unary));
    let listener = HttpTransport::new(opts)
        .bind("127.0.0.1:0", handler)
        .await
        .expect("bind");
    let addr = listener.local_addr();
    (Arc::new(Server { listener, calls }), addr)
}

/// Answers every unary request and stream message with its own body, until shut down.
fn echo(server: &Arc<Server>) {
    let server = server.clone();
    tokio::spawn(async move {
        while let Some(mut socket) = server.calls.accept().await {
            tokio::spawn(async move {
                while let Ok(Some(msg)) = socket.recv().await {
                    let reply = message(&[("Echo", "yes")], &String::from_utf8_lossy(&msg.body));
                    if socket.send(reply).await.is_err() {
                        break;
                    }
                }
                let _ = socket.close().await;
            });
        }
    });
}

/// One unary exchange, or the error it ended with.
async fn call(transport: &HttpTransport, addr: &str, body: &str) -> Result<Message, Error> {
    let request = message(&[("Micro-Id", "1")], body);
    within(
        "call",
        micro_conformance::transport::call(transport, addr, request),
    )
    .await
}

/// One message each way on a stream, or the error it ended with.
async fn stream_once(transport: &HttpTransport, addr: &str, body: &str) -> Result<Message, Error> {
    let mut socket = stream(transport, addr).await?;
    within("send", socket.send(message(&[("Micro-Stream", "1")], body))).await?;
    let reply = within("recv", socket.recv()).await?;
    within("close", socket.close()).await?;
    Ok(reply.expect("an echo"))
}

#[tokio::test]
async fn unary_over_tls_reuses_one_connection() {
    let pki = Pki::new();
    let (listener, addr) = serve(with_tls(pki.server_tls(false))).await;
    assert!(listener.is_tls());
    echo(&listener);
    let client = HttpTransport::new(with_tls(pki.client_tls(None)));
    for i in 0..3 {
        let body = format!("hello {i}");
        let reply = call(&client, &addr, &body).await.expect("call over TLS");
        assert_eq!(reply.body, body);
        assert_eq!(reply.header.get("Echo"), Some("yes"));
    }
    assert_eq!(listener.connections(), 1);
}

/// A raw TLS connection to `addr` offering `alpn`, trusting `ca_pem`.
async fn raw_tls(
    addr: &str,
    ca_pem: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    within(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake")
}

#[tokio::test]
async fn unary_over_tls_speaks_http1_and_h2_by_alpn() {
    let pki = Pki::new();
    let (listener, addr) = serve(with_tls(pki.server_tls(false))).await;
    echo(&listener);
    let request = || {
        Request::builder()
            .method(Method::POST)
            .uri(format!("https://{addr}/"))
            .header("micro-endpoint", "Echo.Call")
            .body(Full::new(Bytes::from_static(b"over tls")))
            .expect("request")
    };

    let tls = raw_tls(&addr, &pki.ca.pem(), b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let rsp = within("h2 response", h2.send_request(request()))
        .await
        .expect("h2 response");
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    let body = within("h2 body", rsp.into_body().collect()).await;
    assert_eq!(body.expect("body").to_bytes(), "over tls");

    let tls = raw_tls(&addr, &pki.ca.pem(), b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let rsp = within("h1 response", h1.send_request(request()))
        .await
        .expect("h1 response");
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.version(), http::Version::HTTP_11);
    let body = within("h1 body", rsp.into_body().collect()).await;
    assert_eq!(body.expect("body").to_bytes(), "over tls");
}

#[tokio::test]
async fn a_stream_over_tls_is_full_duplex() {
    let pki = Pki::new();
    let (listener, addr) = serve(with_tls(pki.server_tls(false))).await;
    echo(&listener);
    let client = HttpTransport::new(with_tls(pki.client_tls(None)));
    let mut socket = stream(&client, &addr).await.expect("open the stream");
    for i in 0..3 {
        let body = format!("m{i}");
        within(
            "send",
            socket.send(message(&[("Micro-Stream", "s")], &body)),
        )
        .await
        .expect("send");
        let echo = within("recv", socket.recv())
            .await
            .expect("recv")
            .expect("an echo");
        assert_eq!(echo.body, body);
    }
    socket.close().await.expect("close");
    assert!(within("end", socket.recv()).await.expect("recv").is_none());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let (listener, addr) = serve(with_tls(pki.server_tls(true))).await;
    echo(&listener);

    let trusted = HttpTransport::new(with_tls(pki.client_tls(Some(&pki.client))));
    let reply = call(&trusted, &addr, "with a certificate")
        .await
        .expect("mTLS call");
    assert_eq!(reply.body, "with a certificate");
    let reply = stream_once(&trusted, &addr, "streamed")
        .await
        .expect("mTLS stream");
    assert_eq!(reply.body, "streamed");

    let anonymous = HttpTransport::new(with_tls(pki.client_tls(None)));
    for e in [
        call(&anonymous, &addr, "no certificate")
            .await
            .expect_err("refused"),
        stream_once(&anonymous, &addr, "no certificate")
            .await
            .expect_err("refused"),
    ] {
        assert_eq!(e.code, 500, "{e}");
        assert!(e.detail.contains(&addr), "{e}");
        assert!(e.detail.contains("requires a client certificate"), "{e}");
    }

    let rogue = HttpTransport::new(with_tls(pki.client_tls(Some(&pki.rogue_client))));
    for e in [
        call(&rogue, &addr, "wrong CA").await.expect_err("refused"),
        stream_once(&rogue, &addr, "wrong CA")
            .await
            .expect_err("refused"),
    ] {
        assert_eq!(e.code, 500, "{e}");
        assert!(e.detail.contains(&addr), "{e}");
        assert!(e.detail.contains("refused our client certificate"), "{e}");
    }
}

#[tokio::test]
async fn a_server_from_an_untrusted_ca_is_a_clear_error() {
    let pki = Pki::new();
    let (listener, addr) = serve(with_tls(pki.server_tls(false))).await;
    echo(&listener);
    let tls = TlsOptions::new()
        .with_ca_pem(pki.rogue_ca.pem())
        .expect("CA");
    let client = HttpTransport::new(with_tls(tls));
    for e in [
        call(&client, &addr, "hi").await.expect_err("untrusted"),
        stream_once(&client, &addr, "hi")
            .await
            .expect_err("untrusted"),
    ] {
        assert_eq!(e.code, 500, "{e}");
        assert!(e.is_retryable());
        assert!(e.detail.starts_with(&format!("connect to {addr}: ")), "{e}");
        assert!(e.detail.contains("not trusted (unknown issuer)"), "{e}");
        assert!(e.detail.contains("MICRO_TLS_CA"), "{e}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_unless_the_name_is_set() {
    let pki = Pki::new();
    let by_name = pki.ca.issue("greeter", &["greeter.internal"]);
    let tls = TlsOptions::new()
        .with_identity_pem(&by_name.cert, &by_name.key)
        .expect("identity");
    let (listener, addr) = serve(with_tls(tls)).await;
    echo(&listener);

    let e = call(
        &HttpTransport::new(with_tls(pki.client_tls(None))),
        &addr,
        "hi",
    )
    .await
    .expect_err("the certificate does not name 127.0.0.1");
    assert_eq!(e.code, 500, "{e}");
    assert!(e.detail.contains("is not valid for the name"), "{e}");

    let renamed = pki
        .client_tls(None)
        .with_server_name("greeter.internal")
        .expect("server name");
    assert_eq!(renamed.server_name(), Some("greeter.internal"));
    let reply = call(&HttpTransport::new(with_tls(renamed)), &addr, "by name")
        .await
        .expect("call checked against greeter.internal");
    assert_eq!(reply.body, "by name");
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_fails_fast() {
    let pki = Pki::new();
    let (listener, addr) = serve(with_tls(pki.server_tls(false))).await;
    echo(&listener);
    let plain = HttpTransport::default();
    for (what, result) in [
        ("unary", fast(call(&plain, &addr, "hi")).await),
        ("stream", fast(stream_once(&plain, &addr, "hi")).await),
    ] {
        let e = result.expect_err(what);
        assert_eq!(e.code, 500, "{what}: {e}");
        assert!(e.detail.contains(&addr), "{what}: {e}");
        assert!(e.detail.contains("expects TLS"), "{what}: {e}");
    }
    // A TCP client that says nothing is dropped once the handshake times out.
    let opts = HttpOptions {
        idle_timeout: Duration::from_millis(300),
        ..with_tls(pki.server_tls(false))
    };
    let (_listener, addr) = serve(opts).await;
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = within("server closes", silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_tls_client_on_a_plaintext_port_fails_fast() {
    let pki = Pki::new();
    let (listener, addr) = serve(HttpOptions::default()).await;
    echo(&listener);
    let client = HttpTransport::new(with_tls(pki.client_tls(None)));
    for (what, result) in [
        ("unary", fast(call(&client, &addr, "hi")).await),
        ("stream", fast(stream_once(&client, &addr, "hi")).await),
    ] {
        let e = result.expect_err(what);
        assert_eq!(e.code, 500, "{what}: {e}");
        assert!(
            e.detail.starts_with(&format!("connect to {addr}: ")),
            "{what}: {e}"
        );
        assert!(e.detail.contains("plaintext port"), "{what}: {e}");
    }
}

#[tokio::test]
async fn a_silent_server_is_a_tls_handshake_timeout() {
    let pki = Pki::new();
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = raw.local_addr().expect("addr").to_string();
    // Accepts and holds connections without a word.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = raw.accept().await {
            held.push(conn);
        }
    });
    let client = HttpTransport::new(with_tls(pki.client_tls(None)));
    for stream in [false, true] {
        let connect_timeout = Duration::from_millis(300);
        let e = if stream {
            let opening = message(&[("Micro-Stream", "1")], "");
            open_stream(&client, &addr, opening, connect_timeout)
                .await
                .err()
        } else {
            call_with(&client, &addr, message(&[], "hi"), connect_timeout)
                .await
                .err()
        };
        let e = e.expect("no handshake");
        assert_eq!(e.code, 500);
        assert_eq!(
            e.detail,
            format!(
                "connect to {addr}: the TLS handshake did not finish within 300ms: is {addr} \
                 serving TLS?"
            ),
            "stream: {stream}"
        );
    }
}

/// Awaits `f`, failing the test when it takes longer than [`FAST`].
async fn fast<T>(f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = within("a failure", f).await;
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    out
}

#[tokio::test]
async fn listening_with_tls_needs_a_certificate() {
    let pki = Pki::new();
    let (handler, _calls) = accepting(|_| Some(micro_core::transport::EndpointKind::Unary));
    let e = HttpTransport::new(with_tls(pki.client_tls(None)))
        .bind("127.0.0.1:0", handler)
        .await
        .expect_err("no certificate");
    assert_eq!(e.code, 400);
    assert!(e.detail.contains("MICRO_TLS_CERT"), "{e}");
}

#[test]
fn bad_pem_is_a_400_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let cert = write("cert.pem", &pki.server.cert);
    let key = write("key.pem", &pki.server.key);
    let other_key = write("other-key.pem", &pki.client.key);
    let garbage = write("garbage.pem", "not a PEM file\n");
    let missing = dir.path().join("missing.pem");

    let ok = TlsOptions::new()
        .with_identity_files(&cert, &key)
        .and_then(|t| t.with_ca_file(&cert));
    assert!(ok.is_ok(), "{ok:?}");
    let debug = format!("{:?}", ok.expect("options"));
    assert!(!debug.contains("PRIVATE"), "{debug}");

    let cases: [(Result<TlsOptions, Error>, &PathBuf, &str); 5] = [
        (
            TlsOptions::new().with_identity_files(&missing, &key),
            &missing,
            "cannot read",
        ),
        (
            TlsOptions::new().with_identity_files(&garbage, &key),
            &garbage,
            "holds no PEM certificate",
        ),
        (
            TlsOptions::new().with_identity_files(&cert, &garbage),
            &garbage,
            "holds no PEM private key",
        ),
        (
            TlsOptions::new().with_identity_files(&cert, &other_key),
            &other_key,
            "does not belong to",
        ),
        (
            TlsOptions::new().with_ca_file(&key),
            &key,
            "holds no PEM certificate",
        ),
    ];
    for (result, path, why) in cases {
        let e = result.expect_err(why);
        assert_eq!(e.code, 400, "{e}");
        assert!(e.detail.contains(&path.display().to_string()), "{e}");
        assert!(e.detail.contains(why), "{e}");
    }
}

/// The only test that touches the process environment.
#[tokio::test]
async fn micro_tls_variables_configure_both_sides() {
    const VARS: [&str; 3] = ["MICRO_TLS_CERT", "MICRO_TLS_KEY", "MICRO_TLS_CA"];
    let set = |values: [Option<&std::path::Path>; 3]| {
        for (name, value) in VARS.iter().zip(values) {
            match value {
                Some(path) => std::env::set_var(name, path),
                None => std::env::remove_var(name),
            }
        }
    };
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let server_cert = write("server.pem", &pki.server.cert);
    let server_key = write("server-key.pem", &pki.server.key);
    let client_cert = write("client.pem", &pki.client.cert);
    let client_key = write("client-key.pem", &pki.client.key);
    let ca = write("ca.pem", &pki.ca.pem());
    let missing = dir.path().join("nowhere.pem");

    set([None, None, None]);
    let plain = HttpOptions::from_env();
    set([Some(&server_cert), Some(&server_key), Some(&ca)]);
    let server = HttpOptions::from_env();
    set([Some(&client_cert), Some(&client_key), Some(&ca)]);
    let client = HttpOptions::from_env();
    set([None, None, Some(&ca)]);
    let ca_only = HttpOptions::from_env();
    set([Some(&server_cert), None, None]);
    let cert_only = HttpOptions::from_env();
    set([Some(&server_cert), Some(&missing), None]);
    let missing_key = HttpOptions::from_env();
    set([None, None, Some(&server_key)]);
    let bad_ca = HttpOptions::from_env();
    set([None, None, None]);

    assert_eq!(plain.expect("plain").tls, None);
    let ca_only = ca_only.expect("CA only").tls.expect("TLS");
    assert!(ca_only.has_ca() && !ca_only.has_identity());

    let e = cert_only.expect_err("a certificate without its key");
    assert_eq!(e.code, 400);
    assert!(
        e.detail
            .contains("MICRO_TLS_CERT is set but MICRO_TLS_KEY is not"),
        "{e}"
    );
    let e = missing_key.expect_err("a missing key file");
    assert_eq!(e.code, 400);
    assert!(e.detail.contains("MICRO_TLS_KEY"), "{e}");
    assert!(e.detail.contains(&missing.display().to_string()), "{e}");
    let e = bad_ca.expect_err("a key for a CA");
    assert_eq!(e.code, 400);
    assert!(e.detail.contains("MICRO_TLS_CA"), "{e}");
    assert!(e.detail.contains(&server_key.display().to_string()), "{e}");

    // What the variables configured works end to end, with client certificates required.
    let server = server.expect("server options");
    let tls = server.tls.as_ref().expect("TLS");
    assert!(tls.has_identity() && tls.has_ca());
    let (listener, addr) = serve(server).await;
    echo(&listener);
    let client = HttpTransport::new(client.expect("client options"));
    let reply = call(&client, &addr, "configured by env")
        .await
        .expect("call");
    assert_eq!(reply.body, "configured by env");
    let e = call(
        &HttpTransport::new(with_tls(ca_only)),
        &addr,
        "no certificate",
    )
    .await
    .expect_err("mTLS");
    assert!(e.detail.contains("requires a client certificate"), "{e}");
}

#[test]
fn pem_given_in_code_is_checked_too() {
    let pki = Pki::new();
    let e = TlsOptions::new()
        .with_identity_pem(&pki.server.cert, &pki.client.key)
        .expect_err("mismatched key");
    assert_eq!(e.code, 400);
    assert!(e.detail.contains("given as PEM"), "{e}");
    let e = TlsOptions::new()
        .with_server_name("not a name!")
        .expect_err("bad name");
    assert_eq!(e.code, 400);
    // The PEM parsers of the test agree with the transport's on what a key is.
    assert!(PrivateKeyDer::from_pem_slice(pki.server.key.as_bytes()).is_ok());
}
