//! The wire format shared with Go Micro's http broker: the JSON envelope
//! `{"Header":{...},"Body":"<base64>"}` and the `?id=<node id>` query.

use std::collections::BTreeMap;
use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use micro_core::broker::Message;
use micro_core::Metadata;
use serde::{Deserialize, Serialize};

/// Go's `encoding/json` writes `[]byte` as standard base64 with padding; reading accepts it
/// without padding too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "Header")]
    header: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "Body")]
    body: String,
}

/// Go's JSON decoder matches field names regardless of case; `header` and `body` are the
/// spellings met in practice besides Go's own.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "Header", alias = "header", default)]
    header: Option<BTreeMap<String, String>>,
    #[serde(rename = "Body", alias = "body", default)]
    body: Option<String>,
}

/// Why a request body is not a broker message.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// Not JSON of the envelope's shape.
    Json(serde_json::Error),
    /// `Body` is not base64.
    Base64(base64::DecodeError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(
                f,
                "the body is not a broker message {{\"Header\":{{..}},\"Body\":\"<base64>\"}}: {e}"
            ),
            DecodeError::Base64(e) => write!(f, "\"Body\" is not standard base64: {e}"),
        }
    }
}

/// The JSON envelope for `msg`, with `Micro-Topic` set to `topic` as Go Micro's publisher does
/// (its subscribers find the topic there).
pub(crate) fn encode(topic: &str, msg: &Message) -> Vec<u8> {
    let mut header: BTreeMap<&str, &str> = msg
        .header
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(crate::TOPIC_HEADER))
        .collect();
    header.insert(crate::TOPIC_HEADER, topic);
    let out = Outgoing {
        header,
        body: BASE64.encode(&msg.body),
    };
    // A map of strings and a string always serialise.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Reads a JSON envelope; `null` or missing parts are empty.
pub(crate) fn decode(json: &[u8]) -> Result<Message, DecodeError> {
    let incoming: Incoming = serde_json::from_slice(json).map_err(DecodeError::Json)?;
    let body = match incoming.body {
        Some(b) => BASE64.decode(b.as_bytes()).map_err(DecodeError::Base64)?,
        None => Vec::new(),
    };
    let header: Metadata = incoming.header.unwrap_or_default().into_iter().collect();
    Ok(Message {
        header,
        body: Bytes::from(body),
    })
}

/// `s` escaped for a URL query as Go's `url.QueryEscape` does.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The value of `key` in a URL query (`a=1&id=x`), unescaped; `None` when absent or when it
/// is not valid escaped UTF-8.
pub(crate) fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (query_unescape(k)? == key).then(|| query_unescape(v))?
        })
        .next()
}

fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_go_micro_json() {
        let msg = Message {
            header: [("Micro-Id", "1"), ("micro-topic", "stale")]
                .into_iter()
                .collect(),
            body: Bytes::from_static(b"hi\x00\xff"),
        };
        let json = String::from_utf8(encode("events", &msg)).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"Header":{"Micro-Id":"1","Micro-Topic":"events"},"Body":"aGkA/w=="}"#
        );
        let back = decode(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.body, msg.body);
        assert_eq!(back.header.get("micro-topic"), Some("events"));
    }

    #[test]
    fn decodes_what_go_may_send() {
        let m = decode(br#"{"Header":null,"Body":null}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(m.header.is_empty() && m.body.is_empty());
        let m = decode(br#"{"header":{"A":"b"},"body":"aGk","Extra":1}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header.get("a"), Some("b"));
        assert_eq!(&m.body[..], b"hi");
        assert!(matches!(decode(b"{"), Err(DecodeError::Json(_))));
        assert!(matches!(
            decode(br#"{"Header":{"A":1}}"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode(br#"{"Body":"***"}"#),
            Err(DecodeError::Base64(_))
        ));
    }

    #[test]
    fn query_round_trip() {
        let id = "my topic/ü-1234";
        let q = format!("x=1&id={}", query_escape(id));
        assert_eq!(q, "x=1&id=my+topic%2F%C3%BC-1234");
        assert_eq!(query_value(&q, "id").as_deref(), Some(id));
        assert_eq!(query_value("id", "id").as_deref(), Some(""));
        assert_eq!(query_value("x=1", "id"), None);
        assert_eq!(query_value("id=%zz", "id"), None);
    }
}
