//! Go Micro's Consul tags: how a node's metadata, the service's endpoints and its version ride
//! in a Consul service's `Tags`.
//!
//! | tag | holds |
//! |---|---|
//! | `t-` + hex(zlib(`{"key":"value"}`)) | one node metadata pair |
//! | `e-` + hex(zlib(Endpoint JSON)) | one endpoint |
//! | `v-` + hex(zlib(version)) | the version |
//!
//! Readers also accept the legacy forms `t=`, `e=` and `v=` followed by the raw JSON (or the
//! raw version), written by old Go Micro releases. A tag that does not decode is skipped with
//! a warning, and so are the tags past what one node may inflate to in all
//! ([`MAX_DECODED_NODE`], 4 MiB; one tag [`MAX_DECODED_TAG`], 1 MiB); tags with other
//! prefixes belong to someone else and are ignored.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use micro_core::{Endpoint, Node, Service};

/// The most a single tag may inflate to; a larger one is treated as corrupt.
pub const MAX_DECODED_TAG: u64 = 1 << 20;

/// The most all the tags of one node may inflate to together: many tags each under
/// [`MAX_DECODED_TAG`] must not add up to unbounded memory. Tags past it are skipped.
pub const MAX_DECODED_NODE: u64 = 4 << 20;

/// What a set of tags says about a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    /// The service version (`v-` / `v=`), empty when no tag carries one.
    pub version: String,
    /// The node metadata (`t-` / `t=`), merged over all tags.
    pub metadata: BTreeMap<String, String>,
    /// The endpoints (`e-` / `e=`), in tag order.
    pub endpoints: Vec<Endpoint>,
}

/// The tags Go Micro writes for `node` of `service`: metadata pairs, endpoints, then the
/// version.
pub fn encode(service: &Service, node: &Node) -> Vec<String> {
    let mut tags = Vec::with_capacity(node.metadata.len() + service.endpoints.len() + 1);
    for (k, v) in &node.metadata {
        let mut pair = BTreeMap::new();
        pair.insert(k.as_str(), v.as_str());
        tags.push(format!("t-{}", pack(json_bytes(&pair).as_slice())));
    }
    for endpoint in &service.endpoints {
        tags.push(format!("e-{}", pack(json_bytes(endpoint).as_slice())));
    }
    tags.push(format!("v-{}", pack(service.version.as_bytes())));
    tags
}

/// Reads a node's version, metadata and endpoints from its tags, skipping (with a warning)
/// any of ours that does not decode, and those past [`MAX_DECODED_NODE`] in all. `context`
/// names the entry in those warnings.
pub fn decode<S: AsRef<str>>(tags: &[S], context: &str) -> Decoded {
    let mut out = Decoded::default();
    let mut left = MAX_DECODED_NODE;
    for tag in tags {
        let tag = tag.as_ref();
        let Some((kind, form, body)) = split(tag) else {
            continue;
        };
        let raw = match form {
            Form::Packed => unpack(body, left.min(MAX_DECODED_TAG)),
            Form::Legacy if body.len() as u64 <= left => Ok(body.as_bytes().to_vec()),
            Form::Legacy => Err(format!("the node's tags pass {MAX_DECODED_NODE} bytes")),
        };
        if let Ok(bytes) = &raw {
            left -= bytes.len() as u64;
        }
        let result = raw.and_then(|bytes| apply(&mut out, kind, &bytes));
        if let Err(why) = result {
            tracing::warn!(
                "consul: skipping the tag {} of {context}: {why}",
                abbreviate(tag)
            );
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Metadata,
    Endpoint,
    Version,
}

#[derive(Clone, Copy)]
enum Form {
    Packed,
    Legacy,
}

fn split(tag: &str) -> Option<(Kind, Form, &str)> {
    let mut chars = tag.char_indices();
    let kind = match chars.next()?.1 {
        't' => Kind::Metadata,
        'e' => Kind::Endpoint,
        'v' => Kind::Version,
        _ => return None,
    };
    let form = match chars.next()?.1 {
        '-' => Form::Packed,
        '=' => Form::Legacy,
        _ => return None,
    };
    Some((kind, form, &tag[2..]))
}

fn apply(out: &mut Decoded, kind: Kind, bytes: &[u8]) -> Result<(), String> {
    match kind {
        Kind::Metadata => {
            let pairs: BTreeMap<String, String> =
                serde_json::from_slice(bytes).map_err(|e| format!("bad metadata JSON: {e}"))?;
            out.metadata.extend(pairs);
        }
        Kind::Endpoint => {
            let endpoint: Endpoint =
                serde_json::from_slice(bytes).map_err(|e| format!("bad endpoint JSON: {e}"))?;
            out.endpoints.push(endpoint);
        }
        Kind::Version => {
            out.version = String::from_utf8(bytes.to_vec())
                .map_err(|_| "the version is not UTF-8".to_string())?;
        }
    }
    Ok(())
}

fn json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Maps of strings and the plain structs of micro-core always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

fn pack(bytes: &[u8]) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(bytes);
    hex::encode(z.finish().unwrap_or_default())
}

/// The bytes a packed tag inflates to, at most `limit` of them.
fn unpack(body: &str, limit: u64) -> Result<Vec<u8>, String> {
    let compressed = hex::decode(body).map_err(|e| format!("not hex: {e}"))?;
    let mut out = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not zlib: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "inflates past {limit} bytes (a tag may inflate to {MAX_DECODED_TAG}, a node's \
             tags to {MAX_DECODED_NODE})"
        ));
    }
    Ok(out)
}

