//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use std::net::SocketAddr;

use micro_core::{Node, Service};

use crate::records::{self, Answers, Zone};
use crate::txt::{self, TxtRecord};

/// What a packet tells: the nodes, and the listed services with whether each is alive.
pub type Read = (Vec<Service>, Vec<(String, bool)>);

/// What one received packet tells a lookup under the domain `micro`: the nodes it describes
/// (of `want` only, when given) and the services its listing entries name, each with whether
/// it is alive; the error says why it is not a DNS message.
pub fn read_packet(bytes: &[u8], want: Option<&str>) -> Result<Read, String> {
    let msg = records::parse(bytes)?;
    let mut answers = Answers::default();
    answers.add(&msg.records);
    let zone = Zone::new("micro");
    let nodes = answers
        .instances()
        .iter()
        .filter_map(|i| zone.node(i, want))
        .collect();
    Ok((nodes, zone.listed(&answers)))
}

/// The packet a node is announced with under the domain `micro`.
pub fn node_packet(
    service: &str,
    node_id: &str,
    addr: SocketAddr,
    txt: &[String],
    ttl: u32,
) -> Result<Vec<u8>, String> {
    Zone::new("micro").node_packet(service, node_id, addr, txt, ttl)
}

/// The TXT strings of a node of `service` (its name, version, endpoints and the metadata of
/// its first node).
pub fn encode_txt(service: &Service) -> Result<Vec<String>, String> {
    txt::encode(&TxtRecord {
        service: service.name.clone(),
        version: service.version.clone(),
        endpoints: service.endpoints.clone(),
        metadata: service
            .nodes
            .first()
            .map(|n| n.metadata.clone())
            .unwrap_or_default(),
    })
}

/// A TXT payload read back: the service with one node holding the metadata (id and address
/// empty: those come from the other records).
pub fn decode_txt(joined: &str) -> Result<Service, String> {
    let record = txt::decode(joined)?;
    Ok(Service {
        name: record.service,
        version: record.version,
        metadata: Default::default(),
        endpoints: record.endpoints,
        nodes: vec![Node {
            id: String::new(),
            address: String::new(),
            metadata: record.metadata,
        }],
    })
}
