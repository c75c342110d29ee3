//! The mDNS registry against real multicast on the loopback interface.
//!
//! Every test uses its own port, so tests run in parallel without seeing each other. When
//! multicast on loopback does not work, the tests print why and pass, unless
//! `MICRO_TEST_REQUIRE_SERVICES=1` (CI), where they fail.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Endpoint, Node, Registry, Service, Value};
use micro_registry_mdns::{Interface, MdnsOptions, MdnsRegistry};
use simple_dns::rdata::{RData, A, PTR, SRV, TXT};
use simple_dns::{CharacterString, Name, Packet, ResourceRecord, CLASS};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const SETUP: &str =
    "run as root: ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo";

/// A port of this test's own, away from the ephemeral range.
fn private_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 500) as u16 * 16;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 16
}

/// Whether multicast works on loopback; fails the test instead when services are required.
fn multicast_ready() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    match CHECK.get_or_init(check_multicast) {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("multicast on loopback is not available ({why}); {SETUP}");
            }
            eprintln!("SKIPPED: multicast on loopback is not available ({why}); {SETUP}");
            false
        }
    }
}

/// Sends one datagram to the group through `lo` and waits for it on a member socket.
fn check_multicast() -> Result<(), String> {
    let port = 19999 - (std::process::id() % 1000) as u16;
    let rx = group_socket(port).map_err(|e| format!("joining 224.0.0.251 on lo: {e}"))?;
    let rx: std::net::UdpSocket = rx.into();
    rx.set_nonblocking(false).map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let tx = sender_socket().map_err(|e| format!("multicast sender on lo: {e}"))?;
    let tx: std::net::UdpSocket = tx.into();
    tx.send_to(b"ping", SocketAddrV4::new(GROUP, port))
        .map_err(|e| format!("sending to 224.0.0.251 via lo: {e}"))?;
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            if &buf[..n] == b"ping" {
                return Ok(());
            }
        }
    }
    Err("a datagram sent to 224.0.0.251 via lo never arrived".into())
}

fn group_socket(port: u16) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    #[cfg(target_os = "linux")]
    s.set_multicast_all_v4(false)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST)?;
    Ok(s)
}

fn sender_socket() -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())?;
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
    s.set_multicast_loop_v4(true)?;
    Ok(s)
}

fn registry(port: u16) -> MdnsRegistry {
    // Shows the registry's warnings (skipped packets and so on) with `--nocapture`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "micro_registry_mdns=warn".into()),
        )
        .with_test_writer()
        .try_init();
    // A longer lookup than the default 100 ms keeps the tests steady on a loaded machine.
    let opts = MdnsOptions::default()
        .with_port(port)
        .with_query_timeout(Duration::from_millis(250))
        .with_watch_interval(Duration::from_millis(300));
    MdnsRegistry::new(opts).expect("mdns registry on loopback")
}

fn endpoints() -> Vec<Endpoint> {
    let string = |n: &str| Value {
        name: n.into(),
        kind: "string".into(),
        values: vec![],
    };
    vec![
        Endpoint {
            name: "Greeter.Hello".into(),
            request: Some(Value {
                name: "Request".into(),
                kind: "Request".into(),
                values: vec![string("name")],
            }),
            response: Some(Value {
                name: "Response".into(),
                kind: "Response".into(),
                values: vec![string("msg")],
            }),
            metadata: BTreeMap::from([("description".into(), "say hello".into())]),
        },
        Endpoint {
            name: "Greeter.Stream".into(),
            request: None,
            response: None,
            metadata: BTreeMap::from([("stream".into(), "true".into())]),
        },
    ]
}

fn node(id: &str, address: &str) -> Node {
    Node {
        id: id.into(),
        address: address.into(),
        metadata: BTreeMap::from([
            ("protocol".into(), "mucp".into()),
            ("registry".into(), "mdns".into()),
            ("transport".into(), "http".into()),
            ("label".into(), format!("node {id} ü ✓")),
        ]),
    }
}

fn service(name: &str, version: &str, nodes: Vec<Node>) -> Service {
    Service {
        name: name.into(),
        version: version.into(),
        metadata: BTreeMap::new(),
        endpoints: endpoints(),
        nodes,
    }
}

/// Calls `probe` until it gives a value, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event of `watcher` that `wanted` accepts, within `limit`.
async fn next_event(
    watcher: &mut Watcher,
    limit: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, watcher.next()).await {
            Ok(Some(Ok(e))) if wanted(&e) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no matching event within {limit:?}"),
        }
    }
}

