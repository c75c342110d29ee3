//! The wire format shared with Go Micro's http broker: the JSON envelope
//! `{"Header":{...},"Body":"<base64>"}` and the `?id=<node id>` query.

use std::borrow::Cow;
use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use micro_core::broker::Message;
use micro_core::metadata::{MetadataLimits, MetadataReader};
use micro_core::Metadata;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Go's `encoding/json` writes `[]byte` as standard base64 with padding; reading accepts it
/// without padding too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a request body is not a broker message.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// Not JSON of the envelope's shape.
    Json(serde_json::Error),
    /// `Body` is not base64.
    Base64(base64::DecodeError),
    /// `Header` has more entries or bytes than the limits allow.
    Headers(micro_core::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(
                f,
                "the body is not a broker message {{\"Header\":{{..}},\"Body\":\"<base64>\"}}: {e}"
            ),
            DecodeError::Base64(e) => write!(f, "\"Body\" is not standard base64: {e}"),
            DecodeError::Headers(e) => write!(f, "{}", e.detail),
        }
    }
}

/// The JSON envelope for `msg`, with `Micro-Topic` set to `topic` as Go Micro's publisher does
/// (its subscribers find the topic there). Header keys are in byte order, as Go writes a map.
///
/// Written straight into one buffer: this runs for every message published.
pub(crate) fn encode(topic: &str, msg: &Message) -> Vec<u8> {
    let mut header: Vec<(&str, &str)> = msg
        .header
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(crate::TOPIC_HEADER))
        .chain(std::iter::once((crate::TOPIC_HEADER, topic)))
        .collect();
    header.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let text: usize = header.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let body_len = msg.body.len().div_ceil(3) * 4;
    let mut out = Vec::with_capacity(text + body_len + 24);
    out.extend_from_slice(b"{\"Header\":{");
    for (i, (k, v)) in header.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, k);
        out.push(b':');
        json_string(&mut out, v);
    }
    out.extend_from_slice(b"},\"Body\":\"");
    let start = out.len();
    out.resize(start + body_len, 0);
    // The buffer holds exactly the padded base64 of the body.
    let written = BASE64
        .encode_slice(&msg.body, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(b"\"}");
    out
}

/// `s` as a JSON string literal, appended to `out`.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a str always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// What the envelope readers call the message in errors.
const WHAT: &str = "the http broker envelope";

/// Reads a JSON envelope; `null` or missing parts are empty. Field names match in any case,
/// as Go's decoder matches them; other fields are ignored. Headers past `limits` are refused
/// as soon as the limit is crossed, by either reader.
pub(crate) fn decode(json: &[u8], limits: MetadataLimits) -> Result<Message, DecodeError> {
    let mut reader = limits.reader(WHAT);
    match compact_envelope(json, &mut reader) {
        Compact::Read(body) => {
            // A body that is not plain base64 (an escape, a quote: more JSON) is left to the
            // general parser, which reads it or says what is wrong.
            if let Ok(body) = base64_body(body) {
                return Ok(Message {
                    header: reader.finish(),
                    body,
                });
            }
        }
        Compact::Refused(e) => return Err(DecodeError::Headers(e)),
        Compact::OtherLayout => {}
    }
    decode_general(json, limits)
}

/// The envelope read by the general reader alone (the fuzz targets compare the two).
pub(crate) fn decode_general(json: &[u8], limits: MetadataLimits) -> Result<Message, DecodeError> {
    let envelope = general_envelope(json, limits)?;
    let body = match envelope.body {
        Some(b) => base64_body(b.as_bytes()).map_err(DecodeError::Base64)?,
        None => Bytes::new(),
    };
    Ok(Message {
        header: envelope.header,
        body,
    })
}

/// The envelope read by the compact reader alone: `None` when it leaves the envelope to the
/// general reader, `Some(Err)` when it refuses the headers.
pub(crate) fn decode_compact(
    json: &[u8],
    limits: MetadataLimits,
) -> Option<Result<Message, micro_core::Error>> {
    let mut reader = limits.reader(WHAT);
    match compact_envelope(json, &mut reader) {
        Compact::Read(body) => base64_body(body).ok().map(|body| {
            Ok(Message {
                header: reader.finish(),
                body,
            })
        }),
        Compact::Refused(e) => Some(Err(e)),
        Compact::OtherLayout => None,
    }
}

/// The envelope in any layout JSON allows, through serde_json.
fn general_envelope(json: &[u8], limits: MetadataLimits) -> Result<Envelope<'_>, DecodeError> {
    let mut visitor = EnvelopeVisitor {
        limits,
        refused: None,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = de::Deserializer::deserialize_map(&mut de, &mut visitor).and_then(|e| {
        de.end()?;
        Ok(e)
    });
    match visitor.refused {
        Some(e) => Err(DecodeError::Headers(e)),
        None => parsed.map_err(DecodeError::Json),
    }
}

