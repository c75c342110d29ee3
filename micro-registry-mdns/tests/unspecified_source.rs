//! Go Micro's sockets against the registry on loopback: bound to `0.0.0.0`, they multicast
//! through `lo` with no source address of their own.
//!
//! Go Micro picks the multicast interface by index (or leaves it to the route), so Linux
//! chooses the source address: 0.0.0.0 on a host whose only address is 127.0.0.1, as the
//! host-scoped 127.0.0.1 is not taken for a link-scoped multicast destination. The tests here
//! send a Go Micro style lookup (one `PTR? <service>.micro.` question, QM, from an ephemeral
//! port, the answer awaited on the same socket) and a Go Micro style announcement from such
//! a socket, and watch, on a socket bound to the group, which source the packet carried.
//!
//! - In this network namespace the socket sets `IP_MULTICAST_IF 127.0.0.1`, so its packets
//!   carry 127.0.0.1; the tests report the source and check the answers.
//! - In a network namespace of its own holding only `lo` (created with `unshare --net`, which
//!   needs root; skipped with a note otherwise), the socket is pinned to `lo` by device
//!   (SO_BINDTODEVICE, the same as Go Micro's choice by index) and its packets carry 0.0.0.0:
//!   the tests there require that source, so they exercise exactly Go Micro's case.
//!
//! As in `tests/loopback.rs`, the tests print why and pass when multicast on loopback does not
//! work, unless `MICRO_TEST_REQUIRE_SERVICES=1`, where they fail.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use micro_core::registry::{EventKind, RegisterOptions, Watcher};
use micro_core::{Node, Registry, Service};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
use simple_dns::rdata::{RData, A, PTR, SRV, TXT};
use simple_dns::{
    CharacterString, Name, Packet, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::{timeout, timeout_at, Instant};

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const SETUP: &str =
    "run as root: ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo";
/// Set in the child process that runs inside the namespace with only `lo`.
const NETNS_CHILD: &str = "MDNS_TEST_NETNS_CHILD";
/// How many times a query or an announcement is sent before the test gives up.
const ATTEMPTS: u16 = 5;
/// How long each attempt waits for its answer or event.
const ATTEMPT_WAIT: Duration = Duration::from_secs(1);

/// A port of this test's own, apart from those of the other test files (19000 and up) and
/// below the ephemeral range.
fn private_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10000 + (std::process::id() % 1000) as u16 * 8;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 8
}

/// Whether multicast works on loopback; fails the test instead when services are required.
fn multicast_ready() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    match CHECK.get_or_init(check_multicast) {
        Ok(()) => true,
        Err(why) => {
            let required = std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
                || std::env::var(NETNS_CHILD).is_ok();
            assert!(
                !required,
                "multicast on loopback is not available ({why}); {SETUP}"
            );
            eprintln!("SKIPPED: multicast on loopback is not available ({why}); {SETUP}");
            false
        }
    }
}

/// Sends one datagram to the group through `lo` and waits for it on a member socket.
fn check_multicast() -> Result<(), String> {
    let port = private_port();
    let rx: std::net::UdpSocket = group_member(port)
        .map_err(|e| format!("joining 224.0.0.251 on lo: {e}"))?
        .into();
    rx.set_nonblocking(false).map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let tx: std::net::UdpSocket = unspecified_sender(Pin::Address)
        .map_err(|e| format!("multicast sender on lo: {e}"))?
        .into();
    let mut buf = [0u8; 16];
    for _ in 0..10 {
        tx.send_to(b"ping", SocketAddrV4::new(GROUP, port))
            .map_err(|e| format!("sending to 224.0.0.251 via lo: {e}"))?;
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            if &buf[..n] == b"ping" {
                return Ok(());
            }
        }
    }
    Err("a datagram sent to 224.0.0.251 via lo never arrived".into())
}

/// A socket bound to the group on `port`, a member on `lo` only: it sees the group's
/// datagrams that went through `lo`, with their source, and takes no unicast from anyone.
fn group_member(port: u16) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    #[cfg(target_os = "linux")]
    s.set_multicast_all_v4(false)?;
    s.bind(&SocketAddrV4::new(GROUP, port).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST)?;
    Ok(s)
}

/// How a sending socket is kept on `lo`.
#[derive(Debug, Clone, Copy)]
enum Pin {
    /// IP_MULTICAST_IF 127.0.0.1: Linux then sends from 127.0.0.1.
    Address,
    /// SO_BINDTODEVICE lo (root): like Go Micro's choice of the interface by index, the
    /// socket names no source address, so Linux picks one.
    #[cfg(target_os = "linux")]
    Device,
}

