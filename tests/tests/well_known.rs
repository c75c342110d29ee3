//! Messages with protobuf's well-known types as fields build with `micro` alone (the types are
//! `micro::well_known`'s), and travel in protobuf and in the canonical JSON mapping.

use micro::well_known::{Duration, Int64Value, Struct, Timestamp};
use micro::{Codecs, Decodable as _, Message as _};

// A test uses only part of what is generated.
#[allow(dead_code, unreachable_pub)]
mod stamped {
    micro::include_proto!("stamped");
}
use stamped::Stamped;

fn stamped() -> Stamped {
    Stamped {
        name: "launch".into(),
        at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        took: Some(Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        extra: Some(Struct::default()),
        count: Some(Int64Value { value: 7 }),
    }
}

#[test]
fn well_known_fields_travel_as_protobuf_and_as_json() -> micro::Result<()> {
    let codecs = Codecs::default();
    for content_type in ["application/protobuf", "application/json"] {
        let codec = codecs.get(content_type)?;
        let bytes = codec.encode(&stamped())?;
        assert_eq!(
            Stamped::decode_with(&*codec, &bytes)?,
            stamped(),
            "{content_type}"
        );
    }
    let json = codecs.get("application/json")?.encode(&stamped())?;
    let json: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| micro::Error::internal("test", format!("not JSON: {e}")))?;
    // RFC 3339, as pbjson-types writes it (protobuf's own writers print `Z`; parsers read both).
    assert_eq!(json["at"], "2023-11-14T22:13:20+00:00");
    assert_eq!(json["took"], "1.500s");
    assert_eq!(json["extra"], serde_json::json!({}));
    assert_eq!(json["count"], "7");
    Ok(())
}

#[test]
fn well_known_fields_are_described_by_name() {
    let shape = Stamped::describe();
    let kinds: Vec<(&str, &str)> = shape
        .values
        .iter()
        .map(|v| (v.name.as_str(), v.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("name", "string"),
            ("at", "Timestamp"),
            ("took", "Duration"),
            ("extra", "Struct"),
            ("count", "Int64Value"),
        ]
    );
    let schema = micro::registry::json_schema::message(Some(&shape));
    assert_eq!(schema["properties"]["at"]["format"], "date-time");
}