fn is(kind: EventKind, node_id: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| e.kind == kind && e.service.nodes.iter().any(|n| n.id == node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_get_deregister_round_trip() {
    if !multicast_ready() {
        return;
    }
    let reg = registry(private_port());
    assert_eq!(reg.name(), "mdns");
    let svc = service(
        "greeter",
        "1.0.0",
        vec![node("greeter-1", "127.0.0.1:9090")],
    );
    reg.register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    let found = reg.get_service("greeter").await.expect("found");
    assert_eq!(found, vec![svc.clone()], "everything round-trips exactly");

    // Registering again is idempotent; a changed node is updated.
    reg.register(&svc, RegisterOptions::default())
        .await
        .expect("register again");
    let mut changed = svc.clone();
    changed.nodes[0]
        .metadata
        .insert("weight".into(), "2".into());
    reg.register(&changed, RegisterOptions::default())
        .await
        .expect("update");
    let found = reg.get_service("greeter").await.expect("found");
    assert_eq!(found, vec![changed.clone()]);

    reg.deregister(&svc).await.expect("deregister");
    let err = reg.get_service("greeter").await.expect_err("gone");
    assert_eq!(err.code, 404, "{err}");
    // Deregistering what is not registered is fine.
    reg.deregister(&svc).await.expect("deregister again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_not_found() {
    if !multicast_ready() {
        return;
    }
    let reg = registry(private_port());
    let err = reg.get_service("no-such-service").await.expect_err("404");
    assert_eq!(err.code, 404);
    assert!(err.detail.contains("no-such-service"), "{err}");
    assert!(reg.list_services().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_find_each_other() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let a = registry(port);
    let b = registry(port);
    let alpha = service("alpha", "latest", vec![node("alpha-1", "127.0.0.1:1001")]);
    let beta = service("beta", "latest", vec![node("beta-1", "127.0.0.2:1002")]);
    a.register(&alpha, RegisterOptions::default())
        .await
        .expect("register alpha");
    b.register(&beta, RegisterOptions::default())
        .await
        .expect("register beta");
    assert_eq!(
        a.get_service("beta").await.expect("a sees beta"),
        vec![beta]
    );
    assert_eq!(
        b.get_service("alpha").await.expect("b sees alpha"),
        vec![alpha.clone()]
    );
    let names: Vec<String> = a
        .list_services()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    a.deregister(&alpha).await.expect("deregister");
    assert_eq!(b.get_service("alpha").await.expect_err("gone").code, 404);
    let names: Vec<String> = b
        .list_services()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["beta"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_nodes_and_versions_merge() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let a = registry(port);
    let b = registry(port);
    let here = service(
        "multi",
        "latest",
        vec![
            node("multi-1", "127.0.0.1:2001"),
            node("multi-2", "127.0.0.1:2002"),
        ],
    );
    let there = service("multi", "latest", vec![node("multi-3", "127.0.0.1:2003")]);
    let v2 = service("multi", "v2", vec![node("multi-4", "[::1]:2004")]);
    a.register(&here, RegisterOptions::default())
        .await
        .expect("register");
    b.register(&there, RegisterOptions::default())
        .await
        .expect("register");
    b.register(&v2, RegisterOptions::default())
        .await
        .expect("register");
    let mut found = a.get_service("multi").await.expect("found");
    found.sort_by(|x, y| x.version.cmp(&y.version));
    assert_eq!(found.len(), 2, "{found:?}");
    let mut ids: Vec<&str> = found[0].nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["multi-1", "multi-2", "multi-3"]);
    assert_eq!(found[1].version, "v2");
    assert_eq!(found[1].nodes, v2.nodes);

    // Removing one node leaves the others.
    let mut one = here.clone();
    one.nodes.truncate(1);
    a.deregister(&one).await.expect("deregister one");
    let found = b.get_service("multi").await.expect("found");
    let latest = found
        .iter()
        .find(|s| s.version == "latest")
        .expect("latest");
    let mut ids: Vec<&str> = latest.nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["multi-2", "multi-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_expire_without_heartbeat() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let a = registry(port);
    let b = registry(port);
    let svc = service("ephemeral", "latest", vec![node("eph-1", "127.0.0.1:3001")]);
    let ttl = RegisterOptions {
        ttl: Duration::from_secs(2),
    };
    // Heart-beating more often than the TTL keeps it alive past several TTLs.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        a.register(&svc, ttl).await.expect("heartbeat");
        assert!(
            b.get_service("ephemeral").await.is_ok(),
            "alive while heart-beating"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then it stops: within about one TTL the node is gone, though `a` still runs.
    let stopped = Instant::now();
    eventually("the node to expire", Duration::from_secs(10), || async {
        b.get_service("ephemeral").await.err().map(|e| e.code)
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(1000),
        "gone too early: {:?}",
        stopped.elapsed()
    );
    // Registering again brings it back.
    a.register(&svc, ttl).await.expect("register again");
    assert_eq!(b.get_service("ephemeral").await.expect("back"), vec![svc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_create_update_and_delete() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let a = registry(port);
    let b = registry(port);
    let mut one = b.watch(Some("watched")).await.expect("watch one");
    let mut all = b.watch(None).await.expect("watch all");

    let svc = service("watched", "latest", vec![node("w-1", "127.0.0.1:4001")]);
    a.register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    let created = next_event(
        &mut one,
        Duration::from_secs(5),
        is(EventKind::Create, "w-1"),
    )
    .await;
    assert_eq!(created.service, svc);
    next_event(
        &mut all,
        Duration::from_secs(5),
        is(EventKind::Create, "w-1"),
    )
    .await;

    let mut changed = svc.clone();
    changed.nodes[0].address = "127.0.0.1:4002".into();
    a.register(&changed, RegisterOptions::default())
        .await
        .expect("update");
    let updated = next_event(
        &mut one,
        Duration::from_secs(5),
        is(EventKind::Update, "w-1"),
    )
    .await;
    assert_eq!(updated.service.nodes[0].address, "127.0.0.1:4002");

    a.deregister(&changed).await.expect("deregister");
    let deleted = next_event(
        &mut one,
        Duration::from_secs(5),
        is(EventKind::Delete, "w-1"),
    )
    .await;
    assert_eq!(deleted.service.name, "watched");
    next_event(
        &mut all,
        Duration::from_secs(5),
        is(EventKind::Delete, "w-1"),
    )
    .await;
}

/// Builds a response in Go Micro's own layout (SRV target and A record named after a host),
/// with the given TXT strings.
fn go_style_answer(service: &str, node_id: &str, port: u16, txt: &[String], ttl: u32) -> Vec<u8> {
    let owned = |s: String| Name::new(&s).expect("name").into_owned();
    let instance = owned(format!("{node_id}.{service}.micro"));
    let host = owned("test-host".to_string());
    let mut text = TXT::new();
    for s in txt {
        text.add_char_string(
            CharacterString::new(s.as_bytes())
                .expect("txt string")
                .into_owned(),
        );
    }
    let mut p = Packet::new_reply(0);
    let rr = |name: &Name<'static>, data: RData<'static>| {
        ResourceRecord::new(name.clone(), CLASS::IN, ttl, data)
    };
    p.answers = vec![
        rr(
            &owned(format!("{service}.micro")),
            RData::PTR(PTR(instance.clone())),
        ),
        rr(
            &instance,
            RData::SRV(SRV {
                priority: 10,
                weight: 1,
                port,
                target: host.clone(),
            }),
        ),
        rr(
            &host,
            RData::A(A {
                address: u32::from(Ipv4Addr::LOCALHOST),
            }),
        ),
        rr(&instance, RData::TXT(text)),
    ];
    p.build_bytes_vec_compressed().expect("packet")
}

/// Go Micro's TXT encoding, done by hand: hex(zlib(json)) in 255-character strings.
fn go_txt(json: &str) -> Vec<String> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.as_bytes()).expect("zlib");
    let hexed = hex::encode(z.finish().expect("zlib"));
    hexed
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// A responder on the group port that answers queries for `service` with `answers`, by
/// unicast to the querier, until the test ends.
async fn fake_responder(port: u16, service: &'static str, answers: Vec<Vec<u8>>) {
    let socket = group_socket(port).expect("fake responder socket");
    socket.set_nonblocking(true).expect("nonblocking");
    let socket = UdpSocket::from_std(socket.into()).expect("tokio socket");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 9000];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let asked = Packet::parse(&buf[..n]).is_ok_and(|p| {
                p.questions
                    .iter()
                    .any(|q| q.qname.to_string() == format!("{service}.micro"))
            });
            if asked && from.ip().is_loopback() {
                for a in &answers {
                    let _ = socket.send_to(a, from).await;
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_skipped() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let reg = registry(port);
    let good = service("mixed", "latest", vec![node("good-1", "127.0.0.1:5001")]);
    reg.register(&good, RegisterOptions::default())
        .await
        .expect("register");

    let not_zlib = vec![hex::encode(b"this is not zlib")];
    let bad_json = go_txt(r#"{"Service":"mixed","Version":"#);
    let go_node = go_txt(
        r#"{"Service":"mixed","Version":"latest","Endpoints":null,"Metadata":{"protocol":"mucp"}}"#,
    );
    let valid = go_style_answer("mixed", "go-1", 5002, &go_node, 120);
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() / 2);
    fake_responder(
        port,
        "mixed",
        vec![
            go_style_answer("mixed", "bad-hex", 5003, &["zz not hex!".to_string()], 120),
            go_style_answer("mixed", "bad-zlib", 5004, &not_zlib, 120),
            go_style_answer("mixed", "bad-json", 5005, &bad_json, 120),
            b"\xde\xad\xbe\xef garbage".to_vec(),
            truncated,
            vec![0u8; 12],
            valid,
        ],
    )
    .await;

    let found = reg.get_service("mixed").await.expect("valid nodes found");
    assert_eq!(found.len(), 1, "{found:?}");
    let mut ids: Vec<&str> = found[0].nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["go-1", "good-1"], "only the valid nodes");
    let go = found[0]
        .nodes
        .iter()
        .find(|n| n.id == "go-1")
        .expect("go node");
    assert_eq!(go.address, "127.0.0.1:5002");
    assert_eq!(go.metadata["protocol"], "mucp");
    // The registry keeps working.
    assert_eq!(
        reg.get_service("mixed").await.expect("again")[0]
            .nodes
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_drops_nodes_that_vanish_without_goodbye() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let reg = registry(port);
    let mut watcher = reg.watch(Some("ghost")).await.expect("watch");
    // A foreign node announces itself once and then never answers again (a crashed process).
    let txt = go_txt(r#"{"Service":"ghost","Version":"latest","Endpoints":[],"Metadata":{}}"#);
    let announcement = go_style_answer("ghost", "ghost-1", 6001, &txt, 120);
    let sender = sender_socket().expect("sender");
    let sender: std::net::UdpSocket = sender.into();
    sender
        .send_to(
            &announcement,
            SocketAddr::from(SocketAddrV4::new(GROUP, port)),
        )
        .expect("announce");
    let created = next_event(
        &mut watcher,
        Duration::from_secs(5),
        is(EventKind::Create, "ghost-1"),
    )
    .await;
    assert_eq!(created.service.nodes[0].address, "127.0.0.1:6001");
    next_event(
        &mut watcher,
        Duration::from_secs(5),
        is(EventKind::Delete, "ghost-1"),
    )
    .await;
}

/// Not a test by itself: the child process of `another_process_is_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_process_child() {
    let Ok(port) = std::env::var("MDNS_TEST_CHILD_PORT") else {
        return;
    };
    let port: u16 = port.parse().expect("port");
    let reg = registry(port);
    let svc = service("child", "latest", vec![node("child-1", "127.0.0.1:7001")]);
    reg.register(&svc, RegisterOptions::default())
        .await
        .expect("child registers");
    println!("child registered");
    // The parent kills this process; the sleep only bounds an orphan's life.
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_is_found() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let reg = registry(port);
    let mut watcher = reg.watch(Some("child")).await.expect("watch");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "cross_process_child", "--nocapture"])
        .env("MDNS_TEST_CHILD_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let found = eventually("the child's service", Duration::from_secs(20), || async {
        reg.get_service("child").await.ok()
    })
    .await;
    assert_eq!(found[0].nodes[0].id, "child-1");
    next_event(
        &mut watcher,
        Duration::from_secs(5),
        is(EventKind::Create, "child-1"),
    )
    .await;
    // Killed, the child sends no goodbye: the watch notices at its next poll.
    child.kill().expect("kill child");
    let _ = child.wait();
    next_event(
        &mut watcher,
        Duration::from_secs(5),
        is(EventKind::Delete, "child-1"),
    )
    .await;
    assert_eq!(reg.get_service("child").await.expect_err("gone").code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_registry_says_goodbye() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let a = registry(port);
    // A watch that polls too rarely to notice anything itself within the test.
    let b = MdnsRegistry::new(
        MdnsOptions::default()
            .with_port(port)
            .with_query_timeout(Duration::from_millis(250))
            .with_watch_interval(Duration::from_secs(60)),
    )
    .expect("registry");
    let mut watcher = b.watch(Some("leaving")).await.expect("watch");
    let svc = service(
        "leaving",
        "latest",
        vec![node("leaving-1", "127.0.0.1:8001")],
    );
    a.register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    next_event(
        &mut watcher,
        Duration::from_secs(5),
        is(EventKind::Create, "leaving-1"),
    )
    .await;
    drop(a);
    next_event(
        &mut watcher,
        Duration::from_secs(5),
        is(EventKind::Delete, "leaving-1"),
    )
    .await;
}

#[tokio::test]
async fn an_unknown_interface_is_a_clear_error() {
    // Fails while resolving the name, before any socket exists: nothing is sent.
    let opts = MdnsOptions {
        interface: Interface::Name("no-such-if-0".into()),
        port: private_port(),
        ..MdnsOptions::default()
    };
    let err = MdnsRegistry::new(opts).expect_err("no such interface");
    assert!(err.detail.contains("no-such-if-0"), "{err}");
    assert_eq!(err.code, 500);
}

#[test]
fn new_outside_a_runtime_is_an_error() {
    let err = MdnsRegistry::new(MdnsOptions::default()).expect_err("no runtime");
    assert!(err.detail.contains("tokio runtime"), "{err}");
}

/// The events of `watcher` up to the first that `last` accepts, within `limit`.
async fn events_until(
    watcher: &mut Watcher,
    limit: Duration,
    last: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, watcher.next()).await {
            Ok(Some(Ok(e))) if last(&e) => return seen,
            Ok(Some(Ok(e))) => seen.push(e),
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no matching event within {limit:?}; before it: {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_lookups_and_listings_track_bounded_services_and_nodes() {
    if !multicast_ready() {
        return;
    }
    let port = private_port();
    let announcer = registry(port);
    // Three services, two nodes each.
    let opts = MdnsOptions::default()
        .with_port(port)
        .with_query_timeout(Duration::from_millis(250))
        .with_watch_interval(Duration::from_millis(300))
        .with_bounds(3, 2);
    let bounded = MdnsRegistry::new(opts).expect("bounded mdns registry on loopback");
    let mut all = bounded.watch(None).await.expect("watch all");
    let wait = Duration::from_secs(10);
    let mut port_of_node = 4100;
    let mut announce = |name: &str, id: &str| {
        port_of_node += 1;
        let node = node(
            &format!("{name}-{id}"),
            &format!("127.0.0.1:{port_of_node}"),
        );
        service(name, "latest", vec![node])
    };

    // Three services fill the watch.
    for i in 0..3 {
        let svc = announce(&format!("bounded-{i}"), "a");
        announcer
            .register(&svc, RegisterOptions::default())
            .await
            .expect("register");
        next_event(&mut all, wait, is(EventKind::Create, &svc.nodes[0].id)).await;
    }
    // Five more are left out: a second node of a tracked service, announced after them, is
    // reported, and none of them before it.
    let left_out: Vec<String> = (3..8).map(|i| format!("bounded-{i}")).collect();
    for name in &left_out {
        let svc = announce(name, "a");
        announcer
            .register(&svc, RegisterOptions::default())
            .await
            .expect("register");
    }
    let second = announce("bounded-0", "b");
    announcer
        .register(&second, RegisterOptions::default())
        .await
        .expect("register");
    let seen = events_until(&mut all, wait, is(EventKind::Create, "bounded-0-b")).await;
    assert!(
        seen.iter().all(|e| !left_out.contains(&e.service.name)),
        "{seen:?}"
    );
    // A third node of that service is left out as well.
    let third = announce("bounded-0", "c");
    announcer
        .register(&third, RegisterOptions::default())
        .await
        .expect("register");
    let next = announce("bounded-1", "b");
    announcer
        .register(&next, RegisterOptions::default())
        .await
        .expect("register");
    let seen = events_until(&mut all, wait, is(EventKind::Create, "bounded-1-b")).await;
    assert!(
        seen.iter().all(
            |e| !left_out.contains(&e.service.name) && !is(EventKind::Create, "bounded-0-c")(e)
        ),
        "{seen:?}"
    );

    // Lookups and listings keep to the same bounds.
    let found = bounded.get_service("bounded-0").await.expect("lookup");
    let nodes: usize = found.iter().map(|s| s.nodes.len()).sum();
    assert_eq!(nodes, 2, "{found:?}");
    let listed = bounded.list_services().await.expect("listing");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let everything = announcer.list_services().await.expect("unbounded listing");
    assert_eq!(everything.len(), 8, "{everything:?}");

    // What is tracked keeps working, and a service that leaves makes room for another.
    let gone = announce("bounded-2", "a");
    announcer.deregister(&gone).await.expect("deregister");
    next_event(&mut all, wait, is(EventKind::Delete, "bounded-2-a")).await;
    next_event(&mut all, wait, |e| {
        e.kind == EventKind::Create && left_out.contains(&e.service.name)
    })
    .await;
}
