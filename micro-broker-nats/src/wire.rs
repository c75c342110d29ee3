//! Micro messages <-> NATS messages, in either [`Envelope`].

use std::str::FromStr;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use bytes::Bytes;
use micro_core::broker::Message;
use micro_core::{Error, Metadata, MetadataLimits, Result};

use crate::options::Envelope;
use crate::ERROR_ID;

/// The NATS headers (possibly none) and payload that carry `msg`.
pub(crate) fn outgoing(envelope: Envelope, msg: &Message) -> Result<(HeaderMap, Bytes)> {
    match envelope {
        Envelope::Headers => Ok((to_nats(&msg.header)?, msg.body.clone())),
        Envelope::GoMicro => Ok((
            HeaderMap::new(),
            Bytes::from(micro_core::broker::envelope::encode(msg)),
        )),
    }
}

/// The Micro message in a received NATS message, whichever [`Envelope`] its publisher used:
/// a message without NATS headers whose payload is Go Micro's JSON envelope is unwrapped (Go
/// Micro never sets NATS headers, and Micro in [`Envelope::Headers`] always does); anything
/// else is delivered as it came. Headers past `limits`, counted over both layers, are an error.
pub(crate) fn incoming(
    headers: Option<&HeaderMap>,
    payload: Bytes,
    limits: MetadataLimits,
) -> Result<Message> {
    let header = from_nats(headers, limits)?;
    if header.is_empty() {
        if let Some((inner, body)) = go_micro(&payload, limits)? {
            return Ok(Message {
                header: inner,
                body,
            });
        }
    }
    Ok(Message {
        header,
        body: payload,
    })
}

/// `{"Header":{...},"Body":"<base64>"}`, as Go Micro's NATS broker writes it; `None` for any
/// other payload, an error for an envelope whose headers cross `limits`.
fn go_micro(payload: &[u8], limits: MetadataLimits) -> Result<Option<(Metadata, Bytes)>> {
    if payload.first() != Some(&b'{') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(payload) else {
        return Ok(None);
    };
    let body = match object.get("Body") {
        Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(b64)) => {
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(b) => b.into(),
                Err(_) => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let mut header = limits.reader("the Go Micro envelope of a NATS message");
    match object.get("Header") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            if !map.values().all(serde_json::Value::is_string) {
                return Ok(None);
            }
            for (k, v) in map {
                header.push(k.as_str(), v.as_str().unwrap_or_default())?;
            }
        }
        Some(_) => return Ok(None),
    }
    Ok(Some((header.finish(), body)))
}

/// The headers Micro puts on (nearly) every message: their NATS names are made without
/// copying the name, one allocation fewer per header and message.
const WELL_KNOWN: [&str; 3] = [
    micro_core::headers::CONTENT_TYPE,
    micro_core::headers::ID,
    micro_core::headers::TOPIC,
];