/// A socket bound to `0.0.0.0` on an ephemeral port, as Go Micro's are, that multicasts
/// through `lo` only, with loop on.
fn unspecified_sender(pin: Pin) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    match pin {
        Pin::Address => s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?,
        #[cfg(target_os = "linux")]
        Pin::Device => s.bind_device(Some(b"lo"))?,
    }
    s.set_multicast_loop_v4(true)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())?;
    Ok(s)
}

fn tokio_socket(s: Socket) -> UdpSocket {
    s.set_nonblocking(true).expect("nonblocking");
    UdpSocket::from_std(s.into()).expect("tokio socket")
}

fn registry(port: u16) -> MdnsRegistry {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "micro_registry_mdns=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let opts = MdnsOptions::default()
        .with_port(port)
        .with_query_timeout(Duration::from_millis(250))
        .with_watch_interval(Duration::from_millis(300));
    MdnsRegistry::new(opts).expect("mdns registry on loopback")
}

fn service(name: &str, node_id: &str, address: &str) -> Service {
    Service {
        name: name.into(),
        version: "1.2.3".into(),
        metadata: BTreeMap::new(),
        endpoints: Vec::new(),
        nodes: vec![Node {
            id: node_id.into(),
            address: address.into(),
            metadata: BTreeMap::from([("protocol".into(), "mucp".into())]),
        }],
    }
}

fn name(s: &str) -> Name<'static> {
    Name::new(s).expect("name").into_owned()
}

