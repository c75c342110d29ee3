//! The Consul registry against a Consul agent: the shared conformance suite, outages, ACL
//! tokens, TLS, critical checks and entries written by others.
//!
//! Which agent: when `CONSUL_HTTP_ADDR` is set (plain HTTP, e.g. `127.0.0.1:8500` of a
//! `consul agent -dev`), every test that can runs against that real agent, with the token and
//! TLS settings of Consul's own variables. Otherwise the tests start `ConsulDouble`, an
//! in-process HTTP double of the agent API (see `consul_double/mod.rs`): no Consul server can be
//! installed on this project's machines. Tests that need to configure the agent itself (ACL
//! token, datacenters, TLS, reaping after `DeregisterCriticalServiceAfter`) use a private
//! double in both cases.

mod consul_double;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use micro_conformance::registry::{eventually, sample, unique, Outage, PATIENCE};
use micro_core::registry::{EventKind, RegisterOptions, Watcher};
use micro_core::{Node, Registry, Service};
use micro_registry_consul::{tags, ConsulOptions, ConsulRegistry, TlsOptions};
use serde_json::json;

use consul_double::proxy::OutageProxy;
use consul_double::ConsulDouble;

/// The real agent's address, when the tests should use one.
fn real_agent() -> Option<String> {
    std::env::var("CONSUL_HTTP_ADDR")
        .ok()
        .filter(|a| !a.trim().is_empty())
}

/// Options for a registry at `address`: Consul's own variables for a real agent, nothing from
/// the environment for a double; short timeouts and watch waits either way.
fn options(address: &str) -> ConsulOptions {
    let base = match real_agent() {
        Some(_) => ConsulOptions::from_env(),
        None => ConsulOptions::default(),
    };
    base.with_address(address)
        .with_request_timeout(Duration::from_secs(5))
        .with_watch_wait(Duration::from_secs(2))
}

/// The agent shared by the conformance suite: the real one, or one double per test binary.
fn shared_agent() -> String {
    real_agent().unwrap_or_else(ConsulDouble::shared)
}

fn consul(address: &str) -> Arc<dyn Registry> {
    Arc::new(ConsulRegistry::new(options(address)).expect("a Consul registry"))
}

async fn shared_registry() -> micro_core::Result<Arc<dyn Registry>> {
    Ok(Arc::new(ConsulRegistry::new(options(&shared_agent()))?) as Arc<dyn Registry>)
}

mod conformance {
    micro_conformance::registry_suite!(super::shared_registry());
}

fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