/// The headers of `meta` as NATS headers. NATS header names are printable ASCII without `:`,
/// and values cannot hold CR or LF: anything else is refused (a 400 naming the header) rather
/// than mangled.
pub(crate) fn to_nats(meta: &Metadata) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (key, value) in meta.iter() {
        let known = WELL_KNOWN.iter().find(|k| **k == key);
        let name = match known {
            Some(k) => Ok(HeaderName::from_static(k)),
            None => HeaderName::from_str(key),
        };
        let name = name.map_err(|_| {
            Error::bad_request(
                ERROR_ID,
                format!(
                    "header {key:?} cannot travel as a NATS header: names are printable ASCII \
                     without ':' or spaces"
                ),
            )
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::bad_request(
                ERROR_ID,
                format!("the value of header {key:?} cannot travel in NATS: it holds CR or LF"),
            )
        })?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The headers of a received message; none at all is an empty map. A header sent several
/// times keeps its last value (and each value counts against `limits`).
pub(crate) fn from_nats(headers: Option<&HeaderMap>, limits: MetadataLimits) -> Result<Metadata> {
    let mut meta = limits.reader("a NATS message");
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            for value in values {
                meta.push(name, value.as_str())?;
            }
        }
    }
    Ok(meta.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MetadataLimits = MetadataLimits {
        max_entries: 512,
        max_bytes: 64 * 1024,
    };

    #[test]
    fn headers_past_the_limits_are_refused_in_either_layout() {
        let small = MetadataLimits {
            max_entries: 10,
            max_bytes: 1024,
        };
        let mut headers = HeaderMap::new();
        for i in 0..11 {
            headers.insert(format!("K-{i}").as_str(), "v");
        }
        let e = incoming(Some(&headers), Bytes::new(), small).expect_err("11 headers");
        assert_eq!(e.code, 431);
        let keys: Vec<String> = (0..11).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let json = format!("{{\"Header\":{{{}}},\"Body\":\"\"}}", keys.join(","));
        let e = incoming(None, Bytes::from(json), small).expect_err("11 envelope headers");
        assert!(e.detail.contains("Go Micro envelope"), "{}", e.detail);
        let json = format!("{{\"Header\":{{{}}},\"Body\":\"\"}}", keys[..10].join(","));
        let m = incoming(None, Bytes::from(json), small).expect("10 are fine");
        assert_eq!(m.header.len(), 10);
    }

    #[test]
    fn round_trip() {
        let meta: Metadata = [
            ("Micro-Id", "1"),
            ("Content-Type", "application/json"),
            ("Trace-Id", ""),
        ]
        .into_iter()
        .collect();
        let nats = to_nats(&meta).expect("valid headers");
        assert_eq!(from_nats(Some(&nats), LIMITS).expect("within limits"), meta);
        assert!(from_nats(None, LIMITS).expect("none").is_empty());
    }

    #[test]
    fn refuses_what_nats_cannot_carry() {
        let bad_name: Metadata = [("Bad Name", "x")].into_iter().collect();
        let err = to_nats(&bad_name).expect_err("space in a name");
        assert_eq!(err.code, 400);
        assert!(err.detail.contains("Bad Name"), "{}", err.detail);
        let bad_value: Metadata = [("X", "a\r\nb")].into_iter().collect();
        assert!(to_nats(&bad_value).is_err());
    }

    #[test]
    fn go_micro_envelope_round_trip() {
        let msg = Message {
            header: [
                ("Micro-Topic", "orders"),
                ("Content-Type", "application/json"),
            ]
            .into_iter()
            .collect(),
            body: Bytes::from_static(&[0, 159, 146, 150]),
        };
        let (headers, payload) = outgoing(Envelope::GoMicro, &msg).expect("encodes");
        assert!(headers.is_empty(), "Go Micro does not use NATS headers");
        let json: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
        assert_eq!(json["Body"], "AJ+Slg==");
        assert_eq!(json["Header"]["Micro-Topic"], "orders");
        assert_eq!(incoming(None, payload, LIMITS).expect("within limits"), msg);
    }

    #[test]
    fn what_go_micro_sends_is_unwrapped() {
        // Go Micro v2-v4: json.Marshal(&broker.Message{Header: ..., Body: []byte("hello")}).
        let payload = Bytes::from_static(
            br#"{"Header":{"Content-Type":"application/json","Micro-Id":"9"},"Body":"aGVsbG8="}"#,
        );
        let msg = incoming(None, payload.clone(), LIMITS).expect("within limits");
        assert_eq!(&msg.body[..], b"hello");
        assert_eq!(msg.header.get("micro-id"), Some("9"));
        // The same payload under NATS headers is a body that happens to be JSON.
        let mut headers = HeaderMap::new();
        headers.insert("Micro-Id", "1");
        let msg = incoming(Some(&headers), payload.clone(), LIMITS).expect("within limits");
        assert_eq!(msg.body, payload);
        assert_eq!(msg.header.get("micro-id"), Some("1"));
        let null_body = Bytes::from_static(br#"{"Header":null,"Body":null}"#);
        let msg = incoming(None, null_body, LIMITS).expect("within limits");
        assert!(msg.body.is_empty());
    }

    #[test]
    fn anything_else_arrives_as_it_came() {
        for raw in [
            &b"\xff\xfe garbage"[..],
            br#"{"Body":"not base64!"}"#,
            br#"{"Header":{"a":1},"Body":""}"#,
            br#"[1,2]"#,
            b"",
        ] {
            let payload = Bytes::copy_from_slice(raw);
            let msg = incoming(None, payload.clone(), LIMITS).expect("no headers at all");
            assert_eq!(msg.body, payload);
            assert!(msg.header.is_empty());
        }
    }

    #[test]
    fn repeated_headers_keep_the_last_value() {
        let mut nats = HeaderMap::new();
        nats.append("X-Seen", "first");
        nats.append("X-Seen", "second");
        let meta = from_nats(Some(&nats), LIMITS).expect("within limits");
        assert_eq!(meta.get("x-seen"), Some("second"));
    }
}
