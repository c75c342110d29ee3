//! Input builders shared by the fuzz targets: strings, metadata and messages drawn from the
//! fuzzer's bytes, leaning towards the names the protocols give meaning to, so the targets
//! reach the interesting branches sooner than with uniformly random text.

use arbitrary::{Result, Unstructured};
use micro_core::{Metadata, MetadataLimits};

/// Header names with a meaning somewhere in Micro, in the spellings peers use.
pub const NAMES: &[&str] = &[
    "Micro-Id",
    "micro-id",
    "Micro-Service",
    "Micro-Endpoint",
    "Micro-Method",
    "Micro-Error",
    "X-Micro-Error",
    "Micro-Stream",
    "x-micro-stream",
    "Micro-Topic",
    "Content-Type",
    "content-type",
    "Accept",
    "Timeout",
    "timeout",
    "X-Micro-Timeout",
    "Micro-Auth-Subject",
    "grpc-timeout",
    "grpc-status",
    "host",
    "te",
    "a-bin",
    "K",
    "k",
];

/// A string: one of [`NAMES`], a short one over a small alphabet (so keys collide and differ
/// only in case), or any string.
pub fn text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => (*u.choose(NAMES)?).to_string(),
        1 => {
            let n = u.int_in_range(0..=4usize)?;
            let mut s = String::with_capacity(n);
            for _ in 0..n {
                s.push(*u.choose(&['a', 'A', 'b', 'B', '-', '.', ' ', '\u{e9}', '\u{c9}'])?);
            }
            s
        }
        _ => u.arbitrary()?,
    })
}

/// Metadata of up to `max` entries (so also past the hash index's threshold).
pub fn metadata(u: &mut Unstructured<'_>, max: usize) -> Result<Metadata> {
    let n = u.int_in_range(0..=max)?;
    let mut m = Metadata::new();
    for _ in 0..n {
        m.insert(text(u)?, text(u)?);
    }
    Ok(m)
}

/// Header limits, usually small enough for the fuzzer to cross.
pub fn limits(u: &mut Unstructured<'_>) -> Result<MetadataLimits> {
    if u.arbitrary()? {
        return Ok(MetadataLimits::default());
    }
    Ok(MetadataLimits {
        max_entries: u.int_in_range(1..=40)?,
        max_bytes: u.int_in_range(1..=600)?,
    })
}

/// Cuts `bytes` into chunks of sizes drawn from `u` (the rest in one chunk when `u` runs dry).
pub fn chunks<'b>(u: &mut Unstructured<'_>, mut bytes: &'b [u8]) -> Vec<&'b [u8]> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = match u.int_in_range(0..=64usize) {
            Ok(n) if !u.is_empty() => n.min(bytes.len()),
            _ => bytes.len(),
        };
        let (head, rest) = bytes.split_at(n);
        out.push(head);
        bytes = rest;
    }
    out
}

/// What an mDNS TXT record carries of a service, drawn from `u`: endpoints (a name and one
/// metadata pair each, no request or response types) and a node's metadata.
pub fn mdns_parts(
    u: &mut Unstructured<'_>,
) -> Result<(
    Vec<micro_core::Endpoint>,
    std::collections::BTreeMap<String, String>,
)> {
    let mut endpoints = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        endpoints.push(micro_core::Endpoint {
            name: text(u)?,
            metadata: [(text(u)?, text(u)?)].into(),
            ..micro_core::Endpoint::default()
        });
    }
    let mut metadata = std::collections::BTreeMap::new();
    for _ in 0..u.int_in_range(0..=6)? {
        metadata.insert(text(u)?, text(u)?);
    }
    Ok((endpoints, metadata))
}

/// A registry entry: a service with endpoints and one node, drawn from `u`.
pub fn service(u: &mut Unstructured<'_>) -> Result<micro_core::Service> {
    use micro_core::{Endpoint, Node, Service, Value};
    let mut endpoints = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let request = if u.arbitrary()? {
            Some(Value {
                name: text(u)?,
                kind: text(u)?,
                values: vec![Value {
                    name: text(u)?,
                    kind: "string".into(),
                    values: Vec::new(),
                }],
            })
        } else {
            None
        };
        endpoints.push(Endpoint {
            name: text(u)?,
            request,
            response: None,
            metadata: [(text(u)?, text(u)?)].into(),
        });
    }
    let mut node_metadata = std::collections::BTreeMap::new();
    for _ in 0..u.int_in_range(0..=6)? {
        node_metadata.insert(text(u)?, text(u)?);
    }
    Ok(Service {
        name: text(u)?,
        version: text(u)?,
        metadata: [(text(u)?, text(u)?)].into(),
        endpoints,
        nodes: vec![Node {
            id: text(u)?,
            address: text(u)?,
            metadata: node_metadata,
        }],
    })
}