async fn node_ids(r: &dyn Registry, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = r
        .get_service(name)
        .await
        .map(|s| s.into_iter().flat_map(|s| s.nodes).map(|n| n.id).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// A request straight to the agent's HTTP API, as another program would make it.
async fn raw(
    method: Method,
    address: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let base = if address.contains("://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("http://{address}")
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if real_agent().is_some() {
        if let Ok(token) = std::env::var("CONSUL_HTTP_TOKEN") {
            req = req.header("X-Consul-Token", token);
        }
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req.body(Full::new(Bytes::from(body))).expect("a request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("the agent answers in time")
        .expect("the agent answers");
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.expect("a body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn next_event(w: &mut Watcher, name: &str) -> micro_core::Result<(EventKind, Service)> {
    loop {
        let item = tokio::time::timeout(PATIENCE, w.next())
            .await
            .unwrap_or_else(|_| panic!("no watch item for {name} within {PATIENCE:?}"))
            .expect("the watch ended early");
        match item {
            Ok(e) if e.service.name == name => return Ok((e.kind, e.service)),
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Takes the agent away and back: the double itself, or a proxy in front of a real agent.
enum Backend {
    Double(ConsulDouble),
    Proxy(OutageProxy),
}

impl Backend {
    async fn start() -> Backend {
        match real_agent() {
            Some(agent) => {
                let upstream = agent.split("://").last().unwrap_or(&agent).to_string();
                Backend::Proxy(OutageProxy::start(&upstream).await)
            }
            None => Backend::Double(ConsulDouble::start().await),
        }
    }

    fn address(&self) -> String {
        match self {
            Backend::Double(d) => d.address(),
            Backend::Proxy(p) => p.address(),
        }
    }
}

#[async_trait::async_trait]
impl Outage for Backend {
    async fn stop(&self) {
        match self {
            Backend::Double(d) => d.stop().await,
            Backend::Proxy(p) => p.stop().await,
        }
    }

    async fn start(&self) {
        match self {
            Backend::Double(d) => d.restart().await,
            Backend::Proxy(p) => p.restart().await,
        }
    }

    fn names(&self) -> String {
        format!("consul at {}", self.address())
    }
}

/// The double comes back with no registrations (a restarted dev agent): registering again
/// must notice that the agent forgot the node, not just pass its check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_outage() {
    let backend = Backend::start().await;
    let registry = consul(&backend.address());
    micro_conformance::registry::recovers_after_outage(registry, &backend)
        .await
        .expect("recovers after the outage");
}

/// A watch reports the outage as an error item, then goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_an_outage_and_resumes() {
    let backend = Backend::start().await;
    let registry = consul(&backend.address());
    let name = unique("consul-watch-outage");
    let mut w = registry.watch(Some(&name)).await.expect("watch");
    backend.stop().await;
    let err = next_event(&mut w, &name)
        .await
        .expect_err("an error item during the outage");
    assert!(err.to_string().contains(&backend.names()), "{err}");
    backend.start().await;
    let svc = sample(&name, "latest", &["a"]);
    eventually("registering works again", || async {
        registry.register(&svc, ttl(60)).await.ok()
    })
    .await;
    loop {
        match next_event(&mut w, &name).await {
            Ok((EventKind::Create, s)) => {
                assert_eq!(s.nodes[0].id, format!("{name}-a"));
                break;
            }
            Ok(_) | Err(_) => continue,
        }
    }
    registry.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_a_critical_check_are_not_returned() {
    let address = shared_agent();
    let registry = consul(&address);
    let name = unique("consul-critical");
    let svc = sample(&name, "latest", &["a", "b"]);
    registry.register(&svc, ttl(60)).await.expect("register");
    eventually("both nodes are found", || async {
        (node_ids(&*registry, &name).await.len() == 2).then_some(())
    })
    .await;
    let mut w = registry.watch(Some(&name)).await.expect("watch");
    let (status, body) = raw(
        Method::PUT,
        &address,
        &format!("/v1/agent/check/fail/service:{name}-a?note=down"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("the failing node is dropped", || async {
        (node_ids(&*registry, &name).await == [format!("{name}-b")]).then_some(())
    })
    .await;
    let (kind, s) = next_event(&mut w, &name).await.expect("an event");
    assert_eq!(
        (kind, s.nodes[0].id.as_str()),
        (EventKind::Delete, format!("{name}-a").as_str())
    );
    // Registering again (unchanged) passes the check, which brings the node back.
    registry
        .register(&svc, ttl(60))
        .await
        .expect("register again");
    eventually("the node is back", || async {
        (node_ids(&*registry, &name).await.len() == 2).then_some(())
    })
    .await;
    let (kind, _) = next_event(&mut w, &name).await.expect("an event");
    assert_eq!(kind, EventKind::Create);
    registry.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entries_written_by_others_are_skipped() {
    let address = shared_agent();
    let registry = consul(&address);
    let name = unique("consul-corrupt");
    let good = sample(&name, "latest", &["good"]);
    registry.register(&good, ttl(60)).await.expect("register");

    let zone = Node {
        id: "x".into(),
        address: String::new(),
        metadata: [("zone".to_string(), "z9".to_string())].into(),
    };
    let valid_meta = tags::encode(&Service::new(&name, "ignored"), &zone)
        .into_iter()
        .find(|t| t.starts_with("t-"))
        .expect("a metadata tag");
    let raw_tags = json!([
        "v=latest",
        "t-zz",
        "t-789c00",
        "e-789c",
        "t={oops",
        "e=not json",
        "v-ff",
        "v-zz",
        "primary",
        valid_meta,
        "e-",
        "t-"
    ]);
    let raw_id = format!("{name}-raw");
    let (status, body) = raw(
        Method::PUT,
        &address,
        "/v1/agent/service/register",
        Some(json!({
            "ID": raw_id, "Name": name, "Tags": raw_tags, "Address": "127.0.0.1", "Port": 4999,
            "Check": {"CheckID": format!("service:{raw_id}"), "TTL": "60s", "Status": "passing",
                      "DeregisterCriticalServiceAfter": "90s"},
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let found = eventually("both nodes are found", || async {
        let s = registry.get_service(&name).await.ok()?;
        (s.iter().map(|s| s.nodes.len()).sum::<usize>() == 2).then_some(s)
    })
    .await;
    assert_eq!(found.len(), 1, "one version: {found:?}");
    let raw_node = found[0]
        .nodes
        .iter()
        .find(|n| n.id == raw_id)
        .expect("the raw node");
    assert_eq!(raw_node.address, "127.0.0.1:4999");
    assert_eq!(raw_node.metadata, zone.metadata);
    let good_node = found[0]
        .nodes
        .iter()
        .find(|n| n.id == format!("{name}-good"))
        .expect("ours");
    assert_eq!(good_node.metadata, good.nodes[0].metadata);
    let listed = registry.list_services().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|s| s.name == name && s.version == "latest"),
        "{listed:?}"
    );

    let (status, body) = raw(
        Method::PUT,
        &address,
        &format!("/v1/agent/service/deregister/{raw_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    registry.deregister(&good).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_every_service_sees_new_services() {
    let registry = consul(&shared_agent());
    let mut w = registry.watch(None).await.expect("watch everything");
    let name = unique("consul-watch-all");
    let svc = sample(&name, "v3", &["a"]);
    registry.register(&svc, ttl(60)).await.expect("register");
    let (kind, s) = next_event(&mut w, &name).await.expect("an event");
    assert_eq!(kind, EventKind::Create);
    assert_eq!(s.version, "v3");
    assert_eq!(s.endpoints, svc.endpoints);
    registry.deregister(&svc).await.expect("deregister");
    loop {
        let (kind, _) = next_event(&mut w, &name).await.expect("an event");
        if kind == EventKind::Delete {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_ttl_expire() {
    let registry = consul(&shared_agent());
    let name = unique("consul-watch-ttl");
    let mut w = registry.watch(Some(&name)).await.expect("watch");
    registry
        .register(&sample(&name, "latest", &["a"]), ttl(1))
        .await
        .expect("register");
    assert_eq!(
        next_event(&mut w, &name).await.expect("an event").0,
        EventKind::Create
    );
    let started = Instant::now();
    assert_eq!(
        next_event(&mut w, &name).await.expect("an event").0,
        EventKind::Delete
    );
    assert!(started.elapsed() < PATIENCE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_token_is_sent_and_a_wrong_one_is_refused() {
    let double = ConsulDouble::builder().token("s3cr3t").start().await;
    let base = ConsulOptions::default()
        .with_address(double.address())
        .with_request_timeout(Duration::from_secs(5));
    let registry = ConsulRegistry::new(base.clone().with_token("s3cr3t")).expect("registry");
    let name = unique("consul-acl");
    let svc = sample(&name, "latest", &["a"]);
    registry
        .register(&svc, ttl(60))
        .await
        .expect("register with the token");
    assert_eq!(node_ids(&registry, &name).await, [format!("{name}-a")]);
    let seen = double.tokens_seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| t.as_deref() == Some("s3cr3t")),
        "{seen:?}"
    );

    for opts in [base.clone(), base.with_token("wrong")] {
        let other = ConsulRegistry::new(opts).expect("registry");
        let err = other.get_service(&name).await.expect_err("refused");
        assert_eq!(err.code, 403, "{err}");
        assert!(
            err.detail
                .contains(&format!("consul at {}", double.address())),
            "{err}"
        );
        assert!(err.detail.contains("ACL"), "{err}");
        let err = other.register(&svc, ttl(60)).await.expect_err("refused");
        assert_eq!(err.code, 403, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datacenter_is_asked_for() {
    let double = ConsulDouble::start().await;
    let base = ConsulOptions::default().with_address(double.address());
    let dc1 = ConsulRegistry::new(base.clone().with_datacenter("dc1")).expect("registry");
    let name = unique("consul-dc");
    dc1.register(&sample(&name, "latest", &["a"]), ttl(60))
        .await
        .expect("register");
    assert_eq!(node_ids(&dc1, &name).await.len(), 1);
    let far = ConsulRegistry::new(base.with_datacenter("dc9")).expect("registry");
    let err = far
        .get_service(&name)
        .await
        .expect_err("no such datacenter");
    assert!(err.detail.contains("No path to datacenter"), "{err}");
    assert!(far.list_services().await.is_err());
}

/// The double reaps a service that stayed critical for DeregisterCriticalServiceAfter (a
/// real agent does too, but no sooner than a minute, so this runs against the double only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_services_are_reaped() {
    let double = ConsulDouble::start().await;
    let registry = ConsulRegistry::new(options(&double.address())).expect("registry");
    let name = unique("consul-reap");
    let (status, body) = raw(
        Method::PUT,
        &double.address(),
        "/v1/agent/service/register",
        Some(
            json!({"ID": format!("{name}-1"), "Name": name, "Address": "127.0.0.1", "Port": 1,
                    "Check": {"TTL": "500ms", "DeregisterCriticalServiceAfter": "500ms"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A TTL check starts critical: the instance is listed, but no lookup returns it.
    let listed = registry.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name));
    assert_eq!(
        registry
            .get_service(&name)
            .await
            .expect_err("not passing")
            .code,
        404
    );
    eventually("the critical service is reaped", || async {
        let listed = registry.list_services().await.ok()?;
        (!listed.iter().any(|s| s.name == name)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_fails_fast_and_is_named() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("address").port()
    };
    let address = format!("127.0.0.1:{port}");
    let registry = ConsulRegistry::new(options(&address)).expect("no agent needed to build");
    let started = Instant::now();
    let err = registry.get_service("greeter").await.expect_err("down");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.code, 503, "{err}");
    assert!(
        err.detail.contains(&format!("consul at {address}")),
        "{err}"
    );
    assert!(err.detail.contains("consul agent -dev"), "{err}");
    let err = registry
        .register(&sample("greeter", "latest", &["a"]), ttl(60))
        .await
        .expect_err("down");
    assert!(
        err.detail.contains(&format!("consul at {address}")),
        "{err}"
    );
    assert!(registry.watch(Some("greeter")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let opts = ConsulOptions::default()
        .with_address(&address)
        .with_request_timeout(Duration::from_millis(300));
    let registry = ConsulRegistry::new(opts).expect("registry");
    let started = Instant::now();
    let err = registry.get_service("greeter").await.expect_err("silent");
    assert_eq!(err.code, 408, "{err}");
    assert!(
        err.detail.contains(&format!("consul at {address}")),
        "{err}"
    );
    let err = registry
        .deregister(&sample("greeter", "latest", &["a"]))
        .await
        .expect_err("silent");
    assert_eq!(err.code, 408, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

struct Pki {
    dir: tempfile::TempDir,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "consul-double test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");

    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client =
        CertificateParams::new(vec!["client.consul".to_string()]).expect("client params");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .expect("client cert");

    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.path().join("client.pem"), client.pem()).expect("write");
    std::fs::write(
        dir.path().join("client-key.pem"),
        client_key.serialize_pem(),
    )
    .expect("write");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("CA root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der().clone()], key)
        .expect("server config");
    Pki { dir, server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_private_ca() {
    let pki = pki();
    let double = ConsulDouble::builder()
        .tls(pki.server.clone())
        .start()
        .await;
    let path = |f: &str| Some(pki.dir.path().join(f));
    let tls = TlsOptions {
        ca_file: path("ca.pem"),
        cert_file: path("client.pem"),
        key_file: path("client-key.pem"),
        server_name: None,
    };
    let base = ConsulOptions::default()
        .with_address(double.address())
        .with_request_timeout(Duration::from_secs(5));
    let registry = ConsulRegistry::new(base.clone().with_tls(tls.clone())).expect("registry");
    let name = unique("consul-tls");
    let svc = sample(&name, "latest", &["a"]);
    registry
        .register(&svc, ttl(60))
        .await
        .expect("register over mTLS");
    assert_eq!(node_ids(&registry, &name).await, [format!("{name}-a")]);

    let by_name = TlsOptions {
        server_name: Some("localhost".into()),
        ..tls.clone()
    };
    let registry = ConsulRegistry::new(
        base.clone()
            .with_address(format!("https://{}", double.address()))
            .with_tls(by_name),
    )
    .expect("registry");
    assert_eq!(
        node_ids(&registry, &name).await.len(),
        1,
        "the server name override works"
    );

    let no_client_cert = TlsOptions {
        cert_file: None,
        key_file: None,
        ..tls
    };
    let registry = ConsulRegistry::new(base.clone().with_tls(no_client_cert)).expect("registry");
    let err = registry
        .get_service(&name)
        .await
        .expect_err("the agent wants a client certificate");
    assert_ne!(err.code, 404, "{err}");
    let registry = ConsulRegistry::new(base.with_tls(TlsOptions::default())).expect("registry");
    let err = registry
        .get_service(&name)
        .await
        .expect_err("an unknown CA");
    assert!(err.detail.contains("consul at"), "{err}");
}
