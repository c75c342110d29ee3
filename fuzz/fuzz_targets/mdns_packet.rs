//! mDNS packets as the registry reads them (answers and announcements from any host on the
//! link): `simple-dns`'s parser, then the registry's reading of records into nodes.
//!
//! Properties: no input panics; every node read has one node with an id, and a lookup for
//! one service gives only that service's nodes; a node's own announcement reads back as the
//! node announced (its id, address, version, endpoints and metadata).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_core::{Node, Service};
use micro_fuzz::{mdns_parts, text};
use micro_registry_mdns::fuzzing::{encode_txt, node_packet, read_packet};

/// A DNS-label-safe name of 1 to 12 characters.
fn label(u: &mut Unstructured<'_>) -> Result<String> {
    let n = u.int_in_range(1..=12usize)?;
    (0..n)
        .map(|_| u.choose(b"abcXYZ019-_").map(|&b| char::from(b)))
        .collect()
}

fn run(data: &[u8]) -> Result<()> {
    if let Ok((nodes, _listed)) = read_packet(data, None) {
        for s in &nodes {
            assert_eq!(s.nodes.len(), 1);
            assert!(!s.nodes[0].id.is_empty());
        }
        if let Some(want) = nodes.first().map(|s| s.name.clone()) {
            let (only, _) = read_packet(data, Some(&want)).unwrap_or_default();
            assert!(only.iter().all(|s| s.name == want));
            assert!(only.len() <= nodes.len());
        }
    }

    let mut u = Unstructured::new(data);
    let name = label(&mut u)?;
    let id = format!("{name}-{}", label(&mut u)?);
    let ip = if u.arbitrary()? {
        IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?))
    } else {
        IpAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?))
    };
    let addr = SocketAddr::new(ip, u.arbitrary()?);
    let (endpoints, metadata) = mdns_parts(&mut u)?;
    let service = Service {
        name: name.clone(),
        version: text(&mut u)?,
        metadata: Default::default(),
        endpoints,
        nodes: vec![Node {
            id: id.clone(),
            address: addr.to_string(),
            metadata,
        }],
    };
    let txt = match encode_txt(&service) {
        Ok(t) => t,
        Err(e) => panic!("a service's TXT does not encode: {e}"),
    };
    let ttl = u.int_in_range(1..=u32::MAX)?;
    let packet = match node_packet(&name, &id, addr, &txt, ttl) {
        Ok(p) => p,
        Err(e) => panic!("a node's packet does not encode: {e}"),
    };
    let (nodes, _) = match read_packet(&packet, Some(&name)) {
        Ok(read) => read,
        Err(e) => panic!("a node's own packet does not read: {e}"),
    };
    assert_eq!(nodes, vec![service]);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