fn base64_body(text: &[u8]) -> Result<Bytes, base64::DecodeError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    BASE64.decode_vec(text, &mut out)?;
    Ok(Bytes::from(out))
}

/// The envelope in the exact layout this crate and Go's `encoding/json` write, read without
/// the general JSON parser (which cost about as much as the rest of a delivery's handling):
/// `{"Header":{"k":"v",...},"Body":"<base64>"}`, without whitespace, and with no escape or
/// control character in the header. Returns the headers and the text between the quotes of
/// `Body`, which the base64 decoder checks (no JSON-significant character is base64); `None`
/// for any other layout, which the general parser then reads (or rejects with its reason).
fn compact_envelope<'a>(json: &'a [u8], header: &mut MetadataReader) -> Compact<'a> {
    match compact_parts(json, header) {
        Ok(Some(body)) => Compact::Read(body),
        Ok(None) => Compact::OtherLayout,
        Err(e) => Compact::Refused(e),
    }
}

/// What [`compact_envelope`] found.
enum Compact<'a> {
    /// The compact layout: the headers are in the reader, this is the base64 body.
    Read(&'a [u8]),
    /// The headers crossed the limits.
    Refused(micro_core::Error),
    /// Another layout.
    OtherLayout,
}

fn compact_parts<'a>(
    json: &'a [u8],
    header: &mut MetadataReader,
) -> micro_core::Result<Option<&'a [u8]>> {
    let Some(mut rest) = json.strip_prefix(br#"{"Header":{"#) else {
        return Ok(None);
    };
    if let Some(after) = rest.strip_prefix(b"}") {
        rest = after;
    } else {
        loop {
            let Some((key, after)) = plain_string(rest) else {
                return Ok(None);
            };
            let Some((value, after)) = after.strip_prefix(b":").and_then(plain_string) else {
                return Ok(None);
            };
            header.push(key, value)?;
            match after.split_first() {
                Some((b',', after)) => rest = after,
                Some((b'}', after)) => {
                    rest = after;
                    break;
                }
                _ => return Ok(None),
            }
        }
    }
    Ok(rest
        .strip_prefix(br#","Body":""#)
        .and_then(|r| r.strip_suffix(br#""}"#)))
}

/// A JSON string at the start of `json` that needs no unescaping, and what follows it; `None`
/// when `json` does not start with one.
fn plain_string(json: &[u8]) -> Option<(&str, &[u8])> {
    let json = json.strip_prefix(b"\"")?;
    let end = json
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if json[end] != b'"' {
        return None;
    }
    let text = std::str::from_utf8(&json[..end]).ok()?;
    Some((text, &json[end + 1..]))
}

/// The envelope as received: the headers straight into [`Metadata`], and the base64 body
/// borrowed from the request where it has no escapes (base64 never needs one).
struct Envelope<'de> {
    header: Metadata,
    body: Option<Cow<'de, str>>,
}

/// Reads the envelope with the header limits; a refusal is kept in `refused` (serde's error
/// type would lose its code).
struct EnvelopeVisitor {
    limits: MetadataLimits,
    refused: Option<micro_core::Error>,
}

impl<'de> Visitor<'de> for &mut EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object {\"Header\":{..},\"Body\":\"<base64>\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope {
            header: Metadata::new(),
            body: None,
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0.eq_ignore_ascii_case("Header") {
                let seed = OptionalHeaders {
                    limits: self.limits,
                    refused: &mut self.refused,
                };
                envelope.header = map.next_value_seed(seed)?.unwrap_or_default();
            } else if key.0.eq_ignore_ascii_case("Body") {
                envelope.body = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(envelope)
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// `Header`: `null` or an object of strings, read into [`Metadata`] within the limits,
/// without a map in between.
struct OptionalHeaders<'r> {
    limits: MetadataLimits,
    refused: &'r mut Option<micro_core::Error>,
}

impl<'de> de::DeserializeSeed<'de> for OptionalHeaders<'_> {
    type Value = Option<Metadata>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalHeaders<'_> {
    type Value = Option<Metadata>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of string values")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut header = self.limits.reader(WHAT);
        while let Some((k, v)) = map.next_entry::<Text<'de>, Text<'de>>()? {
            if let Err(e) = header.push(k.0, v.0) {
                let detail = e.detail.clone();
                *self.refused = Some(e);
                return Err(de::Error::custom(detail));
            }
        }
        Ok(Some(header.finish()))
    }
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
/// is not valid escaped UTF-8. Borrowed from `query` when there is nothing to unescape.
pub(crate) fn query_value<'q>(query: &'q str, key: &str) -> Option<Cow<'q, str>> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (query_unescape(k)? == key).then(|| query_unescape(v))?
        })
        .next()
}

