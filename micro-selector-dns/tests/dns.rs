//! The dns selector against a DNS server on loopback (a small authoritative one, written here
//! with hickory's message types): SRV records become nodes at their targets and ports, a name
//! with only an A record becomes a node at the configured port, an unknown name is a 404, and
//! a call goes through the selector to a service found that way.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use micro::selector::{RegistrySelector, SelectorOptions};
use micro::{Handler, Json, Request, Response, Service};
use micro_core::Registry;
use micro_selector_dns::{DnsOptions, DnsResolver};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What the test server knows: SRV records (port, target) and A records, by name.
#[derive(Default)]
struct Zone {
    srv: HashMap<&'static str, Vec<(u16, &'static str)>>,
    a: HashMap<&'static str, Vec<Ipv4Addr>>,
}

/// Answers DNS queries over UDP on loopback from `zone`, until the test ends.
async fn serve(zone: Zone) -> std::io::Result<SocketAddr> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let address = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            if let Some(answer) = answer(&zone, &query) {
                let _ = socket.send_to(&answer, peer).await;
            }
        }
    });
    Ok(address)
}

fn answer(zone: &Zone, query: &Message) -> Option<Vec<u8>> {
    let question = query.queries.first()?;
    let name = question.name().to_ascii();
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.add_query(question.clone());
    let known = zone.srv.contains_key(name.as_str()) || zone.a.contains_key(name.as_str());
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    match question.query_type() {
        RecordType::SRV => {
            for (port, target) in zone.srv.get(name.as_str()).into_iter().flatten() {
                let target = Name::from_ascii(target).ok()?;
                let srv = RData::SRV(SRV::new(0, 0, *port, target));
                reply.add_answer(Record::from_rdata(question.name().clone(), 60, srv));
            }
        }
        RecordType::A => {
            for ip in zone.a.get(name.as_str()).into_iter().flatten() {
                let a = RData::A(A(*ip));
                reply.add_answer(Record::from_rdata(question.name().clone(), 60, a));
            }
        }
        _ => {}
    }
    reply.to_vec().ok()
}

fn resolver(server: SocketAddr) -> micro::Result<DnsResolver> {
    DnsResolver::new(
        DnsOptions::default()
            .domain("test.local")
            .server(server)
            .port(9999),
    )
}

#[tokio::test]
async fn srv_then_a_records_become_nodes() -> TestResult {
    let mut zone = Zone::default();
    zone.srv.insert(
        "greeter.test.local.",
        vec![(7001, "127.0.0.1."), (7002, "node2.test.local.")],
    );
    zone.a
        .insert("plain.test.local.", vec![Ipv4Addr::LOCALHOST]);
    let dns = resolver(serve(zone).await?)?;

    assert_eq!(
        dns.addresses("greeter").await?,
        ["127.0.0.1:7001", "node2.test.local:7002"]
    );
    assert_eq!(dns.addresses("plain").await?, ["127.0.0.1:9999"]);
    let services = dns.get_service("plain").await?;
    assert_eq!(services[0].nodes[0].address, "127.0.0.1:9999");
    let missing = dns.addresses("nobody").await.map_err(|e| e.code);
    assert_eq!(missing, Err(404));
    Ok(())
}

#[tokio::test]
async fn a_dead_name_server_is_an_error_not_a_hang() -> TestResult {
    // A port nothing answers on: the lookup gives up within its own timeout.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let opts = DnsOptions {
        timeout: Duration::from_millis(300),
        ..DnsOptions::default()
    };
    let dns = DnsResolver::new(opts.server(silent.local_addr()?))?;
    let e = dns.addresses("greeter").await.expect_err("no answer");
    assert!(e.code == 503 || e.code == 408, "{e}");
    Ok(())
}

#[tokio::test]
async fn calls_reach_the_service_dns_names() -> TestResult {
    // A service on loopback, registered nowhere the caller looks.
    let echo = Service::builder("echo")
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(micro::registry::MemoryRegistry::new()))
        .handler(
            Handler::new("Echo").unary("Call", |req: Request<Json<String>>| {
                Box::pin(
                    async move { Ok(Response::new(Json(format!("echo {}", req.into_inner().0)))) },
                )
            }),
        )
        .build()?;
    echo.start().await?;
    let address = echo
        .server()
        .registration()
        .and_then(|s| s.nodes.first().map(|n| n.address.clone()))
        .ok_or("the service has no address")?;
    let port: u16 = address.rsplit_once(':').ok_or("no port")?.1.parse()?;

    let mut zone = Zone::default();
    let target: &'static str = "127.0.0.1.";
    zone.srv.insert("echo.test.local.", vec![(port, target)]);
    let dns = resolver(serve(zone).await?)?;
    let selector = RegistrySelector::new(Arc::new(dns), SelectorOptions::default());
    let caller = Service::builder("caller")
        .ignore_env()
        .registry(Arc::new(micro::registry::MemoryRegistry::new()))
        .selector(Arc::new(selector))
        .build()?;
    let client = caller.client().with_content_type("application/json");
    let call =
        client.unary::<_, Json<String>>("echo", "Echo.Call", Request::new(Json("hi".to_string())));
    let reply = tokio::time::timeout(Duration::from_secs(20), call).await??;
    assert_eq!(reply.into_inner().0, "echo hi");
    echo.stop().await?;
    Ok(())
}
