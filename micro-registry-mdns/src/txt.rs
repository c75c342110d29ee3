//! The TXT payload Go Micro puts on every node: hex(zlib(JSON)) in strings of at most 255
//! characters.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use micro_core::Endpoint;
use serde::{Deserialize, Deserializer, Serialize};

/// The longest string a TXT record holds.
const MAX_STRING: usize = 255;

/// The most JSON a TXT payload may inflate to; more is treated as an attack, not a service.
const MAX_JSON: u64 = 1 << 20;

/// What a node's TXT record says: its service, version and endpoints, and the node's metadata.
/// Go Micro's keys are capitalised; Go reads keys case-insensitively, so lower-case ones are
/// accepted as well.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct TxtRecord {
    #[serde(
        rename = "Service",
        alias = "service",
        default,
        deserialize_with = "or_default"
    )]
    pub(crate) service: String,
    #[serde(
        rename = "Version",
        alias = "version",
        default,
        deserialize_with = "or_default"
    )]
    pub(crate) version: String,
    #[serde(
        rename = "Endpoints",
        alias = "endpoints",
        default,
        deserialize_with = "or_default"
    )]
    pub(crate) endpoints: Vec<Endpoint>,
    #[serde(
        rename = "Metadata",
        alias = "metadata",
        default,
        deserialize_with = "or_default"
    )]
    pub(crate) metadata: BTreeMap<String, String>,
}

/// Go writes `null` for an empty slice or map.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Encodes a TXT payload into the strings of one TXT record.
pub(crate) fn encode(txt: &TxtRecord) -> Result<Vec<String>, String> {
    let json = serde_json::to_vec(txt).map_err(|e| format!("cannot encode TXT JSON: {e}"))?;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&json)
        .map_err(|e| format!("cannot compress TXT: {e}"))?;
    let packed = z
        .finish()
        .map_err(|e| format!("cannot compress TXT: {e}"))?;
    let hexed = hex::encode(packed);
    // Hex is ASCII, so cutting at any byte keeps characters whole.
    Ok(hexed
        .as_bytes()
        .chunks(MAX_STRING)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect())
}

/// Decodes the joined strings of a TXT record, explaining what is wrong when it cannot.
pub(crate) fn decode(joined: &str) -> Result<TxtRecord, String> {
    let packed = hex::decode(joined.trim()).map_err(|e| format!("TXT is not hex: {e}"))?;
    let mut json = Vec::new();
    ZlibDecoder::new(packed.as_slice())
        .take(MAX_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("TXT is not zlib data: {e}"))?;
    if json.len() as u64 > MAX_JSON {
        return Err(format!("TXT inflates to more than {MAX_JSON} bytes"));
    }
    serde_json::from_slice(&json).map_err(|e| format!("TXT is not Go Micro's JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::Value;

    fn sample() -> TxtRecord {
        TxtRecord {
            service: "greeter".into(),
            version: "latest".into(),
            endpoints: vec![Endpoint {
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
                metadata: BTreeMap::from([("stream".into(), "false".into())]),
            }],
            metadata: BTreeMap::from([("protocol".into(), "mucp".into())]),
        }
    }

    #[test]
    fn round_trip() {
        let strings = encode(&sample()).expect("encode");
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(decode(&strings.concat()).expect("decode"), sample());
    }

    #[test]
    fn json_has_go_micro_keys() {
        let strings = encode(&sample()).expect("encode");
        let packed = hex::decode(strings.concat()).expect("hex");
        let mut json = String::new();
        ZlibDecoder::new(packed.as_slice())
            .read_to_string(&mut json)
            .expect("zlib");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["Service"], "greeter");
        assert_eq!(v["Version"], "latest");
        assert_eq!(v["Metadata"]["protocol"], "mucp");
        assert_eq!(v["Endpoints"][0]["name"], "Greeter.Hello");
        assert_eq!(v["Endpoints"][0]["request"]["values"][0]["type"], "string");
        assert_eq!(
            v["Endpoints"][0]["request"]["values"][0]["values"],
            serde_json::Value::Null
        );
        assert!(v.get("Nodes").is_none());
    }

    #[test]
    fn long_payloads_are_cut_at_255() {
        let mut t = sample();
        // Random-looking metadata does not compress, so the payload spans several strings.
        for i in 0..64u64 {
            let noise = format!("{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            t.metadata.insert(format!("k{i}"), noise);
        }
        let strings = encode(&t).expect("encode");
        assert!(strings.len() > 2, "{} strings", strings.len());
        assert!(strings[..strings.len() - 1].iter().all(|s| s.len() == 255));
        assert_eq!(decode(&strings.concat()).expect("decode"), t);
    }

    #[test]
    fn reads_go_nulls_and_lower_case_keys() {
        let json = br#"{"service":"greeter","Version":"v1","Endpoints":null,"Metadata":null}"#;
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(json).expect("compress");
        let hexed = hex::encode(z.finish().expect("compress"));
        let t = decode(&hexed).expect("decode");
        assert_eq!(t.service, "greeter");
        assert_eq!(t.version, "v1");
        assert!(t.endpoints.is_empty() && t.metadata.is_empty());
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(decode("not hex at all")
            .expect_err("hex")
            .contains("not hex"));
        assert!(decode("abcdef").expect_err("zlib").contains("zlib"));
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(b"{not json").expect("compress");
        let hexed = hex::encode(z.finish().expect("compress"));
        assert!(decode(&hexed).expect_err("json").contains("JSON"));
    }
}
