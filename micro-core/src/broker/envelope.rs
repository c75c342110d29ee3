//! Go Micro's broker message on the wire: `{"Header":{...},"Body":"<base64>"}`, the
//! `broker.Message` struct written by Go's `encoding/json` (go-micro `codec/json`'s
//! `Marshaler`, the default codec of Go Micro's brokers: redis, mqtt, nats). Broker plugins
//! that carry Go Micro's payload use these two functions.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Message;
use crate::{Error, MetadataLimits, Result};

#[derive(Serialize)]
struct Outgoing<'a> {
    /// Go writes a map with its keys sorted; a `BTreeMap` does the same.
    #[serde(rename = "Header")]
    header: BTreeMap<&'a str, &'a str>,
    /// `[]byte` is standard base64 with padding in Go's JSON.
    #[serde(rename = "Body")]
    body: String,
}

/// Go's decoder matches field names in any case; these are the spellings that occur.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "Header", alias = "header", default)]
    header: Option<HashMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(rename = "Body", alias = "body", borrow, default)]
    body: Option<Cow<'a, str>>,
}

/// The envelope Go Micro writes for `msg`.
pub fn encode(msg: &Message) -> Vec<u8> {
    let out = Outgoing {
        header: msg.header.iter().collect(),
        body: base64::engine::general_purpose::STANDARD.encode(&msg.body),
    };
    // A map of strings and a string always serialise.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// The message in a received envelope. Anything else (not JSON, a `Body` that is not base64,
/// a header value that is not a string) is a 400 from `id` saying why; headers past `limits`
/// a 431 naming `what` (`the Go Micro envelope of a Redis message`).
pub fn decode(
    payload: &[u8],
    limits: MetadataLimits,
    id: &str,
    what: &'static str,
) -> Result<Message> {
    let envelope: Incoming<'_> = serde_json::from_slice(payload).map_err(|e| {
        Error::bad_request(
            id,
            format!(
                "not a Go Micro broker message {{\"Header\":{{..}},\"Body\":\"<base64>\"}}: {e}"
            ),
        )
    })?;
    let body = match envelope.body {
        None => Bytes::new(),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::bad_request(id, format!("\"Body\" is not standard base64: {e}")))?
            .into(),
    };
    let mut header = limits.reader(what);
    for (k, v) in envelope.header.into_iter().flatten() {
        header.push(k, v)?;
    }
    Ok(Message {
        header: header.finish(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(payload: &[u8], limits: MetadataLimits) -> Result<Message> {
        super::decode(payload, limits, "test", "a test envelope")
    }

    #[test]
    fn writes_what_go_writes() {
        let mut msg = Message {
            body: b"{\"name\":\"John\"}".to_vec().into(),
            ..Default::default()
        };
        msg.header.insert("Micro-Topic", "greeter");
        msg.header.insert("Content-Type", "application/json");
        assert_eq!(
            String::from_utf8(encode(&msg)).expect("utf-8"),
            r#"{"Header":{"Content-Type":"application/json","Micro-Topic":"greeter"},"Body":"eyJuYW1lIjoiSm9obiJ9"}"#
        );
        assert_eq!(
            encode(&Message::default()),
            br#"{"Header":{},"Body":""}"#.to_vec()
        );
    }

    #[test]
    fn reads_what_go_writes() {
        let limits = MetadataLimits::default();
        let m = decode(
            br#"{"Header":{"Micro-Id":"1","Content-Type":"application/json"},"Body":"eyJuYW1lIjoiSm9obiJ9"}"#,
            limits,
        )
        .expect("an envelope");
        assert_eq!(m.header.get("micro-id"), Some("1"));
        assert_eq!(&m.body[..], b"{\"name\":\"John\"}");
        // Go writes nil maps and slices as null; field names match in any case.
        let m = decode(br#"{"Header":null,"Body":null}"#, limits).expect("nulls");
        assert!(m.header.is_empty() && m.body.is_empty());
        let m = decode(br#"{"header":{"a":"b"},"body":"AAE=","Extra":1}"#, limits).expect("case");
        assert_eq!((m.header.get("a"), &m.body[..]), (Some("b"), &[0u8, 1][..]));
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        let limits = MetadataLimits::default();
        for bad in [
            &b"garbage"[..],
            b"",
            b"[1,2]",
            br#"{"Body":"not base64!"}"#,
            br#"{"Header":{"a":1},"Body":""}"#,
            br#"{"Header":{"a":"b"},"Body":"AAE="#,
        ] {
            let err = decode(bad, limits).expect_err("not an envelope");
            assert_eq!(err.code, 400, "{err}");
        }
        let few = MetadataLimits {
            max_entries: 1,
            ..limits
        };
        let err = decode(br#"{"Header":{"a":"1","b":"2"}}"#, few).expect_err("too many");
        assert_eq!(err.code, 431, "{err}");
    }
}