fn abbreviate(tag: &str) -> String {
    match tag.char_indices().nth(40) {
        Some((at, _)) => format!("{:?}...", &tag[..at]),
        None => format!("{tag:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::Value;

    fn service() -> (Service, Node) {
        let mut s = Service::new("greeter", "1.0.0");
        s.endpoints.push(Endpoint {
            name: "Greeter.Hello".into(),
            request: Some(Value {
                name: "Request".into(),
                kind: "Request".into(),
                values: vec![Value {
                    name: "name".into(),
                    kind: "string".into(),
                    values: vec![],
                }],
            }),
            response: None,
            metadata: [("stream".to_string(), "true".to_string())].into(),
        });
        let node = Node {
            id: "greeter-1".into(),
            address: "10.0.0.5:41234".into(),
            metadata: [("protocol", "mucp"), ("transport", "http")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        (s, node)
    }

    #[test]
    fn round_trip() {
        let (s, node) = service();
        let tags = encode(&s, &node);
        assert_eq!(tags.len(), 4);
        assert!(tags[0].starts_with("t-789c"), "{}", tags[0]);
        assert!(tags[2].starts_with("e-"));
        assert!(tags[3].starts_with("v-"));
        let d = decode(&tags, "test");
        assert_eq!(d.version, "1.0.0");
        assert_eq!(d.metadata, node.metadata);
        assert_eq!(d.endpoints, s.endpoints);
    }

    /// Tags as a Go Micro v4 service writes them (another zlib than ours produced these).
    #[test]
    fn reads_go_micro_tags() {
        let tags = [
            "t-789cab562a28ca2fc94fcecf51b252ca2d4d2e50aa050046a906e2",
            "e-789c8d8fc10ac2300c407f45721e7e407f40cf5ec543706116dab426993046ff5d3b66d9f0e229e1f1c223333046020727213292e3994248d081d073243570f3d7b8aca4039bf21ebc307c3670d7262fa3996ae279d8883c86506ea566342756da7556b40935f25b8a3afc138a64d8a3610df5a477f1d97ce27a83d3e1b17c5dca1b80885c62",
            "v-789c33d433d033000002ce00ee",
        ];
        let d = decode(&tags, "go");
        assert_eq!(d.version, "1.0.0");
        assert_eq!(d.metadata["protocol"], "mucp");
        assert_eq!(d.endpoints.len(), 1);
        let e = &d.endpoints[0];
        assert_eq!(e.name, "Greeter.Hello");
        assert_eq!(e.metadata["description"], "say hello");
        let resp = e.response.as_ref().expect("a response");
        assert_eq!(resp.values[0].name, "msg");
    }

    #[test]
    fn reads_legacy_tags() {
        let tags = [
            r#"t={"protocol":"mucp","server":"mucp"}"#,
            r#"e={"name":"Greeter.Hello","request":null,"response":null,"metadata":null}"#,
            "v=latest",
        ];
        let d = decode(&tags, "legacy");
        assert_eq!(d.version, "latest");
        assert_eq!(d.metadata.len(), 2);
        assert_eq!(d.metadata["server"], "mucp");
        assert_eq!(d.endpoints[0].name, "Greeter.Hello");
        assert!(d.endpoints[0].metadata.is_empty());
    }

    #[test]
    fn corrupt_and_foreign_tags_are_skipped() {
        let (s, node) = service();
        let mut tags = vec![
            "t-zz".to_string(),
            "t-00ff".to_string(),
            "e-789c".to_string(),
            "t={not json".to_string(),
            "e={\"name\":3}".to_string(),
            format!("t-{}", pack(b"[1,2,3]")),
            format!("v-{}", pack(&[0xff, 0xfe])),
            "traefik.enable=true".to_string(),
            "primary".to_string(),
            "v".to_string(),
            "é-x".to_string(),
        ];
        tags.extend(encode(&s, &node));
        let d = decode(&tags, "corrupt");
        assert_eq!(d.version, "1.0.0");
        assert_eq!(d.metadata, node.metadata);
        assert_eq!(d.endpoints, s.endpoints);
    }

    #[test]
    fn a_zlib_bomb_is_refused() {
        let big = vec![b'a'; (MAX_DECODED_TAG as usize) + 10];
        let tag = format!("v-{}", pack(&big));
        assert_eq!(decode(&[tag], "bomb").version, "");
    }

    #[test]
    fn many_tags_cannot_add_up_past_the_node_bound() {
        // Ten endpoints of 600 KiB each: every tag passes alone, not all of them together.
        let big = "x".repeat(600 << 10);
        let mut s = Service::new("greeter", "1.0.0");
        s.endpoints = (0..10)
            .map(|i| Endpoint {
                name: format!("Greeter.E{i}"),
                metadata: BTreeMap::from([("doc".to_string(), big.clone())]),
                ..Endpoint::default()
            })
            .collect();
        let d = decode(&encode(&s, &Node::default()), "many");
        let kept = d.endpoints.len() as u64;
        assert!(kept > 0 && kept < 10, "{kept} endpoints kept");
        assert!(kept * (600 << 10) <= MAX_DECODED_NODE);
        // The version tag comes last and no longer fits either; the first endpoints do.
        assert_eq!(d.endpoints[0].name, "Greeter.E0");
    }

    #[test]
    fn no_tags_mean_an_empty_node() {
        let none: [&str; 0] = [];
        assert_eq!(decode(&none, "empty"), Decoded::default());
    }
}
