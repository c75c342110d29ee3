//! `BearerLayer::tls_only` over real sockets: four greeter services behind the auth layer, on
//! the http transport and on gRPC, each over TLS or in plaintext, called by clients that mix a
//! TLS transport with a plaintext one. The token reaches the TLS services (their calls and
//! streams succeed) and never the plaintext ones (401), decided node by node; a client without
//! `tls_only` shows the plaintext services would have taken it.
//!
//! Every certificate is made here with rcgen: a CA and a server certificate for 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest, StreamRequest};
use greeter::GreeterService;
use micro::registry::MemoryRegistry;
use micro::selector::{RegistrySelector, SelectorOptions};
use micro::{Client, ClientOptions, Codecs, Service};
use micro_core::Transport;
use micro_transport_grpc::{GrpcOptions, GrpcTransport};
use micro_transport_http::{HttpOptions, HttpTransport};
use micro_wrapper_auth::{AuthLayer, BearerLayer, JwtSigner, JwtVerifier};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;

const SECRET: &[u8] = b"a test secret that is 32 bytes!!";

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

/// A CA (PEM) and a certificate with its key (PEM) for 127.0.0.1, signed by it.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// The http transport: over TLS (serving `pki`'s certificate, trusting its CA), or plaintext.
fn http(tls: Option<&Pki>) -> Arc<dyn Transport> {
    let mut opts = HttpOptions::default();
    if let Some(pki) = tls {
        let tls = micro_transport_http::TlsOptions::new()
            .with_identity_pem(&pki.cert, &pki.key)
            .and_then(|t| t.with_ca_pem(&pki.ca))
            .expect("http TLS options");
        opts = opts.with_tls(tls);
    }
    Arc::new(HttpTransport::new(opts))
}

/// The gRPC transport: over TLS (serving `pki`'s certificate, trusting its CA), or plaintext.
fn grpc(tls: Option<&Pki>) -> Arc<dyn Transport> {
    let mut opts = GrpcOptions::default();
    if let Some(pki) = tls {
        let tls = micro_transport_grpc::TlsOptions::new()
            .with_identity_pem(&pki.cert, &pki.key)
            .and_then(|t| t.with_ca_pem(&pki.ca))
            .expect("gRPC TLS options");
        opts = opts.with_tls(tls);
    }
    Arc::new(GrpcTransport::new(opts))
}

/// A started greeter service called `name` on `transport`, every endpoint behind a token.
async fn protected(
    name: &str,
    registry: &MemoryRegistry,
    transport: Arc<dyn Transport>,
) -> Service {
    let service = Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(transport)
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .handler(greeter_handler(GreeterService))
        .handler_layer(AuthLayer::new(JwtVerifier::hs256(SECRET)))
        .build()
        .expect("build");
    service.start().await.expect("start");
    service
}

/// A client on `registry` dialling mucp nodes with `mucp` and gRPC nodes with `grpc`, and
/// nothing else, behind `bearer`.
fn client(
    registry: &MemoryRegistry,
    mucp: Arc<dyn Transport>,
    grpc: Arc<dyn Transport>,
    bearer: BearerLayer,
) -> Client {
    let selector = RegistrySelector::new(Arc::new(registry.clone()), SelectorOptions::default());
    Client::new(
        Arc::new(selector),
        mucp,
        Arc::new(micro::broker::MemoryBroker::new()),
        Codecs::default(),
        ClientOptions::default(),
    )
    .with_transport(grpc)
    .layer(bearer)
}

fn token() -> String {
    let exp = micro_wrapper_auth::jsonwebtoken::get_current_timestamp() + 3600;
    JwtSigner::hs256(SECRET)
        .sign(&json!({"sub": "alice", "exp": exp}))
        .expect("sign")
}

/// What `service` answers to a unary call and to a server stream from `client`: `Ok` when the
/// token arrived, the error code otherwise.
async fn answers(client: &Client, service: &str) -> (Result<(), i32>, Result<(), i32>) {
    let greeter = GreeterClient::new(service, client.clone());
    let unary = within("hello", greeter.hello(HelloRequest { name: "a".into() }))
        .await
        .map(|_| ())
        .map_err(|e| e.code);
    let stream = within("stream", async {
        let mut replies = greeter
            .stream(StreamRequest {
                name: "a".into(),
                count: 1,
            })
            .await?;
        while replies.recv().await?.is_some() {}
        Ok::<_, micro::Error>(())
    })
    .await
    .map_err(|e| e.code);
    (unary, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_token_reaches_tls_services_and_no_others() {
    let pki = pki();
    let registry = MemoryRegistry::new();
    let services = [
        protected("tls-http", &registry, http(Some(&pki))).await,
        protected("tls-grpc", &registry, grpc(Some(&pki))).await,
        protected("plain-http", &registry, http(None)).await,
        protected("plain-grpc", &registry, grpc(None)).await,
    ];
    let accepted = (Ok(()), Ok(()));
    let refused = (Err(401), Err(401));

    // TLS for mucp nodes, plaintext for gRPC nodes: one client, two verdicts.
    let tls_mucp = client(
        &registry,
        http(Some(&pki)),
        grpc(None),
        BearerLayer::new(token()).tls_only(),
    );
    assert_eq!(answers(&tls_mucp, "tls-http").await, accepted);
    assert_eq!(answers(&tls_mucp, "plain-grpc").await, refused);

    // And the other way round.
    let tls_grpc = client(
        &registry,
        http(None),
        grpc(Some(&pki)),
        BearerLayer::new(token()).tls_only(),
    );
    assert_eq!(answers(&tls_grpc, "tls-grpc").await, accepted);
    assert_eq!(answers(&tls_grpc, "plain-http").await, refused);

    // The plaintext services refused for want of the token alone: sent anyway, it works.
    let anywhere = client(&registry, http(None), grpc(None), BearerLayer::new(token()));
    assert_eq!(answers(&anywhere, "plain-http").await, accepted);
    assert_eq!(answers(&anywhere, "plain-grpc").await, accepted);

    for service in services {
        service.stop().await.expect("stop");
    }
}