/// Go Micro's lookup: one QM question `PTR? <service>.micro.`.
fn go_micro_query(service: &str, id: u16) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.questions.push(Question::new(
        name(&format!("{service}.micro")),
        QTYPE::TYPE(TYPE::PTR),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().expect("query packet")
}

/// Go Micro's announcement of a node: PTR, SRV, A and TXT (hex(zlib(JSON)) strings).
fn go_micro_announcement(service: &str, node_id: &str, port: u16) -> Vec<u8> {
    let json = format!(
        r#"{{"Service":"{service}","Version":"latest","Endpoints":[],"Metadata":{{"protocol":"mucp"}}}}"#
    );
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.as_bytes()).expect("zlib");
    let hexed = hex::encode(z.finish().expect("zlib"));
    let mut text = TXT::new();
    for chunk in hexed.as_bytes().chunks(255) {
        text.add_char_string(CharacterString::new(chunk).expect("txt").into_owned());
    }
    let instance = name(&format!("{node_id}.{service}.micro"));
    let host = name("go-host");
    let rr = |n: &Name<'static>, data: RData<'static>| {
        ResourceRecord::new(n.clone(), CLASS::IN, 120, data)
    };
    let mut p = Packet::new_reply(0);
    p.answers = vec![
        rr(
            &name(&format!("{service}.micro")),
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
    p.build_bytes_vec_compressed().expect("announcement packet")
}

/// The source of the next datagram on `observer` that `wanted` accepts, within `limit`.
async fn seen_from(
    observer: &UdpSocket,
    limit: Duration,
    wanted: impl Fn(&[u8]) -> bool,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 9000];
    loop {
        match timeout_at(deadline, observer.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if wanted(&buf[..n]) => return Some(from),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("observer: {e}"),
            Err(_) => return None,
        }
    }
}

/// What an answer says about one node, read as a Go Micro client reads it.
#[derive(Debug, Default)]
struct Found {
    ptr_to: Option<String>,
    srv_port: Option<u16>,
    txt_service: Option<String>,
}

/// The PTR, SRV and TXT of `instance` in `packet`, when it is a response with id `id`.
fn read_answer(packet: &[u8], id: u16, service: &str, instance: &str) -> Option<Found> {
    let p = Packet::parse(packet).ok()?;
    if p.id() != id || !p.has_flags(simple_dns::PacketFlag::RESPONSE) {
        return None;
    }
    let mut found = Found::default();
    let ptr_name = format!("{service}.micro");
    for rr in p.answers.iter().chain(&p.additional_records) {
        let owner = rr.name.to_string();
        match &rr.rdata {
            RData::PTR(PTR(to)) if owner.eq_ignore_ascii_case(&ptr_name) => {
                found.ptr_to = Some(to.to_string());
            }
            RData::SRV(srv) if owner.eq_ignore_ascii_case(instance) => {
                found.srv_port = Some(srv.port);
            }
            RData::TXT(t) if owner.eq_ignore_ascii_case(instance) => {
                found.txt_service = decode_txt(t);
            }
            _ => {}
        }
    }
    Some(found)
}

/// The `Service` of a Go Micro TXT record.
fn decode_txt(t: &TXT<'_>) -> Option<String> {
    let hexed = String::try_from(t.clone()).ok()?;
    let zipped = hex::decode(hexed).ok()?;
    let mut json = String::new();
    flate2::read::ZlibDecoder::new(zipped.as_slice())
        .read_to_string(&mut json)
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    v.get("Service")?.as_str().map(str::to_string)
}

/// Registers a service, then looks it up as Go Micro does from a socket bound to `0.0.0.0`
/// pinned to `lo` by `pin`: the answer must come back on that socket with the node's PTR,
/// SRV and TXT, and only once per query. Returns the source the query carried.
async fn go_micro_lookup_is_answered(pin: Pin) -> IpAddr {
    let port = private_port();
    let reg = registry(port);
    let svc = service("greeter", "greeter-1", "127.0.0.1:9090");
    reg.register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    let observer = tokio_socket(group_member(port).expect("observer"));
    let querier = tokio_socket(unspecified_sender(pin).expect("querier"));
    let local = querier.local_addr().expect("querier address");
    assert!(local.ip().is_unspecified(), "bound to {local}");
    let instance = "greeter-1.greeter.micro";
    let mut buf = vec![0u8; 9000];
    for attempt in 0..ATTEMPTS {
        let id = 0x4d00 + attempt;
        let query = go_micro_query("greeter", id);
        let sent = Instant::now();
        querier
            .send_to(&query, SocketAddrV4::new(GROUP, port))
            .await
            .expect("send query");
        let source = seen_from(&observer, ATTEMPT_WAIT, |p| p == query.as_slice())
            .await
            .expect("the query went through lo");
        assert_eq!(source.port(), local.port(), "sent from the querier's port");
        let deadline = sent + ATTEMPT_WAIT;
        let mut found = None;
        while found.is_none() {
            match timeout_at(deadline, querier.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => {
                    found = read_answer(&buf[..n], id, "greeter", instance).map(|f| (f, from));
                }
                Ok(Err(e)) => panic!("querier: {e}"),
                Err(_) => break,
            }
        }
        let Some((found, from)) = found else {
            eprintln!("attempt {attempt}: no answer within {ATTEMPT_WAIT:?}");
            continue;
        };
        eprintln!(
            "{pin:?}: query from {source} answered by {from} after {:?}",
            sent.elapsed()
        );
        assert!(from.ip().is_loopback(), "answered from {from}");
        assert_eq!(from.port(), port, "answered from the mDNS port");
        assert_eq!(found.ptr_to.as_deref(), Some(instance), "{found:?}");
        assert_eq!(found.srv_port, Some(9090), "{found:?}");
        assert_eq!(found.txt_service.as_deref(), Some("greeter"), "{found:?}");
        // One socket of the registry answers, not two: nothing more with this id arrives.
        let again = timeout(Duration::from_millis(300), async {
            loop {
                match querier.recv_from(&mut buf).await {
                    Ok((n, _)) if read_answer(&buf[..n], id, "greeter", instance).is_some() => {
                        return
                    }
                    Ok(_) => {}
                    Err(e) => panic!("querier: {e}"),
                }
            }
        })
        .await;
        assert!(again.is_err(), "the query was answered twice");
        return source.ip();
    }
    panic!("no answer to a Go Micro style query after {ATTEMPTS} attempts");
}

/// The next event of `watcher` for node `node_id` of kind `kind`, within `limit`.
async fn event(watcher: &mut Watcher, kind: EventKind, node_id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match timeout_at(deadline, watcher.next()).await {
            Ok(Some(Ok(e)))
                if e.kind == kind && e.service.nodes.iter().any(|n| n.id == node_id) =>
            {
                return true
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch ended"),
            Err(_) => return false,
        }
    }
}

/// A Go Micro announcement sent from a socket bound to `0.0.0.0` pinned by `pin` reaches a
/// watch of the registry. Returns the source the announcement carried.
async fn go_micro_announcement_is_watched(pin: Pin) -> IpAddr {
    let port = private_port();
    let reg = registry(port);
    let mut watcher = reg.watch(Some("announced")).await.expect("watch");
    let observer = tokio_socket(group_member(port).expect("observer"));
    let sender = tokio_socket(unspecified_sender(pin).expect("sender"));
    let announcement = go_micro_announcement("announced", "go-node-1", 7070);
    for attempt in 0..ATTEMPTS {
        sender
            .send_to(&announcement, SocketAddrV4::new(GROUP, port))
            .await
            .expect("announce");
        let source = seen_from(&observer, ATTEMPT_WAIT, |p| p == announcement.as_slice())
            .await
            .expect("the announcement went through lo");
        if event(&mut watcher, EventKind::Create, "go-node-1", ATTEMPT_WAIT).await {
            eprintln!("{pin:?}: announcement from {source} seen by the watch");
            let found = reg.get_service("announced").await;
            // The announcer answers no lookup, so only the watch knew of it.
            assert!(found.is_err(), "{found:?}");
            return source.ip();
        }
        eprintln!("attempt {attempt}: the watch saw nothing within {ATTEMPT_WAIT:?}");
    }
    panic!("a Go Micro style announcement was not seen after {ATTEMPTS} attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_from_a_socket_bound_to_0_0_0_0_is_answered() {
    if !multicast_ready() {
        return;
    }
    let source = go_micro_lookup_is_answered(Pin::Address).await;
    assert_eq!(source, Ipv4Addr::LOCALHOST, "IP_MULTICAST_IF 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcement_from_a_socket_bound_to_0_0_0_0_is_watched() {
    if !multicast_ready() {
        return;
    }
    let source = go_micro_announcement_is_watched(Pin::Address).await;
    assert_eq!(source, Ipv4Addr::LOCALHOST, "IP_MULTICAST_IF 127.0.0.1");
}

/// A socket pinned to `lo` by device names no source, as Go Micro's: in this namespace
/// Linux gives its packets 0.0.0.0 when the host has no address but 127.0.0.1, else the
/// address of another interface. Either way they arrived on `lo`, and are heard and answered.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_from_a_socket_pinned_to_lo_by_device_are_heard() {
    if !multicast_ready() {
        return;
    }
    let source = go_micro_lookup_is_answered(Pin::Device).await;
    assert!(
        !source.is_loopback(),
        "pinned by device, the source is {source}"
    );
    eprintln!("a socket bound to 0.0.0.0 and pinned to lo by device sends from {source} here");
    let source = go_micro_announcement_is_watched(Pin::Device).await;
    assert!(
        !source.is_loopback(),
        "pinned by device, the source is {source}"
    );
}

/// Runs `netns_child` in a new network namespace holding only `lo`, where a socket bound to
/// `0.0.0.0` and pinned to `lo` sends with the source 0.0.0.0, as in the Go Micro captures.
#[cfg(target_os = "linux")]
#[test]
fn go_micro_sockets_in_a_namespace_with_only_lo() {
    if std::env::var(NETNS_CHILD).is_ok() {
        return;
    }
    let can_unshare = std::process::Command::new("unshare")
        .args(["--net", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_unshare {
        assert!(
            std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "`unshare --net` is not available (it needs root), and MICRO_TEST_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED: `unshare --net` is not available (needs root); the 0.0.0.0 source is then not exercised");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    // Inside the new namespace: lo up with multicast and the group routed through it, then
    // the child test. Nothing in there can reach another interface: there is none.
    let script = "ip link set lo up multicast on && \
        { ip route replace 224.0.0.0/4 dev lo table local 2>/dev/null || ip route replace 224.0.0.0/4 dev lo; } && \
        exec \"$0\" --exact netns_child --nocapture --test-threads=1";
    let mut child = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .arg(exe)
        .env(NETNS_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the namespace child");
    // Read the pipes while the child runs, so that it never blocks on a full one.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the namespace child did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    eprintln!("{err}");
    assert!(
        status.success(),
        "namespace child failed: {status}\n{out}\n{err}"
    );
    assert!(
        out.contains("1 passed"),
        "the child test did not run:\n{out}\n{err}"
    );
}

/// Not a test by itself: the child of `go_micro_sockets_in_a_namespace_with_only_lo`.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_child() {
    if std::env::var(NETNS_CHILD).is_err() {
        return;
    }
    assert!(multicast_ready());
    let source = go_micro_lookup_is_answered(Pin::Device).await;
    assert!(source.is_unspecified(), "the query carried {source}");
    let source = go_micro_announcement_is_watched(Pin::Device).await;
    assert!(source.is_unspecified(), "the announcement carried {source}");
    eprintln!("in a namespace with only lo, Go Micro style packets carry the source 0.0.0.0");
}