fn query_unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return Some(Cow::Borrowed(s));
    }
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
    String::from_utf8(out).ok().map(Cow::Owned)
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
        let back =
            decode(json.as_bytes(), MetadataLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.body, msg.body);
        assert_eq!(back.header.get("micro-topic"), Some("events"));
    }

    fn compact(json: &[u8]) -> Option<(Metadata, &[u8])> {
        let mut reader = MetadataLimits::default().reader(WHAT);
        match compact_envelope(json, &mut reader) {
            Compact::Read(body) => Some((reader.finish(), body)),
            _ => None,
        }
    }

    #[test]
    fn the_compact_layout_and_the_general_parser_agree() {
        for json in [
            &br#"{"Header":{},"Body":""}"#[..],
            br#"{"Header":{"Content-Type":"text/plain","Micro-Topic":"t"},"Body":"aGk="}"#,
            br#"{"Header":{"X":"caf\u00e9 <b>"},"Body":"aGk="}"#,
            "{\"Header\":{\"X\":\"café\"},\"Body\":\"aGk=\"}".as_bytes(),
            br#"{"Header":{"A":"1"},"Body":"aGk=","Extra":1}"#,
            br#"{"Header":{"A":"1"}, "Body":"aGk="}"#,
            br#"{"Header":{"A":"1"},"Body":"aGk="} "#,
            br#"{"Header":{"A":"1","A":"2"},"Body":"aGk"}"#,
            br#"{"Header":{"A":1},"Body":"aGk="}"#,
            br#"{"Header":{"A":"1"},"Body":"aGk="}}"#,
            br#"{"Header":{"A":"1"},"Body":"**"}"#,
            br#"{"Header":{"A":"1"},"Body":"aGk=","X":"y"}"#,
            br#"{"Header":{},"Body":"aGk\/"}"#,
            b"{\"Header\":{\"A\":\"a\tb\"},\"Body\":\"\"}",
            b"{\"Header\":{\"A\":\"\xff\"},\"Body\":\"\"}",
        ] {
            let general = general_envelope(json, MetadataLimits::default())
                .ok()
                .and_then(|e| Some((e.header, base64_body(e.body?.as_bytes()).ok()?)));
            let compact =
                compact(json).and_then(|(header, body)| Some((header, base64_body(body).ok()?)));
            let text = String::from_utf8_lossy(json);
            if compact.is_some() {
                assert_eq!(compact, general, "{text}");
            }
            let decoded = decode(json, MetadataLimits::default())
                .ok()
                .map(|m| (m.header, m.body));
            assert_eq!(decoded, general, "{text}");
        }
        // What this crate writes takes the compact path.
        let msg = Message {
            header: [("Content-Type", "application/json"), ("Micro-Id", "é")]
                .into_iter()
                .collect(),
            body: Bytes::from_static(b"\x00\x01payload"),
        };
        let json = encode("orders", &msg);
        let (header, body) = compact(&json).unwrap_or_else(|| panic!("not compact"));
        assert_eq!(header.get("micro-topic"), Some("orders"));
        assert_eq!(base64_body(body).ok(), Some(msg.body.clone()));
        assert_eq!(
            decode(&json, MetadataLimits::default())
                .map(|m| m.body)
                .ok(),
            Some(msg.body)
        );
    }

    #[test]
    fn decodes_what_go_may_send() {
        let m = decode(br#"{"Header":null,"Body":null}"#, MetadataLimits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.header.is_empty() && m.body.is_empty());
        let m = decode(
            br#"{"header":{"A":"b"},"body":"aGk","Extra":1}"#,
            MetadataLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header.get("a"), Some("b"));
        assert_eq!(&m.body[..], b"hi");
        assert!(matches!(
            decode(b"{", MetadataLimits::default()),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode(br#"{"Header":{"A":1}}"#, MetadataLimits::default()),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode(br#"{"Body":"***"}"#, MetadataLimits::default()),
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

    #[test]
    fn headers_past_the_limits_are_refused_by_both_readers() {
        let limits = MetadataLimits {
            max_entries: 100,
            max_bytes: 64 * 1024,
        };
        let keys: Vec<String> = (0..101).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let compact = format!("{{\"Header\":{{{}}},\"Body\":\"aGk=\"}}", keys.join(","));
        let spaced = format!(
            "{{ \"Header\": {{{}}}, \"Body\": \"aGk=\" }}",
            keys.join(", ")
        );
        for json in [compact, spaced] {
            match decode(json.as_bytes(), limits) {
                Err(DecodeError::Headers(e)) => {
                    assert_eq!(e.code, 431);
                    assert!(e.detail.contains("101"), "{}", e.detail);
                }
                other => panic!("expected a header refusal, got {other:?}"),
            }
        }
        let fine = format!(
            "{{\"Header\":{{{}}},\"Body\":\"aGk=\"}}",
            keys[..100].join(",")
        );
        let m = decode(fine.as_bytes(), limits).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header.len(), 100);
    }
}
